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


@dataclass(frozen=True)
class Prompt(Record):
    """One question about one video. ``reference`` is ground truth, shown only to oracles
    whose ``needs_reference`` is true; ``qtype`` names the question type for scoring."""

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
    oracle could not separate (each group is contiguous in ``order``). ``scores`` is set
    by scoring oracles (higher is better). ``failure`` is set, with ``raw`` holding the
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

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.order)

    def positions(self) -> list[float]:
        """Rank position of each candidate (0 = best); tied candidates share the mean
        of the positions they span, so callers can average gains over ties."""
        pos = [0.0] * len(self.order)
        where = {c: i for i, c in enumerate(self.order)}
        for c, i in where.items():
            pos[c] = float(i)
        for group in self.ties:
            spans = [where[c] for c in group]
            mean = sum(spans) / len(spans)
            for c in group:
                pos[c] = mean
        return pos

    def tie_groups(self) -> list[list[int]]:
        """Partition of ``order`` into consecutive blocks of equal rank, best first."""
        tied = {c: tuple(sorted(g)) for g in self.ties for c in g}
        blocks: list[list[int]] = []
        seen: set[tuple[int, ...]] = set()
        for c in self.order:
            key = tied.get(c)
            if key is None:
                blocks.append([c])
            elif key not in seen:
                seen.add(key)
                blocks.append(list(key))
        return blocks

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


_RECORD_FIELDS: dict[tuple[str, str], type[Record]] = {("Prompt", "video"): VideoRef}

RECORD_TYPES: dict[str, type[Record]] = {
    c.SCHEMA.partition("/")[0]: c for c in (VideoRef, Prompt, Rollout, Ranking, RunInfo)
}


def record_from_dict(data: dict[str, Any]) -> Record:
    """Rebuild any stored record from its dict, dispatching on the ``schema`` tag."""
    kind = str(data.get("schema", "")).partition("/")[0]
    if kind not in RECORD_TYPES:
        raise ValueError(f"unknown record schema {data.get('schema')!r}")
    return RECORD_TYPES[kind].from_dict(data)
