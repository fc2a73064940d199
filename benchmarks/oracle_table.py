"""The judge table of the README: how well each judge ranks SFT candidates, by context.

    python benchmarks/oracle_table.py --groups 128 [--judges world world:answer_first=false self]
                                      [--json out.json]

For each judge (``llm-judge judge=world``, the default; ``world:answer_first=false``, the
world judge scoring by its probability of each answer alone; and ``judge=self``,
VLM-RLAIF's SFT policy judging itself; ``NAME:key=value,...`` sets llm-judge options) and
each context (none, a 1-clip narrative, a 3-clip narrative, written by ``llm-judge``'s
default captioner, and the gold narrative as an upper bound), it runs ``rlaif oracle
check`` on the same test-split groups (G = 4 SFT candidates; same seed, so the same
candidates for every row) and prints top-1, Kendall tau against the ground truth (overall
and per question type), position bias and seconds per group. It also scores the
captioner: its clip captions against the gold ones (the world's
``describe`` score, 0-5), since a narrative is only as good as its captions. And it
probes what the world judge can read: on every short test question, with the gold
narrative, how often it prefers the reference to the reference with one world word
swapped (a near miss), per question type.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

CONTEXTS = (("none", {"context": "none"}), ("1 clip", {"context": "narrative", "n_clips": 1}),
            ("3 clips", {"context": "narrative", "n_clips": 3}), ("gold", {"context": "gold", "n_clips": 3}))


def caption_quality(benchmark: Any, captioner: Any, n_videos: int, n_clips: int = 3) -> float:
    """Mean describe score (0-5) of ``captioner``'s clip captions against the gold captions
    of the same clips, over ``n_videos`` test videos."""
    from rlaif.plugins.benchmarks.video_world.scoring import long_answer_score
    from rlaif.plugins.oracles.narrative import clip_indices

    scores = []
    for video in benchmark.videos("test")[:n_videos]:
        clips = clip_indices(int(video.n_frames or len(benchmark.frames(video))), n_clips=n_clips)
        gold = benchmark.clip_captions(video, n_clips=len(clips), n_frames=sum(len(c) for c in clips))
        for made, truth in zip(captioner.caption_clips(video, clips), gold, strict=True):
            scores.append(long_answer_score(made, truth))
    return sum(scores) / len(scores)


def near_miss_accuracy(benchmark: Any, judge_dir: Path, context: str = "gold") -> dict[str, float]:
    """Per question type: how often the world judge gives the reference a higher
    P(correct) than a near miss (one colour / shape / size / direction / number swapped,
    and wrong by the benchmark's scorer), reading the gold narrative (or none)."""
    import random

    from rlaif.plugins.benchmarks.video_world import scoring
    from rlaif.plugins.benchmarks.video_world.vocab import COLOURS, DIRECTIONS, NUMBER_WORDS, SHAPES, SIZES
    from rlaif.plugins.oracles.world_judge import WorldJudgeBackend, judge_prompt_text

    classes = [tuple(COLOURS), SHAPES, SIZES, DIRECTIONS, NUMBER_WORDS[:6]]
    rng = random.Random(0)
    items, qtypes = [], []
    for p in benchmark.prompts("test"):
        words = str(p.reference).split()
        spots = [(i, c) for i, w in enumerate(words) for c in classes if w.strip(".").lower() in c]
        if p.qtype == "describe" or not spots:
            continue
        i, cls = rng.choice(spots)
        bare = words[i].strip(".").lower()
        miss = " ".join(words[:i] + [words[i].lower().replace(bare, rng.choice([w for w in cls if w != bare]))]
                        + words[i + 1 :])
        if scoring.item_score(p.qtype, miss, str(p.reference)) >= 1.0:
            continue
        head = judge_prompt_text(p.question, str(p.meta["gold_narrative"]) if context == "gold" else None)
        items += [(head, " " + str(p.reference)), (head, " " + miss)]
        qtypes.append(p.qtype)
    probs = WorldJudgeBackend(judge_dir).answer_probabilities(items)
    wins: dict[str, list[bool]] = {}
    for k, qtype in enumerate(qtypes):
        wins.setdefault(qtype, []).append(probs[2 * k] > probs[2 * k + 1])
    return {q: sum(v) / len(v) for q, v in sorted(wins.items())}


def main() -> None:
    import torch

    from rlaif.core.registry import load_plugins
    from rlaif.train.oracle_check import default_policy, parse_options, run_oracle_check

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=128)
    parser.add_argument("--judges", nargs="+", default=["world", "world:answer_first=false", "self"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = load_plugins()
    benchmark = registry.build("benchmark", "video-world", {})
    policy = default_policy(benchmark, seed=0, progress=True)
    rows: list[dict[str, Any]] = []
    for judge in args.judges:
        name, _, extra = judge.partition(":")
        for label, options in CONTEXTS:
            started = time.perf_counter()
            chosen = {"judge": name, **parse_options(extra.split(",") if extra else []), **options}
            report = run_oracle_check("llm-judge", chosen, n_groups=args.groups, group_size=4,
                                      seed=args.seed, benchmark=benchmark, policy=policy, registry=registry)
            run = report["runs"][0]
            rows.append({**run, "judge": judge, "context": label, "wall_s": time.perf_counter() - started})
            print(f"{judge} {label:8s} tau {run['kendall_tau']:+.3f} top1 {run['top1']:.3f} "
                  f"bias {run['position_bias']:.3f}", file=sys.stderr)
    from rlaif.plugins.oracles.llm_judge import narrative_writer

    writer = narrative_writer("auto", policy, benchmark, progress=True)  # llm-judge's default captioner
    captions = caption_quality(benchmark, writer, n_videos=min(args.groups, 60))
    from rlaif.plugins.oracles.world_judge import cached_world_judge

    judge_dir = cached_world_judge(benchmark)
    probes = {c: near_miss_accuracy(benchmark, judge_dir, c) for c in ("gold", "none")}
    qtypes = sorted({q for r in rows for q in r["kendall_tau_by_type"]})
    print("| judge | context | top-1 | Kendall τ | position bias | failures | s / group | "
          + " | ".join(f"τ {q}" for q in qtypes) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(qtypes))
    for r in rows:
        per_type = " | ".join(f"{r['kendall_tau_by_type'][q]:+.2f}" if q in r["kendall_tau_by_type"] else "n/a"
                              for q in qtypes)
        print(f"| {r['judge']} | {r['context']} | {r['top1']:.3f} | {r['kendall_tau']:+.3f} | "
              f"{r['position_bias']:.3f} | {r['failure_rate']:.3f} | {r['latency_s']:.3f} | {per_type} |")
    print(f"\ndefault captioner ({writer.name}), 3-clip captions vs gold (describe score 0-5): {captions:.2f}")
    for context, per_type in probes.items():
        print(f"world judge prefers the reference to a near miss ({context} narrative): "
              + ", ".join(f"{q} {v:.2f}" for q, v in per_type.items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "captioner": writer.name, "caption_score": captions,
                                         "near_miss": probes}, indent=2))


if __name__ == "__main__":
    main()
