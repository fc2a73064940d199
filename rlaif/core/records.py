"""Record dataclasses that flow between components and into the store.

Records are plain data (str, int, float, lists, dicts) so they serialise to msgpack or
JSON without pickle. Every stored record carries ``SCHEMA`` (``"kind/version"``); a new
field gets a default so older shards still load, and a breaking change bumps the version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="Record")


@dataclass(frozen=True)
class Record:
    """Base for stored records: a schema tag plus ``to_dict``/``from_dict``."""

    SCHEMA: ClassVar[str] = "record/1"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["schema"] = self.SCHEMA
        return data

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        data = dict(data)
        schema = data.pop("schema", cls.SCHEMA)
        kind, _, version = str(schema).partition("/")
        own_kind, _, own_version = cls.SCHEMA.partition("/")
        if kind != own_kind or int(version or 0) > int(own_version):
            raise ValueError(f"cannot read a {schema!r} record as {cls.SCHEMA!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for f in dataclasses.fields(cls):  # nested records
            sub = _RECORD_FIELDS.get((cls.__name__, f.name))
            if sub is not None and isinstance(kwargs.get(f.name), dict):
                kwargs[f.name] = sub.from_dict(kwargs[f.name])
        return cls(**kwargs)


@dataclass(frozen=True)
class VideoRef(Record):
    """Where a video lives; frames are decoded on demand by the benchmark's loader."""

    SCHEMA: ClassVar[str] = "video/1"
    video_id: str
    path: str
    n_frames: int | None = None
    fps: float | None = None


#: ``Prompt.meta`` keys an oracle that does not declare ``needs_reference`` may read: how
#: to look at the video, never what is in it. An allow-list, so a benchmark's new
#: annotation (a caption, an answer's length, ...) stays private until listed here.
PUBLIC_META_KEYS: frozenset[str] = frozenset({"split", "frame_range", "frame_indices", "frame_jitter"})


@dataclass(frozen=True)
class Prompt(Record):
    """One question about one video. ``reference`` is ground truth, shown only to oracles
    whose ``needs_reference`` is true; ``qtype`` names the question type for scoring.
    ``meta`` may hold annotations; only its :data:`PUBLIC_META_KEYS` reach other oracles."""

    SCHEMA: ClassVar[str] = "prompt/1"
    prompt_id: str
    video: VideoRef
    question: str
    reference: str | None = None
    qtype: str = "open"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rollout(Record):
    """One sampled answer: text, its tokens and the per-token log-probs under the policy
    that sampled it (``policy_version`` = optimizer steps taken before sampling)."""

    SCHEMA: ClassVar[str] = "rollout/1"
    prompt_id: str
    index: int
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    policy_version: int = 0
    finished: bool = True


@dataclass(frozen=True)
class Ranking(Record):
    """An oracle's verdict on one group of G rollouts.

    ``order`` lists candidate indices best first. ``ties`` lists groups of candidates the
    oracle could not separate; each group must be contiguous in ``order`` (checked when
    the ranking is built, so there is one reading of ties). ``scores`` is set
    by scoring oracles (higher is better); ``score_range`` ``[lo, hi]`` is what they mean,
    the interval the oracle declares its scores lie in (its ``score_range``, stamped by the
    loop), or ``None`` when they are only an order (label likelihoods, reward-model
    outputs); losses read both through one normalisation (``advantages.ranking_scores``).
    ``failure`` is set, with ``raw`` holding the
    judge's text, when no ranking could be obtained; ``order`` is then empty.
    """

    SCHEMA: ClassVar[str] = "ranking/1"
    prompt_id: str
    oracle: str
    order: list[int] = field(default_factory=list)
    ties: list[list[int]] = field(default_factory=list)
    scores: list[float] | None = None
    rationale: str = ""
    raw: str = ""
    failure: str | None = None
    score_range: list[float] | None = None

    def __post_init__(self) -> None:
        # One reading of ties for every consumer: rejected here rather than read two ways
        # later (positions() and tie_groups() could not agree on a tie split by another
        # candidate).
        problem = _ranking_problem(self.order, self.ties, self.scores)
        if problem is None and self.score_range is not None:
            lo, hi = (float(x) for x in self.score_range)
            if not lo < hi:
                problem = f"score_range must be [lo, hi] with lo < hi, got {list(self.score_range)}"
        if problem is not None:
            raise ValueError(f"invalid ranking for prompt {self.prompt_id!r} by {self.oracle!r}: {problem}")

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.order)

    def positions(self) -> list[float]:
        """Rank position of each candidate (0 = best); tied candidates share the mean
        of the positions they span, so callers can average gains over ties. Read off
        :meth:`tie_groups`, so both always agree."""
        pos = [0.0] * len(self.order)
        start = 0
        for block in self.tie_groups():
            mean = start + (len(block) - 1) / 2
            for c in block:
                pos[c] = mean
            start += len(block)
        return pos

    def tie_groups(self) -> list[list[int]]:
        """Partition of ``order`` into consecutive blocks of equal rank, best first; a
        tie block lists its candidates in increasing index."""
        tied = {c: i for i, group in enumerate(self.ties) for c in group}
        blocks: list[list[int]] = []
        last: int | None = None
        for c in self.order:
            key = tied.get(c)
            if key is not None and key == last:
                blocks[-1].append(c)
            else:
                blocks.append([c])
            last = key
        return [sorted(block) for block in blocks]

    @classmethod
    def from_scores(cls, prompt_id: str, oracle: str, scores: Sequence[float], **extra: Any) -> Ranking:
        """Induce an order from scores (higher is better); equal scores become ties."""
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        ties: list[list[int]] = []
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
                j += 1
            if j > i:
                ties.append(order[i : j + 1])
            i = j + 1
        return cls(prompt_id=prompt_id, oracle=oracle, order=order, ties=ties, scores=list(scores), **extra)


@dataclass(frozen=True)
class RunInfo(Record):
    """What a run was: its config (as loaded TOML), seed and the rlaif version."""

    SCHEMA: ClassVar[str] = "run/1"
    run_id: str
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    created: float = 0.0
    rlaif_version: str = ""


@dataclass(frozen=True)
class Group:
    """What an oracle ranks: one prompt, its G rollouts and optional narrative context."""

    prompt: Prompt
    rollouts: Sequence[Rollout]
    context: str | None = None


def _ranking_problem(order: Sequence[int], ties: Sequence[Sequence[int]],
                     scores: Sequence[float] | None) -> str | None:
    """Why ``order``/``ties``/``scores`` do not form a ranking, or ``None``: ``order`` is a
    permutation of ``0..G-1``, every tie group lists distinct candidates of ``order``, the
    groups are disjoint and each is contiguous in ``order``; scores, when given with an
    order, are one per candidate."""
    if sorted(order) != list(range(len(order))):
        return f"order must be a permutation of 0..G-1 (candidates unique), got {list(order)}"
    where = {c: i for i, c in enumerate(order)}
    seen: set[int] = set()
    for group in ties:
        members = list(group)
        if any(c not in where for c in members):
            return f"tie group {members} names candidates not in order {list(order)}"
        if len(set(members)) != len(members) or seen & set(members):
            return f"tie groups must be disjoint groups of distinct candidates, got {[list(g) for g in ties]}"
        seen.update(members)
        spans = sorted(where[c] for c in members)
        if spans and spans[-1] - spans[0] != len(spans) - 1:
            return f"tie group {members} is not contiguous in order {list(order)}"
    if scores is not None and order and len(scores) != len(order):
        return f"{len(scores)} scores for {len(order)} candidates"
    return None


@dataclass(frozen=True)
class PreferencePair(Record):
    """One DPO pair a verifier built from stored rollouts (VerIPO's rollout-aware
    verifier, :mod:`rlaif.train.verifier`): both answers are rollouts of ``prompt_id``,
    named by the step that sampled them and their index in that step's group, with
    their texts. ``kind`` is ``penalty``, ``consistency`` or ``reflection``; ``reason``
    says what is wrong with the rejected one (``wrong``, ``truncated``, ``repetitive``,
    ``inconsistent``, ``direct``)."""

    SCHEMA: ClassVar[str] = "pair/1"
    prompt_id: str
    kind: str
    reason: str
    chosen_step: int
    chosen_index: int
    rejected_step: int
    rejected_index: int
    chosen_text: str = ""
    rejected_text: str = ""


_RECORD_FIELDS: dict[tuple[str, str], type[Record]] = {("Prompt", "video"): VideoRef}

RECORD_TYPES: dict[str, type[Record]] = {
    c.SCHEMA.partition("/")[0]: c for c in (VideoRef, Prompt, Rollout, Ranking, RunInfo, PreferencePair)
}


def record_from_dict(data: dict[str, Any]) -> Record:
    """Rebuild any stored record from its dict, dispatching on the ``schema`` tag."""
    kind = str(data.get("schema", "")).partition("/")[0]
    if kind not in RECORD_TYPES:
        raise ValueError(f"unknown record schema {data.get('schema')!r}")
    return RECORD_TYPES[kind].from_dict(data)
