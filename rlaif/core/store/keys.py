"""Byte layout of every key in the run store.

Keys are built so that LMDB's byte order is the order a reader wants: a name (run id,
oracle) ends in ``\\0`` and integers are big-endian, so all records of one shard share a
prefix and come out of a cursor range scan in step order, then prompt order. Names may
therefore not contain NUL. Nothing here touches LMDB; the layout is plain functions so
tests and tools can build and read keys without opening a store.

Layout (``R`` = run id, ``O`` = oracle, ``S`` = step as 8 bytes, ``I`` = 4-byte index)::

    runs        R                         -> RunInfo
    prompts     R \\0 prompt_id            -> Prompt
    rollouts    R \\0 S I(prompt) I(rollout) -> Rollout
    rankings    R \\0 S O \\0 I(group)       -> Ranking
    metrics     R \\0 S                     -> {"values": {...}}
    pairs       R \\0 S I(pair)             -> PreferencePair (S: first step of the DPO phase they feed)
    narratives  key                       -> {"text": ..., "meta": {...}}
    commits     R \\0 kind \\0 [O \\0] S      -> commit marker (kind: step | rollouts | rankings | pairs)
    meta        name                      -> store format
"""

from __future__ import annotations

import functools
import hashlib
import struct
from typing import Any

from rlaif.core.errors import UsageError

_STEP = struct.Struct(">Q")
_INDEX = struct.Struct(">I")
_ROLLOUT_TAIL = struct.Struct(">QII")
_RANKING_TAIL = struct.Struct(">I")

#: Longest run id, oracle or prompt id in bytes; LMDB keys are limited to 511 bytes.
MAX_NAME_BYTES = 200
#: Narrative keys longer than this are stored under a hash of the key.
MAX_NARRATIVE_KEY_BYTES = 400

#: Marker kinds in the ``commits`` database.
STEP_MARKER = "step"
ROLLOUTS_MARKER = "rollouts"
RANKINGS_MARKER = "rankings"
PAIRS_MARKER = "pairs"


def name_bytes(name: str, what: str = "name") -> bytes:
    """Encode a run id, oracle or prompt id for use inside a key, refusing what would
    break prefix scans (NUL) or LMDB's key-size limit."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"{what} must be a non-empty string, got {name!r}")
    raw = name.encode("utf-8")
    if b"\0" in raw:
        raise UsageError(f"{what} {name!r} contains a NUL character")
    if len(raw) > MAX_NAME_BYTES:
        raise UsageError(f"{what} {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
    return raw


def _check_int(value: int, what: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise UsageError(f"{what} must be an integer in [0, {limit}), got {value!r}")
    return value


def step_bytes(step: int) -> bytes:
    return _STEP.pack(_check_int(step, "step", 1 << 63))


@functools.lru_cache(maxsize=256)
def run_prefix(run_id: str) -> bytes:
    return name_bytes(run_id, "run id") + b"\0"


def step_prefix(run_id: str, step: int) -> bytes:
    """Prefix of one (run, step): the rollout shard, all ranking shards, the metrics."""
    return run_prefix(run_id) + step_bytes(step)


def rollout_key(run_id: str, step: int, prompt_index: int, index: int) -> bytes:
    _check_int(prompt_index, "prompt index", 1 << 32)
    _check_int(index, "rollout index", 1 << 32)
    return run_prefix(run_id) + _ROLLOUT_TAIL.pack(_check_int(step, "step", 1 << 63), prompt_index, index)


def rollout_keys(run_id: str, step: int, positions: list[tuple[int, int]]) -> list[bytes]:
    """Keys for many rollouts of one shard; the hot path of a step commit."""
    prefix = run_prefix(run_id)
    step = _check_int(step, "step", 1 << 63)
    pack = _ROLLOUT_TAIL.pack
    return [prefix + pack(step, p, i) for p, i in positions]


def ranking_prefix(run_id: str, step: int, oracle: str) -> bytes:
    return step_prefix(run_id, step) + name_bytes(oracle, "oracle") + b"\0"


def ranking_key(run_id: str, step: int, oracle: str, group_index: int) -> bytes:
    return ranking_prefix(run_id, step, oracle) + _RANKING_TAIL.pack(
        _check_int(group_index, "group index", 1 << 32)
    )


def pair_key(run_id: str, step: int, index: int) -> bytes:
    """Key of the ``index``-th verifier pair of the DPO phase starting at ``step``."""
    return step_prefix(run_id, step) + _INDEX.pack(_check_int(index, "pair index", 1 << 32))


def prompt_key(run_id: str, prompt_id: str) -> bytes:
    return run_prefix(run_id) + name_bytes(prompt_id, "prompt id")


def metrics_key(run_id: str, step: int) -> bytes:
    return step_prefix(run_id, step)


def marker_prefix(run_id: str, kind: str, oracle: str | None = None) -> bytes:
    """Prefix of all markers of one kind (and oracle) of a run; the step follows."""
    prefix = run_prefix(run_id) + kind.encode("ascii") + b"\0"
    if oracle is not None:
        prefix += name_bytes(oracle, "oracle") + b"\0"
    return prefix


def marker_key(run_id: str, kind: str, step: int, oracle: str | None = None) -> bytes:
    return marker_prefix(run_id, kind, oracle) + step_bytes(step)


def narrative_key(key: str) -> bytes:
    """Narrative cache keys are free text; very long ones are stored under their hash
    (the full key is kept in the value)."""
    if not isinstance(key, str) or not key:
        raise UsageError(f"narrative key must be a non-empty string, got {key!r}")
    raw = key.encode("utf-8")
    if len(raw) > MAX_NARRATIVE_KEY_BYTES:
        raw = b"#sha256:" + hashlib.sha256(raw).hexdigest().encode("ascii")
    return raw


def prefix_end(prefix: bytes) -> bytes:
    """Smallest key greater than every key starting with ``prefix`` (for skip scans)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b""
    return stripped[:-1] + bytes([stripped[-1] + 1])


def split_name(key: bytes, start: int = 0) -> tuple[str, int]:
    """Read a ``\\0``-terminated name at ``start``; return it and the offset after the NUL."""
    end = key.index(b"\0", start)
    return key[start:end].decode("utf-8"), end + 1


def read_step(key: bytes, offset: int) -> int:
    return int(_STEP.unpack_from(key, offset)[0])


def describe(db: str, key: bytes) -> dict[str, Any]:
    """Human-readable fields of a key, for exports and debugging (best effort)."""
    try:
        if db in ("meta", "narratives"):
            return {"name": key.decode("utf-8", "replace")}
        if db == "runs":
            return {"run": key.decode("utf-8")}
        run, at = split_name(key)
        if db == "prompts":
            return {"run": run, "prompt": key[at:].decode("utf-8")}
        if db == "metrics":
            return {"run": run, "step": read_step(key, at)}
        if db == "rollouts":
            step, prompt_index, index = _ROLLOUT_TAIL.unpack_from(key, at)
            return {"run": run, "step": step, "prompt_index": prompt_index, "index": index}
        if db == "pairs":
            return {"run": run, "step": read_step(key, at), "index": _INDEX.unpack_from(key, at + 8)[0]}
        if db == "rankings":
            step = read_step(key, at)
            oracle, at = split_name(key, at + 8)
            return {"run": run, "step": step, "oracle": oracle, "group": _INDEX.unpack_from(key, at)[0]}
        if db == "commits":
            kind, at = split_name(key, at)
            out: dict[str, Any] = {"run": run, "kind": kind}
            if kind == RANKINGS_MARKER:
                out["oracle"], at = split_name(key, at)
            out["step"] = read_step(key, at)
            return out
    except (ValueError, struct.error, UnicodeDecodeError):
        pass
    return {}
