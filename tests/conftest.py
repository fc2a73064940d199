"""Shared test setup: offline, single-threaded torch, and an isolated cache dir."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):  # type: ignore[no-untyped-def]
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)
