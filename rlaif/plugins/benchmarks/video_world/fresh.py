"""Fresh scenes: procedurally generated videos of the same world that belong to no split.

Why they exist: the models that must learn the world's language before RL -- the tiny
LM's pre-training, the judge's training, the encoder's -- need far more scenes than the
small labelled ``sft`` split, and must never see the ``rl`` split (whose answers RL is
meant to discover) or ``test`` (held out). A real LLM learns to read and compare from a
web corpus that is not the benchmark; fresh scenes are that corpus here. They are drawn
from their own seed namespace (``video-world/<seed>/fresh/<purpose>/<i>``) and
decontaminated: a scene is dropped when any run of consecutive sentences of its gold
narrative, under any clip cut, is a narrative of an ``rl`` or ``test`` video (simple
scenes can coincide by chance, and a longer scene can contain a shorter one).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from rlaif.plugins.benchmarks.video_world.video_io import split_clips, uniform_indices
from rlaif.plugins.benchmarks.video_world.world import (
    QAItem,
    WorldVideo,
    caption_clips,
    generate_video,
    make_questions,
)

#: The clip cuts a narrative builder uses (VLM-RLAIF: 50 frames, 1 or 3 clips of <= 20).
NARRATIVE_FRAMES = 50
MAX_CLIP_FRAMES = 20


def narrative_clips(n_total: int, n_clips: int, n_frames: int = NARRATIVE_FRAMES,
                    max_clip_frames: int = MAX_CLIP_FRAMES) -> list[list[int]]:
    """Frame indices of each clip when ``n_clips`` clips are cut from ``n_frames``
    uniformly sampled frames (capped as the narrative builder caps them)."""
    n = max(1, min(n_total, n_frames, n_clips * max_clip_frames))
    return split_clips(uniform_indices(n_total, n), max_clip_frames, min(n_clips, n))


def sentence_runs(text: str) -> set[str]:
    """Every run of consecutive sentences of ``text`` (narratives are sentence lists)."""
    sentences = [t.strip() + "." for t in text.split(".") if t.strip()]
    return {" ".join(sentences[i:j]) for i in range(len(sentences)) for j in range(i + 1, len(sentences) + 1)}


@dataclass
class FreshScene:
    """One fresh video: its plan (renderable), QA items and gold captions."""

    key: str
    video: WorldVideo
    qa: list[QAItem]

    def clip_captions(self, n_clips: int) -> list[str]:
        return caption_clips(self.video.objects, self.video.events, narrative_clips(self.video.n_frames, n_clips))

    def narrative(self, n_clips: int) -> str:
        return " ".join(self.clip_captions(n_clips))


def fresh_scenes(seed: int, n: int, *, purpose: str, params: dict[str, Any],
                 exclude: Iterable[str] = ()) -> Iterator[FreshScene]:
    """``n`` fresh scenes for ``purpose`` (``"lm"``, ``"judge"``, ``"encoder"``...), with
    the generation options ``params`` of the benchmark (canvas size, frame and object
    counts). Scenes whose 1- or 3-clip narrative is in ``exclude`` are skipped."""
    banned = set(exclude)
    made = i = 0
    while made < n:
        key = f"video-world/{seed}/fresh/{purpose}/{i}"
        i += 1
        video = generate_video(f"fresh-{purpose}-{i - 1:06d}", key, canvas=params["size"],
                               min_frames=params["min_frames"], max_frames=params["max_frames"],
                               max_objects=params["max_objects"])
        stored_cut = caption_clips(video.objects, video.events, split_clips(video.n_frames, MAX_CLIP_FRAMES))
        scene = FreshScene(key, video, [])
        if banned and any(sentence_runs(t) & banned for t in (" ".join(stored_cut), scene.narrative(1),
                                                              scene.narrative(3))):
            continue
        scene.qa = make_questions(video.objects, video.events, " ".join(stored_cut), random.Random(key + "/qa"))
        made += 1
        yield scene
