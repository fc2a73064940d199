"""Housekeeping of an ``rlaif run`` directory: one writer at a time, a fresh start where
no step was ever committed, and saves that a kill cannot leave half written.

The writer holds an exclusive ``flock`` on ``RUN_DIR/.lock`` from start to end. The
kernel drops it when the process dies, SIGKILL included, so a crash never leaves a
stale lock to clear by hand; the file keeps the PID of the last holder, which is how a
refused second writer learns whom to wait for. Readers (``rlaif store inspect``,
``export``, ``replay``) never take it: LMDB gives them consistent snapshots during a run.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from rlaif.core.errors import RunDirInUseError
from rlaif.core.store import STORE_DIRNAME

F = TypeVar("F", bound=Callable[..., Any])

LOCK_FILE = ".lock"
POLICY_DIR = "policy"
# The policy is written here, then renamed into place; the previous one waits in _OLD
# between the two renames (POSIX cannot rename a directory over a non-empty one).
_POLICY_TMP = ".policy.tmp"
_POLICY_OLD = ".policy.old"
#: What a run writes into its directory; all of it goes when a run that never committed
#: a step is started afresh.
RUN_OUTPUTS = (STORE_DIRNAME, "checkpoints", "metrics.csv", "eval", POLICY_DIR)

# Locks this process holds, by real path: a second lock on a directory this process
# already writes is refused as well (flock would refuse it too, but only by accident of
# the second open), and :func:`releases_run_dir` finds the lock to drop.
_HELD: dict[str, RunDirLock] = {}


class RunDirLock:
    """An exclusive hold on a run directory; :meth:`release` is idempotent."""

    def __init__(self, run_dir: Path, handle: IO[str]) -> None:
        self.run_dir, self._handle = run_dir, handle

    def release(self) -> None:
        if self._handle.closed:
            return
        _HELD.pop(os.path.realpath(self.run_dir), None)
        self._handle.close()  # closing the descriptor drops the flock; the file stays


def lock_run_dir(run_dir: Path) -> RunDirLock:
    """Take ``RUN_DIR/.lock`` (creating the directory) or raise
    :class:`~rlaif.core.errors.RunDirInUseError` naming the process that holds it."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(run_dir)
    if key in _HELD:
        raise RunDirInUseError(str(run_dir), f"{os.getpid()} (this one)")
    # "a+" opens without truncating: until flock succeeds the file names the holder.
    handle = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held past this function
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "(starting, PID not yet written)"
        handle.close()
        raise RunDirInUseError(str(run_dir), holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    lock = RunDirLock(run_dir, handle)
    _HELD[key] = lock
    return lock


def releases_run_dir(run: F) -> F:
    """Drop the lock ``run`` took on its first argument however it ends. On an exception
    the traceback keeps ``run``'s frame, and the lock in it, alive; a caller retrying in
    the same process (a notebook, a test) would find its own dead run holding the
    directory."""

    @functools.wraps(run)
    def wrapper(run_dir: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return run(run_dir, *args, **kwargs)
        finally:
            lock = _HELD.get(os.path.realpath(Path(run_dir)))
            if lock is not None:
                lock.release()

    return wrapper  # type: ignore[return-value]


def clean_stale_temps(run_dir: Path) -> None:
    """Remove what a killed save left behind: temp checkpoint and policy directories.
    Called with the lock held, so no live writer owns them."""
    for tmp in (run_dir / "checkpoints").glob("*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    policy, old = run_dir / POLICY_DIR, run_dir / _POLICY_OLD
    if old.is_dir() and not policy.exists():
        os.replace(old, policy)  # killed between save_policy's two renames: the old one is whole
    for name in (_POLICY_TMP, _POLICY_OLD):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def save_policy(policy: Any, run_dir: Path) -> Path:
    """``policy.save`` into ``RUN_DIR/policy`` so that a kill at any moment leaves the
    previous complete directory or the new one, never a mix (a policy's own ``save``
    writes file by file, into the directory readers load)."""
    final, tmp, old = run_dir / POLICY_DIR, run_dir / _POLICY_TMP, run_dir / _POLICY_OLD
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save(str(tmp))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def last_committed_step(run_dir: Path, run_id: str) -> int | None:
    """The run's last committed step, or None where the directory holds no store yet or
    a store in which no step was committed."""
    from rlaif.core.store import RunStore, store_path

    if not (store_path(run_dir) / "data.mdb").exists():
        return None
    with RunStore(store_path(run_dir), readonly=True) as store:
        return store.last_committed_step(run_id)


def clear_uncommitted_run(run_dir: Path) -> None:
    """Remove the outputs of a run that stopped before committing any step. It left no
    rollout or checkpoint, only its config and perhaps a step-0 evaluation, which a new
    run with another config must not inherit (a resume would repeat the config that
    failed)."""
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
