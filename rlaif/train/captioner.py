"""A caption-tuned captioner: the SFT policy, trained further on fresh scenes' clip
captions alone, to write the narratives a text judge reads (VLM-RLAIF's context).

Why: the SFT policy captions badly even where it answers well. On 120 test videos its
3-clip narratives named the right colour for 0.56 of the objects they described and the
right size for 0.58 (its short answers: attribute 0.68), so a judge reading them ranked
attribute answers below what the policy answers by itself, and RL with that judge lowered
accuracy (README). Trained on captions alone, the same model reaches 0.99 on both after
14 epochs; colour jumps late, as the "what colour" skill did in SFT (a small model picks
it up only when it is trained alone). The captions-only model forgets how to answer
questions, so it is kept apart: the policy RL trains stays the SFT policy, and this copy
only writes narratives. It learns from fresh scenes only (``alignment_examples``, videos in
no split), the same data the SFT grounding stage reads.

``cached_captioner`` builds it once per SFT policy and world ($RLAIF_CACHE/captioner; the
default one ships pre-built, :mod:`rlaif.core.cache`).
``llm-judge`` writes its narratives with it by default (``captioner = "auto"``), where the
run's policy is a saved tiny-video-lm: its 3-clip narratives raised the world judge's
Kendall tau from 0.362 to 0.440 (README, "Judges").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CAPTIONER_RECIPE = "captioner/1"  # bump when the defaults below change
#: Fresh videos whose clip captions it trains on, epochs, learning rate, batch size.
CAPTION_VIDEOS = 2000
CAPTION_EPOCHS = 14
CAPTION_LR = 1e-3
CAPTION_BATCH = 16
#: What a saved policy's identity leaves out: the resumable stages ``rlaif sft`` keeps.
SKIPPED = ("stages",)


def caption_examples(benchmark: Any, n_videos: int = CAPTION_VIDEOS) -> list[Any]:
    """The clip-caption items of ``n_videos`` fresh videos (``alignment_examples`` with
    ``questions=False``); a clear error for a benchmark that offers none."""
    from rlaif.core.errors import UsageError
    from rlaif.train.sft import alignment_items

    items = [it for it in alignment_items(benchmark, n_videos, questions=False) if it.kind == "caption"]
    if not items:
        name = getattr(benchmark, "name", type(benchmark).__name__)
        raise UsageError(f"benchmark {name!r} offers no fresh clip captions (alignment_examples) to tune a "
                         "captioner on; caption with the policy itself (llm-judge captioner = \"sft\")")
    return items


def tune_captioner(policy_dir: str | Path, out_dir: str | Path, *, benchmark: Any, epochs: int = CAPTION_EPOCHS,
                   lr: float = CAPTION_LR, n_videos: int = CAPTION_VIDEOS, batch_size: int = CAPTION_BATCH,
                   max_steps: int | None = None, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Continue the saved policy at ``policy_dir`` (its adapter and projector) on fresh clip
    captions alone, at a constant ``lr`` (:func:`~rlaif.train.sft.train_supervised`); save it
    to ``out_dir`` with ``sft.json`` (metrics, written last: a finished ``out_dir`` is reused)."""
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM
    from rlaif.train.sft import train_supervised

    done = Path(out_dir) / "sft.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    policy = TinyVideoLM.load(policy_dir, frames=benchmark.frames, new_adapter=False)
    examples = [it.prompt for it in caption_examples(benchmark, n_videos)]
    return train_supervised(out_dir, policy=policy, benchmark=benchmark, examples=examples, epochs=epochs,
                            batch_size=batch_size, lr=lr, schedule="constant", warmup=0.0, max_steps=max_steps,
                            seed=seed, progress=progress)


def cached_captioner(benchmark: Any, policy_dir: str | Path, *, progress: bool = False) -> Path:
    """Directory of the caption-tuned copy of the policy saved at ``policy_dir``, built on
    first use (cached by recipe, the policy's weights and a digest of the captions it
    reads; by weights, not by path, so the same policy anywhere finds the same entry,
    shipped pre-built included). It reads only fresh videos' captions, so an oracle, which
    may not read a split's annotations, can build it (``alignment_examples`` is training
    material)."""
    from rlaif.core.cache import cached_build

    source = Path(policy_dir).resolve()
    return cached_build(captioner_dir(benchmark, source),
                        lambda tmp: tune_captioner(source, tmp, benchmark=benchmark, n_videos=CAPTION_VIDEOS,
                                                   progress=progress), done="sft.json")


def captioner_dir(benchmark: Any, policy_dir: str | Path) -> Path:
    """Where :func:`cached_captioner` keeps the captioner of the policy at ``policy_dir``."""
    from rlaif.core.cache import cache_root, tree_digest

    digest = hashlib.sha256()
    for item in caption_examples(benchmark, CAPTION_VIDEOS):  # the videos the build reads
        digest.update(f"{item.prompt.prompt_id}\x1f{item.answer}\x1e".encode())
    recipe = f"{CAPTIONER_RECIPE}|{tree_digest(Path(policy_dir), exclude=SKIPPED)}|{digest.hexdigest()[:16]}"
    return cache_root() / "captioner" / hashlib.sha256(recipe.encode()).hexdigest()[:16]
