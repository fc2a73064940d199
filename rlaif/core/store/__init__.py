"""The run store: one LMDB environment holding every run's rollouts, rankings, metrics,
prompts and the narrative cache, written one step per transaction.

A store lives in its own directory, by convention ``RUN_DIR/store.lmdb`` (see
:func:`store_path`); :class:`RunStore` also accepts the run directory itself when it
holds a ``store.lmdb``. This package imports nothing heavy: ``lmdb`` is loaded when
:class:`RunStore` is first looked up, so ``import rlaif.core`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlaif.core.store.store import RunStore

#: Directory name of the store inside a run directory.
STORE_DIRNAME = "store.lmdb"


def store_path(run_dir: str | Path) -> Path:
    """Where the store of the run directory ``run_dir`` lives."""
    return Path(run_dir) / STORE_DIRNAME


def __getattr__(name: str) -> Any:
    if name == "RunStore":
        from rlaif.core.store.store import RunStore

        return RunStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["STORE_DIRNAME", "RunStore", "store_path"]
