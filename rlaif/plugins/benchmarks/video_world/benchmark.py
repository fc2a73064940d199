"""The ``video-world`` benchmark: procedural mp4 videos of moving shapes with ground truth.

Built once per option set into a cache folder (mp4 files plus ``index.json``; no pickle)
and reused instantly afterwards. The index is written last, atomically, so a build that
was killed is simply redone. Frames are read back through :func:`read_frames`, the same
PyAV loader a real dataset would use.

The cache repairs itself: a video is a pure function of the seed, so one that is missing,
damaged or truncated is re-rendered rather than failing the run. The index records each
mp4's size and sha256; before a video is decoded its size is checked (a ``stat``), and
its hash once per process and again whenever the file's size or mtime changed, or when
decoding fails. Indexes written before hashes were recorded are repaired on a missing
file or a decoding failure only. A video that is not one of the world's own files (a
user's path) is never rewritten: it fails with a one-line :class:`VideoFileError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rlaif.core.errors import UsageError, VideoFileError
from rlaif.core.records import Prompt, VideoRef
from rlaif.plugins.benchmarks.video_world import scoring
from rlaif.plugins.benchmarks.video_world.fresh import FreshScene, fresh_scenes, narrative_clips
from rlaif.plugins.benchmarks.video_world.video_io import (
    read_frames,
    split_clips,
    uniform_indices,
    write_video,
)
from rlaif.plugins.benchmarks.video_world.vocab import (
    COLOURS,
    DESCRIBE_QUESTION,
    DIRECTIONS,
    LEANING_ANSWERS,
    QTYPES,
    SHAPES,
    SHORT_QTYPES,
    SIZES,
)
from rlaif.plugins.benchmarks.video_world.world import (
    GENERATOR_VERSION,
    Event,
    QAItem,
    WorldObject,
    WorldVideo,
    caption_clips,
    event_from_dict,
    generate_video,
    make_questions,
    object_from_dict,
)

SPLITS: tuple[str, ...] = ("sft", "rl", "test")
#: Fresh scenes a world offers per video of its splits (the default world: 3500).
FRESH_PER_VIDEO = 5
INDEX_FORMAT = "video-world/1"

#: ``(size, mtime_ns)`` of each cached mp4 when its sha256 last matched, by path: the
#: hash is checked once per process and again only when the file changed.
_HASHED: dict[str, tuple[int, int]] = {}


def _file_stamp(path: Path) -> dict[str, Any]:
    """What the index records of an mp4 to tell a damaged one: its size and sha256."""
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def judge_reads(qa: QAItem, scene_index: int) -> bool:
    """Whether a judge trains on fresh scene ``scene_index``'s question ``qa``: every
    short question, and the describe question of a third of the scenes (long answers are
    costly to train on, and rarer in RL batches)."""
    return qa.qtype != "describe" or scene_index % 3 == 0


class VideoWorld:
    """Procedural videos of 1-3 moving shapes with ground-truth events, captions and QA.

    :param root: folder of the built world; default
        ``$RLAIF_CACHE/world/<hash of the options>`` (``RLAIF_CACHE`` defaults to
        ``~/.cache/rlaif``).
    :param seed: everything (videos, questions) is a function of the seed and options.
    :param n_sft: videos in the small labelled ``sft`` split (about 6 questions each).
    :param n_rl: videos in the ``rl`` split.
    :param n_test: videos in the held-out ``test`` split.
    :param size: frame side in pixels (32 or 64; any even side >= 16 works).
    :param min_frames: fewest frames per video.
    :param max_frames: most frames per video.
    :param max_objects: most objects per video (1-3).
    :param fps: frame rate written into the mp4 files.
    :param codec: ``h264`` (libx264) or ``mpeg4``.
    :param max_clip_frames: clip length for the gold per-clip captions (VLM-RLAIF: 20).
    :param label_lean: share of the labelled ``sft`` split's closed short questions
        (attribute, counting, direction) left out unless their answer is the one that
        question leans to (:data:`~.vocab.LEANING_ANSWERS`: small, circle, red, one,
        left). Labelled data rarely has the answer mix of the prompts a model meets
        later; with the default 0.75 the SFT policy learns those leanings, and RL on the
        unlabelled ``rl`` prompts (balanced, like ``test``) has something to correct from
        the video. 0 keeps every question. The videos and the other splits are the same
        at every value.
    :param qtypes: question types to serve (default all: attribute, counting, direction,
        temporal, describe); a list or a comma-separated string.
    :param progress: show a progress bar when building takes more than half a second.
    """

    name = "video-world"
    has_ground_truth = True
    splits = SPLITS
    qtypes_available = QTYPES

    def __init__(
        self,
        root: str | None = None,
        seed: int = 0,
        n_sft: int = 150,
        n_rl: int = 400,
        n_test: int = 150,
        size: int = 32,
        min_frames: int = 16,
        max_frames: int = 48,
        max_objects: int = 3,
        fps: float = 8.0,
        codec: str = "h264",
        max_clip_frames: int = 20,
        qtypes: Sequence[str] | str | None = None,
        label_lean: float = 0.75,
        progress: bool = True,
    ) -> None:
        if size < 16 or size % 2:
            raise UsageError(f"video-world size must be even and >= 16, got {size}")
        if not 8 <= min_frames <= max_frames:
            raise UsageError(
                f"video-world needs 8 <= min_frames <= max_frames, got {min_frames}, {max_frames}"
            )
        if not 1 <= max_objects <= 3:
            raise UsageError(f"video-world max_objects must be 1, 2 or 3, got {max_objects}")
        if codec not in ("h264", "libx264", "mpeg4"):
            raise UsageError(f"video-world codec must be h264 or mpeg4, got {codec!r}")
        if min(n_sft, n_rl, n_test) < 0:
            raise UsageError("video-world split sizes must be >= 0")
        if not 0.0 <= float(label_lean) < 1.0:
            raise UsageError(f"video-world label_lean must be in [0, 1), got {label_lean}")
        if isinstance(qtypes, str):
            qtypes = [q.strip() for q in qtypes.split(",") if q.strip()]
        self.qtypes: tuple[str, ...] = tuple(qtypes) if qtypes else QTYPES
        unknown = sorted(set(self.qtypes) - set(QTYPES))
        if unknown:
            raise UsageError(f"unknown video-world qtypes {unknown}; choose from {', '.join(QTYPES)}")
        self.seed = seed
        self.size = size
        self.fps = float(fps)
        self.codec = codec
        self.max_clip_frames = max_clip_frames
        self.progress = progress
        self.sizes = {"sft": n_sft, "rl": n_rl, "test": n_test}
        self.label_lean = float(label_lean)
        self.params: dict[str, Any] = {
            "generator": GENERATOR_VERSION, "seed": seed, "n_sft": n_sft, "n_rl": n_rl, "n_test": n_test,
            "size": size, "min_frames": min_frames, "max_frames": max_frames, "max_objects": max_objects,
            "fps": self.fps, "codec": codec, "max_clip_frames": max_clip_frames,
        }  # fmt: skip
        digest = hashlib.sha1(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:12]
        if root is None:
            cache = Path(os.path.expanduser(os.environ.get("RLAIF_CACHE", "~/.cache/rlaif")))
            root = str(cache / "world" / digest)
        self.root = Path(root).expanduser()
        self.index_path = self.root / "index.json"
        self.build_seconds: float | None = None  # set when this instance built the world
        self._index = self._load_or_build()
        self._entries: dict[str, dict[str, Any]] = {
            v["video_id"]: v for split in SPLITS for v in self._index["splits"][split]
        }
        # Where each video came from, to re-render it: (split, index in the split).
        self._origin: dict[str, tuple[str, int]] = {
            v["video_id"]: (split, i) for split in SPLITS for i, v in enumerate(self._index["splits"][split])
        }
        # Fresh alignment videos written under the cache (path -> renderer), repaired the same way.
        self._fresh_videos: dict[str, Callable[[], np.ndarray]] = {}
        #: Paths of cached videos this instance re-rendered because they were missing or damaged.
        self.rebuilt: list[str] = []
        self._answers: dict[str, str] = {
            qa["prompt_id"]: qa["answer"] for entry in self._entries.values() for qa in entry["qa"]
        }
        self._prompts: dict[str, list[Prompt]] = {}
        self._private: set[str] | None = None

    # -- Benchmark protocol ----------------------------------------------------------
    def prompts(self, split: str) -> list[Prompt]:
        """Question items of ``split`` (``sft``, ``rl`` or ``test``), in a stable order.

        ``reference`` is the answer, ``qtype`` its type; ``meta`` holds the video's
        ``gold_narrative`` and ``clip_captions`` (for context-aware oracles), ``split``
        and ``answer_words`` (the reference's length in words)."""
        self._check_split(split)
        if split not in self._prompts:
            items = []
            for entry in self._index["splits"][split]:
                ref = self._video_ref(entry)
                meta = {"gold_narrative": entry["narrative"], "clip_captions": list(entry["clip_captions"])}
                for qa in entry["qa"]:
                    if qa["qtype"] not in self.qtypes or not self._labelled(split, qa):
                        continue
                    items.append(Prompt(
                        prompt_id=qa["prompt_id"], video=ref, question=qa["question"], reference=qa["answer"],
                        qtype=qa["qtype"],
                        meta={**meta, "split": split, "answer_words": len(qa["answer"].split())},
                    ))  # fmt: skip
            self._prompts[split] = items
        return list(self._prompts[split])

    def frames(
        self,
        video: VideoRef | Prompt | str,
        n_frames: int | None = None,
        *,
        frame_range: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """uint8 frames ``[T, H, W, 3]`` decoded from the mp4: all of them, or ``n_frames``
        sampled uniformly (``linspace``, repeating frames of short videos); ``frame_range``
        ``(start, stop)`` samples within one clip (see ``sft_examples``).

        One of the world's own videos that is missing or damaged is re-rendered first
        (see the module docstring); any other path that does not decode raises
        :class:`VideoFileError` naming it."""
        entry = self._own_entry(video)
        if entry is not None:
            path = self.root / entry["file"]
            if not self._file_ok(entry, path):
                self._rerender(entry)
            try:
                return read_frames(path, n_frames, frame_range=frame_range)
            except VideoFileError:
                # Damage the size check let through (the hash was already checked this
                # process): look again, and re-render unless the bytes are the built ones.
                if "sha256" in entry and self._file_ok(entry, path, rehash=True):
                    raise
                self._rerender(entry)
                return read_frames(path, n_frames, frame_range=frame_range)
        path = Path(self._entry_path(video))
        try:
            return read_frames(path, n_frames, frame_range=frame_range)
        except VideoFileError:
            render = self._fresh_videos.get(str(path))
            if render is None:
                raise  # a user's own video: nothing to render it from
            self._write_mp4(render(), path)
            self.rebuilt.append(str(path))
        return read_frames(path, n_frames, frame_range=frame_range)

    def score(self, prompts: Sequence[Prompt], answers: Sequence[str]) -> dict[str, float]:
        """``acc/<qtype>``, ``acc/short``, ``score/describe`` (0-5), ``acc/all`` and counts
        ``n/<qtype>``; see :func:`scoring.score_answers`. References come from the world
        by ``prompt_id`` (so a prompt stripped of its reference still scores), else from
        ``prompt.reference``."""
        refs = [self._reference(p) for p in prompts]
        return scoring.score_answers([p.qtype for p in prompts], list(answers), refs)

    def item_score(self, prompt: Prompt, answer: str) -> float:
        """One answer's quality in [0, 1] (1 = correct); see :func:`scoring.item_score`."""
        return scoring.item_score(prompt.qtype, answer or "", self._reference(prompt))

    #: How answers are compared (majority@k votes "two" and "2" together).
    normalize_answer = staticmethod(scoring.normalize_answer)

    # -- ground truth ----------------------------------------------------------------
    def videos(self, split: str) -> list[VideoRef]:
        self._check_split(split)
        return [self._video_ref(e) for e in self._index["splits"][split]]

    def events(self, video: VideoRef | Prompt | str) -> list[Event]:
        """The video's events in frame order (ground truth)."""
        return [event_from_dict(e) for e in self._entry(video)["events"]]

    def objects(self, video: VideoRef | Prompt | str) -> list[WorldObject]:
        return [object_from_dict(o) for o in self._entry(video)["objects"]]

    def clip_captions(
        self,
        video: VideoRef | Prompt | str,
        n_clips: int | None = None,
        max_clip_frames: int | None = None,
        n_frames: int | None = None,
    ) -> list[str]:
        """Gold caption of each clip.

        By default the stored ones: the video's frames cut into clips of at most
        ``max_clip_frames`` (20). Any argument recomputes them for another cut: ``n_clips``
        forces the clip count, and ``n_frames`` first samples that many frames uniformly,
        as a narrative builder does (VLM-RLAIF: 50 frames, clips of <= 20, so 3 clips).
        A clip owns the events from its first frame up to the next clip's first frame."""
        entry = self._entry(video)
        if n_clips is None and max_clip_frames is None and n_frames is None:
            return list(entry["clip_captions"])
        total = int(entry["n_frames"])
        indices = uniform_indices(total, n_frames) if n_frames is not None else list(range(total))
        clips = split_clips(indices, max_clip_frames or self.max_clip_frames, n_clips)
        return caption_clips(self.objects(video), self.events(video), clips)

    def narrative(
        self, video: VideoRef | Prompt | str, n_clips: int | None = None, n_frames: int | None = None
    ) -> str:
        """Gold narrative: the clip captions joined, as VLM-RLAIF builds its context."""
        return " ".join(self.clip_captions(video, n_clips=n_clips, n_frames=n_frames))

    def sft_examples(self, split: str = "sft", with_clip_captions: bool = True) -> list[Prompt]:
        """Supervised examples (target = ``reference``): the split's questions, plus, with
        ``with_clip_captions``, one captioning example per clip (qtype ``caption``,
        question "Describe this video in detail.", ``meta["frame_range"] = [start, stop)``
        of the clip) to teach the captioner that builds narratives."""
        examples = self.prompts(split)
        if with_clip_captions:
            for entry in self._index["splits"][split]:
                ref = self._video_ref(entry)
                for k, ((start, stop), caption) in enumerate(
                    zip(entry["clips"], entry["clip_captions"], strict=True)
                ):
                    examples.append(Prompt(
                        prompt_id=f"{entry['video_id']}-c{k}", video=ref, question=DESCRIBE_QUESTION,
                        reference=caption, qtype="caption",
                        meta={"split": split, "frame_range": [start, stop], "answer_words": len(caption.split())},
                    ))  # fmt: skip
        return examples

    def _labelled(self, split: str, qa: Mapping[str, Any]) -> bool:
        """Whether ``split`` serves question ``qa``: every question of ``rl`` and ``test``;
        in ``sft``, a closed short question whose answer is not its leaning answer only
        outside the ``label_lean`` share (a seeded hash of its id, so the same questions at
        every run)."""
        if split != "sft" or self.label_lean == 0.0 or qa["qtype"] not in ("attribute", "counting", "direction"):
            return True
        if qa["answer"] in LEANING_ANSWERS:
            return True
        u = int(hashlib.sha256(f"lean:{self.seed}:{qa['prompt_id']}".encode()).hexdigest()[:8], 16) / 16**8
        return u >= self.label_lean

    def fresh_scenes(self, n: int, purpose: str) -> list[FreshScene]:
        """``n`` scenes of this world that are in no split (see :mod:`.fresh`): what
        pre-training and judge training read, so no model learns ``rl`` or ``test``
        answers before RL. Decontaminated against every ``rl``/``test`` narrative. At
        most :data:`FRESH_PER_VIDEO` per video of the world, so a small world (tests)
        builds its models from a proportionally small corpus."""
        n = min(n, FRESH_PER_VIDEO * sum(self.sizes.values()))
        return list(fresh_scenes(self.seed, n, purpose=purpose, params=self.params,
                                 exclude=self.private_narratives()))

    #: Answers whose judge examples the world judge reads alone before the mixture, one
    #: group after another (:func:`rlaif.plugins.oracles.world_judge.cached_world_judge`).
    #: Inside the mixture it never learned to read directions (0.52 against a near miss,
    #: chance); after 600 steps on them alone it read them at 0.90 from the gold
    #: narrative. Shapes, sizes and colours it read at 0.71, 0.79 and 0.84; after their
    #: own stages, at 0.94, 0.83 and 0.85 (README, "Judges").
    judge_focus_answers: tuple[tuple[str, ...], ...] = (DIRECTIONS, SHAPES, SIZES, tuple(COLOURS))

    def judge_training_examples(self, n_fresh: int = 3000) -> list[tuple[str, str, str]]:
        """``(narrative, question, answer)`` examples a judge may learn from: the labelled
        ``sft`` split with its gold narratives, and ``n_fresh`` fresh scenes with their 1-
        and 3-clip narratives (a judge must read both cuts), their questions as
        :func:`judge_reads` keeps them. Never ``rl`` or ``test``."""
        out = [(str(p.meta["gold_narrative"]), p.question, str(p.reference)) for p in self.prompts("sft")]
        for k, scene in enumerate(self.fresh_scenes(n_fresh, "judge")):
            cuts = [scene.narrative(1), scene.narrative(3)]
            for j, qa in enumerate(scene.qa):
                if judge_reads(qa, k):
                    out.append((cuts[(k + j) % 2], qa.question, qa.answer))
        return out

    def judge_adaptation_scenes(self, n: int) -> list[tuple[VideoRef, list[tuple[str, str]]]]:
        """``(video, [(question, answer), ...])`` for ``n`` of the judge's fresh scenes
        (the first ``n`` that :meth:`judge_training_examples` reads, in no split): what a
        judge is adapted on when it will read a captioner's narratives instead of gold
        ones (:func:`rlaif.plugins.oracles.world_judge.cached_adapted_judge`), the same
        questions (:func:`judge_reads`). The mp4 files are written once under
        ``fresh-judge/``."""
        out = []
        for k, scene in enumerate(self.fresh_scenes(n, "judge")):
            qa = [(q.question, q.answer) for q in scene.qa if judge_reads(q, k)]
            out.append((self._fresh_ref(scene.video, "fresh-judge"), qa))
        return out

    def _fresh_ref(self, video: Any, folder_name: str) -> VideoRef:
        """A fresh scene's video as a :class:`VideoRef`: its mp4 written under
        ``folder_name`` on first use, and re-rendered from its plan if it goes missing."""
        folder = self.root / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{video.video_id}.mp4"
        if not path.exists():
            self._write_mp4(video.render(), path)
        self._fresh_videos[str(path)] = video.render
        return VideoRef(video.video_id, str(path), n_frames=video.n_frames, fps=self.fps)

    def alignment_examples(self, n_videos: int = 1000, questions: bool = True) -> list[Prompt]:
        """Grounding examples on fresh videos (in no split): LLaVA-style feature-
        alignment data for a policy's first SFT stage. Each video is cut as a narrative
        builder cuts it (1 clip and 3 clips of sampled frames); every clip is one
        "Describe this video in detail." item whose reference is its gold caption. With
        ``questions``, each video's short-answer questions too (``qtype`` as in the
        splits): captions alone name what is there, questions teach which object a word
        refers to, which a small LM did not learn from the ``sft`` split's few hundred
        items per type. The mp4 files are written once under ``fresh-align/``."""
        out: list[Prompt] = []
        for scene in self.fresh_scenes(n_videos, "align"):
            video = scene.video
            ref = self._fresh_ref(video, "fresh-align")
            for n_clips in (1, 3):
                clips = narrative_clips(video.n_frames, n_clips)
                for k, (clip, caption) in enumerate(zip(clips, scene.clip_captions(n_clips), strict=True)):
                    out.append(Prompt(
                        prompt_id=f"{video.video_id}-a{n_clips}-{k}", video=ref, question=DESCRIBE_QUESTION,
                        reference=caption, qtype="caption",
                        meta={"split": "fresh", "frame_range": [clip[0], clip[-1] + 1],
                              "answer_words": len(caption.split())},
                    ))  # fmt: skip
            if questions:
                for k, qa in enumerate(scene.qa):
                    if qa.qtype in SHORT_QTYPES:
                        out.append(Prompt(prompt_id=f"{video.video_id}-q{k}", video=ref, question=qa.question,
                                          reference=qa.answer, qtype=qa.qtype,
                                          meta={"split": "fresh", "answer_words": len(qa.answer.split())}))
        return out

    def private_narratives(self) -> set[str]:
        """Every gold narrative of the ``rl`` and ``test`` videos, under the stored clip
        cut and the 1- and 3-clip cuts a narrative builder makes: the strings no
        pre-training or judge-training corpus may contain. Built once per instance (every
        fresh-scene draw checks against it)."""
        if self._private is not None:
            return self._private
        out: set[str] = set()
        for split in ("rl", "test"):
            for entry in self._index["splits"][split]:
                out.add(entry["narrative"])
                objects, events = self.objects(entry["video_id"]), self.events(entry["video_id"])
                for k in (1, 3):
                    out.add(" ".join(caption_clips(objects, events, narrative_clips(int(entry["n_frames"]), k))))
        self._private = out
        return out

    def texts(self, splits: Sequence[str] = ("sft",)) -> list[str]:
        """All world text of ``splits`` for tokenizer / language-model pretraining: every
        clip caption, narrative, question and answer, in a stable order. Only ``sft`` by
        default: ``rl`` answers are what RL must discover, ``test`` is held out."""
        out: list[str] = []
        for split in splits:
            self._check_split(split)
            for entry in self._index["splits"][split]:
                out.extend(entry["clip_captions"])
                out.append(entry["narrative"])
                for qa in entry["qa"]:
                    if self._labelled(split, qa):
                        out.extend((qa["question"], qa["answer"]))
        return out

    # -- building --------------------------------------------------------------------
    def _load_or_build(self) -> dict[str, Any]:
        if self.index_path.exists():
            index = json.loads(self.index_path.read_text())
            if index.get("format") == INDEX_FORMAT and index.get("params") == self.params:
                return index
            raise UsageError(
                f"{self.root} holds a video world built with other options ({index.get('params')}); "
                "pass another root or delete that folder"
            )
        return self._build()

    def _build(self) -> dict[str, Any]:
        start = time.monotonic()
        (self.root / "videos").mkdir(parents=True, exist_ok=True)
        jobs = [(split, i) for split in SPLITS for i in range(self.sizes[split])]
        splits: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
        bar, task = None, None
        try:
            for done, (split, i) in enumerate(jobs):
                splits[split].append(self._build_video(split, i))
                if bar is None and self.progress and time.monotonic() - start > 0.5:
                    from rich.console import Console
                    from rich.progress import Progress

                    bar = Progress(console=Console(stderr=True), transient=True)  # stdout may carry JSON
                    bar.start()
                    task = bar.add_task("building video world", total=len(jobs))
                if bar is not None and task is not None:
                    bar.update(task, completed=done + 1)
        finally:
            if bar is not None:
                bar.stop()
        index = {"format": INDEX_FORMAT, "params": self.params, "splits": splits}
        self._write_index(index)  # last and atomic: an index means a complete world
        self.build_seconds = time.monotonic() - start
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        tmp = self.index_path.with_name(f"index.json.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, self.index_path)

    def _generate(self, split: str, i: int) -> WorldVideo:
        """The ``i``-th video of ``split``: a pure function of the seed and options."""
        return generate_video(
            f"vw{self.seed}-{split}-{i:05d}", f"video-world/{self.seed}/{split}/{i}", canvas=self.size,
            min_frames=self.params["min_frames"], max_frames=self.params["max_frames"],
            max_objects=self.params["max_objects"],
        )  # fmt: skip

    def _write_mp4(self, frames: np.ndarray, path: Path) -> dict[str, Any]:
        """Write an mp4 atomically (a killed write leaves only a temp file); returns the
        stamp the index records, and marks the file as hashed in this process."""
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.mp4")
        write_video(tmp, frames, fps=self.fps, codec=self.codec)
        stamp = _file_stamp(tmp)
        os.replace(tmp, path)
        stat = path.stat()
        _HASHED[str(path)] = (stat.st_size, stat.st_mtime_ns)
        return stamp

    def _file_ok(self, entry: Mapping[str, Any], path: Path, rehash: bool = False) -> bool:
        """Whether the cached mp4 is the one the index recorded: present, of its size,
        and (once per process, when it changed, or with ``rehash``) of its sha256."""
        try:
            stat = path.stat()
        except OSError:
            return False
        if "bytes" not in entry:  # an index from before hashes: presence is all we know
            return True
        if stat.st_size != entry["bytes"]:
            return False
        seen = (stat.st_size, stat.st_mtime_ns)
        if not rehash and _HASHED.get(str(path)) == seen:
            return True
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            _HASHED.pop(str(path), None)
            return False
        _HASHED[str(path)] = seen
        return True

    def _rerender(self, entry: dict[str, Any]) -> None:
        """Write a missing or damaged video again from its seed. The index is rewritten
        only when the new file's stamp differs (an index without stamps, or an encoder
        whose bytes changed), so it keeps describing the files on disk."""
        split, i = self._origin[entry["video_id"]]
        path = self.root / entry["file"]
        stamp = self._write_mp4(self._generate(split, i).render(), path)
        self.rebuilt.append(str(path))
        if any(entry.get(k) != v for k, v in stamp.items()):
            entry.update(stamp)
            self._write_index(self._index)

    def _build_video(self, split: str, i: int) -> dict[str, Any]:
        video = self._generate(split, i)
        video_id, key = video.video_id, f"video-world/{self.seed}/{split}/{i}"
        clips = split_clips(video.n_frames, self.max_clip_frames)
        captions = caption_clips(video.objects, video.events, clips)
        narrative = " ".join(captions)
        qa = make_questions(video.objects, video.events, narrative, random.Random(key + "/qa"))
        rel = f"videos/{video_id}.mp4"
        stamp = self._write_mp4(video.render(), self.root / rel)
        return {
            "video_id": video_id,
            "file": rel,
            **stamp,
            "n_frames": video.n_frames,
            "objects": [asdict(o) for o in video.objects],
            "events": [asdict(e) for e in video.events],
            "clips": [[c[0], c[-1] + 1] for c in clips],
            "clip_captions": captions,
            "narrative": narrative,
            "qa": [
                {
                    "prompt_id": f"{video_id}-q{k}",
                    "qtype": q.qtype,
                    "question": q.question,
                    "answer": q.answer,
                }
                for k, q in enumerate(qa)
            ],
        }

    # -- lookups ---------------------------------------------------------------------
    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r} for video-world; choose one of: {', '.join(SPLITS)}")

    def _video_ref(self, entry: Mapping[str, Any]) -> VideoRef:
        return VideoRef(
            str(entry["video_id"]), str(self.root / entry["file"]), int(entry["n_frames"]), self.fps
        )

    def _entry(self, video: VideoRef | Prompt | str) -> dict[str, Any]:
        if isinstance(video, Prompt):
            video = video.video
        video_id = video.video_id if isinstance(video, VideoRef) else str(video)
        try:
            return self._entries[video_id]
        except KeyError:
            raise UsageError(f"video {video_id!r} is not part of this video world") from None

    def _own_entry(self, video: VideoRef | Prompt | str) -> dict[str, Any] | None:
        """The index entry when ``video`` is one of this world's files (by id, or a ref
        to the file under this root), else None (a path of the user's)."""
        if isinstance(video, Prompt):
            video = video.video
        if isinstance(video, VideoRef):
            entry = self._entries.get(video.video_id)
            if entry is not None and os.path.abspath(video.path) == os.path.abspath(self.root / entry["file"]):
                return entry
            return None
        return self._entries.get(str(video))

    def _entry_path(self, video: VideoRef | Prompt | str) -> str:
        if isinstance(video, Prompt):
            video = video.video
        if isinstance(video, VideoRef):
            return video.path
        if str(video) in self._entries:
            return str(self.root / self._entries[str(video)]["file"])
        return str(video)  # a path

    def _reference(self, prompt: Prompt) -> str:
        answer = self._answers.get(prompt.prompt_id, prompt.reference)
        if answer is None:
            raise UsageError(f"prompt {prompt.prompt_id!r} has no reference in this video world")
        return answer
