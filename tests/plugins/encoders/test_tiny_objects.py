"""The tiny-objects encoder: one token per object per frame, touching objects of different
colours kept apart, motion read from neighbouring frames, standardisation fitted and
saved, and a cached build on the embedded world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rlaif.plugins.benchmarks.video_world.world import shape_mask
from rlaif.plugins.encoders.tiny_objects import TinyObjectEncoder, cached_tiny_objects

torch.set_num_threads(1)

RED, BLUE = (220, 40, 40), (50, 80, 240)


def paint(frame: np.ndarray, shape: str, side: int, x: int, y: int, colour: tuple[int, int, int]) -> None:
    frame[y : y + side, x : x + side][shape_mask(shape, side)] = colour


def two_objects(n_frames: int = 4, touching: bool = False) -> np.ndarray:
    """A big red square still at the left; a small blue circle moving right (or, with
    ``touching``, sitting against the square)."""
    frames = np.zeros((n_frames, 32, 32, 3), np.uint8)
    for t in range(n_frames):
        paint(frames[t], "square", 11, 2, 10, RED)
        paint(frames[t], "circle", 7, 13 if touching else 16 + 2 * t, 12, BLUE)
    return frames


def test_one_token_per_object_largest_first_and_absent_slots_are_zero() -> None:
    encoder = TinyObjectEncoder(n_frames=4)
    regions = encoder.regions(two_objects())
    assert [len(r) for r in regions] == [2, 2, 2, 2]
    big, small = regions[0]
    assert big["area"] == 121 and small["area"] == int(shape_mask("circle", 7).sum())
    assert np.allclose(big["rgb"][:3].numpy() * 255, RED, atol=1)
    tokens = encoder.encode(two_objects())
    assert tokens.shape == (4 * 3, encoder.feature_dim)
    assert torch.all(tokens.view(4, 3, -1)[:, 2] == 0)  # third slot: nothing there
    assert torch.all(tokens.view(4, 3, -1)[:, :2, -1] == 1)  # presence flags


def test_touching_objects_of_different_colours_stay_apart() -> None:
    regions = TinyObjectEncoder(n_frames=1).regions(two_objects(1, touching=True))[0]
    assert len(regions) == 2
    assert sorted(r["area"] for r in regions) == sorted([121, int(shape_mask("circle", 7).sum())])


def test_motion_is_the_displacement_to_the_same_object_in_the_next_frame() -> None:
    encoder = TinyObjectEncoder(n_frames=4)
    raw = encoder.raw_tokens(two_objects()).view(4, 3, -1)
    motion = slice(encoder.feature_dim - 7, encoder.feature_dim - 3)  # next dx, dy, previous dx, dy
    square, circle = raw[1, 0, motion], raw[1, 1, motion]
    assert torch.allclose(square, torch.zeros(4), atol=1e-6)  # still
    assert circle[0] > 0 and abs(float(circle[1])) < 1e-6  # moving right next ...
    assert circle[2] < 0  # ... and was to the left before
    assert raw[0, 1, -2] == 0 and raw[0, 1, -3] == 1  # frame 0 has no previous frame, a next one


def test_normalisation_is_fitted_saved_and_loaded(tmp_path: Path) -> None:
    encoder = TinyObjectEncoder(n_frames=4)
    videos = [two_objects(), two_objects(touching=True)]
    assert encoder.fit_normalisation(videos) == 16
    tokens = encoder.encode(two_objects())
    present = tokens[tokens[:, -1] > 0]
    assert float(present[:, :3].mean().abs()) < 1.0  # colours centred
    encoder.save(tmp_path / "enc")
    again = TinyObjectEncoder.from_pretrained(tmp_path / "enc")
    assert torch.equal(again.encode(two_objects()), tokens)
    with pytest.raises(ValueError, match="two regions"):
        TinyObjectEncoder().fit_normalisation([np.zeros((2, 32, 32, 3), np.uint8)])


@pytest.mark.integration
def test_cached_build_on_the_embedded_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.plugins.benchmarks.video_world import VideoWorld

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("rlaif.plugins.encoders.tiny_objects.NORMALISATION_SCENES", 12)
    world = VideoWorld(root=str(tmp_path / "world"), n_sft=4, n_rl=2, n_test=2, progress=False)
    first = cached_tiny_objects(world, n_frames=4)
    assert (first / "model.safetensors").exists()
    assert cached_tiny_objects(world, n_frames=4) == first  # cached
    encoder = TinyObjectEncoder.from_pretrained(first)
    assert not torch.equal(encoder.scale, torch.ones_like(encoder.scale))
    video = world.prompts("test")[0].video
    frames = np.asarray(world.frames(video))[:4]
    assert encoder.encode(frames).shape == (12, encoder.feature_dim)


def test_the_policy_names_its_encoders_and_reads_either_from_a_checkpoint(tmp_path: Path) -> None:
    from rlaif.core.errors import UsageError
    from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
    from rlaif.plugins.policies.tiny_video_lm import cached_encoder, load_encoder

    with pytest.raises(UsageError, match="tiny-objects, tiny-conv"):
        cached_encoder(object(), encoder="clip")
    TinyObjectEncoder(n_frames=4).save(tmp_path / "objects")
    TinyConvEncoder(feature_dim=16, width=4).save(tmp_path / "conv")
    assert isinstance(load_encoder(tmp_path / "objects"), TinyObjectEncoder)
    assert isinstance(load_encoder(tmp_path / "conv"), TinyConvEncoder)
