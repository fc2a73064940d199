"""The tiny-conv encoder: Video-ChatGPT pooled shape, frozen weights, persistence, hard
negative captions and a short contrastive pre-training on a synthetic world."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rlaif.core.records import Prompt, VideoRef
from rlaif.plugins.encoders.tiny_conv import (
    TinyConvEncoder,
    build_tiny_conv,
    cached_tiny_conv,
    perturb_caption,
    pretrain_tiny_conv,
    swap_table,
)

torch.set_num_threads(1)

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 240)}


class SquaresWorld:
    """Videos of one coloured square moving left or right; one caption per half."""

    name = "squares"
    has_ground_truth = True

    def __init__(self, n_videos: int = 8) -> None:
        rng = random.Random(0)
        self.videos: dict[str, tuple[np.ndarray, list[str]]] = {}
        for v in range(n_videos):
            colour, way = rng.choice(list(COLOURS)), rng.choice(["left", "right"])
            frames = np.zeros((12, 32, 32, 3), np.uint8)
            for t in range(12):
                x = 10 + (t if way == "right" else -t)
                frames[t, 12:20, x : x + 8] = COLOURS[colour]
            self.videos[f"s{v}"] = (frames, [f"a {colour} square moves {way}.", f"the {colour} square keeps moving."])

    def prompts(self, split: str) -> list[Prompt]:
        ids = sorted(self.videos)[: -2] if split in ("sft", "rl") else sorted(self.videos)[-2:]
        return [Prompt(f"{v}-q", VideoRef(v, f"/none/{v}.mp4", 12), "What colour is the square?") for v in ids]

    def frames(self, video: VideoRef, n_frames: int | None = None) -> np.ndarray:
        return self.videos[video.video_id][0]

    def clip_captions(self, video: VideoRef) -> list[str]:
        return list(self.videos[video.video_id][1])


def test_pooled_tokens_are_temporal_then_spatial() -> None:
    encoder = TinyConvEncoder(feature_dim=16, width=8).freeze()
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    tokens = encoder.encode(frames)
    assert tokens.shape == (5 + encoder.n_spatial, 16) and encoder.n_spatial == 16
    patches = encoder.patch_features(frames)  # [T, P, D]
    assert torch.allclose(tokens[:5], patches.mean(1), atol=1e-6)  # per-frame mean over patches
    assert torch.allclose(tokens[5:], patches.mean(0), atol=1e-6)  # per-patch mean over frames
    # Other frame sizes are resized; a tensor input works like an array.
    other = encoder.encode(torch.from_numpy(np.zeros((3, 48, 64, 3), np.uint8)))
    assert other.shape == (3 + 16, 16)


def test_frozen_encoder_has_no_trainable_weights_and_no_grad() -> None:
    encoder = TinyConvEncoder(feature_dim=16, width=8).freeze()
    assert not encoder.training
    assert all(not p.requires_grad for p in encoder.parameters())
    out = encoder.encode(np.zeros((2, 32, 32, 3), np.uint8))
    assert not out.requires_grad


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = TinyConvEncoder(feature_dim=16, width=8, n_frames=4)
    encoder.save(tmp_path / "enc")
    loaded = TinyConvEncoder.from_pretrained(tmp_path / "enc")
    assert (tmp_path / "enc" / "model.safetensors").exists() and (tmp_path / "enc" / "config.json").exists()
    assert loaded.n_frames == 4 and all(not p.requires_grad for p in loaded.parameters())
    frames = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    assert torch.equal(encoder.encode(frames), loaded.encode(frames))


def test_hard_negative_captions_swap_like_for_like() -> None:
    captions = [f"a {c} {s} moves {d}." for c in COLOURS for s in ("square", "circle") for d in ("left", "right")]
    table = swap_table(captions)
    assert set(table["red"]) <= {"green", "blue"}
    assert table["square"] == ["circle"] and table["left"] == ["right"]
    assert "a" not in table  # too common to say anything
    rng = random.Random(0)
    for caption in captions:
        negative = perturb_caption(caption, table, rng)
        assert negative is not None and negative != caption
        assert len(negative.split()) == len(caption.split())


def test_short_pretraining_learns_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = SquaresWorld()
    metrics = pretrain_tiny_conv(world, tmp_path / "enc", steps=30, batch_size=8, frames_per_clip=3,
                                 feature_dim=16, lr=3e-3)
    assert metrics["loss_last"] < metrics["loss_first"]
    encoder = build_tiny_conv(path=str(tmp_path / "enc"))
    assert encoder.feature_dim == 16 and all(not p.requires_grad for p in encoder.parameters())

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []
    import rlaif.plugins.encoders.tiny_conv as tiny_conv

    def fake_pretrain(benchmark, out_dir, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(Path(out_dir))
        TinyConvEncoder(feature_dim=16, width=8).freeze().save(out_dir)
        return {}

    monkeypatch.setattr(tiny_conv, "pretrain_tiny_conv", fake_pretrain)
    first = cached_tiny_conv(world)
    second = cached_tiny_conv(world)
    assert first == second and len(calls) == 1  # built once, then reused
    assert first.parent == tmp_path / "cache" / "tiny-conv"
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".build-")]
