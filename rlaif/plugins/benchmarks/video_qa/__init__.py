"""The ``video-qa`` benchmark: the user's own videos with the annotation files the field
publishes (see :class:`VideoQA`).

Modules: ``formats`` (parsers for Video-ChatGPT / Video-LLaVA QA pairs, VCGBench, plain
JSONL and VLM-RLAIF's SFT and preference files; standard library only), ``decode``
(PyAV reading by seeking to the sampled frames) and ``benchmark`` (the component).
``VideoQA`` is imported lazily so listing plugins imports neither numpy nor PyAV.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VideoQA"]


def __getattr__(name: str) -> Any:
    if name == "VideoQA":
        from rlaif.plugins.benchmarks.video_qa.benchmark import VideoQA

        return VideoQA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
