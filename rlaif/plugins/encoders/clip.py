"""Frozen CLIP vision tower with Video-ChatGPT pooling (the VLM-RLAIF visual encoder).

VLM-RLAIF feeds its language model the patch features of CLIP ViT-L/14-336 taken from
the second-to-last layer (``select_layer = -2``, CLS dropped), pooled over frames the
Video-ChatGPT way: T temporal tokens (each frame's mean over its patches) followed by
P spatial tokens (each patch position's mean over the frames), so a video of any length
becomes ``T + P`` tokens. Preprocessing is done here with plain torch (resize the short
side, centre-crop, CLIP mean/std) so neither torchvision nor an image processor is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# CLIP's normalisation constants (openai/CLIP, also transformers' OPENAI_CLIP_MEAN/STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def video_chatgpt_pool(patch_features: torch.Tensor) -> torch.Tensor:
    """Video-ChatGPT spatio-temporal pooling (Maaz et al., 2023).

    ``patch_features`` ``[T, P, D]`` -> ``[T + P, D]``: temporal tokens (mean over the P
    patches of each frame) first, then spatial tokens (mean over the T frames of each
    patch position), the order Video-ChatGPT's ``get_spatio_temporal_features`` uses."""
    temporal = patch_features.mean(dim=1)  # [T, D]
    spatial = patch_features.mean(dim=0)  # [P, D]
    return torch.cat([temporal, spatial], dim=0)  # [T+P, D]


def clip_preprocess(frames: Any, image_size: int) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> normalised float ``[T, 3, S, S]``.

    As CLIP's own processor: bicubic resize of the short side to ``S``, centre crop, scale
    to [0, 1], normalise with the CLIP mean and std."""
    x = torch.as_tensor(np.ascontiguousarray(frames))
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # [T, 3, H, W]
    h, w = x.shape[-2:]
    scale = image_size / min(h, w)
    new_h, new_w = max(image_size, round(h * scale)), max(image_size, round(w * scale))
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    x = x[:, :, top : top + image_size, left : left + image_size].clamp_(0.0, 1.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std  # [T, 3, S, S]


class ClipEncoder:
    """Frozen ``CLIPVisionModel``: frames -> ``[T + P, D]`` Video-ChatGPT features."""

    name = "clip"

    def __init__(
        self,
        model: Any,
        *,
        n_frames: int = 8,
        select_layer: int = -2,
        benchmark: Any = None,
        frame_batch: int = 64,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.n_frames = n_frames
        self.select_layer = select_layer
        self.benchmark = benchmark
        self.frame_batch = frame_batch
        self.image_size = int(model.config.image_size)
        self.feature_dim = int(model.config.hidden_size)
        self.n_patches = (self.image_size // int(model.config.patch_size)) ** 2

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def n_tokens(self, n_frames: int) -> int:
        return n_frames + self.n_patches

    @torch.no_grad()
    def patch_features(self, frames: Any) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` -> patch features ``[T, P, D]`` of layer ``select_layer``."""
        pixels = clip_preprocess(frames, self.image_size)
        dtype = next(self.model.parameters()).dtype
        chunks = []
        for start in range(0, pixels.shape[0], self.frame_batch):
            batch = pixels[start : start + self.frame_batch].to(self.device, dtype)
            out = self.model(pixel_values=batch, output_hidden_states=True)
            chunks.append(out.hidden_states[self.select_layer][:, 1:])  # drop CLS: [t, P, D]
        return torch.cat(chunks, dim=0)

    @torch.no_grad()
    def encode(self, frames: Any) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` -> float32 ``[T + P, D]`` on the CPU, ready to cache."""
        return video_chatgpt_pool(self.patch_features(frames).float()).cpu()

    def encode_video(self, video: Any) -> torch.Tensor:
        """Decode ``n_frames`` frames of ``video`` through the wired benchmark and encode them."""
        if self.benchmark is None:
            raise RuntimeError("ClipEncoder.encode_video needs a benchmark to decode frames")
        return self.encode(self.benchmark.frames(video, self.n_frames))


def build_clip(path: str, n_frames: int = 8, select_layer: int = -2, benchmark: Any = None) -> ClipEncoder:
    """Load a CLIP vision tower from a local directory or a hub id (hub ids need network
    access or a warm cache), frozen, on the GPU when there is one."""
    from transformers import CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(path)
    if torch.cuda.is_available():
        model = model.to("cuda", torch.float16)
    return ClipEncoder(model, n_frames=n_frames, select_layer=select_layer, benchmark=benchmark)
