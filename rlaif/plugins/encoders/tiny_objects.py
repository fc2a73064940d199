"""The ``tiny-objects`` encoder: object-centric tokens for the embedded world, the
bottom-up-attention design of VQA (region proposals, then one feature vector per region)
at the size of a 32 px world.

Why: with Video-ChatGPT's patch pooling a 3-layer LM has to learn *binding* (which colour
goes with which shape, which object moved) from a few thousand labelled items, and it did
not: the SFT policy stayed below a single-frame pixel heuristic (issue 10). Here each
token already is one object in one frame, so "what colour is the square?" is a lookup.

Per sampled frame, regions are proposed without learning, as R-CNN's selective search
does: pixels brighter than the (dark) background, joined into 4-connected components of
similar colour (so two touching objects of different colours stay apart). The ``slots``
largest regions of each frame become tokens, largest first, each described by:

* appearance: mean and spread of its RGB;
* form: bounding-box width, height, area, fill ratio and the region's mask resampled to
  ``mask_grid`` x ``mask_grid`` over its box (what tells a triangle from a circle);
* place: centroid ``x, y`` in ``[-1, 1]``;
* motion: the displacement to the most similar region (colour and size) in the next and
  in the previous sampled frame, as two-stream video networks feed optical flow;
* a presence flag (absent slots are all zeros).

The encoder learns no weights. Its one fitted part is the standardisation of each
descriptor (mean and spread over the regions of fresh scenes, :func:`fit_normalisation`):
without it a colour lives in 3 of 44 raw dimensions next to a 25-cell mask, and the
policy's projector learned from it ~2x slower (attribute QA, 300 items: train 0.65 ->
0.85). What a token *means* is learned by the policy's projector and LM from the
labelled data, exactly as with a frozen pretrained tower. Output:
``encode(frames [T, H, W, 3]) -> [T * slots, feature_dim]``; absent slots are zeros.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from rlaif.core.cache import cache_root, cached_build
from rlaif.plugins.encoders.tiny_conv import SavedEncoder, world_fingerprint

RECIPE_VERSION = "tiny-objects/1"


class TinyObjectEncoder(SavedEncoder):
    """Region proposals by colour-connected components, one descriptor per region."""

    name = "tiny-objects"
    mean: torch.Tensor  # [feature_dim] buffers: the fitted standardisation
    scale: torch.Tensor

    def __init__(self, n_frames: int = 8, slots: int = 3, mask_grid: int = 5, image_size: int = 32,
                 brightness: float = 0.27, colour_gap: float = 0.3, min_area: int = 4) -> None:
        super().__init__()
        self.n_frames = n_frames
        self.slots = slots
        self.mask_grid = mask_grid
        self.image_size = image_size
        self.brightness = brightness  # a pixel is foreground when its brightest channel exceeds this
        self.colour_gap = colour_gap  # neighbours join a region when their RGB distance is below this
        self.min_area = min_area
        self.feature_dim = 6 + 4 + mask_grid * mask_grid + 2 + 4 + 2 + 1
        self.register_buffer("mean", torch.zeros(self.feature_dim))
        self.register_buffer("scale", torch.ones(self.feature_dim))

    # -- regions ---------------------------------------------------------------------
    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, 3, H, W]`` in [0, 1] -> region labels ``[T, H, W]`` (0 = background):
        min-label propagation over foreground neighbours of similar colour."""
        t, _, h, w = x.shape
        fg = x.amax(1) > self.brightness  # [T, H, W]
        big = h * w + 1
        labels = torch.where(fg, torch.arange(1, h * w + 1, dtype=torch.long).view(1, h, w).expand(t, h, w),
                             torch.full((t, h, w), big, dtype=torch.long))
        links = []
        for dy, dx in ((0, 1), (1, 0)):  # right and down neighbours; symmetric below
            a = x[:, :, : h - dy, : w - dx]
            b = x[:, :, dy:, dx:]
            close = ((a - b) ** 2).sum(1).sqrt() < self.colour_gap
            links.append(close & fg[:, : h - dy, : w - dx] & fg[:, dy:, dx:])
        right, down = links
        for _ in range(h + w):
            new = labels.clone()
            new[:, :, :-1] = torch.where(right, torch.minimum(new[:, :, :-1], labels[:, :, 1:]), new[:, :, :-1])
            new[:, :, 1:] = torch.where(right, torch.minimum(new[:, :, 1:], labels[:, :, :-1]), new[:, :, 1:])
            new[:, :-1, :] = torch.where(down, torch.minimum(new[:, :-1, :], labels[:, 1:, :]), new[:, :-1, :])
            new[:, 1:, :] = torch.where(down, torch.minimum(new[:, 1:, :], labels[:, :-1, :]), new[:, 1:, :])
            if torch.equal(new, labels):
                break
            labels = new
        return torch.where(fg, labels, torch.zeros_like(labels))

    def regions(self, frames: Any) -> list[list[dict[str, Any]]]:
        """Per frame, its ``slots`` largest regions (largest first) as dicts of numpy
        values: ``rgb`` mean/std, ``box`` (x0, y0, x1, y1), ``area``, ``centre``, ``mask``."""
        x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="area")
        labels = self._labels(x)
        size = self.image_size
        out: list[list[dict[str, Any]]] = []
        for f in range(x.shape[0]):
            ids, counts = torch.unique(labels[f], return_counts=True)
            keep = [(int(c), int(i)) for i, c in zip(ids.tolist(), counts.tolist(), strict=True)
                    if i != 0 and c >= self.min_area]
            keep.sort(reverse=True)
            found = []
            for area, label in keep[: self.slots]:
                mask = labels[f] == label
                ys, xs = torch.nonzero(mask, as_tuple=True)
                pixels = x[f][:, mask]  # [3, area]
                x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
                crop = mask[y0 : y1 + 1, x0 : x1 + 1].float()[None, None]
                grid = F.interpolate(crop, size=(self.mask_grid, self.mask_grid), mode="area")[0, 0]
                found.append({
                    "rgb": torch.cat([pixels.mean(1), pixels.std(1, unbiased=False)]),
                    "box": ((x1 - x0 + 1) / size, (y1 - y0 + 1) / size),
                    "area": area,
                    "centre": ((xs.float().mean() + 0.5) / size * 2 - 1, (ys.float().mean() + 0.5) / size * 2 - 1),
                    "mask": grid.flatten(),
                })  # fmt: skip
            out.append(found)
        return out

    @staticmethod
    def _match(region: dict[str, Any], others: list[dict[str, Any]]) -> tuple[float, float] | None:
        """Displacement to the most similar region of another frame (colour, then size)."""
        best, best_cost = None, 0.35
        for other in others:
            cost = float((region["rgb"][:3] - other["rgb"][:3]).norm()) + abs(region["area"] - other["area"]) / 200
            if cost < best_cost:
                best, best_cost = other, cost
        if best is None:
            return None
        return float(best["centre"][0] - region["centre"][0]), float(best["centre"][1] - region["centre"][1])

    def encode(self, frames: Any) -> torch.Tensor:
        """uint8 frames ``[T, H, W, 3]`` -> standardised object tokens ``[T * slots, feature_dim]``."""
        raw = self.raw_tokens(frames)
        present = raw[:, -1:] > 0
        return torch.where(present, (raw - self.mean) / self.scale, torch.zeros_like(raw))

    def fit_normalisation(self, videos: Iterable[Any]) -> int:
        """Set ``mean``/``scale`` from the present regions of ``videos`` (uint8 frame
        arrays, already sampled); the presence flag stays 0/1. Returns the region count."""
        rows = []
        for frames in videos:
            raw = self.raw_tokens(frames)
            rows.append(raw[raw[:, -1] > 0])
        table = torch.cat(rows)
        if len(table) < 2:
            raise ValueError("need at least two regions to fit the normalisation")
        mean, scale = table.mean(0), table.std(0).clamp(min=0.05)
        mean[-1], scale[-1] = 0.0, 1.0
        self.mean.copy_(mean)
        self.scale.copy_(scale)
        return len(table)

    def raw_tokens(self, frames: Any) -> torch.Tensor:
        """The unstandardised descriptors ``[T * slots, feature_dim]``."""
        per_frame = self.regions(frames)
        size2 = self.image_size * self.image_size
        tokens = torch.zeros(len(per_frame), self.slots, self.feature_dim)
        for f, found in enumerate(per_frame):
            for s, region in enumerate(found):
                motion = []
                for g in (f + 1, f - 1):
                    step = self._match(region, per_frame[g]) if 0 <= g < len(per_frame) else None
                    motion += [1.0, *(4 * v for v in step)] if step is not None else [0.0, 0.0, 0.0]
                w, h = region["box"]
                fill = region["area"] / max(1.0, w * h * size2)
                tokens[f, s] = torch.cat([
                    region["rgb"],
                    torch.tensor([w, h, region["area"] / size2 * 8, fill]),
                    region["mask"],
                    torch.tensor([float(region["centre"][0]), float(region["centre"][1])]),
                    torch.tensor(motion[1:3] + motion[4:6]),
                    torch.tensor([motion[0], motion[3]]),
                    torch.ones(1),
                ])  # fmt: skip
        return tokens.flatten(0, 1)

    # -- persistence -----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"format": RECIPE_VERSION, "n_frames": self.n_frames, "slots": self.slots,
                "mask_grid": self.mask_grid, "image_size": self.image_size, "brightness": self.brightness,
                "colour_gap": self.colour_gap, "min_area": self.min_area}


#: Fresh scenes whose regions fit the default encoder's normalisation.
NORMALISATION_SCENES = 300


def cached_tiny_objects(benchmark: Any, *, n_frames: int = 8) -> Path:
    """Directory of the default encoder for ``benchmark``: normalisation fitted on fresh
    scenes (in no split, passed through the codec like the benchmark's videos), cached
    under ``$RLAIF_CACHE/tiny-objects`` and built in a temp dir renamed into place."""
    from rlaif.plugins.benchmarks.video_world.video_io import codec_roundtrip

    key = hashlib.sha256(f"{RECIPE_VERSION}|{world_fingerprint(benchmark)}|{n_frames}".encode()).hexdigest()[:16]

    def build(tmp: Path) -> None:
        encoder = TinyObjectEncoder(n_frames=n_frames)
        fresh = getattr(benchmark, "fresh_scenes", None)
        if callable(fresh):
            videos = (codec_roundtrip(scene.video.render()) for scene in fresh(NORMALISATION_SCENES, "encoder"))
        else:
            videos = (np.asarray(benchmark.frames(v)) for v in _sft_videos(benchmark))
        encoder.fit_normalisation(v[np.linspace(0, len(v) - 1, n_frames).round().astype(int)] for v in videos)
        encoder.save(tmp)

    return cached_build(cache_root() / "tiny-objects" / key, build)


def _sft_videos(benchmark: Any) -> list[Any]:
    return list({p.video.video_id: p.video for p in benchmark.prompts("sft")}.values())
