"""A real video VLM from ``transformers`` as an RL policy, trained through a LoRA adapter.

``HFVideoVLM`` wraps an ``AutoModelForImageTextToText`` checkpoint of a supported family
(LLaVA-OneVision, Qwen2-VL / Qwen2.5-VL, SmolVLM / SmolVLM2 / Idefics3), local directory
or hub id, and exposes the Policy API of the tiny default policy: batched sampling through
``model.generate`` (KV cache) with exact per-token log-probs, a differentiable log-prob
pass (``forward_responses``), the reference policy as "adapter off", SFT's
``sequence_loss``, clip captions for narratives, and saving as a peft adapter directory.
LoRA (default q/k/v/o projections) goes into the language model only.

Frames are turned into model inputs here, with plain torch, because transformers' video
processors refuse to load without torchvision: each family has a small ``_VideoLayout``
that builds its pixel tensors (``pixel_values_videos`` or ``pixel_values``) and the
expanded run of placeholder tokens the model's forward expects. The placeholder tokens
are removed from the policy's distribution (logits set to -inf when sampling and when
scoring): a model that samples one breaks the scoring pass, which counts placeholders.

Log-probs stored in a ``Rollout`` are those of the distribution sampled from, the policy
at the sampling temperature T, ``log_softmax(logits / T)``, without top-p (the rule of
the ``Policy`` protocol), so they equal ``forward_responses(..., temperature=T)`` at the
same weights and serve directly as ``old_logprobs`` in a clipped objective. The model is
kept in eval mode (no dropout) for the same reason.

The vision tower is frozen (LoRA goes into the language model only), so what it makes of
a video -- the merged visual embeddings the language model reads in place of the
placeholder tokens -- is a function of the frames alone. Each video is encoded once and
kept (:class:`VisualFeatureCache`, bounded in entries and bytes); every row that shows
it, the G candidates of a group in ``generate`` and every log-prob pass of the update
(reference, old, new, values), gets those embeddings through transformers'
``mm_encoder_outputs`` instead of pixels. The reuse switches itself off when anything in
the tower can change (a trainable or LoRA-adapted weight) or the installed transformers
has no ``mm_encoder_outputs``.

``quantization="4bit"`` is QLoRA: the language model's linear layers are loaded in 4-bit
NF4 through bitsandbytes (compute in bf16; the vision tower and the output head stay
unquantised), prepared with peft's ``prepare_model_for_kbit_training``, and the LoRA
adapter trains on top. It needs CUDA.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlaif.core.records import Prompt, Rollout
from rlaif.plugins.policies.hf_common import (
    PeftPolicyBase,
    answer_nll,
    empty_outputs,
    prompt_history,
    restore_merged_adapters,
    sampling_temperature,
    save_merged_adapters,
    token_entropies,
    value_adapter_active,
)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
VALUE_HEAD_FILE = "value_head.safetensors"
POLICY_FILE = "rlaif_policy.json"
POLICY_FORMAT = "hf-vlm/1"
#: The captioning instruction of VLM-RLAIF's context-aware judging.
DESCRIBE_QUESTION = "Describe this video in detail."
FALLBACK_TEMPLATE = "USER: {video}\n{question}\nASSISTANT:"


# -- frames -> pixels ----------------------------------------------------------------
def frames_to_float(frames: Any) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[T, 3, H, W]`` in [0, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(frames))
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def resize_normalise(
    x: torch.Tensor, height: int, width: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``[T, 3, H, W]`` in [0, 1] -> bicubic-resized, normalised ``[T, 3, height, width]``."""
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's rule: both sides divisible by ``factor``, area within bounds, aspect kept."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _read_text(path: str, name: str) -> str | None:
    """A file of a local directory or (cached / online) hub repo; ``None`` if absent."""
    if os.path.isdir(path):
        local = os.path.join(path, name)
        resolved: str | None = local if os.path.isfile(local) else None
    else:
        try:
            from transformers.utils import cached_file

            resolved = cached_file(
                path, name, _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except Exception:
            resolved = None
    if not resolved:
        return None
    with open(resolved, encoding="utf-8") as f:
        return f.read()


def _read_json(path: str, name: str) -> dict[str, Any]:
    text = _read_text(path, name)
    return dict(json.loads(text)) if text else {}


def _preprocessor_settings(path: str) -> dict[str, Any]:
    """Image preprocessor settings overridden by the video ones, plus the video config
    alone under ``"video"`` (image sizes, e.g. Qwen's 12.8 MP cap, are wrong for frames)."""
    video = _read_json(path, "video_preprocessor_config.json")
    return {**_read_json(path, "preprocessor_config.json"), **video, "video": video}


# -- family layouts ------------------------------------------------------------------
@dataclass
class VideoInputs:
    """One video ready for the model: its pixel tensors and its placeholder text."""

    tensors: dict[str, torch.Tensor]
    placeholder: str


class _VideoLayout:
    """How one model family wants a video: pixel tensors, placeholder text, batching."""

    family = ""
    #: What the family's chat template renders for ``{"type": "video"}``; replaced by the
    #: expanded placeholder run.
    marker = "<video>"
    uses_mrope = False
    #: The model's ``get_<modality>_features`` encodes this family's frames; it reads
    #: ``encoder_keys`` of a collated batch, and ``pixel_keys`` are what precomputed
    #: features replace (the rest, e.g. Qwen's grid sizes, still go to the forward).
    modality = "video"
    encoder_keys: tuple[str, ...] = ("pixel_values_videos",)
    pixel_keys: tuple[str, ...] = ("pixel_values_videos",)

    def __init__(self, config: Any, tokenizer: Any, settings: dict[str, Any]) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.settings = settings

    def video_inputs(self, frames: Any, video: Any) -> VideoInputs:
        raise NotImplementedError

    def collate(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Per-row tensors -> batch keyword arguments (default: stack along a new batch dim)."""
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}

    def token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra per-token inputs the forward needs (e.g. Qwen's ``mm_token_type_ids``)."""
        return {}

    def encode_visual(self, model: Any, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """One video's embeddings as the language model reads them, ``[N_tokens, H]``: the
        model's own ``get_<modality>_features`` (tower, merger or projector, pooling),
        flattened in placeholder order."""
        batch = self.collate([tensors])
        pooled = getattr(model, f"get_{self.modality}_features")(
            **{key: batch[key] for key in self.encoder_keys}, return_dict=True
        ).pooler_output
        parts = pooled if isinstance(pooled, (list, tuple)) else [pooled]
        return torch.cat([p.reshape(-1, p.shape[-1]) for p in parts])

    def pack_features(self, rows: Sequence[torch.Tensor]) -> Any:
        """Per-row ``[N_i, H]`` embeddings -> the ``pooler_output`` the family's forward
        consumes (Qwen-VL and SmolVLM concatenate a sequence of per-item tensors)."""
        return tuple(rows)

    def placeholder_token_ids(self) -> set[int]:
        """Tokens that only mark visual input and must never be sampled."""
        ids: set[int] = set()
        for cfg in (self.config, getattr(self.config, "text_config", None)):
            if cfg is None:
                continue
            for attr in ("image_token_id", "video_token_id", "image_token_index", "video_token_index",
                         "vision_start_token_id", "vision_end_token_id", "vision_token_id"):
                value = getattr(cfg, attr, None)
                if isinstance(value, int) and value >= 0:
                    ids.add(value)
        return ids

    def _mean_std(self, mean: Sequence[float], std: Sequence[float]) -> tuple[Sequence[float], Sequence[float]]:
        return self.settings.get("image_mean", mean), self.settings.get("image_std", std)


class _LlavaOnevisionLayout(_VideoLayout):
    """``pixel_values_videos [B, T, 3, S, S]``; each frame gives ``ceil(n/2)^2`` tokens after
    the model's 2x2 bilinear pooling, plus one newline token per video."""

    family = "llava_onevision"

    def __init__(self, config: Any, tokenizer: Any, settings: dict[str, Any]) -> None:
        super().__init__(config, tokenizer, settings)
        vision = config.vision_config
        self.image_size = int(vision.image_size)
        side = self.image_size // int(vision.patch_size)
        self.tokens_per_frame = math.ceil(side / 2) ** 2
        self.video_token = tokenizer.convert_ids_to_tokens(int(config.video_token_index))
        self.marker = self.video_token
        self.mean, self.std = self._mean_std(SIGLIP_MEAN, SIGLIP_STD)

    def video_inputs(self, frames: Any, video: Any) -> VideoInputs:
        x = resize_normalise(frames_to_float(frames), self.image_size, self.image_size, self.mean, self.std)
        count = x.shape[0] * self.tokens_per_frame + 1
        return VideoInputs({"pixel_values_videos": x}, self.video_token * count)

    def pack_features(self, rows: Sequence[torch.Tensor]) -> Any:
        return torch.cat(list(rows)).unsqueeze(0)  # [1, sum N_i, H]; the forward flattens dims 0-1


class _QwenVLLayout(_VideoLayout):
    """Qwen2-VL / Qwen2.5-VL: frames resized to multiples of ``patch * merge``, padded to a
    multiple of ``temporal_patch_size`` frames, flattened into patches
    ``[t*h*w, 3*tp*p*p]`` with ``video_grid_thw = (t, h, w)``; ``t*h*w / merge^2`` tokens
    between ``<|vision_start|>`` and ``<|vision_end|>``; 3-D (mrope) positions."""

    family = "qwen_vl"
    marker = "<|video_pad|>"
    uses_mrope = True
    encoder_keys = ("pixel_values_videos", "video_grid_thw")

    def __init__(self, config: Any, tokenizer: Any, settings: dict[str, Any], max_pixels: int | None) -> None:
        super().__init__(config, tokenizer, settings)
        vision = config.vision_config
        self.patch = int(vision.patch_size)
        self.merge = int(vision.spatial_merge_size)
        self.temporal_patch = int(vision.temporal_patch_size)
        self.factor = self.patch * self.merge
        scale = (self.factor / 28) ** 2  # processor defaults are for 28-pixel merged patches
        video = settings.get("video") or {}
        size = video.get("size") or {}
        # Qwen's video defaults (transformers' Qwen2VLVideoProcessor) unless the checkpoint
        # ships a video preprocessor config.
        self.min_pixels = int(video.get("min_pixels") or size.get("shortest_edge") or 128 * 28 * 28 * scale)
        self.max_pixels = int(max_pixels or video.get("max_pixels") or size.get("longest_edge")
                              or 768 * 28 * 28 * scale)
        self.min_pixels = min(self.min_pixels, self.max_pixels // 2)  # only upscales tiny frames
        self.video_token_id = int(config.video_token_id)
        self.image_token_id = int(config.image_token_id)
        self.video_token = tokenizer.convert_ids_to_tokens(self.video_token_id)
        self.marker = self.video_token
        self.with_seconds = config.model_type == "qwen2_5_vl"
        self.mean, self.std = self._mean_std(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    def video_inputs(self, frames: Any, video: Any) -> VideoInputs:
        x = frames_to_float(frames)
        n_frames, _, height, width = x.shape
        h, w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        x = resize_normalise(x, h, w, self.mean, self.std)
        if pad := -x.shape[0] % self.temporal_patch:
            x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
        tp, p, m = self.temporal_patch, self.patch, self.merge
        grid_t, grid_h, grid_w = x.shape[0] // tp, h // p, w // p
        patches = x.reshape(grid_t, tp, 3, grid_h // m, m, p, grid_w // m, m, p)
        patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # Qwen2-VL's patch order
        flat = patches.reshape(grid_t * grid_h * grid_w, 3 * tp * p * p)
        tensors = {"pixel_values_videos": flat, "video_grid_thw": torch.tensor([grid_t, grid_h, grid_w])}
        if self.with_seconds:
            tensors["second_per_grid_ts"] = torch.tensor(tp / _sampled_fps(video, n_frames))
        count = grid_t * grid_h * grid_w // (m * m)
        return VideoInputs(tensors, self.video_token * count)

    def collate(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        out = {"video_grid_thw": torch.stack([i["video_grid_thw"] for i in items])}  # [B, 3]
        if "pixel_values_videos" in items[0]:  # absent when precomputed features stand in
            out["pixel_values_videos"] = torch.cat([i["pixel_values_videos"] for i in items])  # [sum t*h*w, D]
        if self.with_seconds:
            out["second_per_grid_ts"] = torch.stack([i["second_per_grid_ts"] for i in items])  # [B]
        return out

    def token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        types[input_ids == self.image_token_id] = 1
        types[input_ids == self.video_token_id] = 2
        return {"mm_token_type_ids": types}


class _SmolVLMLayout(_VideoLayout):
    """SmolVLM / SmolVLM2 / Idefics3 see a video as a series of images: ``pixel_values
    [B, T, 3, S, S]``, each frame wrapped as SmolVLM's processor does
    (``Frame from mm:ss:<fake><global-img><image>*n<fake>``)."""

    family = "smolvlm"
    modality = "image"
    encoder_keys = pixel_keys = ("pixel_values",)

    def __init__(self, config: Any, tokenizer: Any, settings: dict[str, Any]) -> None:
        super().__init__(config, tokenizer, settings)
        vision = config.vision_config
        self.image_size = int(vision.image_size)
        self.seq_len = int((self.image_size // int(vision.patch_size)) ** 2 / (int(config.scale_factor) ** 2))
        self.image_token = tokenizer.convert_ids_to_tokens(int(config.image_token_id))
        self.fake_token = getattr(tokenizer, "fake_image_token", None) or "<fake_token_around_image>"
        self.global_token = getattr(tokenizer, "global_image_token", None) or "<global-img>"
        self.mean, self.std = self._mean_std(SIGLIP_MEAN, SIGLIP_STD)

    def video_inputs(self, frames: Any, video: Any) -> VideoInputs:
        x = resize_normalise(frames_to_float(frames), self.image_size, self.image_size, self.mean, self.std)
        fps = _sampled_fps(video, x.shape[0])
        image = self.fake_token + self.global_token + self.image_token * self.seq_len + self.fake_token
        text = f"You are provided the following series of {x.shape[0]} frames from a video.\n"
        for i in range(x.shape[0]):
            seconds = int(i / fps)
            text += f"\nFrame from {seconds // 60:02d}:{seconds % 60:02d}:" + image
        return VideoInputs({"pixel_values": x}, text + "\n\n")

    def placeholder_token_ids(self) -> set[int]:
        ids = super().placeholder_token_ids()
        for token in (self.fake_token, self.global_token):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return ids


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _sampled_fps(video: Any, n_sampled: int) -> float:
    """Frames per second of the sampled frames, when the video's length is known (else 2)."""
    total, fps = getattr(video, "n_frames", None), getattr(video, "fps", None)
    if total and fps:
        return max(n_sampled / (total / fps), 1e-3)
    return 2.0


def make_layout(config: Any, tokenizer: Any, settings: dict[str, Any], max_pixels: int | None = None) -> _VideoLayout:
    model_type = config.model_type
    if model_type == "llava_onevision":
        return _LlavaOnevisionLayout(config, tokenizer, settings)
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        return _QwenVLLayout(config, tokenizer, settings, max_pixels)
    if model_type in ("smolvlm", "idefics3"):
        return _SmolVLMLayout(config, tokenizer, settings)
    raise ValueError(
        f"hf-vlm does not know how to feed video to model_type {model_type!r}; "
        "supported: llava_onevision, qwen2_vl, qwen2_5_vl, smolvlm, idefics3"
    )


# -- visual features ------------------------------------------------------------------
class VisualFeatureCache:
    """Each video's visual embeddings, made once by the frozen tower and reused by every
    row and pass that shows the video: least recently used first out, bounded in entries
    and in bytes (an entry larger than the byte bound is used once and not kept)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.computed = 0  # tower calls made through the cache (misses)
        self._entries: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[Any, ...], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = compute()
        self.computed += 1
        size = value.numel() * value.element_size()
        if size <= self.max_bytes and self.max_entries > 0:
            self._entries[key] = value
            self.nbytes += size
            while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self.nbytes -= old.numel() * old.element_size()
        return value

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0


def vision_parameters(model: Any) -> list[tuple[str, nn.Parameter]]:
    """The weights outside the language model and its output head (vision tower,
    merger or projector, LLaVA's newline embedding): what visual features depend on."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = {id(p) for p in base.get_decoder().parameters()}
    head = base.get_output_embeddings()
    if head is not None:
        text |= {id(p) for p in head.parameters()}
    return [(name, p) for name, p in base.named_parameters() if id(p) not in text]


# -- the policy ----------------------------------------------------------------------
@dataclass
class _EncodedPrompt:
    ids: list[int]
    video: dict[str, torch.Tensor] | None
    video_key: tuple[Any, ...] | None = None  # which frames: the visual feature cache's key


class HFVideoVLM(PeftPolicyBase):
    """A transformers video VLM with a LoRA adapter, as a Policy."""

    name = "hf-vlm"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        layout: _VideoLayout,
        *,
        processor: Any = None,
        chat_template: str | None = None,
        n_frames: int = 8,
        benchmark: Any = None,
        value_head: bool | nn.Linear = False,
        cache_size: int = 64,
        feature_cache_mb: float = 512.0,
    ) -> None:
        self._init_model(model, tokenizer, value_head)
        self.processor = processor
        self.layout = layout
        self.chat_template = chat_template
        self.n_frames = n_frames
        self.benchmark = benchmark
        self.suppressed = sorted(layout.placeholder_token_ids() - set(self.eos_ids))
        self._cache_size = cache_size
        self._videos: OrderedDict[tuple[Any, ...], VideoInputs] = OrderedDict()
        self._prompts: OrderedDict[tuple[Any, ...], _EncodedPrompt] = OrderedDict()
        #: Encode each video once and feed its embeddings to every row and pass (see the
        #: module docstring); ``False`` sends pixels every time, as transformers does.
        self.reuse_visual_features = feature_cache_mb > 0
        self._features = VisualFeatureCache(cache_size, int(feature_cache_mb * 2**20))
        self._vision_params = vision_parameters(model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._accepts_features = "mm_encoder_outputs" in inspect.signature(base.forward).parameters and hasattr(
            base, f"get_{layout.modality}_features")

    # -- inputs ------------------------------------------------------------------------
    def _frames(self, video: Any, frame_range: Sequence[int] | None) -> Any:
        if self.benchmark is None:
            raise RuntimeError("hf-vlm needs a benchmark to decode frames (wire benchmark=...)")
        if frame_range is None:
            return self.benchmark.frames(video, self.n_frames)
        start, stop = int(frame_range[0]), int(frame_range[1])
        if _accepts(self.benchmark.frames, "frame_range"):
            return self.benchmark.frames(video, self.n_frames, frame_range=(start, stop))
        # A benchmark without clip support: decode every frame and sample the clip here.
        frames = np.asarray(self.benchmark.frames(video))
        stop = max(min(stop, len(frames)), start + 1)
        return frames[np.linspace(start, stop - 1, self.n_frames).round().astype(int)]

    def _video_key(self, video: Any, frame_range: Sequence[int] | None) -> tuple[Any, ...]:
        clip = tuple(int(c) for c in frame_range) if frame_range is not None else None
        return (video.video_id, video.path, self.n_frames, clip)

    def _video(self, video: Any, frame_range: Sequence[int] | None = None) -> VideoInputs:
        key = self._video_key(video, frame_range)
        clip = key[-1]
        if key not in self._videos:
            self._videos[key] = self.layout.video_inputs(self._frames(video, clip), video)
            while len(self._videos) > self._cache_size:
                self._videos.popitem(last=False)
        self._videos.move_to_end(key)
        return self._videos[key]

    def render(self, question: str, *, with_video: bool = True, history: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt text (chat template, or a plain fallback) with the bare video marker.

        ``history`` holds the earlier ``(question, answer)`` turns of a conversation: they
        become earlier user / assistant messages, the video attached to the first user
        turn (as VLM-RLAIF's conversations carry it), and only the last question is left
        open for the answer. Without a template each earlier turn is the fallback's
        ``USER:`` / ``ASSISTANT:`` lines with the answer after ``ASSISTANT:``."""
        marker = self.layout.marker
        turns: list[tuple[str, str | None]] = [*history, (question, None)]
        if self.chat_template:
            messages: list[dict[str, Any]] = []
            for k, (q, a) in enumerate(turns):
                video = [{"type": "video"}] if with_video and k == 0 else []
                messages.append({"role": "user", "content": [*video, {"type": "text", "text": q}]})
                if a is not None:
                    messages.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
            text = self.tokenizer.apply_chat_template(
                messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True,
            )
            if not with_video or marker in text:
                return str(text)
            # A template that ignores video content: put the marker before the first question.
            turns[0] = (f"{marker}\n{turns[0][0]}", turns[0][1])
            return self.render(turns[-1][0], with_video=False, history=[(q, str(a)) for q, a in turns[:-1]])
        lines = []
        for k, (q, a) in enumerate(turns):
            if with_video and k == 0:
                line = FALLBACK_TEMPLATE.format(video=marker, question=q)
            else:
                line = FALLBACK_TEMPLATE.replace("{video}\n", "").format(question=q)
            lines.append(line if a is None else f"{line} {a}")
        return "\n".join(lines)

    def _encode(self, prompt: Prompt) -> _EncodedPrompt:
        """Prompt token ids (placeholders expanded) and the video's pixel tensors.
        ``prompt.meta["frame_range"] = [start, stop)`` restricts the frames to one clip;
        ``prompt.meta["history"]`` (earlier turns) is rendered before the question."""
        frame_range = prompt.meta.get("frame_range")
        clip = tuple(int(c) for c in frame_range) if frame_range is not None else None
        history = prompt_history(prompt)
        key = (prompt.prompt_id, prompt.question, history, prompt.video.video_id, prompt.video.path, self.n_frames,
               clip)
        if key not in self._prompts:
            video = self._video(prompt.video, clip)
            text = self.render(prompt.question, history=history).replace(self.layout.marker, video.placeholder, 1)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._prompts[key] = _EncodedPrompt(list(ids), video.tensors, self._video_key(prompt.video, clip))
            while len(self._prompts) > self._cache_size:
                self._prompts.popitem(last=False)
        self._prompts.move_to_end(key)
        return self._prompts[key]

    def _batch(
        self, prompts: Sequence[_EncodedPrompt], responses: Sequence[Sequence[int]] | None = None
    ) -> tuple[dict[str, Any], int, int]:
        """Prompts left-padded so every response starts at column ``P``, responses
        right-padded to ``L`` -> (model kwargs, P, L)."""
        width = max(len(p.ids) for p in prompts)
        length = max((len(r) for r in responses), default=0) if responses is not None else 0
        ids = torch.full((len(prompts), width + length), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p.ids) : width] = torch.tensor(p.ids)
            mask[row, width - len(p.ids) : width] = 1
            if responses is not None and len(responses[row]):
                ids[row, width : width + len(responses[row])] = torch.tensor(list(responses[row]))
                mask[row, width : width + len(responses[row])] = 1
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, **self.layout.token_inputs(ids)}
        videos = [p.video for p in prompts if p.video is not None]
        if videos:
            if len(videos) != len(prompts):
                raise ValueError("a batch must not mix prompts with and without video")
            if self.reuses_visual_features():
                from transformers.modeling_outputs import BaseModelOutputWithPooling

                pixels = set(self.layout.pixel_keys)
                kwargs.update(self.layout.collate([{k: v for k, v in video.items() if k not in pixels}
                                                   for video in videos]))
                pooled = self.layout.pack_features(self._row_features(prompts))
                kwargs["mm_encoder_outputs"] = {self.layout.modality: BaseModelOutputWithPooling(pooler_output=pooled)}
            else:
                kwargs.update(self.layout.collate(videos))
        for key, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                kwargs[key] = self._to_model(key, value)
        return kwargs, width, length

    def _to_model(self, key: str, value: torch.Tensor) -> torch.Tensor:
        if torch.is_floating_point(value) and key != "second_per_grid_ts":
            value = value.to(self.dtype)
        return value.to(self.device)

    # -- visual features ---------------------------------------------------------------
    def reuses_visual_features(self) -> bool:
        """Whether rows get cached visual embeddings instead of pixels: asked for, the
        model accepts them, and nothing in the vision tower can change (no weight there
        trains and none carries a LoRA adapter, which switching adapters would change)."""
        return (self.reuse_visual_features and self._accepts_features
                and not any(p.requires_grad or "lora_" in name for name, p in self._vision_params))

    def _row_features(self, prompts: Sequence[_EncodedPrompt]) -> list[torch.Tensor]:
        """Each row's visual embeddings ``[N_tokens, H]``, one tower call per distinct
        video not yet cached. Keyed by the frames and the autocast dtype in force (bf16
        autocast changes the tower's output)."""
        device = self.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        seen: dict[tuple[Any, ...], torch.Tensor] = {}
        rows = []
        for prompt in prompts:
            video = prompt.video or {}
            if prompt.video_key is None:  # frames of unknown origin: shared within the batch, never kept
                key: tuple[Any, ...] = ("unkeyed", id(video))
                if key not in seen:
                    seen[key] = self._encode_visual(video)
            else:
                key = (prompt.video_key, autocast)
                if key not in seen:
                    seen[key] = self._features.get(key, partial(self._encode_visual, video))
            rows.append(seen[key])
        return rows

    @torch.no_grad()
    def _encode_visual(self, video: dict[str, torch.Tensor]) -> torch.Tensor:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return self.layout.encode_visual(base, {k: self._to_model(k, v) for k, v in video.items()})

    def shard(self, wrap: Any) -> None:
        # The vision tower runs outside the language model's forward (encode_visual, the
        # feature cache), so its sharded weights would never be gathered, and cache hits,
        # which differ per rank, would put the ranks' collectives out of step.
        from rlaif.core.errors import UsageError

        raise UsageError("hf-vlm cannot be sharded yet (its vision tower runs outside the language model's "
                         "forward); use [run] sharding = \"none\"")

    def feature_cache_bytes(self) -> int:
        """Bytes held by the visual feature cache (on the model's device): the memory
        price of encoding each video once."""
        return self._features.nbytes

    def clear_feature_cache(self) -> None:
        """Drop every cached visual embedding (e.g. between steps, to hold one step's)."""
        self._features.clear()

    def to(self, device: Any) -> Any:
        self.clear_feature_cache()  # cached embeddings live on the old device
        return super().to(device)

    def policy_logits(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``logits / temperature`` ``[..., V]`` in float32 with the placeholder tokens
        removed from the distribution (``-inf``; out of place: autograd-safe)."""
        logits = logits.float()
        if temperature != 1.0:
            logits = logits / temperature
        if self.suppressed:
            banned = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            banned[self.suppressed] = True
            logits = logits.masked_fill(banned, float("-inf"))
        return logits

    def token_logprobs(self, logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Log-prob of ``targets`` ``[...]`` under :meth:`policy_logits` ``[..., V]``."""
        logits = self.policy_logits(logits, temperature)
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)

    # -- sampling ----------------------------------------------------------------------
    @torch.no_grad()
    def _sample(
        self, encoded: Sequence[_EncodedPrompt], *, max_new_tokens: int, temperature: float,
        top_p: float, greedy: bool,
    ) -> list[tuple[list[int], list[float], bool]]:
        from transformers import GenerationConfig

        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature}")
        kwargs, width, _ = self._batch(encoded)
        sampling = {} if greedy else {"temperature": float(temperature), "top_p": float(top_p), "top_k": 0}
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=not greedy, num_beams=1,
            eos_token_id=list(self.eos_ids), pad_token_id=self.pad_id,
            suppress_tokens=list(self.suppressed) or None, repetition_penalty=1.0,
            no_repeat_ngram_size=0, output_logits=True, return_dict_in_generate=True, **sampling,
        )
        out = self.model.generate(**kwargs, generation_config=config)
        new_tokens = out.sequences[:, width:]  # [B, S]
        # Log-probs of the sampled distribution (temperature T, placeholders removed) from
        # the raw logits, step by step so that only [B, V] is ever materialised in float32.
        scale = sampling_temperature(temperature)
        steps = [self.token_logprobs(step, new_tokens[:, t], scale) for t, step in enumerate(out.logits)]
        logprobs = torch.stack(steps, dim=1) if steps else new_tokens.new_zeros(new_tokens.shape).float()  # [B, S]
        results = []
        eos = torch.tensor(self.eos_ids, device=new_tokens.device)
        for row in range(new_tokens.shape[0]):
            tokens = new_tokens[row]
            hits = torch.isin(tokens, eos).nonzero()
            finished = bool(len(hits))
            end = int(hits[0]) + 1 if finished else tokens.shape[0]
            results.append((tokens[:end].tolist(), logprobs[row, :end].float().tolist(), finished))
        return results

    def generate(
        self, prompts: Sequence[Prompt], n: int = 1, *, max_new_tokens: int = 32, temperature: float = 1.0,
        top_p: float = 1.0, greedy: bool = False,
    ) -> list[list[Rollout]]:
        """``n`` candidates per prompt, all ``len(prompts) * n`` rows in one batch through
        ``model.generate`` (KV cache). ``token_ids`` are the response only, ending with EOS
        when the model stopped (then ``finished``); ``logprobs`` are per-token log-probs
        under the policy at ``temperature`` (see the module docstring)."""
        if not prompts:
            return []
        encoded = [self._encode(p) for p in prompts]
        rows = [e for e in encoded for _ in range(n)]
        sampled = self._sample(rows, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                               greedy=greedy)
        return self._rollout_groups(prompts, n, sampled)

    def complete(self, texts: Sequence[str], max_new_tokens: int = 48, greedy: bool = True,
                 temperature: float = 1.0) -> list[str]:
        """Text-only completions (e.g. judging prompts): each text is one user turn of the
        chat template when the model has one, and no video is attached."""
        if not texts:
            return []
        encoded = [_EncodedPrompt(self._text_ids(self.render(t, with_video=False)), None) for t in texts]
        sampled = self._sample(encoded, max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0,
                               greedy=greedy)
        return [self._decode(tokens) for tokens, _, _ in sampled]

    def describe(self, video: Any, n_clips: int = 3, max_new_tokens: int = 48) -> list[str]:
        """Greedy captions of ``n_clips`` consecutive clips of ``video`` (VLM-RLAIF's
        "Describe this video in detail." narrative); join them for a judge's context."""
        total = video.n_frames or len(self._frames_all(video))
        n_clips = max(1, min(n_clips, total))
        bounds = np.linspace(0, total, n_clips + 1).round().astype(int)
        prompts = [
            Prompt(prompt_id=f"{video.video_id}#clip{i}", video=video, question=DESCRIBE_QUESTION, qtype="caption",
                   meta={"frame_range": [int(bounds[i]), int(bounds[i + 1])]})
            for i in range(n_clips)
        ]
        return [g[0].text for g in self.generate(prompts, 1, max_new_tokens=max_new_tokens, greedy=True)]

    def _frames_all(self, video: Any) -> Any:
        if self.benchmark is None:
            raise RuntimeError("hf-vlm needs a benchmark to decode frames (wire benchmark=...)")
        return self.benchmark.frames(video)

    # -- scoring -----------------------------------------------------------------------
    def forward_responses(
        self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout], *, with_values: bool = False,
        with_entropies: bool = False, temperature: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced log-probs of ``rollouts[i]`` given ``prompts[i]`` (with grad).

        Returns ``logprobs`` ``[N, L]``, ``mask`` ``[N, L]`` (float, 1 on response tokens)
        and, with ``with_values``, ``values`` ``[N, L]``: the value model (value adapter on,
        a forward of its own) on the hidden state that predicts each token; with
        ``with_entropies``, ``entropies`` ``[N, L]``: the policy's entropy there."""
        if len(prompts) != len(rollouts):
            raise ValueError(f"{len(prompts)} prompts for {len(rollouts)} rollouts; pass one prompt per rollout")
        return self._score([self._encode(p) for p in prompts], [list(r.token_ids) for r in rollouts],
                           with_values=with_values, with_entropies=with_entropies, temperature=temperature)

    def _score(
        self, encoded: Sequence[_EncodedPrompt], responses: Sequence[Sequence[int]], *, with_values: bool = False,
        with_entropies: bool = False, temperature: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        kwargs, width, length = self._batch(encoded, responses)
        mask = kwargs["attention_mask"][:, width:].float()  # [N, L]
        if length == 0:
            return empty_outputs(len(encoded), mask, with_values=with_values, with_entropies=with_entropies)
        if not self.layout.uses_mrope:
            # The positions generate() gives left-padded rows; mrope models derive theirs
            # from mm_token_type_ids and the attention mask.
            position_ids = kwargs["attention_mask"].long().cumsum(-1) - 1
            kwargs["position_ids"] = position_ids.masked_fill(kwargs["attention_mask"] == 0, 0)
        with self._checkpointing():
            out = self.model(**kwargs, use_cache=False, logits_to_keep=length + 1)
        targets = kwargs["input_ids"][:, width:]  # [N, L]
        # Kept logits sit at positions P-1 .. P+L-1; position P-1+t predicts response token t.
        logprobs = self.token_logprobs(out.logits[:, :-1], targets, temperature) * mask  # [N, L]
        result = {"logprobs": logprobs, "mask": mask}
        if with_entropies:
            result["entropies"] = token_entropies(self.policy_logits(out.logits[:, :-1], temperature)) * mask
        if with_values:  # the value model: its own adapter on the same frozen base
            head = self.add_value_head()
            # No activation checkpointing here: its recompute in backward would run with
            # whichever adapter is on by then (the policy's).
            with value_adapter_active(self.model):
                critic = self.model(**kwargs, use_cache=False, logits_to_keep=1, output_hidden_states=True)
            hidden = critic.hidden_states[-1][:, width - 1 : width - 1 + length]  # [N, L, H]
            result["values"] = head(hidden.to(head.weight.dtype)).squeeze(-1) * mask
        return result

    @contextmanager
    def _checkpointing(self) -> Iterator[None]:
        """Turn on activation checkpointing for one differentiable pass.

        transformers checkpoints a decoder layer only when that layer is in training mode;
        flipping just the layers' own flags (not their children's) keeps attention dropout
        off, and leaving them off otherwise keeps the KV cache working in ``generate``."""
        from transformers.modeling_layers import GradientCheckpointingLayer

        layers = [m for m in self.model.modules()
                  if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
        if not (layers and torch.is_grad_enabled()):
            yield
            return
        for layer in layers:
            layer.training = True
        try:
            yield
        finally:
            for layer in layers:
                layer.training = False

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of a target answer as the policy would produce it, then EOS."""
        text = answer.strip() if self.chat_template else " " + answer.strip()
        return [*self._text_ids(text), self.eos_ids[0]]

    def sequence_loss(self, prompts: Sequence[Prompt], answers: Sequence[str], reduction: str = "sequence"
                      ) -> torch.Tensor:
        """Cross-entropy of ``answer + EOS`` given each prompt (SFT): the mean over each
        answer's tokens averaged over answers (``"sequence"``), or over all tokens
        (``"token"``)."""
        out = self._score([self._encode(p) for p in prompts], [self.answer_ids(a) for a in answers])
        return answer_nll(out, reduction)

    def last_hidden_states(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[int]]) -> torch.Tensor:
        """``LastHiddenState``: the final hidden state ``[N, H]`` (with grad, active
        adapter on) of each response's last token, for a reward model's scalar head."""
        if any(not len(r) for r in responses):
            raise ValueError("every response needs at least one token")
        kwargs, width, _ = self._batch([self._encode(p) for p in prompts], responses)
        if not self.layout.uses_mrope:
            position_ids = kwargs["attention_mask"].long().cumsum(-1) - 1
            kwargs["position_ids"] = position_ids.masked_fill(kwargs["attention_mask"] == 0, 0)
        out = self.model(**kwargs, use_cache=False, logits_to_keep=1, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # [N, P + L, H]
        last = torch.tensor([width + len(r) - 1 for r in responses], device=hidden.device)  # [N]
        return hidden[torch.arange(len(responses), device=hidden.device), last]  # [N, H]

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> None:
        """A peft adapter directory (``adapter_config.json``, ``adapter_model.safetensors``)
        plus the tokenizer, the value head (if any) and this wrapper's settings; load it
        again with ``build_hf_vlm(directory, new_adapter=False)``."""
        from safetensors.torch import save_file

        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        self.model.save_pretrained(directory, selected_adapters=[self.model.active_adapter])  # not the critic
        self.tokenizer.save_pretrained(directory)
        if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
            with open(os.path.join(directory, "chat_template.jinja"), "w", encoding="utf-8") as f:
                f.write(self.chat_template)
        if self.value_head is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in self.value_head.state_dict().items()}
            save_file(state, os.path.join(directory, VALUE_HEAD_FILE))
        save_merged_adapters(directory, self.merged_adapters)
        with open(os.path.join(directory, POLICY_FILE), "w", encoding="utf-8") as f:
            json.dump({"format": POLICY_FORMAT, "merged_adapters": len(self.merged_adapters), "n_frames": self.n_frames, "policy_version": self.policy_version,
                       "family": self.layout.family, "value_head": self.value_head is not None}, f, indent=2)


def language_model_lora_targets(model: Any, targets: Sequence[str]) -> str:
    """A peft ``target_modules`` regex matching ``targets`` inside the language model only
    (vision towers use the same projection names)."""
    decoder = model.get_decoder()
    prefix = next(name for name, module in model.named_modules() if module is decoder)
    names = "|".join(re.escape(t) for t in targets)
    return rf"{re.escape(prefix)}\..*\.({names})"


def _load_chat_template(path: str, processor: Any, tokenizer: Any) -> str | None:
    for source in (processor, tokenizer):
        template = getattr(source, "chat_template", None)
        if isinstance(template, str) and template:
            return template
    template = _read_text(path, "chat_template.jinja") or _read_json(path, "chat_template.json").get("chat_template")
    return template if isinstance(template, str) and template else None


def _load_text_side(path: str) -> tuple[Any, Any]:
    """(processor or None, tokenizer). The processor is optional: its video part needs
    torchvision, and everything visual is done here anyway."""
    from transformers import AutoProcessor, AutoTokenizer

    processor = None
    try:
        processor = AutoProcessor.from_pretrained(path)
    except Exception:
        processor = None
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        if processor is not None and hasattr(processor, "convert_tokens_to_ids"):
            tokenizer, processor = processor, None
        else:
            tokenizer = AutoTokenizer.from_pretrained(path)
    return processor, tokenizer


#: Modules QLoRA leaves unquantised: the vision side (small, and it never trains) and the
#: output head, as in the QLoRA recipe. transformers 5 matches a name from its start (the
#: ``model.`` forms), 4.x as a substring (the bare forms, its older module paths).
_VISION_MODULES = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "connector")
QLORA_SKIP_MODULES = (*_VISION_MODULES, *(f"model.{m}" for m in _VISION_MODULES), "lm_head")


def qlora_config(quantization: str | None, device: str) -> Any:
    """The ``BitsAndBytesConfig`` of ``quantization`` (``None``/"none" or "4bit": NF4 with
    double quantisation, bf16 compute), or ``None``. Refused where it cannot run."""
    from rlaif.core.errors import UsageError

    if quantization in (None, "", "none", "no"):
        return None
    if quantization != "4bit":
        raise UsageError(f"hf-vlm quantization must be \"4bit\" or none, got {quantization!r}")
    if not (device.startswith("cuda") and torch.cuda.is_available()):
        raise UsageError(f"hf-vlm quantization = \"4bit\" (QLoRA) needs a CUDA GPU; this run is on {device!r}")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise UsageError(f"hf-vlm quantization = \"4bit\" needs bitsandbytes: pip install bitsandbytes ({err})") from err
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True, llm_int8_skip_modules=list(QLORA_SKIP_MODULES),
    )


def _resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)  # type: ignore[no-any-return]


def _attach_adapter(
    model: Any, path: str, adapter_config: dict[str, Any], new_adapter: bool, lora_r: int, lora_alpha: int,
    lora_dropout: float, lora_targets: Sequence[str],
) -> tuple[Any, nn.Linear | None, dict[str, Any]]:
    """Continue the adapter saved at ``path``, or merge it (if there is one) into the
    weights and add a fresh one. Returns (peft model, saved value head, saved settings)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file

    if adapter_config and not new_adapter:
        model = PeftModel.from_pretrained(model, path, is_trainable=True)
        saved_head: nn.Linear | None = None
        value_file = os.path.join(path, VALUE_HEAD_FILE)
        if os.path.isfile(value_file):
            saved_head = nn.Linear(int(model.config.get_text_config().hidden_size), 1)
            saved_head.load_state_dict(load_file(value_file))
        return model, saved_head, _read_json(path, POLICY_FILE)
    if adapter_config:  # e.g. an SFT adapter: it becomes part of the reference weights
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    lora = LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias="none",
        target_modules=language_model_lora_targets(model, lora_targets),
    )
    return get_peft_model(model, lora), None, {}


def build_hf_vlm(
    path: str,
    lora_r: int = 16,
    lora_alpha: int = 32,
    n_frames: int = 8,
    new_adapter: bool = True,
    seed: int = 0,
    benchmark: Any = None,
    value_head: bool = False,
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS,
    lora_dropout: float = 0.0,
    dtype: str = "auto",
    device: str = "auto",
    max_frame_pixels: int | None = None,
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
    feature_cache_mb: float = 512.0,
    quantization: str | None = None,
) -> HFVideoVLM:
    """Load a video VLM (local directory or hub id) and wrap it in a LoRA adapter.

    ``path`` may also be an adapter directory written by :meth:`HFVideoVLM.save` (or any
    peft adapter): its base model is loaded from ``base_model_name_or_path``. Then
    ``new_adapter=True`` merges that adapter into the weights (it becomes the reference,
    e.g. an SFT adapter) and adds a fresh one; ``new_adapter=False`` keeps training it.
    ``lora_targets`` are module names matched inside the language model only;
    ``value_head`` adds a zero-initialised value head (PPO).
    ``max_frame_pixels`` caps the per-frame resolution of Qwen-VL models.
    ``feature_cache_mb`` bounds the cache of visual embeddings (each video encoded once
    and reused by every candidate and pass; 0 turns the reuse off).
    ``quantization="4bit"`` loads the language model in 4-bit NF4 (QLoRA; CUDA only)."""
    from transformers import AutoModelForImageTextToText, GenerationConfig

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    quantization_config = qlora_config(quantization, device)
    torch.manual_seed(seed)
    adapter_config = _read_json(path, "adapter_config.json")
    base_path = str(adapter_config.get("base_model_name_or_path") or path) if adapter_config else path
    if not adapter_config and not new_adapter:
        raise ValueError(f"new_adapter=False needs a saved adapter directory, and {path!r} has no adapter_config.json")

    load_kwargs: dict[str, Any] = {"dtype": _resolve_dtype(dtype, device), "device_map": device}
    if attn_implementation:
        load_kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        load_kwargs["quantization_config"] = quantization_config
    model = AutoModelForImageTextToText.from_pretrained(base_path, **load_kwargs)
    # Sampling settings come from each generate() call only, never from the checkpoint's
    # generation_config.json (Qwen ships top_k=1, temperature=0.1 there).
    old = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=old.bos_token_id, eos_token_id=old.eos_token_id, pad_token_id=old.pad_token_id
    )
    model.requires_grad_(False)
    if quantization_config is not None:
        from peft import prepare_model_for_kbit_training

        # Freezes the base, upcasts its unquantised weights (norms, embeddings, vision
        # tower, head) to float32 for stable LoRA training, and sets up checkpointing.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )

    processor, tokenizer = _load_text_side(path if _has_tokenizer(path) else base_path)
    chat_template = _load_chat_template(path, processor, tokenizer) or _load_chat_template(
        base_path, processor, tokenizer
    )

    with warnings.catch_warnings():  # peft asks transformers a deprecated question
        warnings.simplefilter("ignore", FutureWarning)
        model, merged = restore_merged_adapters(model, path, adapter_config, new_adapter)
        model, saved_head, saved = _attach_adapter(
            model, path, adapter_config, new_adapter, lora_r, lora_alpha, lora_dropout, lora_targets
        )
    if gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (frozen embeddings).
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    layout = make_layout(model.config, tokenizer, _preprocessor_settings(base_path), max_frame_pixels)
    policy = HFVideoVLM(
        model, tokenizer, layout, processor=processor, chat_template=chat_template,
        n_frames=n_frames, benchmark=benchmark, value_head=saved_head if saved_head is not None else value_head,
        feature_cache_mb=feature_cache_mb,
    )
    policy.policy_version = int(saved.get("policy_version", 0))
    policy.merged_adapters = merged
    return policy


def _has_tokenizer(path: str) -> bool:
    if not os.path.isdir(path):
        return True
    return any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json"))
