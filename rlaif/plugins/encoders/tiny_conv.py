"""The ``tiny-conv`` encoder: a small CNN per frame, pre-trained CLIP-style on the world's
clips and captions, then frozen, with Video-ChatGPT pooling.

It stands in for the frozen CLIP ViT of VLM-RLAIF (methods.md §2) at a size that trains in
well under a minute on two CPU cores. Each frame (any size, resized to 32x32, plus two
position-modulated channels so that features can say *where* something is) becomes a 4x4
grid of ``feature_dim`` patch features; Video-ChatGPT pooling then gives T temporal tokens (each
frame's mean over patches) followed by P = 16 spatial tokens (each patch's mean over
frames): ``encode(frames [T, H, W, 3]) -> [T + P, feature_dim]``.

Pre-training (:func:`pretrain_tiny_conv`) is contrastive: a clip's pooled tokens (its
temporal tokens in order plus the mean of its spatial tokens, through one linear head)
are matched against its caption embedded by a hashed bag of words and word pairs. Clips
with identical captions count as positives of each other, and each caption also brings
hard negatives with one word swapped for a similar one (another colour, shape, size or
direction; NegCLIP), so every attribute has to be present in the tokens. The clips come
from fresh scenes where the benchmark offers them (``benchmark.fresh_scenes``: videos in
no split, cut as a narrative builder cuts them, passed through the codec), else from the
labelled ``sft`` split; never from ``rl`` or ``test``. (A supervised objective, per-frame
colour-shape presence, counts and positions, was tried and gave the same QA accuracy
with worse captions.) The result is cached (``model.safetensors`` + ``config.json``)
under ``$RLAIF_CACHE`` (default ``~/.cache/rlaif``) keyed by the world's fingerprint, so
it is trained once per world and reused.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlaif.core.cache import cache_root, cached_build

#: Bumped when the architecture or the pre-training recipe changes (invalidates caches).
RECIPE_VERSION = "tiny-conv/5"


_E = TypeVar("_E", bound="SavedEncoder")


class SavedEncoder(nn.Module):
    """What the embedded encoders share: frozen use, and a Hugging Face-style folder
    (``config.json`` with a ``format`` key, ``model.safetensors`` with the state)."""

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def freeze(self: _E) -> _E:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()},
                  str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def from_pretrained(cls: type[_E], directory: str | Path) -> _E:
        """Load a saved encoder, frozen and in eval mode."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        config.pop("format", None)
        encoder = cls(**config)
        encoder.load_state_dict(load_file(str(directory / "model.safetensors")))
        return encoder.freeze()


class TinyConvEncoder(SavedEncoder):
    """Frozen-after-pre-training CNN frame encoder with Video-ChatGPT pooling."""

    name = "tiny-conv"
    where: torch.Tensor  # [P, 2] patch centres in [-1, 1] (a buffer)

    def __init__(self, feature_dim: int = 64, width: int = 32, image_size: int = 32, n_frames: int = 8) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.width = width
        self.image_size = image_size
        self.n_frames = n_frames  # how many frames callers should sample per video
        self.grid = image_size // 8  # three stride-2 convolutions
        self.n_spatial = self.grid * self.grid
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, feature_dim, 3, stride=2, padding=1),
        ).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # ~1.7x faster on CPU
        self.norm = nn.LayerNorm(feature_dim)
        centres = (torch.arange(self.grid, dtype=torch.float32) + 0.5) / self.grid * 2 - 1
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("where", torch.stack([xs, ys], -1).view(-1, 2), persistent=False)  # [P, 2]

    # -- features --------------------------------------------------------------------
    def patch_features(self, frames: Any) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` (numpy or tensor) -> patch features ``[T, P, D]``.

        The convolutions see colours only, so what an object looks like is coded the same
        wherever it is; position enters afterwards, multiplicatively: of the D channels,
        the last quarter is a content channel times the patch's x and the quarter before it
        one times its y. Averaged over patches (a temporal token), these say where each
        kind of object is in that frame, so motion survives Video-ChatGPT pooling."""
        x = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
        x = x.to(self.where.device).permute(0, 3, 1, 2).float() / 255.0  # [T, 3, H, W]
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="area")
        feats = self.net((x - 0.5).contiguous(memory_format=torch.channels_last))  # [T, D, g, g]
        z = self.norm(feats.flatten(2).transpose(1, 2))  # [T, P, D]
        q = self.feature_dim // 4
        return torch.cat([z[..., : -2 * q], z[..., -2 * q : -q] * self.where[:, 1:], z[..., -q:] * self.where[:, :1]], -1)

    @staticmethod
    def pool(patches: torch.Tensor) -> torch.Tensor:
        """Video-ChatGPT pooling: ``[T, P, D]`` -> ``[T + P, D]`` (temporal then spatial)."""
        return torch.cat([patches.mean(dim=1), patches.mean(dim=0)], dim=0)

    def encode(self, frames: Any) -> torch.Tensor:
        """uint8 frames ``[T, H, W, 3]`` -> pooled tokens ``[T + P, feature_dim]`` (no grad)."""
        with torch.no_grad():
            return self.pool(self.patch_features(frames))

    # -- persistence -----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"format": RECIPE_VERSION, "feature_dim": self.feature_dim, "width": self.width,
                "image_size": self.image_size, "n_frames": self.n_frames}


# -- pre-training ------------------------------------------------------------------------
class _CaptionEncoder(nn.Module):
    """Hashed bag of words and adjacent word pairs -> embedding (the CLIP text tower)."""

    def __init__(self, dim: int, buckets: int = 4096) -> None:
        super().__init__()
        self.buckets = buckets
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean")
        self.proj = nn.Linear(dim, dim)

    def ids(self, text: str) -> list[int]:
        words = text.lower().replace(".", " ").replace(",", " ").split()
        grams = words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]
        return [zlib.crc32(g.encode()) % self.buckets for g in grams] or [0]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        ids = [self.ids(t) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        flat = torch.tensor([x for i in ids for x in i])
        return self.proj(self.bag(flat, offsets))


def _words(text: str) -> list[str]:
    return text.lower().replace(".", " . ").replace(",", " , ").split()


def swap_table(captions: Sequence[str], k: int = 4, min_similarity: float = 0.5) -> dict[str, list[str]]:
    """For each caption word, up to ``k`` words used in the same contexts (cosine of
    left/right-neighbour counts): colours for colours, shapes for shapes, directions for
    directions. Used to make hard negative captions, as NegCLIP does, so the encoder
    must encode every attribute rather than just enough to tell a batch apart."""
    vocab = sorted({w for c in captions for w in _words(c)})
    index = {w: i for i, w in enumerate(vocab)}
    n = len(vocab)
    counts = np.zeros((n, 2 * (n + 1)), np.float64)
    for caption in captions:
        ws = _words(caption)
        for i, w in enumerate(ws):
            left = index[ws[i - 1]] if i > 0 else n
            right = index[ws[i + 1]] if i + 1 < len(ws) else n
            counts[index[w], left] += 1
            counts[index[w], n + 1 + right] += 1
    unit = counts / np.maximum(np.linalg.norm(counts, axis=1, keepdims=True), 1e-9)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -1.0)
    frequency = {w: sum(w in set(_words(c)) for c in captions) / max(1, len(captions)) for w in vocab}
    table = {}
    for w, i in index.items():
        if not w.isalpha() or frequency[w] > 0.5:  # "the", "a": swapping them says little
            continue
        best = [vocab[j] for j in np.argsort(-sim[i])[:k] if sim[i, j] >= min_similarity and vocab[j].isalpha()]
        if best:
            table[w] = best
    return table


def perturb_caption(caption: str, table: dict[str, list[str]], rng: random.Random) -> str | None:
    """The caption with one word swapped for a similar one; None when nothing can swap."""
    ws = _words(caption)
    spots = [i for i, w in enumerate(ws) if w in table]
    if not spots:
        return None
    i = rng.choice(spots)
    ws[i] = rng.choice(table[ws[i]])
    return " ".join(ws).replace(" .", ".").replace(" ,", ",")


def _clip_windows(n_total: int, n_clips: int, per_clip: int) -> list[np.ndarray]:
    """Frame indices of each of ``n_clips`` equal clips, ``per_clip`` frames each."""
    out = []
    for i in range(n_clips):
        lo, hi = i * n_total // n_clips, max(i * n_total // n_clips + 1, (i + 1) * n_total // n_clips)
        out.append(np.linspace(lo, hi - 1, per_clip).round().astype(int))
    return out


def training_videos(benchmark: Any) -> list[Any]:
    """Unique videos of the labelled ``sft`` split: the contrastive fallback trains on
    their captions (never ``rl``, whose annotations RL must not have seen, nor ``test``)."""
    seen: dict[str, Any] = {}
    for split in ("sft",):
        for prompt in benchmark.prompts(split):
            seen.setdefault(prompt.video.video_id, prompt.video)
    return list(seen.values())


def require_embedded_world(benchmark: Any) -> None:
    """Refuse, in one line, to pre-train the default stack (this encoder, the tiny LM, the
    default SFT policy) on a benchmark that is not a captioned world like the embedded one:
    on a user's dozen annotated videos it would silently train a useless toy model."""
    if callable(getattr(benchmark, "clip_captions", None)):
        return
    from rlaif.core.errors import UsageError

    name = getattr(benchmark, "name", type(benchmark).__name__)
    raise UsageError(f"the default policy (tiny-video-lm) is pre-trained only on the embedded video world, and "
                     f"benchmark {name!r} has no clip_captions to pre-train it on; choose a policy: --policy "
                     "NAME_OR_DIR, or --set policy.name=hf-vlm --set policy.path=MODEL")


def world_fingerprint(benchmark: Any) -> str:
    """A short hash identifying the benchmark's training world (its videos and captions)."""
    require_embedded_world(benchmark)
    h = hashlib.sha256()
    h.update(str(getattr(benchmark, "name", type(benchmark).__name__)).encode())
    for video in training_videos(benchmark):
        h.update(video.video_id.encode())
        for caption in benchmark.clip_captions(video):
            h.update(caption.encode())
    return h.hexdigest()[:16]


def labelled_fingerprint(benchmark: Any) -> str:
    """:func:`world_fingerprint` and the labelled ``sft`` split's questions and answers:
    what keys a model that learns from those answers (the base LM's corpus, the SFT
    policy), so a world that serves other labels (``label_lean``) builds its own."""
    h = hashlib.sha256(world_fingerprint(benchmark).encode())
    for prompt in benchmark.prompts("sft"):
        h.update(f"{prompt.prompt_id}\x1f{prompt.reference}\x1e".encode())
    return h.hexdigest()[:16]


def fresh_clips(benchmark: Any, frames_per_clip: int, n_scenes: int = 1500) -> list[tuple[np.ndarray, str]]:
    """``(frames, caption)`` of every clip of ``n_scenes`` fresh scenes (in no split),
    cut as a narrative builder cuts them (1 and 3 clips), the frames passed through the
    video codec so they look like the benchmark's decoded ones."""
    from rlaif.plugins.benchmarks.video_world.fresh import narrative_clips
    from rlaif.plugins.benchmarks.video_world.video_io import codec_roundtrip

    out = []
    for scene in benchmark.fresh_scenes(n_scenes, "encoder"):
        frames = codec_roundtrip(scene.video.render())
        for n_clips in (1, 3):
            for clip, caption in zip(narrative_clips(len(frames), n_clips), scene.clip_captions(n_clips), strict=True):
                pick = np.linspace(0, len(clip) - 1, frames_per_clip).round().astype(int)
                out.append((frames[np.asarray(clip)[pick]], caption))
    return out


def sft_clips(benchmark: Any, frames_per_clip: int) -> list[tuple[np.ndarray, str]]:
    """``(frames, caption)`` of every stored clip of the labelled ``sft`` videos."""
    out = []
    for video in training_videos(benchmark):
        frames = np.asarray(benchmark.frames(video))
        captions = list(benchmark.clip_captions(video))
        for window, caption in zip(_clip_windows(len(frames), len(captions), frames_per_clip), captions, strict=False):
            out.append((frames[window], caption))
    return out


def pretrain_tiny_conv(
    benchmark: Any,
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 400,
    batch_size: int = 64,
    frames_per_clip: int = 4,
    feature_dim: int = 64,
    n_frames: int = 8,
    lr: float = 3e-3,
    hard_negatives: int = 2,
    progress: bool = False,
) -> dict[str, float]:
    """Contrastively pre-train a :class:`TinyConvEncoder` on the world's clips and captions
    and save it (frozen) to ``out_dir``. Returns ``{"loss_first", "loss_last",
    "retrieval_acc", "seconds"}`` (retrieval accuracy on the last batches)."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    fresh = callable(getattr(benchmark, "fresh_scenes", None))
    clips = fresh_clips(benchmark, frames_per_clip) if fresh else sft_clips(benchmark, frames_per_clip)
    if not clips:
        raise ValueError("the benchmark has no training videos with clip captions to pre-train on")
    encoder = TinyConvEncoder(feature_dim=feature_dim, n_frames=n_frames)
    # The head reads the temporal tokens in order (motion, order of events) and the mean
    # of the spatial tokens, not each spatial token on its own: a head with one weight
    # per patch lets the encoder code "triangle" differently at every position, which a
    # language model reading tokens through one shared projector cannot decode.
    clip_head = nn.Linear((frames_per_clip + 1) * feature_dim, 128)
    text = _CaptionEncoder(128)
    table = swap_table([c[1] for c in clips])
    temperature = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    params = [*encoder.parameters(), *clip_head.parameters(), *text.parameters(), temperature]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses, accs = [], []
    from rich.progress import track

    for _ in track(range(steps), description="pre-training tiny-conv encoder", disable=not progress, transient=True):
        batch = rng.sample(clips, min(batch_size, len(clips)))
        clip_frames = torch.from_numpy(np.stack([c[0] for c in batch]))  # [B, F, H, W, 3]
        B, Fr = clip_frames.shape[:2]
        patches = encoder.patch_features(clip_frames.flatten(0, 1)).view(B, Fr, encoder.n_spatial, -1)
        temporal, spatial = patches.mean(2), patches.mean(1)  # [B, F, D], [B, P, D]: Video-ChatGPT pooling
        v = F.normalize(clip_head(torch.cat([temporal.flatten(1), spatial.mean(1)], dim=1)), dim=-1)
        captions = [c[1] for c in batch]
        negatives = [n for c in captions for _ in range(hard_negatives) if (n := perturb_caption(c, table, rng))]
        texts = captions + negatives
        t = F.normalize(text(texts), dim=-1)
        logits = v @ t.T * temperature.exp().clamp(max=100)  # [B, B + negatives]
        same = torch.tensor([[a == b for b in texts] for a in captions], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)  # identical captions are all positives
        to_text = -(target * logits.log_softmax(1)).sum(1).mean()
        to_video = -(target[:, :B] * logits[:, :B].log_softmax(0).T).sum(1).mean()
        loss = 0.5 * (to_text + to_video)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        accs.append(float(same[torch.arange(B), logits.argmax(1)].mean()))  # among captions + negatives
    encoder.freeze()
    encoder.save(out_dir)
    k = max(1, steps // 10)
    metrics = {
        "loss_first": float(np.mean(losses[:k])),
        "loss_last": float(np.mean(losses[-k:])),
        "retrieval_acc": float(np.mean(accs[-k:])),
        "seconds": time.perf_counter() - start,
    }
    (Path(out_dir) / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def cached_tiny_conv(benchmark: Any, *, seed: int = 0, n_frames: int = 8, progress: bool = False) -> Path:
    """Directory of the pre-trained encoder for ``benchmark``, training it on first use.

    Built in a temporary directory and renamed into place, so an interrupted or
    concurrent build never leaves a half-written cache entry."""
    key = hashlib.sha256(f"{RECIPE_VERSION}|{world_fingerprint(benchmark)}|{seed}|{n_frames}".encode())
    return cached_build(cache_root() / "tiny-conv" / key.hexdigest()[:16],
                        lambda tmp: pretrain_tiny_conv(benchmark, tmp, seed=seed, n_frames=n_frames, progress=progress))


def build_tiny_conv(path: str | None = None, n_frames: int = 8, seed: int = 0, benchmark: Any = None) -> TinyConvEncoder:
    """Registry factory: load the encoder saved at ``path``, or pre-train (once, cached)
    on ``benchmark`` (default: the video world with ``seed``)."""
    if path is not None:
        return TinyConvEncoder.from_pretrained(path)
    if benchmark is None:
        benchmark = default_benchmark(seed)
    return TinyConvEncoder.from_pretrained(cached_tiny_conv(benchmark, seed=seed, n_frames=n_frames))


def default_benchmark(seed: int = 0) -> Any:
    """The built-in video world, used when a factory is called without a benchmark."""
    from rlaif.plugins.benchmarks.video_world import VideoWorld

    return VideoWorld(seed=seed)
