"""How values are turned into bytes: msgpack of a record's ``to_dict()``, never pickle.

Every stored value is a msgpack map carrying a ``schema`` tag (``"rollout/1"``,
``"commit/1"``, ...), so a store can be read, exported and checked without this
package's classes. Two fast paths keep the store fast without changing a byte:
``record_dict`` builds the same mapping ``Record.to_dict`` would for flat records
without ``dataclasses.asdict``'s deep copy (140 µs for a 2 KB rollout), and
``build_record`` fills the dataclass directly when the schema tag matches exactly
and every field is present, falling back to
:func:`rlaif.core.records.record_from_dict` otherwise. Arrays, where a
caller has any, go in as safetensors bytes (:func:`encode_arrays`).

In the store every value is *sealed* (:func:`seal`): ``0xc1``, a big-endian crc32 of the
key and the msgpack bytes, then the msgpack bytes. ``0xc1`` is the one byte msgpack
never uses, so a sealed value cannot pass for a bare one, and the crc covers the key so
a record that moved (a flipped key byte) fails as surely as one whose bytes changed,
including a log-prob altered into another valid float that would still decode. A
reader outside rlaif skips the first 5 bytes. Stores written before checksums
(``store/1``) hold bare msgpack, which :func:`unseal` passes through when asked to.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from typing import TYPE_CHECKING, Any

import msgpack

from rlaif.core.records import _RECORD_FIELDS, RECORD_TYPES, Record, record_from_dict

if TYPE_CHECKING:
    import numpy as np


def _default(obj: Any) -> Any:
    # numpy / torch scalars and arrays become plain numbers and lists, so a policy that
    # hands over ``np.float32`` log-probs still stores portable msgpack.
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(
        f"cannot store a {type(obj).__name__} (only str, int, float, bool, None, bytes, lists, dicts)"
    )


def encode(value: Any) -> bytes:
    """msgpack bytes of a plain value (``str`` stays text, ``bytes`` stays binary)."""
    return msgpack.packb(value, use_bin_type=True, default=_default)


def decode(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


#: What unpacking damaged bytes raises (msgpack's errors, bad UTF-8, unhashable keys).
DECODE_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, msgpack.UnpackException)

#: First byte of a sealed value (msgpack's never-used byte).
SEAL_MARK = 0xC1
_SEAL_HEAD = struct.Struct(">BI")
_crc32 = zlib.crc32


class ChecksumError(ValueError):
    """A sealed value's crc32 does not match (the store turns it into a domain error
    that names the key)."""


def seal(key: bytes, payload: bytes) -> bytes:
    """``payload`` (msgpack bytes) as stored under ``key``: mark, crc32, payload."""
    return _SEAL_HEAD.pack(SEAL_MARK, _crc32(payload, _crc32(key))) + payload


def unseal(key: bytes, raw: bytes, *, bare_ok: bool = False) -> bytes:
    """The msgpack bytes of a value stored under ``key``; raises :class:`ChecksumError`
    saying what is wrong when the checksum does not match. ``bare_ok`` accepts an
    unsealed value (a ``store/1`` store, which has no checksums to check)."""
    # The read hot path (a rollout per call): slices and zlib only, no struct call.
    if raw[:1] == b"\xc1" and len(raw) >= 5:
        payload = raw[5:]
        if _crc32(payload, _crc32(key)) != int.from_bytes(raw[1:5], "big"):
            raise ChecksumError("checksum mismatch (the value or its key changed after it was written)")
        return payload
    if bare_ok:
        return raw
    raise ChecksumError("no checksum where this store format writes one (the value's first bytes changed)")


# Records whose fields hold only plain data: no nested record to convert.
_FLAT: dict[type[Record], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls))
    for cls in RECORD_TYPES.values()
    if not any(owner == cls.__name__ for owner, _ in _RECORD_FIELDS)
}
_BY_SCHEMA: dict[str, type[Record]] = {cls.SCHEMA: cls for cls in _FLAT}
# Filling ``__dict__`` directly (what unpickling does) skips the frozen dataclass's
# per-field ``object.__setattr__``; only for classes without __post_init__ or slots, and
# only when every field is present, so nothing __init__ would do is skipped.
_DIRECT: dict[str, tuple[type[Record], frozenset[str]]] = {
    cls.SCHEMA: (cls, frozenset(names))
    for cls, names in _FLAT.items()
    if not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__")
}


def record_dict(record: Record) -> dict[str, Any]:
    """Same mapping as ``record.to_dict()``, without the deep copy for flat records."""
    names = _FLAT.get(type(record))
    if names is None:
        return record.to_dict()
    data = {name: getattr(record, name) for name in names}
    data["schema"] = record.SCHEMA
    return data


def encode_record(record: Record) -> bytes:
    try:
        return encode(record_dict(record))
    except TypeError:
        # A nested dataclass inside a dict field (e.g. RunInfo.config): let to_dict
        # convert it, as it would have on the slow path.
        return encode(record.to_dict())


def build_record(data: dict[str, Any]) -> Record:
    """Rebuild a record from its decoded dict (consumes ``data``)."""
    schema = data.get("schema")
    direct = _DIRECT.get(schema)  # type: ignore[arg-type]
    if direct is not None:
        del data["schema"]
        if data.keys() == direct[1]:
            record = object.__new__(direct[0])
            record.__dict__.update(data)
            return record
        data["schema"] = schema
    cls = _BY_SCHEMA.get(schema)  # type: ignore[arg-type]
    if cls is not None:
        del data["schema"]
        try:
            return cls(**data)
        except TypeError:  # a field this version does not know: take the careful path
            data["schema"] = schema
    return record_from_dict(data)


def json_safe(value: Any, raw: bytes) -> bool:
    """Whether ``value`` survives a strict JSON round trip (no NaN or infinity) back to
    exactly ``raw``."""
    try:
        again = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return False
    try:
        return encode(again) == raw
    except TypeError:
        return False


def encode_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """safetensors bytes of named numpy arrays (store them as a ``bytes`` field)."""
    from safetensors.numpy import save

    return save(arrays)


def decode_arrays(raw: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    return load(raw)
