"""Sampling throughput of the ``tiny-video-lm`` policy, with and without the KV cache.

One RL step samples G candidates for each of a batch of prompts. This script times
``TinyVideoLM.generate(prompts, G, max_new_tokens=N)`` (all ``B * G`` rows in one batch)
with ``use_cache=True`` (one forward of the prompt, then one token per step against the
cached keys and values) and ``use_cache=False`` (the whole sequence recomputed at every
step), and prints tokens/s for both and their ratio.

By default the policy is the default architecture (3-layer Llama, width 128, LoRA r=32 on
q/k/v/o, tiny-conv encoder, 8 frames -> 24 visual tokens) with random weights on random
frames, so nothing has to be pre-trained and every row runs the full N tokens. Pass
``--policy DIR`` to time a saved checkpoint (rows may then stop early at ``<eos>``;
tokens/s counts the tokens actually produced). Run::

    python benchmarks/generation_throughput.py            # B=8 prompts, G=8, N=32
    python benchmarks/generation_throughput.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rlaif.core.records import Prompt, VideoRef

QUESTIONS = [
    "What colour is the square?", "How many objects are there in the video?", "Which way does the red circle move?",
    "What happened after the blue triangle appeared?", "Is the green circle small or big?",
    "What shape is the yellow object?", "How many objects move during the video?", "Describe this video in detail.",
]  # fmt: skip


def random_frames(video: VideoRef, n_frames: int | None = None) -> np.ndarray:
    seed = int(video.video_id.removeprefix("bench-"))
    return np.random.default_rng(seed).integers(0, 255, (32, 32, 32, 3), dtype=np.uint8)


def default_policy(workdir: Path, seed: int = 0):  # type: ignore[no-untyped-def]
    from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
    from rlaif.plugins.policies.tiny_lm import new_tiny_lm, tiny_lm_config, train_world_tokenizer
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM

    words = "a the red green blue yellow purple square circle triangle moves left right up down stops appears"
    texts = [f"question: {q} answer: {w}" for q in QUESTIONS for w in words.split()] * 4
    tokenizer = train_world_tokenizer(texts, workdir / "tokenizer.json", vocab_size=512)
    lm = new_tiny_lm(tiny_lm_config(len(tokenizer)), seed=seed)
    return TinyVideoLM(TinyConvEncoder(), lm, tokenizer, frames=random_frames, n_frames=8, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts per batch (B)")
    parser.add_argument("--group", type=int, default=8, help="candidates per prompt (G)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per candidate (N)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--policy", default=None, help="a saved tiny-video-lm checkpoint to time instead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.policy:
            from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM

            policy = TinyVideoLM.load(args.policy, frames=random_frames, new_adapter=False)
        else:
            policy = default_policy(Path(tmp))
        prompts = [Prompt(f"p{i}", VideoRef(f"bench-{i}", "", 32), QUESTIONS[i % len(QUESTIONS)])
                   for i in range(args.prompts)]
        for p in prompts:  # encode once: features are cached per video, as in a real run
            policy.video_features(p.video)
        rows = args.prompts * args.group
        print(f"B={args.prompts} prompts x G={args.group} candidates = {rows} rows, N={args.tokens} new tokens, "
              f"{torch.get_num_threads()} threads")
        results: dict[str, float] = {}
        for use_cache in (True, False):
            policy.generate(prompts[:1], 2, max_new_tokens=4, use_cache=use_cache)  # warm-up
            speeds = []
            for r in range(args.repeats):
                gen = torch.Generator().manual_seed(r)
                start = time.perf_counter()
                with torch.no_grad():
                    groups = policy.generate(prompts, args.group, max_new_tokens=args.tokens, use_cache=use_cache,
                                             generator=gen)
                seconds = time.perf_counter() - start
                tokens = sum(len(x.token_ids) for g in groups for x in g)
                speeds.append(tokens / seconds)
            label = "kv-cache" if use_cache else "no-cache"
            results[label] = statistics.median(speeds)
            print(f"{label:9s} {results[label]:9.0f} tokens/s  (median of {args.repeats}; "
                  f"{tokens} tokens in {seconds:.2f} s last run)")
        print(f"ratio     {results['kv-cache'] / results['no-cache']:9.2f}x  (kv-cache / no-cache)")


if __name__ == "__main__":
    main()
