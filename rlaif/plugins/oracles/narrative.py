"""Narrative context for judges: what happens in a video, told in words (VLM-RLAIF).

A text-only judge cannot watch the video, so VLM-RLAIF gives it a *narrative*: the
video's sampled frames are cut into clips of at most 20 frames, a captioner describes
each clip when asked "Describe this video in detail.", and the captions are joined. The
paper found 3 clips better than 1, and any context better than none (methods.md §2).

:func:`narrative_for` builds one and caches it in the run store's ``narratives``
database (or any object with ``get_narrative``/``put_narrative``), keyed by video,
captioner and clip cut, so a video is captioned once per run and a resumed run reads
the narrative back. The default captioner is the run's policy as its SFT self
(:class:`PolicyCaptioner`, adapters off, greedy); :class:`GoldNarrative` substitutes the
benchmark's ground-truth narrative, an upper bound for the "gold vs generated narratives"
diagnostic.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from rlaif.core.records import Prompt, VideoRef

#: The captioning prompt of Video-ChatGPT / VLM-RLAIF, verbatim.
DESCRIBE_PROMPT = "Describe this video in detail."
#: Frames sampled over the whole video before cutting clips (VLM-RLAIF samples 50).
DEFAULT_N_FRAMES = 50
#: Clips a narrative is cut into by default (VLM-RLAIF's 3; the adapted world judge is
#: built for the cut a run uses).
NARRATIVE_CLIPS = 3


@runtime_checkable
class Captioner(Protocol):
    """Describes one clip of a video: ``frame_indices`` index the video's frames.

    ``name`` goes into the cache key, so two captioners never share narratives. A
    captioner may also offer ``caption_clips(video, clips) -> list[str]`` to caption all
    clips of a video in one batch; :func:`narrative_for` prefers it."""

    name: str

    def caption(self, video: VideoRef, frame_indices: Sequence[int]) -> str: ...


class PolicyCaptioner:
    """A policy as captioner: its ``describe_clip(video, frame_indices)`` if it has one,
    else ``generate`` on a "Describe this video in detail." prompt restricted to the clip
    by ``meta["frame_range"] = [start, stop)`` (what the SFT captioning examples use).

    ``frozen`` (default) captions with adapters disabled: during RL that is the SFT
    policy, so narratives do not drift with training and a cached one stays valid."""

    def __init__(self, policy: Any, *, max_new_tokens: int = 48, frozen: bool = True, name: str | None = None
                 ) -> None:
        self.policy = policy
        self.max_new_tokens = max_new_tokens
        self.frozen = frozen
        self.name = name or f"policy:{getattr(policy, 'name', type(policy).__name__)}{':sft' if frozen else ''}"

    def _context(self) -> contextlib.AbstractContextManager[Any]:
        disabled = getattr(self.policy, "adapters_disabled", None)
        if self.frozen and callable(disabled):
            return disabled()  # type: ignore[no-any-return]
        return contextlib.nullcontext()

    def caption(self, video: VideoRef, frame_indices: Sequence[int]) -> str:
        return self.caption_clips(video, [frame_indices])[0]

    def caption_clips(self, video: VideoRef, clips: Sequence[Sequence[int]]) -> list[str]:
        return self.caption_videos([(video, clips)])[0]

    def caption_videos(self, items: Sequence[tuple[VideoRef, Sequence[Sequence[int]]]]) -> list[list[str]]:
        """Captions of every clip of every ``(video, clips)`` item, in one generate call
        (a step's narratives cost one batch, not one call per video)."""
        describe_clip = getattr(self.policy, "describe_clip", None)
        with self._context():
            if callable(describe_clip):
                return [[str(describe_clip(video, list(c))).strip() for c in clips] for video, clips in items]
            prompts = [
                Prompt(prompt_id=f"{video.video_id}#clip{k}", video=video, question=DESCRIBE_PROMPT, qtype="caption",
                       meta={"frame_range": [min(c), max(c) + 1], "frame_indices": [int(i) for i in c]})
                for video, clips in items for k, c in enumerate(clips)
            ]
            rows = self.policy.generate(prompts, 1, max_new_tokens=self.max_new_tokens,
                                        **_greedy(self.policy.generate)) if prompts else []
        texts = iter(row[0].text.strip() for row in rows)
        return [[next(texts) for _ in clips] for _, clips in items]


def _greedy(generate: Any) -> dict[str, Any]:
    """Greedy decoding where the policy's ``generate`` offers it, else a near-zero
    temperature (captions should be the model's best description, not a sample)."""
    try:
        params = inspect.signature(generate).parameters
    except (TypeError, ValueError):
        return {}
    if "greedy" in params:
        return {"greedy": True}
    if "temperature" in params:
        return {"temperature": 1e-4}
    return {}


class GoldNarrative:
    """The benchmark's ground-truth narrative instead of generated captions.

    An upper-bound diagnostic (how much better would the judge be with a perfect
    captioner?), never a fair training signal: it reads privileged annotations. Prefers
    ``benchmark.narrative(video, n_clips=..., n_frames=...)`` so the clip cut matches
    the generated narratives, else ``prompt.meta["gold_narrative"]``."""

    name = "gold"

    def __init__(self, benchmark: Any = None) -> None:
        self.benchmark = benchmark

    def narrative(self, prompt: Prompt | VideoRef, *, n_clips: int, n_frames: int) -> str:
        build = getattr(self.benchmark, "narrative", None)
        video = prompt.video if isinstance(prompt, Prompt) else prompt
        if callable(build):
            with contextlib.suppress(Exception):
                return str(build(video, n_clips=n_clips, n_frames=n_frames))
        gold = prompt.meta.get("gold_narrative") if isinstance(prompt, Prompt) else None
        if isinstance(gold, list):
            gold = " ".join(str(g) for g in gold)
        if not isinstance(gold, str) or not gold.strip():
            raise LookupError(f"no gold narrative for video {video.video_id!r}")
        return gold

    def caption(self, video: VideoRef, frame_indices: Sequence[int]) -> str:
        raise LookupError("GoldNarrative gives whole narratives, not clip captions")


class MemoryNarratives:
    """The narrative cache when no run store is wired: same API, lives in memory."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, dict[str, Any]]] = {}

    def get_narrative(self, key: str) -> str | None:
        got = self._data.get(key)
        return None if got is None else got[0]

    def put_narrative(self, key: str, text: str, meta: dict[str, Any] | None = None) -> None:
        self._data[key] = (text, dict(meta or {}))

    def __len__(self) -> int:
        return len(self._data)


def narrative_key(video_id: str, captioner: str, n_clips: int, max_clip_frames: int, n_frames: int) -> str:
    """Everything that shapes a narrative's text: video, captioner, prompt and clip cut."""
    return f"narrative/{video_id}/{captioner}/clips={n_clips}/max={max_clip_frames}/frames={n_frames}"


def clip_indices(total: int, *, n_clips: int, max_clip_frames: int = 20, n_frames: int = DEFAULT_N_FRAMES
                 ) -> list[list[int]]:
    """Sample ``min(total, n_frames, n_clips * max_clip_frames)`` frames uniformly and cut
    them into ``n_clips`` consecutive clips of at most ``max_clip_frames`` (fewer clips
    for very short videos)."""
    from rlaif.plugins.benchmarks.video_world.video_io import split_clips, uniform_indices

    if total <= 0:
        return []
    n = max(1, min(total, n_frames, n_clips * max_clip_frames))
    return split_clips(uniform_indices(total, n), max_clip_frames, min(n_clips, n))


def narrative_for(
    video: VideoRef | Prompt,
    *,
    benchmark: Any,
    captioner: Any,
    n_clips: int = NARRATIVE_CLIPS,
    max_clip_frames: int = 20,
    n_frames: int = DEFAULT_N_FRAMES,
    store: Any = None,
) -> str:
    """The narrative of ``video`` (a :class:`VideoRef`, or a :class:`Prompt` about it):
    clip captions joined with spaces, read from ``store`` when cached there.

    ``captioner`` is a :class:`Captioner` (or a whole-narrative source such as
    :class:`GoldNarrative`, which needs the prompt and is not cached). ``benchmark``
    counts the frames when ``video.n_frames`` is unknown."""
    prompt = video if isinstance(video, Prompt) else None
    ref = video.video if isinstance(video, Prompt) else video
    whole = getattr(captioner, "narrative", None)
    if callable(whole):
        return str(whole(prompt if prompt is not None else ref, n_clips=n_clips, n_frames=n_frames))
    key = narrative_key(ref.video_id, captioner.name, n_clips, max_clip_frames, n_frames)
    if store is not None:
        cached = store.get_narrative(key)
        if cached is not None:
            return str(cached)
    total = ref.n_frames
    if not total:
        if benchmark is None:
            raise LookupError(f"video {ref.video_id!r} has no frame count and no benchmark was given to count them")
        total = len(benchmark.frames(ref))
    clips = clip_indices(int(total), n_clips=n_clips, max_clip_frames=max_clip_frames, n_frames=n_frames)
    many = getattr(captioner, "caption_clips", None)
    if callable(many):
        captions = [str(c) for c in many(ref, clips)]
    else:
        captions = [str(captioner.caption(ref, clip)) for clip in clips]
    return _keep(ref, key, clips, captions, captioner, store)


def _keep(ref: VideoRef, key: str, clips: Sequence[Sequence[int]], captions: Sequence[str], captioner: Any,
          store: Any) -> str:
    """The narrative from its clip captions, cached in ``store`` under ``key``."""
    text = " ".join(c.strip() for c in captions if c and c.strip())
    if store is not None:
        meta = {"video_id": ref.video_id, "captioner": captioner.name, "n_clips": len(clips),
                "clips": [[c[0], c[-1]] for c in clips], "prompt": DESCRIBE_PROMPT}
        store.put_narrative(key, text, meta)
    return text


def prefetch_narratives(videos: Sequence[VideoRef], *, benchmark: Any, captioner: Any, store: Any,
                        n_clips: int = NARRATIVE_CLIPS, max_clip_frames: int = 20,
                        n_frames: int = DEFAULT_N_FRAMES) -> None:
    """Caption every clip of the ``videos`` whose narrative ``store`` lacks in one batch
    (a captioner with ``caption_videos``), so :func:`narrative_for` then finds them all
    cached. A no-op for captioners that cannot batch or have whole narratives."""
    batch = getattr(captioner, "caption_videos", None)
    if store is None or not callable(batch) or callable(getattr(captioner, "narrative", None)):
        return
    todo: dict[str, tuple[VideoRef, list[list[int]]]] = {}
    for ref in videos:
        key = narrative_key(ref.video_id, captioner.name, n_clips, max_clip_frames, n_frames)
        if key in todo or store.get_narrative(key) is not None:
            continue
        total = ref.n_frames or (len(benchmark.frames(ref)) if benchmark is not None else 0)
        if total:
            todo[key] = (ref, clip_indices(int(total), n_clips=n_clips, max_clip_frames=max_clip_frames,
                                           n_frames=n_frames))
    if not todo:
        return
    captions = batch(list(todo.values()))
    for (key, (ref, clips)), caps in zip(todo.items(), captions, strict=True):
        _keep(ref, key, clips, [str(c) for c in caps], captioner, store)
