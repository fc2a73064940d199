"""How much of a question's answer can be read from the frozen encoder's features?

A diagnostic for the embedded world (issue 10): a two-layer MLP reads ``[question
one-hot, encoder features]`` and predicts the answer word. It is trained on fresh scenes
(videos in no split, rendered and passed through the codec like the benchmark's) and
tested on the ``test`` split, once on Video-ChatGPT's pooled tokens (T temporal + P
spatial) and once on the unpooled T x P patch features. If the probe generalises no better
than the policy does, the limit is not in the language model's reading of the tokens.

    python benchmarks/perception_probe.py [--encoder DIR] [--scenes 1500] [--epochs 60]

``--encoder`` defaults to the cached default ``tiny-conv`` of the world.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn import functional as F

from rlaif.core.registry import load_plugins
from rlaif.plugins.benchmarks.video_world.video_io import codec_roundtrip
from rlaif.plugins.benchmarks.video_world.vocab import COLOURS, DIRECTIONS, NUMBER_WORDS, SHAPES
from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder, cached_tiny_conv
from rlaif.plugins.policies.tiny_video_lm import sample_indices

ANSWERS = [*COLOURS, *SHAPES, *DIRECTIONS, *NUMBER_WORDS[:5]]
CUES = ("start", "end", "colour", "shape", "How many objects are", "big objects", "objects move", "Which way")


def question_features(question: str) -> torch.Tensor:
    """One-hot of the colours, shapes and template words a question mentions."""
    words = f" {question} "
    bits = (
        [f" {c} " in words for c in COLOURS] + [s in question for s in SHAPES] + [c in question for c in CUES]
    )
    return torch.tensor(bits, dtype=torch.float32)


def probe(train: list, test: list, pooled: bool, epochs: int) -> tuple[float, float]:
    """Train accuracy and test accuracy of an MLP on ``(features [T, P, D], question, answer)``."""

    def view(x: torch.Tensor) -> torch.Tensor:  # [B, T, P, D] -> [B, F]
        return torch.cat([x.mean(2), x.mean(1)], 1).flatten(1) if pooled else x.flatten(1)

    def tensors(rows: list) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([view(torch.stack([r[0] for r in rows])), torch.stack([r[1] for r in rows])], 1)
        return x, torch.tensor([r[2] for r in rows])

    xtr, ytr = tensors(train)
    xte, yte = tensors(test)
    model = nn.Sequential(
        nn.Linear(xtr.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, len(ANSWERS))
    )
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        for batch in torch.randperm(len(xtr)).split(64):
            loss = F.cross_entropy(model(xtr[batch]), ytr[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (
            (model(xtr).argmax(1) == ytr).float().mean().item(),
            (model(xte).argmax(1) == yte).float().mean().item(),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default=None, help="encoder dir (default: the world's cached tiny-conv)")
    parser.add_argument("--scenes", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    world = load_plugins().build("benchmark", "video-world", {})
    encoder = TinyConvEncoder.from_pretrained(args.encoder or cached_tiny_conv(world))
    train: dict[str, list] = {}
    for scene in world.fresh_scenes(args.scenes, "probe"):
        frames = codec_roundtrip(scene.video.render())
        with torch.no_grad():
            feats = encoder.patch_features(frames[sample_indices(len(frames), encoder.n_frames)])
        for qa in scene.qa:
            if qa.answer in ANSWERS:
                train.setdefault(qa.qtype, []).append(
                    (feats, question_features(qa.question), ANSWERS.index(qa.answer))
                )
    test: dict[str, list] = {}
    cache: dict[str, torch.Tensor] = {}
    for p in world.prompts("test"):
        if p.reference in ANSWERS:
            if p.video.video_id not in cache:
                with torch.no_grad():
                    cache[p.video.video_id] = encoder.patch_features(world.frames(p, encoder.n_frames))
            test.setdefault(p.qtype, []).append(
                (cache[p.video.video_id], question_features(p.question), ANSWERS.index(str(p.reference)))
            )
    print(f"{'qtype':10s} {'features':9s} {'n train':>8s} {'train':>6s} {'test':>6s}")
    for qtype in ("attribute", "direction", "counting"):
        for pooled in (True, False):
            tr, te = probe(train.get(qtype, []), test.get(qtype, []), pooled, args.epochs)
            print(
                f"{qtype:10s} {'pooled' if pooled else 'patches':9s} {len(train.get(qtype, [])):8d} {tr:6.3f} {te:6.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
