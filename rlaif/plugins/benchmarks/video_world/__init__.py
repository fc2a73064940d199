"""The embedded "video world" benchmark: procedural mp4 videos of moving shapes with
ground-truth events, captions and question-answer items (see :class:`VideoWorld`).

Modules: ``vocab`` (the closed vocabulary), ``world`` (generation, events, captions, QA),
``video_io`` (PyAV write/read, uniform sampling, clip splitting), ``scoring`` (answer
scoring), ``baselines`` (single-frame and blind baselines), ``benchmark`` (the component).
``VideoWorld`` is imported lazily so ``scoring`` can be used without numpy or PyAV.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VideoWorld"]


def __getattr__(name: str) -> Any:
    if name == "VideoWorld":
        from rlaif.plugins.benchmarks.video_world.benchmark import VideoWorld

        return VideoWorld
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
