"""RunStore: the LMDB environment behind a run directory.

One environment (a directory holding ``data.mdb`` and ``lock.mdb``) with a named
database per kind of data, laid out as :mod:`rlaif.core.store.keys` describes. A step
is written in one write transaction together with its commit markers, so after a crash
a step is either complete or absent; readers only ever see committed shards. Values
are msgpack maps with a schema tag (:mod:`rlaif.core.store.codec`); nothing is pickled.

Processes: many readers and one writer at a time (LMDB serialises writers). A handle
must not cross ``fork()``: LMDB's locks and reader slots belong to the process that
opened the environment, so a store used in a forked child raises :class:`StoreError`
and should be opened in the child instead (or the parent should close it first).
Within one process, every :class:`RunStore` on the same directory shares one
environment, because LMDB forbids opening an environment twice in a process.

The memory map starts small and doubles whenever a write does not fit: the whole
transaction is retried, so a grown map never leaves a half-written step.

Damage is an error, never a signal. Before LMDB maps ``data.mdb``, its meta pages are
read with ``struct`` and the file must hold every page they say is in use: a truncated
file would otherwise kill the first reader that touches a missing page with SIGBUS.
Every value carries a crc32 of its key and bytes (:func:`codec.seal`), checked on every
read; a mismatch, a value that does not decode to the record its database holds, or a
rollout with a NaN or infinite log-prob raises :class:`DamagedRecordError` naming the
key, and :meth:`RunStore.verify` (``rlaif store verify``) lists every such record.

Formats: ``store/2`` seals every value. A ``store/1`` store (written before checksums)
still opens read-only, unchecked beyond decoding; opening one for writing is refused
with the export/import commands that copy it into a ``store/2`` store, so no store ever
mixes checked and unchecked records.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, TypeVar, overload

import lmdb

from rlaif.core.errors import DamagedRecordError, DamagedStoreError, StoreError, UsageError
from rlaif.core.records import PreferencePair, Prompt, Ranking, Record, Rollout, RunInfo
from rlaif.core.store import STORE_DIRNAME
from rlaif.core.store import keys as K
from rlaif.core.store.codec import (
    DECODE_ERRORS,
    SEAL_MARK,
    ChecksumError,
    build_record,
    decode,
    encode,
    encode_record,
    json_safe,
    seal,
    unseal,
)

T = TypeVar("T")

#: Store format written to ``meta``; a reader refuses a newer major version. ``store/2``
#: seals every value with a checksum; ``store/1`` stores are read, never written.
FORMAT = "store/2"
#: Named databases, in the order an export writes them: commit markers last, so a
#: partial import never shows a marker without its data.
DATABASES = ("meta", "runs", "prompts", "rollouts", "rankings", "metrics", "pairs", "narratives", "commits")
#: Databases a store written by an older rlaif may lack: created when it is opened for
#: writing, read as empty when it is opened read-only.
OPTIONAL_DATABASES = frozenset({"pairs"})
#: Kinds of shard that :meth:`RunStore.iter_shard` reads.
SHARD_KINDS = ("rollouts", "rankings", "pairs")
DEFAULT_MAP_SIZE = 8 << 20
_MAX_MAP_SIZE = 1 << 42
_IMPORT_BATCH = 4096
#: What reading a damaged value or export line raises beyond decoding (a missing field).
_UNREADABLE: tuple[type[Exception], ...] = (*DECODE_ERRORS, KeyError, AttributeError)
#: What each record database must hold (checked on read and by ``verify``).
_RECORD_CLASSES: dict[str, type[Record]] = {
    "runs": RunInfo, "prompts": Prompt, "rollouts": Rollout, "rankings": Ranking, "pairs": PreferencePair,
}  # fmt: skip

# LMDB's on-disk meta page (lmdb.h / mdb.c, data format version 1): a page header
# (pgno, pad, flags, lower/upper) then MDB_meta: magic, version, address, map size, the
# free and main MDB_db records (pad, flags, depth, branch/leaf/overflow pages, entries,
# root), last used page, txn id. Native sizes and alignment, as LMDB writes them; the
# free db's ``pad`` holds the page size. Pages 0 and 1 are metas; the newer txn wins.
_PAGE_HEADER = struct.calcsize("@NHHHH")
_META = struct.Struct("@IIPN" + "IHHNNNNN" * 2 + "NN")
_META_MAGIC = 0xBEEFC0DE
_META_PSIZE, _META_LAST_PAGE, _META_TXNID = 4, 20, 21


class NarrativeEntry(NamedTuple):
    text: str
    meta: dict[str, Any]


class _Gate:
    """Many transactions at once, or one map resize alone: LMDB may only remap while
    this process has no transaction open, and threads share the environment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active = 0
        self._resizing = False

    def enter(self) -> None:
        with self._lock:
            while self._resizing:
                self._changed.wait()
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1
            if self._resizing and not self._active:
                self._changed.notify_all()

    def resize(self, change: Callable[[], None]) -> None:
        with self._lock:
            while self._resizing:
                self._changed.wait()
            self._resizing = True
            try:
                while self._active:
                    self._changed.wait()
                change()
            finally:
                self._resizing = False
                self._changed.notify_all()


class _Env:
    """One open LMDB environment, shared by every RunStore on it in this process."""

    def __init__(self, path: Path, env: lmdb.Environment, dbs: dict[str, Any], readonly: bool) -> None:
        self.path, self.env, self.dbs, self.readonly = path, env, dbs, readonly
        self.pid = os.getpid()
        self.refs = 1
        self.gate = _Gate()
        #: Whether values carry checksums (``store/2``); set by :func:`_check_format`.
        self.sealed = True

    def grow(self) -> None:
        def double() -> None:
            size = self.env.info()["map_size"] * 2
            if size > _MAX_MAP_SIZE:
                raise StoreError(f"store {self.path} would need a map larger than {_MAX_MAP_SIZE} bytes")
            self.env.set_mapsize(size)

        self.gate.resize(double)

    def adopt_size(self) -> None:
        """Take up a map another process has grown."""
        self.gate.resize(lambda: self.env.set_mapsize(0))


_OPEN: dict[str, _Env] = {}
_OPEN_LOCK = threading.Lock()


def _fork_error(path: Path, pid: int) -> StoreError:
    return StoreError(
        f"the store at {path} was opened in process {pid}, and this process was forked from it; "
        "LMDB handles cannot cross fork(). Close the store before forking (or start workers with "
        "the 'spawn' method) and open a RunStore in the worker"
    )


def _resolve(path: str | os.PathLike[str], readonly: bool) -> Path:
    p = Path(path)
    if p.is_file():
        raise StoreError(f"{p} is a file; an rlaif store is a directory holding data.mdb")
    if (p / "data.mdb").exists():
        return p
    if (p / STORE_DIRNAME / "data.mdb").exists():
        return p / STORE_DIRNAME
    if readonly:
        raise StoreError(f"no rlaif store at {p}; run `rlaif run` first or check the path")
    if p.exists() and any(p.iterdir()):
        raise StoreError(
            f"{p} exists and holds no rlaif store; open {p / STORE_DIRNAME} or an empty directory"
        )
    return p


def _check_data_file(path: Path, readonly: bool) -> None:
    """Refuse a ``data.mdb`` shorter than the pages its meta says are in use (or with
    no meta to read): LMDB would map it and die with SIGBUS on the first missing page."""
    data = path / "data.mdb"
    try:
        with open(data, "rb") as fh:
            head = fh.read(_PAGE_HEADER + _META.size)
            if not head and not readonly:
                return  # an empty file LMDB will initialise (a creation that was killed)
            if len(head) < _PAGE_HEADER + _META.size:
                raise DamagedStoreError(
                    str(data), f"is truncated to {len(head)} bytes, shorter than LMDB's header"
                )
            metas = [_META.unpack_from(head, _PAGE_HEADER)]
            if metas[0][0] != _META_MAGIC:
                raise DamagedStoreError(str(data), "does not start with an LMDB meta page (damaged header)")
            psize = metas[0][_META_PSIZE]
            if psize < 512 or psize > 1 << 16 or psize & (psize - 1):
                raise DamagedStoreError(str(data), f"has a damaged header (page size {psize})")
            fh.seek(psize)
            second = fh.read(_PAGE_HEADER + _META.size)
            if len(second) == len(head) and _META.unpack_from(second, _PAGE_HEADER)[0] == _META_MAGIC:
                metas.append(_META.unpack_from(second, _PAGE_HEADER))
            # Size after the meta: a writer extends the file before it writes a meta.
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise StoreError(f"cannot read {data}: {exc}") from exc
    meta = max(metas, key=lambda m: m[_META_TXNID])
    need = max(2, meta[_META_LAST_PAGE] + 1) * psize
    if size < need:
        raise DamagedStoreError(
            str(data), f"is truncated: it holds {size} bytes but its pages in use need {need}"
        )


def _open_env(path: Path, readonly: bool, map_size: int, sync: bool) -> _Env:
    if (path / "data.mdb").exists():
        _check_data_file(path, readonly)
    try:
        env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=len(DATABASES) + 8,
            readonly=readonly,
            lock=True,
            sync=sync,
            metasync=sync,
            create=not readonly,
        )
    except lmdb.Error as exc:
        if "already open" in str(exc):
            raise StoreError(
                f"the store at {path} is already open in this process, or was open in the process this one "
                "forked from; LMDB handles cannot cross fork(): open stores after forking, or use 'spawn'"
            ) from exc
        raise StoreError(f"cannot open the store at {path}: {exc}") from exc
    try:
        if not readonly:
            env.reader_check()  # free slots of readers that died (e.g. SIGKILL)
        dbs = {}
        if not readonly:
            # All sub-databases and the format marker appear in one transaction, so
            # a reader never sees a half-created store.
            with env.begin(write=True) as txn:
                for name in DATABASES:
                    dbs[name] = env.open_db(name.encode(), txn=txn, create=True)
                if txn.get(b"format", db=dbs["meta"]) is None:
                    txn.put(b"format", _format_value(), db=dbs["meta"])
        else:
            for name in DATABASES:
                try:
                    dbs[name] = env.open_db(name.encode(), create=False)
                except lmdb.NotFoundError:
                    if name in OPTIONAL_DATABASES:
                        continue
                    raise StoreError(
                        f"{path} is an LMDB environment but not an rlaif store (no {name!r} db)"
                    ) from None
        handle = _Env(path, env, dbs, readonly)
        _check_format(handle)
    except BaseException:
        env.close()
        raise
    return handle


def _format_value() -> bytes:
    from rlaif import __version__

    return seal(b"format", encode({"schema": FORMAT, "created": time.time(), "rlaif_version": __version__}))


def _format_version(schema: str) -> int:
    kind, _, version = schema.partition("/")
    return int(version) if kind == "store" and version.isdigit() else -1


def _check_format(handle: _Env) -> None:
    db = handle.dbs["meta"]
    with handle.env.begin(db=db, write=not handle.readonly) as txn:
        raw = txn.get(b"format")
        if raw is None:
            if handle.readonly:
                raise StoreError(f"{handle.path} is an LMDB environment but not an rlaif store")
            txn.put(b"format", _format_value())
            return
    # The format record says whether values are sealed, so it is the one value read
    # before knowing: a sealed one is checked, a bare one must claim store/1.
    handle.sealed = raw[:1] == bytes([SEAL_MARK])
    try:
        data = decode(unseal(b"format", raw, bare_ok=True))
        schema = str(data.get("schema", ""))
    except _UNREADABLE as exc:
        raise DamagedRecordError(str(handle.path), "meta", "format", _reason(exc)) from None
    version = _format_version(schema)
    if version < 0 or version > _format_version(FORMAT):
        raise StoreError(f"{handle.path} holds store format {schema!r}; this rlaif reads up to {FORMAT!r}")
    if not handle.sealed and version >= 2:
        raise DamagedRecordError(
            str(handle.path), "meta", "format", f"a {schema} format record without its checksum"
        )
    if not handle.sealed and not handle.readonly:
        raise StoreError(
            f"{handle.path} is a {schema} store, written before records carried checksums: this rlaif reads "
            f"it but writes only {FORMAT}; copy it into a new store with `rlaif store export {handle.path} "
            f"--to old.jsonl`, move {handle.path} aside, then `rlaif store import {handle.path} --from old.jsonl`"
        )


def _acquire(path: Path, readonly: bool, map_size: int, sync: bool) -> _Env:
    key = os.path.realpath(path)
    with _OPEN_LOCK:
        handle = _OPEN.get(key)
        if handle is not None and handle.pid != os.getpid():
            # Inherited through fork: unusable here, and never to be closed here
            # (closing would clear the parent's reader slots).
            del _OPEN[key]
            raise _fork_error(path, handle.pid)
        if handle is not None:
            if handle.readonly and not readonly:
                raise StoreError(
                    f"the store at {path} is already open read-only in this process; close it before opening it for writing"
                )
            handle.refs += 1
            return handle
        handle = _open_env(path, readonly, map_size, sync)
        _OPEN[key] = handle
        return handle


def _release(handle: _Env) -> None:
    with _OPEN_LOCK:
        if handle.pid != os.getpid():
            return
        handle.refs -= 1
        if handle.refs > 0:
            return
        key = os.path.realpath(handle.path)
        if _OPEN.get(key) is handle:
            del _OPEN[key]
    handle.env.close()


def _steps_summary(steps: list[int]) -> str:
    if not steps:
        return "none"
    if steps == list(range(steps[0], steps[-1] + 1)):
        return f"{steps[0]}..{steps[-1]}" if len(steps) > 1 else str(steps[0])
    shown = ", ".join(map(str, steps[:8]))
    return shown + (", ..." if len(steps) > 8 else "")


def _marker(key: bytes, kind: str, **fields: Any) -> bytes:
    return seal(key, encode({"schema": "commit/1", "kind": kind, **fields, "time": time.time()}))


@dataclass(frozen=True)
class Damage:
    """One problem :meth:`RunStore.verify` found: the database, the key (hex, with its
    fields when they parse) and what is wrong."""

    db: str
    key: str
    at: dict[str, Any]
    problem: str

    def describe(self) -> str:
        fields = " ".join(f"{name}={value!r}" for name, value in self.at.items())
        where = f"{fields} (key {self.key})" if fields else f"key {self.key or '?'}"
        return f"{self.db} {where}: {self.problem}"


@dataclass(frozen=True)
class Verification:
    """What :meth:`RunStore.verify` checked and found. ``checksums`` is False for a
    ``store/1`` store, whose records could only be decoded, not checked."""

    path: str
    records: int
    checksums: bool
    damaged: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged


class RunStore:
    """The LMDB store of one or more runs; see the module docstring for guarantees.

    ``path`` is the store directory (``RUN_DIR/store.lmdb``, created when writable) or a
    run directory containing one. ``map_size`` is the initial map in bytes; it doubles
    as needed. ``sync=False`` skips fsync at commit: a killed process still leaves
    whole steps, but a power cut may lose the last ones. A second RunStore on the same
    directory in the same process shares the first one's environment and options.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        map_size: int = DEFAULT_MAP_SIZE,
        sync: bool = True,
    ) -> None:
        self.path = _resolve(path, readonly)
        self.readonly = readonly
        self._handle = _acquire(self.path, readonly, map_size, sync)
        self._closed = False
        self._finalizer = weakref.finalize(self, _release, self._handle)
        #: Test hook: called inside every write transaction just before it commits.
        self._before_commit: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the environment (idempotent); other stores on it stay open."""
        if not self._closed:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "read-write"
        return f"RunStore({str(self.path)!r}, {mode}{', closed' if self._closed else ''})"

    def _env(self) -> _Env:
        if self._closed:
            raise StoreError(f"the store at {self.path} is closed")
        if self._handle.pid != os.getpid():
            raise _fork_error(self.path, self._handle.pid)
        return self._handle

    def _begin_read(self) -> tuple[_Env, lmdb.Transaction[bytes]]:
        """Open a read transaction; the caller must ``_end_read`` it."""
        handle = self._env()
        for _ in range(8):
            handle.gate.enter()
            try:
                return handle, handle.env.begin()
            except lmdb.MapResizedError:
                handle.gate.leave()
            except BaseException as exc:
                handle.gate.leave()
                if isinstance(exc, lmdb.Error):
                    raise StoreError(f"cannot read the store at {self.path}: {exc}") from exc
                raise
            handle.adopt_size()
        raise StoreError(f"cannot begin a read transaction on {self.path}: the map keeps resizing")

    @staticmethod
    def _end_read(handle: _Env, txn: lmdb.Transaction[bytes]) -> None:
        try:
            txn.abort()
        finally:
            handle.gate.leave()

    @contextmanager
    def _reading(self) -> Iterator[lmdb.Transaction[bytes]]:
        handle, txn = self._begin_read()
        try:
            yield txn
        finally:
            self._end_read(handle, txn)

    def _get(self, db: str, key: bytes) -> bytes | None:
        """One value by key: the hot path of random access, without a context manager."""
        handle, txn = self._begin_read()
        try:
            return txn.get(key, db=handle.dbs[db])
        finally:
            self._end_read(handle, txn)

    def _write(self, body: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        """Run ``body`` in one write transaction; on a full map, abort, grow, retry."""
        if self.readonly:
            raise StoreError(f"the store at {self.path} is open read-only")
        handle = self._env()
        while True:
            try:
                handle.gate.enter()
                try:
                    with handle.env.begin(write=True) as txn:
                        result = body(txn)
                        if self._before_commit is not None:
                            self._before_commit()
                finally:
                    handle.gate.leave()
                return result
            except lmdb.MapFullError:
                handle.grow()
            except lmdb.MapResizedError:
                handle.adopt_size()
            except lmdb.Error as exc:
                raise StoreError(f"writing to the store at {self.path} failed: {exc}") from exc

    def _db(self, name: str) -> Any:
        return self._handle.dbs[name]

    def _databases(self) -> list[str]:
        """:data:`DATABASES` this store holds (a read-only older store may lack a new one)."""
        return [name for name in DATABASES if name in self._handle.dbs]

    # ------------------------------------------------------------------ checked reads

    def _damaged(self, db: str, key: bytes, problem: str) -> DamagedRecordError:
        return DamagedRecordError(str(self.path), db, _where(db, key), problem)

    def _value(self, db: str, key: bytes, raw: bytes) -> dict[str, Any]:
        """The map stored under ``key``, its checksum checked."""
        try:
            data = decode(unseal(key, raw, bare_ok=not self._handle.sealed))
        except DECODE_ERRORS as exc:
            raise self._damaged(db, key, _reason(exc)) from None
        if not isinstance(data, dict):
            raise self._damaged(db, key, f"holds a {type(data).__name__}, not a map")
        return data

    def _field(self, db: str, key: bytes, data: dict[str, Any], name: str, kind: type) -> Any:
        value = data.get(name)
        if not isinstance(value, kind):
            raise self._damaged(db, key, f"its {name!r} is {type(value).__name__}, not {kind.__name__}")
        return value

    def _record(self, db: str, key: bytes, raw: bytes) -> Any:
        """The record stored under ``key`` in one of :data:`_RECORD_CLASSES`' databases.
        The hot path of every read: one try block, no helper calls when all is well."""
        cls = _RECORD_CLASSES[db]
        try:
            record = build_record(decode(unseal(key, raw, bare_ok=not self._handle.sealed)))
        except ChecksumError as exc:
            raise self._damaged(db, key, str(exc)) from None
        except _UNREADABLE as exc:
            raise self._damaged(db, key, f"does not decode to a {cls.__name__} ({_reason(exc)})") from None
        if type(record) is not cls:
            raise self._damaged(db, key, f"holds a {type(record).__name__} record, not a {cls.__name__}")
        if isinstance(record, Rollout):
            bad = _nonfinite(record.logprobs)
            if bad is not None:
                raise self._damaged(
                    db, key, f"log-prob {bad} is {_show(record.logprobs, bad)}, not a finite number"
                )
        return record

    def _records(self, db: str, items: list[tuple[bytes, bytes]]) -> Iterator[Any]:
        return (self._record(db, key, raw) for key, raw in items)

    # ------------------------------------------------------------------ runs, prompts

    def put_run(self, info: RunInfo, *, overwrite: bool = False) -> None:
        """Record what a run is; re-putting identical info is a no-op."""
        if not isinstance(info, RunInfo):
            raise TypeError(f"put_run expects a RunInfo, got {type(info).__name__}")
        key = K.name_bytes(info.run_id, "run id")
        value = seal(key, encode_record(info))

        def body(txn: lmdb.Transaction[bytes]) -> None:
            old = txn.get(key, db=self._db("runs"))
            if old is not None and old != value and not overwrite:
                raise StoreError(
                    f"run {info.run_id!r} is already stored with other info; pass overwrite=True"
                )
            txn.put(key, value, db=self._db("runs"))

        self._write(body)

    def get_run(self, run_id: str) -> RunInfo | None:
        key = K.name_bytes(run_id, "run id")
        raw = self._get("runs", key)
        return None if raw is None else self._record("runs", key, raw)

    def runs(self) -> list[str]:
        """Ids of every run with stored info or any committed shard, sorted."""
        found: set[str] = set()
        with self._reading() as txn:
            for key, raw in txn.cursor(db=self._db("runs")):
                found.add(self._record("runs", key, raw).run_id)
            cur = txn.cursor(db=self._db("commits"))
            ok = cur.first()
            while ok:
                try:
                    run, _ = K.split_name(cur.key())
                except ValueError:  # no NUL, or bad UTF-8
                    raise self._damaged(
                        "commits", cur.key(), "the key is not a commit marker's key"
                    ) from None
                found.add(run)
                ok = cur.set_range(run.encode("utf-8") + b"\x01")
        return sorted(found)

    def put_prompts(self, run_id: str, prompts: Iterable[Prompt], *, overwrite: bool = False) -> int:
        """Store a run's prompts by id; identical ones already stored are skipped.
        Returns how many were new or changed."""
        items = _prompt_items(run_id, prompts)
        return self._write(lambda txn: self._put_prompt_items(txn, run_id, items, overwrite))

    def _put_prompt_items(
        self,
        txn: lmdb.Transaction[bytes],
        run_id: str,
        items: list[tuple[bytes, bytes, str]],
        overwrite: bool,
    ) -> int:
        db, written = self._db("prompts"), 0
        for key, value, prompt_id in items:
            old = txn.get(key, db=db)
            if old == value:
                continue
            if old is not None and not overwrite:
                raise StoreError(
                    f"prompt {prompt_id!r} of run {run_id!r} is already stored differently; pass overwrite=True"
                )
            txn.put(key, value, db=db)
            written += 1
        return written

    def get_prompt(self, run_id: str, prompt_id: str) -> Prompt | None:
        key = K.prompt_key(run_id, prompt_id)
        raw = self._get("prompts", key)
        return None if raw is None else self._record("prompts", key, raw)

    def get_prompts(self, run_id: str, prompt_ids: Iterable[str]) -> dict[str, Prompt]:
        """The stored prompts among ``prompt_ids``, by id, read in one snapshot; ids
        with no stored prompt (a store written before prompts were kept) are absent."""
        keys = {prompt_id: K.prompt_key(run_id, prompt_id) for prompt_id in prompt_ids}
        found = {}
        with self._reading() as txn:
            get, db = txn.get, self._db("prompts")
            for prompt_id, key in keys.items():
                raw = get(key, db=db)
                if raw is not None:
                    found[prompt_id] = self._record("prompts", key, raw)
        return found

    def iter_prompts(self, run_id: str) -> Iterator[Prompt]:
        return self._records("prompts", self._scan_items("prompts", K.run_prefix(run_id)))

    # ------------------------------------------------------------------ writing steps

    def commit_step(
        self,
        run_id: str,
        step: int,
        *,
        rollouts: Sequence[Rollout] | None = None,
        rankings: Mapping[str, Sequence[Ranking]] | Sequence[Ranking] | None = None,
        metrics: Mapping[str, Any] | None = None,
        prompts: Sequence[Prompt] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write a step's prompts, rollouts, rankings and metrics, and mark the step
        committed, in one transaction: afterwards the step is whole, and a crash before
        leaves nothing of it.

        ``prompts`` are the records the rollouts answer; they are kept per run by
        prompt id (a prompt drawn again at a later step is stored once), so the store
        and its export need no benchmark to say what was asked. A prompt already
        stored differently raises :class:`StoreError` unless ``overwrite``.
        ``rankings`` maps oracle name to that oracle's rankings, one per group in
        prompt order; a plain sequence is grouped by each ranking's ``oracle``. A shard
        that already exists raises :class:`StoreError` unless ``overwrite``.
        """
        prompt_items = [] if prompts is None else _prompt_items(run_id, prompts)
        rollout_items = None if rollouts is None else _rollout_items(run_id, step, rollouts)
        ranking_items = {
            oracle: _ranking_items(run_id, step, oracle, group)
            for oracle, group in _by_oracle(rankings).items()
        }
        metric_values = None if metrics is None else _metric_values(metrics)

        def body(txn: lmdb.Transaction[bytes]) -> None:
            self._put_prompt_items(txn, run_id, prompt_items, overwrite)
            if rollout_items is not None:
                self._put_rollout_shard(txn, run_id, step, rollout_items, overwrite, set(ranking_items))
            for oracle, items in ranking_items.items():
                self._put_ranking_shard(txn, run_id, step, oracle, items, overwrite)
            if metric_values is not None:
                self._merge_metrics(txn, run_id, step, metric_values, overwrite)
            marker = K.marker_key(run_id, K.STEP_MARKER, step)
            txn.put(marker, _marker(marker, K.STEP_MARKER), db=self._db("commits"))

        self._write(body)

    def put_rollouts(
        self, run_id: str, step: int, rollouts: Sequence[Rollout], *, overwrite: bool = False
    ) -> None:
        """Write one rollout shard in its own transaction (with its shard marker).

        Rollouts are keyed by prompt (numbered by first appearance) and their position
        within that prompt's group, so they read back grouped by prompt."""
        items = _rollout_items(run_id, step, rollouts)
        self._write(lambda txn: self._put_rollout_shard(txn, run_id, step, items, overwrite, set()))

    def put_rankings(
        self, run_id: str, step: int, oracle: str, rankings: Sequence[Ranking], *, overwrite: bool = False
    ) -> None:
        """Write one oracle's ranking shard for a step (e.g. re-ranking stored
        rollouts with another oracle); other shards of the step are untouched."""
        items = _ranking_items(run_id, step, oracle, rankings)
        self._write(lambda txn: self._put_ranking_shard(txn, run_id, step, oracle, items, overwrite))

    def put_metrics(
        self, run_id: str, step: int, metrics: Mapping[str, Any], *, overwrite: bool = False
    ) -> None:
        """Add metrics to a step. A name already stored with a different value raises
        :class:`StoreError` unless ``overwrite``."""
        values = _metric_values(metrics)
        self._write(lambda txn: self._merge_metrics(txn, run_id, step, values, overwrite))

    def put_pairs(
        self,
        run_id: str,
        step: int,
        pairs: Sequence[PreferencePair],
        *,
        summary: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write the verifier's pairs for the DPO phase starting at ``step``, with its
        marker, in one transaction. ``summary`` (plain values: counts per pair kind, the
        prompts dropped from the pool) rides in the marker; :meth:`pairs_summary` reads it."""
        items = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, PreferencePair):
                raise TypeError(f"expected PreferencePair records, got {type(pair).__name__}")
            key = K.pair_key(run_id, step, i)
            items.append((key, seal(key, encode_record(pair))))
        extra = _metric_values(dict(summary or {}))
        extra.pop("kind", None)
        extra.pop("count", None)

        def body(txn: lmdb.Transaction[bytes]) -> None:
            marker = K.marker_key(run_id, K.PAIRS_MARKER, step)
            if txn.get(marker, db=self._db("commits")) is not None:
                if not overwrite:
                    raise StoreError(
                        f"{_shard_name('pairs', run_id, step)} is already stored; pass overwrite=True to replace it"
                    )
                _delete_prefix(txn, self._db("pairs"), K.step_prefix(run_id, step))
            _put_sorted(txn, self._db("pairs"), items)
            txn.put(marker, _marker(marker, K.PAIRS_MARKER, **extra, count=len(items)), db=self._db("commits"))

        self._write(body)

    def pairs_summary(self, run_id: str, step: int) -> dict[str, Any] | None:
        """What :meth:`put_pairs` recorded with the pairs of ``step`` (plus ``count``), or
        None when no pair shard is committed there."""
        key = K.marker_key(run_id, K.PAIRS_MARKER, step)
        raw = self._get("commits", key)
        if raw is None:
            return None
        data = self._value("commits", key, raw)
        return {k: v for k, v in data.items() if k not in ("schema", "kind", "time")}

    def delete_shard(self, kind: str, run_id: str, step: int, oracle: str | None = None) -> int:
        """Remove a committed shard and its marker; returns how many records went.
        Rollouts cannot go while rankings of them remain."""
        db, prefix, marker = self._shard_location(kind, run_id, step, oracle)

        def body(txn: lmdb.Transaction[bytes]) -> int:
            if txn.get(marker, db=self._db("commits")) is None:
                raise StoreError(f"no committed {_shard_name(kind, run_id, step, oracle)} to delete")
            if kind == "rollouts":
                ranked = self._oracles_at(txn, run_id, step)
                if ranked:
                    raise StoreError(
                        f"rollouts of run {run_id!r} step {step} are ranked by {', '.join(ranked)}; "
                        "delete those ranking shards first"
                    )
            txn.delete(marker, db=self._db("commits"))
            return _delete_prefix(txn, self._db(db), prefix)

        return self._write(body)

    def _put_rollout_shard(
        self,
        txn: lmdb.Transaction[bytes],
        run_id: str,
        step: int,
        items: list[tuple[bytes, bytes]],
        overwrite: bool,
        rewritten_oracles: set[str],
    ) -> None:
        marker = K.marker_key(run_id, K.ROLLOUTS_MARKER, step)
        if txn.get(marker, db=self._db("commits")) is not None:
            if not overwrite:
                raise StoreError(
                    f"{_shard_name('rollouts', run_id, step)} is already stored; pass overwrite=True to replace it"
                )
            stale = [o for o in self._oracles_at(txn, run_id, step) if o not in rewritten_oracles]
            if stale:
                raise StoreError(
                    f"replacing the rollouts of run {run_id!r} step {step} would orphan the rankings by "
                    f"{', '.join(stale)}; delete those ranking shards first"
                )
            _delete_prefix(txn, self._db("rollouts"), K.step_prefix(run_id, step))
        _put_sorted(txn, self._db("rollouts"), items)
        txn.put(marker, _marker(marker, K.ROLLOUTS_MARKER, count=len(items)), db=self._db("commits"))

    def _put_ranking_shard(
        self,
        txn: lmdb.Transaction[bytes],
        run_id: str,
        step: int,
        oracle: str,
        items: list[tuple[bytes, bytes]],
        overwrite: bool,
    ) -> None:
        marker = K.marker_key(run_id, K.RANKINGS_MARKER, step, oracle)
        if txn.get(marker, db=self._db("commits")) is not None:
            if not overwrite:
                raise StoreError(
                    f"{_shard_name('rankings', run_id, step, oracle)} is already stored; "
                    "pass overwrite=True to replace it"
                )
            _delete_prefix(txn, self._db("rankings"), K.ranking_prefix(run_id, step, oracle))
        _put_sorted(txn, self._db("rankings"), items)
        txn.put(
            marker,
            _marker(marker, K.RANKINGS_MARKER, oracle=oracle, count=len(items)),
            db=self._db("commits"),
        )

    def _merge_metrics(
        self, txn: lmdb.Transaction[bytes], run_id: str, step: int, values: dict[str, Any], overwrite: bool
    ) -> None:
        key, db = K.metrics_key(run_id, step), self._db("metrics")
        old = txn.get(key, db=db)
        merged: dict[str, Any] = (
            {}
            if old is None
            else self._field("metrics", key, self._value("metrics", key, old), "values", dict)
        )
        for name, value in values.items():
            if name in merged and not overwrite and encode(merged[name]) != encode(value):
                raise StoreError(
                    f"metric {name!r} of run {run_id!r} step {step} is already {merged[name]!r}, not "
                    f"{value!r}; pass overwrite=True to replace it"
                )
            merged[name] = value
        txn.put(key, seal(key, encode({"schema": "metrics/1", "step": step, "values": merged})), db=db)

    def _oracles_at(self, txn: lmdb.Transaction[bytes], run_id: str, step: int) -> list[str]:
        commits = self._db("commits")
        return [
            o
            for o in self._oracles_in(txn, run_id)
            if txn.get(K.marker_key(run_id, K.RANKINGS_MARKER, step, o), db=commits)
        ]

    def _oracles_in(self, txn: lmdb.Transaction[bytes], run_id: str) -> list[str]:
        prefix = K.marker_prefix(run_id, K.RANKINGS_MARKER)
        cur = txn.cursor(db=self._db("commits"))
        found = []
        ok = cur.set_range(prefix)
        while ok and cur.key().startswith(prefix):
            oracle, _ = K.split_name(cur.key(), len(prefix))
            found.append(oracle)
            ok = cur.set_range(prefix + oracle.encode("utf-8") + b"\x01")
        return found

    # ------------------------------------------------------------------ reading steps

    def _shard_location(
        self, kind: str, run_id: str, step: int, oracle: str | None
    ) -> tuple[str, bytes, bytes]:
        if kind == "rollouts":
            return "rollouts", K.step_prefix(run_id, step), K.marker_key(run_id, K.ROLLOUTS_MARKER, step)
        if kind == "rankings":
            if oracle is None:
                raise UsageError("a ranking shard is named by its oracle: pass oracle=...")
            marker = K.marker_key(run_id, K.RANKINGS_MARKER, step, oracle)
            return "rankings", K.ranking_prefix(run_id, step, oracle), marker
        if kind == "pairs":
            return "pairs", K.step_prefix(run_id, step), K.marker_key(run_id, K.PAIRS_MARKER, step)
        raise UsageError(f"unknown shard kind {kind!r}; choose one of: {', '.join(SHARD_KINDS)}")

    def _shard_items(
        self, kind: str, run_id: str, step: int, oracle: str | None
    ) -> list[tuple[bytes, bytes]]:
        db, prefix, marker = self._shard_location(kind, run_id, step, oracle)
        with self._reading() as txn:
            if txn.get(marker, db=self._db("commits")) is None:
                if kind in ("rollouts", "pairs"):
                    marker_kind = K.ROLLOUTS_MARKER if kind == "rollouts" else K.PAIRS_MARKER
                    stored = self._marker_steps(txn, K.marker_prefix(run_id, marker_kind))
                else:
                    stored = self._marker_steps(txn, K.marker_prefix(run_id, K.RANKINGS_MARKER, oracle))
                raise StoreError(
                    f"no committed {_shard_name(kind, run_id, step, oracle)} (committed steps: {_steps_summary(stored)})"
                )
            if db not in self._handle.dbs:
                return []
            return _prefix_items(txn, self._db(db), prefix)

    @overload
    def iter_shard(
        self, kind: Literal["rollouts"], run_id: str, step: int, oracle: None = None
    ) -> Iterator[Rollout]: ...
    @overload
    def iter_shard(
        self, kind: Literal["rankings"], run_id: str, step: int, oracle: str
    ) -> Iterator[Ranking]: ...
    @overload
    def iter_shard(
        self, kind: str, run_id: str, step: int, oracle: str | None = None
    ) -> Iterator[Record]: ...
    def iter_shard(self, kind: str, run_id: str, step: int, oracle: str | None = None) -> Iterator[Record]:
        """Records of one committed shard in key order: ``"rollouts"`` of (run, step),
        grouped by prompt; ``"rankings"`` of (run, step, oracle), one per group.

        The shard is read in one snapshot when this is called; a missing shard raises
        :class:`StoreError` naming the committed steps; a damaged record raises
        :class:`DamagedRecordError` naming its key when iteration reaches it."""
        return self._records(kind, self._shard_items(kind, run_id, step, oracle))

    def iter_shard_raw(
        self, kind: str, run_id: str, step: int, oracle: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Like :meth:`iter_shard` but yields the stored dicts (with their ``schema``)."""
        return (self._value(kind, key, raw) for key, raw in self._shard_items(kind, run_id, step, oracle))

    def get_rollout(self, run_id: str, step: int, prompt_index: int, index: int) -> Rollout | None:
        """One rollout by position. Point reads need no marker check: data is only ever
        written in the same transaction as its marker."""
        key = K.rollout_key(run_id, step, prompt_index, index)
        raw = self._get("rollouts", key)
        return None if raw is None else self._record("rollouts", key, raw)

    def get_rollouts(self, run_id: str, refs: Iterable[tuple[int, int, int]]) -> list[Rollout]:
        """Many rollouts by ``(step, prompt_index, index)`` in one snapshot."""
        keys = [K.rollout_key(run_id, s, p, i) for s, p, i in refs]
        out = []
        with self._reading() as txn:
            get, db = txn.get, self._db("rollouts")
            for key in keys:  # decode as we go: the raw bytes stay in cache
                raw = get(key, db=db)
                if raw is None:
                    raise StoreError(f"no rollout at {K.describe('rollouts', key)}")
                out.append(self._record("rollouts", key, raw))
        return out

    def get_ranking(self, run_id: str, step: int, oracle: str, group_index: int) -> Ranking | None:
        key = K.ranking_key(run_id, step, oracle, group_index)
        raw = self._get("rankings", key)
        return None if raw is None else self._record("rankings", key, raw)

    def steps(self, run_id: str, kind: str = "rollouts", oracle: str | None = None) -> list[int]:
        """Committed steps of a run, ascending. ``kind``: ``"committed"`` (steps written
        by :meth:`commit_step`), ``"rollouts"``, ``"rankings"`` (by ``oracle``, or by
        any oracle when it is None) or ``"metrics"``."""
        with self._reading() as txn:
            if kind == "committed":
                return self._marker_steps(txn, K.marker_prefix(run_id, K.STEP_MARKER))
            if kind == "rollouts":
                return self._marker_steps(txn, K.marker_prefix(run_id, K.ROLLOUTS_MARKER))
            if kind == "rankings":
                prefix = K.marker_prefix(run_id, K.RANKINGS_MARKER, oracle)
                return sorted(set(self._marker_steps(txn, prefix)))
            if kind == "pairs":
                return self._marker_steps(txn, K.marker_prefix(run_id, K.PAIRS_MARKER))
            if kind == "metrics":
                prefix = K.run_prefix(run_id)
                cur = txn.cursor(db=self._db("metrics"))
                found = []
                if cur.set_range(prefix):
                    for key in cur.iternext(keys=True, values=False):
                        if not key.startswith(prefix):
                            break
                        found.append(K.read_step(key, len(prefix)))
                return found
        raise UsageError(f"unknown step kind {kind!r}; choose one of: committed, rollouts, rankings, pairs, metrics")

    def _marker_steps(self, txn: lmdb.Transaction[bytes], prefix: bytes) -> list[int]:
        cur = txn.cursor(db=self._db("commits"))
        steps = []
        if cur.set_range(prefix):
            for key in cur.iternext(keys=True, values=False):
                if not key.startswith(prefix):
                    break
                steps.append(K.read_step(key, len(key) - 8))
        return steps

    def last_committed_step(self, run_id: str) -> int | None:
        """The highest step :meth:`commit_step` finished for this run (where to resume
        from), or None if there is none."""
        prefix = K.marker_prefix(run_id, K.STEP_MARKER)
        with self._reading() as txn:
            cur = txn.cursor(db=self._db("commits"))
            # Seek just past the run's step markers and step back onto the last one.
            ok = cur.prev() if cur.set_range(K.prefix_end(prefix)) else cur.last()
            if ok and cur.key().startswith(prefix):
                return K.read_step(cur.key(), len(prefix))
        return None

    def oracles(self, run_id: str) -> list[str]:
        """Names of the oracles with at least one committed ranking shard in the run."""
        with self._reading() as txn:
            return self._oracles_in(txn, run_id)

    def get_metrics(self, run_id: str, step: int) -> dict[str, Any] | None:
        key = K.metrics_key(run_id, step)
        raw = self._get("metrics", key)
        if raw is None:
            return None
        return dict(self._field("metrics", key, self._value("metrics", key, raw), "values", dict))

    def iter_metrics(self, run_id: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(step, metrics)`` for every step of the run with metrics, in step order."""
        for key, raw in self._scan_items("metrics", K.run_prefix(run_id)):
            data = self._value("metrics", key, raw)
            yield (
                self._field("metrics", key, data, "step", int),
                self._field("metrics", key, data, "values", dict),
            )

    def _scan_items(self, db: str, prefix: bytes) -> list[tuple[bytes, bytes]]:
        with self._reading() as txn:
            return _prefix_items(txn, self._db(db), prefix)

    # ------------------------------------------------------------------ narratives

    def put_narrative(self, key: str, text: str, meta: Mapping[str, Any] | None = None) -> None:
        """Cache a narrative (the joined clip captions of a video). ``key`` should name
        everything that shapes the text: video, clip count, captioner and its prompt."""
        if not isinstance(text, str):
            raise TypeError(f"a narrative is text, got {type(text).__name__}")
        raw_key = K.narrative_key(key)
        value = seal(
            raw_key,
            encode(
                {
                    "schema": "narrative/1",
                    "key": key,
                    "text": text,
                    "meta": dict(meta or {}),
                    "created": time.time(),
                }
            ),
        )
        self._write(lambda txn: txn.put(raw_key, value, db=self._db("narratives")))

    def get_narrative_entry(self, key: str) -> NarrativeEntry | None:
        raw_key = K.narrative_key(key)
        raw = self._get("narratives", raw_key)
        if raw is None:
            return None
        data = self._value("narratives", raw_key, raw)
        return NarrativeEntry(self._field("narratives", raw_key, data, "text", str), data.get("meta") or {})

    def get_narrative(self, key: str) -> str | None:
        entry = self.get_narrative_entry(key)
        return None if entry is None else entry.text

    # ------------------------------------------------------------------ inspect, export

    def stats(self) -> dict[str, Any]:
        """What ``rlaif store inspect`` prints: size, entry counts, and per run its
        steps, records per shard kind and oracles."""
        runs: dict[str, dict[str, Any]] = {}

        def run_entry(run_id: str) -> dict[str, Any]:
            return runs.setdefault(
                run_id,
                {
                    "info": False,
                    "committed_steps": 0,
                    "last_committed_step": None,
                    "rollout_shards": 0,
                    "rollouts": 0,
                    "rankings": {},
                    "metric_steps": 0,
                    "prompts": 0,
                    "pair_shards": 0,
                    "pairs": 0,
                },
            )

        def run_of(db: str, key: bytes) -> str:
            try:
                return K.split_name(key)[0]
            except ValueError:  # no NUL, or bad UTF-8 (UnicodeDecodeError is one)
                raise self._damaged(db, key, "the key is not a run's key") from None

        with self._reading() as txn:
            entries = {name: txn.stat(self._db(name))["entries"] if name in self._handle.dbs else 0
                       for name in DATABASES}
            for key, raw in txn.cursor(db=self._db("runs")):
                run_entry(self._record("runs", key, raw).run_id)["info"] = True
            for key, raw in txn.cursor(db=self._db("commits")):
                marker = self._value("commits", key, raw)
                where = K.describe("commits", key)
                if "step" not in where:
                    raise self._damaged("commits", key, "the key is not a commit marker's key")
                entry = run_entry(where["run"])
                if where["kind"] == K.STEP_MARKER:
                    entry["committed_steps"] += 1
                    entry["last_committed_step"] = where["step"]  # keys ascend by step
                elif where["kind"] == K.ROLLOUTS_MARKER:
                    entry["rollout_shards"] += 1
                    entry["rollouts"] += marker.get("count", 0)
                elif where["kind"] == K.RANKINGS_MARKER:
                    per = entry["rankings"].setdefault(where["oracle"], {"shards": 0, "rankings": 0})
                    per["shards"] += 1
                    per["rankings"] += marker.get("count", 0)
                elif where["kind"] == K.PAIRS_MARKER:
                    entry["pair_shards"] += 1
                    entry["pairs"] += marker.get("count", 0)
            for name, counter in (("metrics", "metric_steps"), ("prompts", "prompts")):
                for key in txn.cursor(db=self._db(name)).iternext(keys=True, values=False):
                    run_entry(run_of(name, key))[counter] += 1
            info = self._env().env.info()
            psize = self._env().env.stat()["psize"]
        files = [self.path / "data.mdb", self.path / "lock.mdb"]
        return {
            "path": str(self.path),
            "format": FORMAT if self._handle.sealed else "store/1",
            "checksums": self._handle.sealed,
            "size_bytes": sum(f.stat().st_size for f in files if f.exists()),
            "used_bytes": (info["last_pgno"] + 1) * psize,
            "map_size": info["map_size"],
            "entries": entries,
            "narratives": entries["narratives"],
            "runs": {run: {**v, "oracles": sorted(v["rankings"])} for run, v in sorted(runs.items())},
        }

    def verify(self) -> Verification:
        """Check every record in one snapshot: its checksum, that it decodes to what its
        database holds (rollouts with finite log-probs), and that each committed shard
        holds as many records as its marker counted. Lists every problem; raises only
        when the store cannot be read at all."""
        found: list[Damage] = []
        noted: set[tuple[str, bytes]] = set()
        records = 0
        counted: dict[bytes, int] = {}  # shard marker key -> records stored under it
        expected: dict[bytes, int] = {}  # shard marker key -> count in the marker

        def note(db: str, key: bytes, problem: str) -> None:
            found.append(Damage(db, key.hex(), K.describe(db, key), problem))
            noted.add((db, key))

        with self._reading() as txn:
            for name in self._databases():
                try:
                    for key, raw in txn.cursor(db=self._db(name)):
                        records += 1
                        try:
                            self._check_entry(name, key, raw, expected)
                        except DamagedRecordError as exc:
                            note(name, key, exc.problem)
                        marker = _shard_marker(name, key)
                        if marker is not None:
                            counted[marker] = counted.get(marker, 0) + 1
                except lmdb.Error as exc:  # the B-tree itself, not a value, is damaged
                    found.append(Damage(name, "", {}, f"LMDB cannot walk this database: {_reason(exc)}"))
        for marker in sorted(set(expected) | set(counted)):
            if ("commits", marker) in noted:
                continue  # a damaged marker, already listed
            want, have = expected.get(marker), counted.get(marker, 0)
            if want is None:
                note("commits", marker, f"no commit marker for the {have} records of this shard")
            elif want != have:
                note("commits", marker, f"the marker counts {want} records, the shard holds {have}")
        return Verification(str(self.path), records, self._handle.sealed, found)

    def _check_entry(self, db: str, key: bytes, raw: bytes, markers: dict[bytes, int]) -> None:
        if db in _RECORD_CLASSES:
            self._record(db, key, raw)
            return
        data = self._value(db, key, raw)
        if db == "metrics":
            self._field(db, key, data, "values", dict)
            self._field(db, key, data, "step", int)
        elif db == "narratives":
            self._field(db, key, data, "text", str)
        elif db == "commits":
            kind = self._field(db, key, data, "kind", str)
            where = K.describe(db, key)
            if where.get("kind") != kind or "step" not in where:
                raise self._damaged(db, key, f"a {kind!r} marker under a key that is not one")
            if kind in (K.ROLLOUTS_MARKER, K.RANKINGS_MARKER, K.PAIRS_MARKER):
                markers[key] = self._field(db, key, data, "count", int)

    def export(self, dest: str | os.PathLike[str] | IO[str]) -> int:
        """Write every entry as JSON lines from one snapshot; returns the line count.

        Each line is ``{"db", "key" (hex), "at" (the key's fields, informational),
        "value" (the decoded map)}``; a value strict JSON cannot carry exactly (bytes,
        NaN or infinity, integer map keys) is written as ``"raw"`` (base64 msgpack,
        without the checksum seal) instead, so :meth:`import_jsonl` reproduces every
        byte. Every checksum is checked on the way: a damaged record raises
        :class:`DamagedRecordError` rather than being copied into the export."""
        if isinstance(dest, (str, os.PathLike)):
            with open(dest, "w", encoding="utf-8") as fh:
                return self.export(fh)
        count = 0
        with self._reading() as txn:
            for name in self._databases():
                for key, raw in txn.cursor(db=self._db(name)):
                    line: dict[str, Any] = {"db": name, "key": key.hex(), "at": K.describe(name, key)}
                    value = self._value(name, key, raw)
                    payload = unseal(key, raw, bare_ok=not self._handle.sealed)
                    if json_safe(value, payload):
                        line["value"] = value
                    else:
                        line["raw"] = base64.b64encode(payload).decode("ascii")
                    dest.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
                    count += 1
        return count

    def import_jsonl(self, src: str | os.PathLike[str] | IO[str]) -> int:
        """Load an :meth:`export` into this store, which must be empty (``import`` is a
        keyword, hence the name). Returns the number of entries written. An export of
        a ``store/1`` store comes in sealed, its format record moved to :data:`FORMAT`
        (how an old store is migrated); a rollout with a non-finite log-prob is refused."""
        if isinstance(src, (str, os.PathLike)):
            with open(src, encoding="utf-8") as fh:
                return self.import_jsonl(fh)
        with self._reading() as txn:
            used = [n for n in self._databases() if n != "meta" and txn.stat(self._db(n))["entries"]]
        if used:
            raise StoreError(f"import needs an empty store; {self.path} already holds {', '.join(used)}")
        count, batch = 0, []
        for number, line in enumerate(src, 1):
            if not line.strip():
                continue
            batch.append(_parse_export_line(line, number))
            if len(batch) >= _IMPORT_BATCH:
                count += self._put_entries(batch)
                batch = []
        if batch:
            count += self._put_entries(batch)
        return count

    def _put_entries(self, entries: list[tuple[str, bytes, bytes]]) -> int:
        def body(txn: lmdb.Transaction[bytes]) -> int:
            for name, key, payload in entries:
                txn.put(key, seal(key, payload), db=self._db(name))
            return len(entries)

        return self._write(body)


# ---------------------------------------------------------------------- helpers


def _reason(exc: BaseException) -> str:
    """One line saying why bytes did not decode."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, ChecksumError) else f"{type(exc).__name__}: {text}"


def _where(db: str, key: bytes) -> str:
    """A key for a person: its fields when they parse, and its bytes in hex."""
    fields = " ".join(f"{name}={value!r}" for name, value in K.describe(db, key).items())
    return f"{fields} (key {key.hex()})" if fields else f"key {key.hex()}"


def _nonfinite(logprobs: Any) -> int | None:
    """Index of the first NaN, infinite or non-numeric log-prob, or None."""
    try:
        if math.isfinite(sum(logprobs)):  # the common case: one pass in C
            return None
    except TypeError:
        pass
    for i, value in enumerate(logprobs):
        try:
            if not math.isfinite(value):
                return i
        except TypeError:
            return i
    return None  # finite values whose sum overflowed


def _show(values: Sequence[Any], i: int) -> str:
    return repr(values[i]) if isinstance(values[i], (int, float)) else type(values[i]).__name__


def _shard_name(kind: str, run_id: str, step: int, oracle: str | None = None) -> str:
    by = f" by oracle {oracle!r}" if oracle is not None else ""
    return f"{kind} shard of run {run_id!r} step {step}{by}"


def _prompt_items(run_id: str, prompts: Iterable[Prompt]) -> list[tuple[bytes, bytes, str]]:
    items: dict[str, tuple[bytes, bytes, str]] = {}
    for prompt in prompts:
        if not isinstance(prompt, Prompt):
            raise TypeError(f"expected Prompt records, got {type(prompt).__name__}")
        key = K.prompt_key(run_id, prompt.prompt_id)
        value = seal(key, encode_record(prompt))
        seen = items.get(prompt.prompt_id)
        if seen is not None and seen[1] != value:
            raise StoreError(f"two different prompts share the id {prompt.prompt_id!r}")
        items[prompt.prompt_id] = (key, value, prompt.prompt_id)
    return list(items.values())


def _rollout_items(run_id: str, step: int, rollouts: Sequence[Rollout]) -> list[tuple[bytes, bytes]]:
    prompt_index: dict[str, int] = {}
    group_sizes: list[int] = []
    positions = []
    for rollout in rollouts:
        if not isinstance(rollout, Rollout):
            raise TypeError(f"expected Rollout records, got {type(rollout).__name__}")
        bad = _nonfinite(rollout.logprobs)
        if bad is not None:
            # A NaN stored here would come back as every later ratio's NaN; refuse it now.
            raise StoreError(
                f"rollout {rollout.index} of prompt {rollout.prompt_id!r} (run {run_id!r} step {step}) has "
                f"log-prob {bad} = {_show(rollout.logprobs, bad)}; the store keeps only finite log-probs"
            )
        p = prompt_index.setdefault(rollout.prompt_id, len(prompt_index))
        if p == len(group_sizes):
            group_sizes.append(0)
        positions.append((p, group_sizes[p]))
        group_sizes[p] += 1
    keys = K.rollout_keys(run_id, step, positions)
    items = [(key, seal(key, encode_record(r))) for key, r in zip(keys, rollouts, strict=True)]
    items.sort()
    return items


def _ranking_items(
    run_id: str, step: int, oracle: str, rankings: Sequence[Ranking]
) -> list[tuple[bytes, bytes]]:
    prefix = K.ranking_prefix(run_id, step, oracle)
    items = []
    for i, ranking in enumerate(rankings):
        if not isinstance(ranking, Ranking):
            raise TypeError(f"expected Ranking records, got {type(ranking).__name__}")
        key = prefix + i.to_bytes(4, "big")
        items.append((key, seal(key, encode_record(ranking))))
    return items


def _by_oracle(
    rankings: Mapping[str, Sequence[Ranking]] | Sequence[Ranking] | None,
) -> dict[str, Sequence[Ranking]]:
    if rankings is None:
        return {}
    if isinstance(rankings, Mapping):
        return dict(rankings)
    grouped: dict[str, list[Ranking]] = {}
    for ranking in rankings:
        if not isinstance(ranking, Ranking):
            raise TypeError(f"expected Ranking records, got {type(ranking).__name__}")
        grouped.setdefault(ranking.oracle, []).append(ranking)
    return dict(grouped)


def _metric_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise UsageError(f"metric names are strings, got {name!r}")
        values[name] = decode(encode(value))  # plain numbers, as they will read back
    return values


def _shard_marker(db: str, key: bytes) -> bytes | None:
    """The commit marker key of the shard a rollout or ranking key belongs to."""
    if db not in SHARD_KINDS:
        return None
    at = K.describe(db, key)
    if "step" not in at:
        return None
    try:
        if db == "rollouts":
            return K.marker_key(at["run"], K.ROLLOUTS_MARKER, at["step"])
        if db == "pairs":
            return K.marker_key(at["run"], K.PAIRS_MARKER, at["step"])
        return K.marker_key(at["run"], K.RANKINGS_MARKER, at["step"], at["oracle"])
    except UsageError:  # a damaged key whose names no longer make a key
        return None


def _put_sorted(txn: lmdb.Transaction[bytes], db: Any, items: list[tuple[bytes, bytes]]) -> None:
    """Insert key-sorted items; append mode (no B-tree search) when they all go last."""
    if not items:
        return
    cur = txn.cursor(db=db)
    append = not cur.last() or cur.key() < items[0][0]
    cur.putmulti(items, dupdata=False, overwrite=True, append=append)


def _delete_prefix(txn: lmdb.Transaction[bytes], db: Any, prefix: bytes) -> int:
    cur = txn.cursor(db=db)
    removed = 0
    if cur.set_range(prefix):
        while cur.key().startswith(prefix):
            if not cur.delete():
                break
            removed += 1
    return removed


def _prefix_items(txn: lmdb.Transaction[bytes], db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
    cur = txn.cursor(db=db)
    items = []
    if cur.set_range(prefix):
        for key, value in cur:
            if not key.startswith(prefix):
                break
            items.append((key, value))
    return items


def _parse_export_line(line: str, number: int) -> tuple[str, bytes, bytes]:
    try:
        entry = json.loads(line)
        name, key = entry["db"], bytes.fromhex(entry["key"])
        payload = base64.b64decode(entry["raw"]) if "raw" in entry else encode(entry["value"])
        # A sealed value (copied from a store by hand) is checked, then unsealed.
        payload = unseal(key, payload, bare_ok=True)
        value = decode(payload)
    except _UNREADABLE as exc:
        raise StoreError(f"line {number} of the export is not a store entry: {_reason(exc)}") from exc
    if name not in DATABASES:
        raise StoreError(f"line {number} of the export names an unknown database {name!r}")
    if not isinstance(value, dict):
        raise StoreError(f"line {number} of the export holds a {type(value).__name__}, not a map")
    if name == "meta" and key == b"format" and value.get("schema") != FORMAT:
        # An older store's export: what is imported is sealed, so it is a FORMAT store now.
        payload = encode({**value, "schema": FORMAT, "migrated_from": value.get("schema")})
    if name == "rollouts":
        bad = _nonfinite(value.get("logprobs") or [])
        if bad is not None:
            raise StoreError(f"line {number} of the export is a rollout with a non-finite log-prob {bad}")
    return name, key, payload
