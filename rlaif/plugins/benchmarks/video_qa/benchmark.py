"""The ``video-qa`` benchmark: the user's own videos and the field's annotation files.

Annotations are parsed by :mod:`.formats` when the benchmark is built; every video they
name is then found under the ``videos`` root (with or without ActivityNet's ``v_``
prefix, with whichever of :data:`VIDEO_EXTENSIONS` it has when the name omits one), so a
missing file fails at once. A split's videos are probed (frame count, frame rate, one
decoded frame) the first time the split is read, so an unreadable file fails before any
model sees it, and a run that only evaluates ``test`` never opens the ``rl`` videos.
With ``skip_missing`` both become a count (:attr:`VideoQA.skipped`, :meth:`VideoQA.summary`).

Splits come from the files (``annotations = {test = "...", rl = "..."}``, or a JSONL
``split`` field) or from ``split_fractions``: a seeded hash of each *video* picks its
split, so a video's questions never straddle two splits and adding videos later never
moves an old one (fractions are therefore met only approximately on small sets). Items
given no split and no fractions are ``test``.

Short answers are scored by exact match after :func:`normalize_answer` (the video
world's: case, punctuation, articles and number words); items whose answers are free
text carry ``meta["needs_judge"]`` and are left to a judge (counted in ``n/needs_judge``,
refused by :meth:`VideoQA.item_score`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rlaif.core.errors import AnnotationError, ConfigError, UsageError, VideoFileError, VideoItemError
from rlaif.core.records import Prompt, Rollout, VideoRef
from rlaif.plugins.benchmarks.video_qa import formats
from rlaif.plugins.benchmarks.video_qa.decode import (
    VIDEO_EXTENSIONS,
    VideoInfo,
    probe_video,
    read_image_frames,
    read_sampled_frames,
)
from rlaif.plugins.benchmarks.video_qa.formats import FORMATS, PreferenceRecord, QAItem
from rlaif.plugins.benchmarks.video_world.scoring import normalize_answer

SPLITS: tuple[str, ...] = ("sft", "rl", "test")

#: ``qtype_names`` presets: a dataset's ``type`` codes -> readable question types.
QTYPE_PRESETS: dict[str, tuple[str, ...]] = {"activitynet": formats.ACTIVITYNET_QA_TYPES}

PathOption = str | Sequence[str] | Mapping[str, str | Sequence[str]] | None


@dataclass(frozen=True)
class SkippedItem:
    """An item left out under ``skip_missing``: its id, the video path tried and why."""

    item_id: str
    path: str
    problem: str


@dataclass(frozen=True)
class PreferenceExample:
    """One preference from a VLM-RLAIF reward-model file. ``prompt_id``, ``chosen``,
    ``rejected`` and ``step`` are those of :class:`rlaif.train.reward_model.PreferencePair`
    (answers as text-only rollouts), so the reward-model loop reads these as it reads
    pairs from a run's rankings, with ``{p.prompt_id: p.prompt for p in pairs}`` as its
    prompt index. Pairs about the same question share a ``prompt_id`` (the held-out
    share is drawn by prompt)."""

    prompt_id: str
    chosen: Rollout
    rejected: Rollout
    prompt: Prompt
    step: int = 0


@dataclass(frozen=True)
class _Video:
    """A resolved video: a file, or frame images (``frames``) in video order."""

    video_id: str
    path: Path
    frames: tuple[Path, ...] = ()


class VideoQA:
    """Video question answering on local videos with published annotation files.

    :param videos: folder the annotations' video names (and frame paths) are relative to.
    :param annotations: the QA file(s) of ``format``: one path, a list, or a table
        ``{split: path(s)}`` (``sft``, ``rl``, ``test``) putting each file in a split. For
        ``qa-pairs`` give the ``*_q.json`` files; their ``*_a.json`` is found beside them.
    :param format: ``qa-pairs`` (Video-ChatGPT / Video-LLaVA: MSVD-, MSRVTT-, TGIF- and
        ActivityNet-QA), ``vcgbench`` (Video-ChatGPT's generative benchmark) or ``jsonl``
        (``video``, ``question``, ``answer``, optional ``id``, ``split``, ``type``,
        ``needs_judge``).
    :param sft_conversations: VLM-RLAIF SFT file(s) (``conversations`` + ``video`` or
        ``images``), served by :meth:`sft_examples`; a path, list or ``{split: ...}``
        (default split ``sft``).
    :param preferences: VLM-RLAIF reward-model file(s) (``output_1``, ``output_2``,
        ``preference``), served by :meth:`preference_pairs`; default split ``sft``.
    :param split_fractions: e.g. ``{rl = 0.8, test = 0.2}``: seeded split, by video, of
        the items no file assigns (they are all ``test`` without it); must sum to 1.
    :param seed: seed of that split.
    :param skip_missing: leave out items whose video is missing or unreadable and count
        them, instead of failing with a one-line error naming the item and the file.
    :param qtype_names: rename ``qa-pairs`` ``type`` codes: ``"activitynet"`` (0 motion,
        1 spatial, ..., 8 other), a list (code = position) or a table.
    :param short_answer_words: ``jsonl`` answers longer than this many words need a
        judge unless the item says ``needs_judge``.
    :param seek: decode by seeking to the sampled frames (off: decode sequentially).
    """

    name = "video-qa"
    has_ground_truth = True
    splits = SPLITS

    def __init__(
        self,
        videos: str,
        annotations: PathOption = None,
        format: str = "jsonl",
        sft_conversations: PathOption = None,
        preferences: PathOption = None,
        split_fractions: Mapping[str, float] | None = None,
        seed: int = 0,
        skip_missing: bool = False,
        qtype_names: str | Sequence[str] | Mapping[str, str] | None = None,
        short_answer_words: int = 5,
        seek: bool = True,
    ) -> None:
        problems = []
        self.root = Path(videos).expanduser()
        if not self.root.is_dir():
            problems.append(f"videos root {videos!r} is not a folder")
        if format not in FORMATS:
            problems.append(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
        fractions = _fractions(split_fractions, problems)
        names = _qtype_names(qtype_names, problems)
        if short_answer_words < 0:
            problems.append(f"short_answer_words must be >= 0, got {short_answer_words}")
        if annotations is None and sft_conversations is None and preferences is None:
            problems.append("give annotations (or sft_conversations / preferences) to read")
        if problems:
            raise ConfigError([f"video-qa: {p}" for p in problems])
        self.format = format
        self.seed = seed
        self.skip_missing = skip_missing
        self.seek = seek
        #: Items left out under ``skip_missing`` (grows as splits are first read).
        self.skipped_items: list[SkippedItem] = []
        self._skipped_ids: set[str] = set()
        self._videos: dict[str, _Video] = {}  # video id -> file or frames
        self._resolved: dict[tuple[str, tuple[str, ...]], _Video | str] = {}  # annotation name -> video or problem
        self._info: dict[str, VideoInfo | str] = {}  # video id -> probe, or why it failed
        self._first_item: dict[str, str] = {}  # video id -> an item that uses it (for error lines)
        self._ids: dict[str, tuple[str, int]] = {}  # every prompt id -> (file, index)

        qa = [(item.split, item) for split, path in _paths(annotations)
              for item in self._read(path, split, names, short_answer_words)]
        self._qa: dict[str, list[tuple[QAItem, _Video]]] = {s: [] for s in SPLITS}
        unsplit = []
        for split, item, video in self._located(qa):
            if split is None:
                unsplit.append((item, video))
            else:
                self._qa[split].append((item, video))
        self._assign_unsplit(unsplit, fractions)
        self._conversations: dict[str, list[tuple[QAItem, _Video]]] = {s: [] for s in SPLITS}
        convs = [(split or "sft", item) for split, path in _paths(sft_conversations)
                 for item in formats.read_conversations(path)]
        for split, item, video in self._located(convs):
            self._conversations[split].append((item, video))
        self._preferences: dict[str, list[tuple[PreferenceRecord, _Video]]] = {s: [] for s in SPLITS}
        prefs = [(split or "sft", rec) for split, path in _paths(preferences) for rec in formats.read_preferences(path)]
        for split, rec, video in self._located(prefs):
            self._preferences[split].append((rec, video))
        self._answers = {item.item_id: item.answer for items in self._qa.values() for item, _ in items}
        self._needs_judge = {item.item_id: item.needs_judge for items in self._qa.values() for item, _ in items}
        self._prompts: dict[str, list[Prompt]] = {}

    # -- Benchmark protocol ----------------------------------------------------------
    def prompts(self, split: str) -> list[Prompt]:
        """Question items of ``split`` in file order. ``reference`` is the answer, ``qtype``
        its type; ``meta`` holds ``split``, ``format``, ``needs_judge``, ``source`` (the
        annotation file), ``answer_words`` and, for consistency items, ``question_2``."""
        self._check_split(split)
        if split not in self._prompts:
            self._prompts[split] = [self._prompt(item, video, split) for item, video in self._usable(self._qa[split])]
        return list(self._prompts[split])

    def frames(
        self, video: VideoRef | Prompt | str, n_frames: int | None = None, *, frame_range: Sequence[int] | None = None
    ) -> np.ndarray:
        """uint8 frames ``[T, H, W, 3]``: ``n_frames`` sampled uniformly (all when None),
        within ``frame_range`` ``[start, stop)`` if given, decoded by seeking. A video
        that does not decode raises :class:`VideoItemError` naming an item that uses it
        and the file."""
        ref = video.video if isinstance(video, Prompt) else video
        if isinstance(ref, str):
            if ref not in self._videos:
                raise UsageError(f"video {ref!r} is not part of this video-qa benchmark")
            entry = self._videos[ref]
        else:
            known = self._videos.get(ref.video_id)
            # a ref to another path is a video of the caller's own
            entry = known if known is not None and str(known.path) == ref.path else _Video(ref.video_id, Path(ref.path))
        try:
            if entry.frames:
                return read_image_frames(entry.frames, n_frames, frame_range=frame_range)
            info = self._info.get(entry.video_id)
            return read_sampled_frames(entry.path, n_frames, frame_range=frame_range, seek=self.seek,
                                       info=info if isinstance(info, VideoInfo) else None)
        except VideoFileError as exc:
            item = self._first_item.get(entry.video_id, entry.video_id)
            raise VideoItemError(item, exc.path, exc.problem) from exc

    def score(self, prompts: Sequence[Prompt], answers: Sequence[str]) -> dict[str, float]:
        """Exact match after :func:`normalize_answer` for short answers: ``acc/<qtype>``,
        ``n/<qtype>``, ``acc/all`` and ``n/all`` over them. Items that need a judge are not
        scored here, only counted (``n/needs_judge``)."""
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(answers)} answers for {len(prompts)} questions")
        correct: dict[str, list[float]] = {}
        judged = 0
        for prompt, answer in zip(prompts, answers, strict=True):
            if self.needs_judge(prompt):
                judged += 1
                continue
            ok = normalize_answer(answer or "") == normalize_answer(self._reference(prompt))
            correct.setdefault(prompt.qtype, []).append(float(ok))
        metrics: dict[str, float] = {}
        for qtype in sorted(correct):
            metrics[f"acc/{qtype}"] = sum(correct[qtype]) / len(correct[qtype])
            metrics[f"n/{qtype}"] = float(len(correct[qtype]))
        every = [v for values in correct.values() for v in values]
        if every:
            metrics["acc/all"] = sum(every) / len(every)
        metrics["n/all"] = float(len(every))
        if judged:
            metrics["n/needs_judge"] = float(judged)
        return metrics

    def item_score(self, prompt: Prompt, answer: str) -> float:
        """1.0 when a short answer matches the reference after normalisation, else 0.0.
        Raises :class:`UsageError` for an item that needs a judge (no exact match can
        score a description)."""
        if self.needs_judge(prompt):
            raise UsageError(f"video-qa item {prompt.prompt_id!r} ({prompt.qtype}) has a free-text answer that needs a "
                             "judge; score it with a judge oracle, not by exact match")
        return float(normalize_answer(answer or "") == normalize_answer(self._reference(prompt)))

    #: How answers are compared (majority@k votes "two" and "2" together).
    normalize_answer = staticmethod(normalize_answer)

    # -- more than the protocol ------------------------------------------------------
    def needs_judge(self, prompt: Prompt) -> bool:
        """Whether ``prompt``'s answer is free text a judge must score."""
        return bool(self._needs_judge.get(prompt.prompt_id, prompt.meta.get("needs_judge", False)))

    def videos(self, split: str) -> list[VideoRef]:
        """The distinct videos of ``split``'s questions, in first-use order."""
        seen: dict[str, VideoRef] = {}
        for p in self.prompts(split):
            seen.setdefault(p.video.video_id, p.video)
        return list(seen.values())

    def sft_examples(self, split: str = "sft") -> list[Prompt]:
        """Supervised examples (target = ``reference``): the split's questions with their
        answers, then one example per ``gpt`` turn of the VLM-RLAIF conversations given
        for the split (qtype ``conversation``, ``meta["history"]`` the earlier turns)."""
        self._check_split(split)
        examples = [p for p in self.prompts(split) if p.reference is not None]
        examples += [self._prompt(item, video, split, "vlm-rlaif-sft")
                     for item, video in self._usable(self._conversations[split])]
        return examples

    def preference_pairs(self, split: str = "sft") -> list[PreferenceExample]:
        """The VLM-RLAIF preferences given for ``split`` (default ``sft``): one
        :class:`PreferenceExample` per record, chosen = the preferred output."""
        self._check_split(split)
        prompts: dict[tuple[str, str, tuple[tuple[str, str], ...]], Prompt] = {}
        out = []
        for rec, video in self._usable(self._preferences[split]):
            key = (video.video_id, rec.question, rec.history)
            if key not in prompts:
                meta: dict[str, Any] = {"split": split, "format": "vlm-rlaif-preference", "needs_judge": True,
                                        "source": rec.source}
                if rec.history:
                    meta["history"] = [list(h) for h in rec.history]
                prompts[key] = Prompt(prompt_id=rec.item_id, video=self._ref(video), question=rec.question,
                                      qtype="preference", meta=meta)
            prompt = prompts[key]
            out.append(PreferenceExample(prompt.prompt_id, Rollout(prompt.prompt_id, 0, rec.chosen),
                                         Rollout(prompt.prompt_id, 1, rec.rejected), prompt))
        return out

    @property
    def skipped(self) -> int:
        """Items left out so far because their video is missing or unreadable."""
        return len(self.skipped_items)

    def summary(self) -> dict[str, Any]:
        """What was loaded, every split read (so every video probed): items, conversation
        turns and preference pairs per split, items needing a judge, and the skipped
        items (a count and the first few)."""
        items = {s: len(self.prompts(s)) for s in SPLITS}
        judged = {s: sum(self.needs_judge(p) for p in self.prompts(s)) for s in SPLITS}
        turns = {s: len(self.sft_examples(s)) - items[s] for s in SPLITS}
        pairs = {s: len(self.preference_pairs(s)) for s in SPLITS}
        return {
            "format": self.format, "videos": str(self.root), "items": items, "needs_judge": judged,
            "sft_turns": turns, "preference_pairs": pairs, "skipped": self.skipped,
            "skipped_examples": [f"{s.item_id}: {s.path} ({s.problem})" for s in self.skipped_items[:5]],
        }  # fmt: skip

    # -- loading ---------------------------------------------------------------------
    def _read(self, path: str, split: str | None, names: Mapping[str, str] | None,
              short_answer_words: int) -> list[QAItem]:
        if self.format == "qa-pairs":
            items = formats.read_qa_pairs(path, qtype_names=names)
        elif self.format == "vcgbench":
            items = formats.read_vcgbench(path)
        else:
            items = formats.read_jsonl(path, short_answer_words)
        out = []
        for item in items:
            if item.split and item.split not in SPLITS:
                raise AnnotationError(item.source, _item_label(item), "split",
                                      f"{item.split!r} is not a split; choose one of: {', '.join(SPLITS)}")
            if split is not None and item.split and item.split != split:
                raise AnnotationError(item.source, _item_label(item), "split",
                                      f"says {item.split!r} but the file is given as the {split!r} split")
            out.append(item if split is None else replace(item, split=split))
        return out

    def _located(self, entries: Sequence[tuple[str | None, Any]]) -> list[tuple[Any, Any, _Video]]:
        """``(split, item, video)`` for every item whose video is found (ids checked
        unique); a missing video is an error, or a skip under ``skip_missing``."""
        out = []
        for split, item in entries:
            self._claim_id(item)
            found = self._resolve(item.video, item.frames)
            if isinstance(found, str):
                self._fail(item.item_id, found)
                continue
            self._first_item.setdefault(found.video_id, item.item_id)
            out.append((split, item, found))
        return out

    def _claim_id(self, item: QAItem | PreferenceRecord) -> None:
        if item.item_id in self._ids:
            where, index = self._ids[item.item_id]
            raise AnnotationError(item.source, _item_label(item), "id",
                                  f"the id {item.item_id!r} is also item {index} of {where}; ids must be unique")
        self._ids[item.item_id] = (item.source, item.index)

    def _resolve(self, name: str, frames: tuple[str, ...]) -> _Video | str:
        """The video an annotation names, or the path tried when there is none."""
        key = (name, frames)
        if key not in self._resolved:
            self._resolved[key] = self._find_frames(name, frames) if frames else self._find_video(name)
            if isinstance(self._resolved[key], _Video):
                video = self._resolved[key]
                assert isinstance(video, _Video)
                self._videos.setdefault(video.video_id, video)
        return self._resolved[key]

    def _find_video(self, name: str) -> _Video | str:
        stems = [name]
        if Path(name).name.startswith("v_"):
            stems.append(str(Path(name).with_name(Path(name).name[2:])))
        else:
            stems.append(str(Path(name).with_name("v_" + Path(name).name)))
        for stem in stems:
            exact = self.root / stem
            if exact.suffix.lower() in VIDEO_EXTENSIONS and exact.is_file():
                return _Video(self._video_id(exact), exact)
            for ext in VIDEO_EXTENSIONS:
                path = self.root / (stem + ext)
                if path.is_file():
                    return _Video(self._video_id(path), path)
        tried = ", ".join(VIDEO_EXTENSIONS)
        return f"{self.root / name}|no such file (tried {tried}, with and without the v_ prefix)"

    def _find_frames(self, name: str, frames: tuple[str, ...]) -> _Video | str:
        paths = tuple(self.root / f for f in frames)
        for path in (paths[0], paths[-1]):  # every frame is checked when it is decoded
            if not path.is_file():
                return f"{path}|no such frame image"
        folder = self.root / name
        return _Video(self._video_id(folder, keep_suffix=True), folder, paths)

    def _video_id(self, path: Path, keep_suffix: bool = False) -> str:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            rel = path
        return (rel if keep_suffix else rel.with_suffix("")).as_posix()

    def _assign_unsplit(self, unsplit: Sequence[tuple[QAItem, _Video]], fractions: Mapping[str, float] | None
                        ) -> None:
        """Put each item no file assigns into a split: its video's split when the files
        put the video's other items in exactly one, else the seeded split (or ``test``)."""
        known: dict[str, set[str]] = {}
        for split, entries in self._qa.items():
            for _, video in entries:
                known.setdefault(video.video_id, set()).add(split)
        for item, video in unsplit:
            splits = known.get(video.video_id, set())
            if len(splits) == 1:
                split = next(iter(splits))
            elif fractions is not None:
                split = seeded_split(video.video_id, fractions, self.seed)
            else:
                split = "test"
            self._qa[split].append((replace(item, split=split), video))

    # -- probing ---------------------------------------------------------------------
    def _usable(self, entries: Sequence[tuple[Any, _Video]]) -> list[tuple[Any, _Video]]:
        """The entries whose video probes; the others fail, or are skipped once each."""
        out = []
        for item, video in entries:
            info = self._probe(video)
            if isinstance(info, str):
                if item.item_id not in self._skipped_ids:
                    self._fail(item.item_id, info)
                continue
            out.append((item, video))
        return out

    def _probe(self, video: _Video) -> VideoInfo | str:
        if video.video_id not in self._info:
            if video.frames:
                self._info[video.video_id] = VideoInfo(len(video.frames), None)
            else:
                try:
                    self._info[video.video_id] = probe_video(video.path)
                except VideoFileError as exc:
                    self._info[video.video_id] = f"{exc.path}|{exc.problem}"
        return self._info[video.video_id]

    def _fail(self, item_id: str, where: str) -> None:
        path, _, problem = where.partition("|")
        if not self.skip_missing:
            raise VideoItemError(item_id, path, problem + " (set skip_missing = true to leave such items out)")
        self.skipped_items.append(SkippedItem(item_id, path, problem))
        self._skipped_ids.add(item_id)

    # -- records ---------------------------------------------------------------------
    def _ref(self, video: _Video) -> VideoRef:
        info = self._probe(video)
        assert isinstance(info, VideoInfo)
        return VideoRef(video.video_id, str(video.path), n_frames=info.n_frames, fps=info.fps)

    def _prompt(self, item: QAItem, video: _Video, split: str, fmt: str | None = None) -> Prompt:
        meta: dict[str, Any] = {"split": split, "format": fmt or self.format, "needs_judge": item.needs_judge,
                                "source": item.source}
        if item.answer is not None:
            meta["answer_words"] = len(item.answer.split())
        meta.update({k: v for k, v in item.extra.items() if v is not None})
        return Prompt(prompt_id=item.item_id, video=self._ref(video), question=item.question, reference=item.answer,
                      qtype=item.qtype, meta=meta)

    def _reference(self, prompt: Prompt) -> str:
        answer = self._answers.get(prompt.prompt_id, prompt.reference)
        if answer is None:
            raise UsageError(f"prompt {prompt.prompt_id!r} has no reference in this video-qa benchmark")
        return answer

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r} for video-qa; choose one of: {', '.join(SPLITS)}")


def seeded_split(key: str, fractions: Mapping[str, float], seed: int) -> str:
    """The split of the video ``key``: a seeded hash of the key, read as a number in
    [0, 1), falls in one split's share of ``fractions``. A function of the key alone, so
    a video keeps its split when others are added or removed."""
    digest = hashlib.sha256(f"video-qa-split:{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    chosen = None
    for split in SPLITS:
        share = fractions.get(split, 0.0)
        if share <= 0:
            continue
        chosen = split
        edge += share
        if u < edge:
            return split
    assert chosen is not None
    return chosen  # rounding left u just above the last edge


# -- options ---------------------------------------------------------------------------------


def _paths(option: PathOption) -> list[tuple[str | None, str]]:
    """``(split or None, path)`` of a path option: one path, a list or ``{split: path(s)}``."""
    if option is None:
        return []
    if isinstance(option, (str, Path)):
        return [(None, str(option))]
    if isinstance(option, Mapping):
        out: list[tuple[str | None, str]] = []
        for split, paths in option.items():
            if split not in SPLITS:
                raise ConfigError(f"video-qa: unknown split {split!r} in a path table; choose from {', '.join(SPLITS)}")
            out += [(str(split), path) for _, path in _paths(paths)]
        return out
    return [(None, str(p)) for p in option]


def _fractions(option: Mapping[str, float] | None, problems: list[str]) -> dict[str, float] | None:
    if option is None:
        return None
    if not isinstance(option, Mapping):
        problems.append(f"split_fractions must be a table like {{rl = 0.8, test = 0.2}}, got {option!r}")
        return None
    unknown = sorted(set(option) - set(SPLITS))
    if unknown:
        problems.append(f"split_fractions names unknown splits {unknown}; choose from {', '.join(SPLITS)}")
    values = {k: v for k, v in option.items() if k in SPLITS}
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values.values()):
        problems.append(f"split_fractions must be numbers >= 0, got {dict(option)}")
        return None
    if not math.isclose(sum(values.values()), 1.0, abs_tol=1e-6):
        problems.append(f"split_fractions must sum to 1, got {sum(values.values()):g}")
    return {k: float(v) for k, v in values.items()}


def _qtype_names(option: str | Sequence[str] | Mapping[str, str] | None, problems: list[str]
                 ) -> dict[str, str] | None:
    if option is None:
        return None
    if isinstance(option, str):
        if option not in QTYPE_PRESETS:
            problems.append(f"unknown qtype_names preset {option!r}; choose one of: {', '.join(QTYPE_PRESETS)}, "
                            "or give a list or table")
            return None
        option = QTYPE_PRESETS[option]
    if isinstance(option, Mapping):
        return {str(k): str(v) for k, v in option.items()}
    return {str(i): str(v) for i, v in enumerate(option)}


def _item_label(item: QAItem | PreferenceRecord) -> str:
    return f"{item.index} (id {item.item_id!r})"
