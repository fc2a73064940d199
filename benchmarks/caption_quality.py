"""How often a captioner's narratives name the objects of a video right.

    python benchmarks/caption_quality.py [--captioner sft|tuned|DIR] [--videos 120] [--json out.json]

A text judge reads the narrative a captioner writes (VLM-RLAIF's context), so it can rank
an attribute answer no better than the narrative states the attribute. This captions the
first ``--videos`` test videos of the embedded world (3 clips, as a run does) and checks
every "<size> <colour> <shape>" phrase against the video's objects: the share whose
shape is in the video, and, among all phrases, whose colour (first or after a recolour)
and size are right. ``sft`` is the default SFT policy as its SFT self; ``tuned`` is its
caption-tuned copy (``rlaif.train.captioner``, built on first use); or a saved policy dir.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from typing import Any

PHRASE = re.compile(r"\b(small|big) (red|green|blue|yellow|purple) (circle|square|triangle)\b")


def phrase_accuracy(world: Any, videos: list[Any], narratives: list[str]) -> dict[str, float]:
    """Per phrase: shape in the video, colour right, size right, all three."""
    counts: Counter[str] = Counter()
    for video, text in zip(videos, narratives, strict=True):
        objects = {o.shape: o for o in world.objects(video)}
        recoloured = {(e.obj, e.colour) for e in world.events(video) if e.kind == "recolour"}
        for size, colour, shape in PHRASE.findall(text):
            counts["phrases"] += 1
            o = objects.get(shape)
            if o is None:
                continue
            colour_ok = o.colour == colour or (o.index, colour) in recoloured
            counts["shape"] += 1
            counts["colour"] += colour_ok
            counts["size"] += o.size == size
            counts["all"] += colour_ok and o.size == size
    n = max(1, counts["phrases"])
    return {"phrases": float(counts["phrases"]), "shape_in_video": counts["shape"] / n,
            "colour": counts["colour"] / n, "size": counts["size"] / n, "all_three": counts["all"] / n}


def main() -> None:
    import torch

    from rlaif.plugins.benchmarks.video_world import VideoWorld
    from rlaif.plugins.oracles.llm_judge import narrative_writer
    from rlaif.plugins.oracles.narrative import MemoryNarratives, narrative_for, prefetch_narratives
    from rlaif.train.oracle_check import default_policy

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captioner", default="sft")
    parser.add_argument("--videos", type=int, default=120)
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    torch.set_num_threads(2)
    world = VideoWorld()
    policy = default_policy(world, seed=0, progress=True)  # as a run loads it (built on first use)
    writer = narrative_writer(args.captioner, policy, world, progress=True)
    videos = world.videos("test")[: args.videos]
    store = MemoryNarratives()
    for start in range(0, len(videos), 32):
        prefetch_narratives(videos[start:start + 32], benchmark=world, captioner=writer, store=store, n_clips=3)
    texts = [narrative_for(v, benchmark=world, captioner=writer, store=store, n_clips=3) for v in videos]
    result = {"captioner": writer.name, "videos": len(videos), **phrase_accuracy(world, videos, texts)}
    print(json.dumps(result, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
