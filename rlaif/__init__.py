"""rlaif: reinforcement learning from AI ranking feedback for video-language models.

This module stays tiny on purpose: importing :mod:`rlaif` must not import torch,
transformers or lmdb, so ``rlaif --help`` and ``rlaif plugins list`` stay fast.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Name of the pluggy project and prefix of every hook.
PROJECT = "rlaif"
#: Entry-point group every plugin, built-in or third-party, registers through.
ENTRY_POINT_GROUP = "oracle_rlaif.plugins"

#: Decorate plugin functions with this to implement a hook.
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["ENTRY_POINT_GROUP", "PROJECT", "__version__", "hookimpl"]
