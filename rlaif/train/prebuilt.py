"""The models the default run needs, as one list: what ``rlaif/prebuilt`` ships.

``rlaif run --oracle llm-judge --loss grpo-rank`` on the embedded world starts from the
default SFT policy, writes narratives with its caption-tuned copy and ranks with the world
judge adapted to those narratives. :func:`default_models` finds (or builds) each of them by
the same cached functions the run calls, so ``benchmarks/build_prebuilt.py`` ships exactly
what a run would look up, and a test can check the shipped set is current
(:mod:`rlaif.core.cache` explains how shipped models are used).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlaif.core.cache import entry_name, fetch_prebuilt
from rlaif.core.errors import UsageError

#: How to rebuild the shipped set (named in errors and the manifest).
BUILD_COMMAND = "python benchmarks/build_prebuilt.py"


def default_models(benchmark: Any, *, build: bool = True, progress: bool = False) -> dict[str, tuple[Path, str]]:
    """``{what: (cache directory, file that marks it finished)}`` of the default run's
    models on ``benchmark``, each cached, fetched from the shipped set or (``build``)
    built. With ``build=False`` a model that is neither cached nor shipped is an error:
    the shipped set no longer matches the code."""
    from rlaif.plugins.oracles.llm_judge import narrative_writer
    from rlaif.plugins.oracles.narrative import NARRATIVE_CLIPS
    from rlaif.plugins.oracles.world_judge import (
        adapted_judge_dir,
        cached_adapted_judge,
        cached_world_judge,
        world_judge_dir,
    )
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM, default_sft_checkpoint
    from rlaif.train.captioner import cached_captioner, captioner_dir
    from rlaif.train.sft import DEFAULT_SFT_SEED, default_sft_dir

    def have(what: str, target: Path, done: str, make: Callable[[], Any]) -> tuple[Path, str]:
        if not (target / done).exists() and not fetch_prebuilt(target, done):
            if not build:
                raise UsageError(f"the {what} ({entry_name(target)}) is neither cached nor shipped: the shipped "
                                 f"models do not match this code; rebuild them with {BUILD_COMMAND}")
            make()
        return target, done

    models = {"SFT policy": have("SFT policy", default_sft_dir(benchmark, seed=DEFAULT_SFT_SEED), "sft.json",
                                 lambda: default_sft_checkpoint(benchmark, seed=DEFAULT_SFT_SEED,
                                                                progress=progress))}
    sft = models["SFT policy"][0]
    models["caption-tuned captioner"] = have("caption-tuned captioner", captioner_dir(benchmark, sft), "sft.json",
                                             lambda: cached_captioner(benchmark, sft, progress=progress))
    writer = narrative_writer("auto", TinyVideoLM.load(sft, frames=benchmark.frames), benchmark)
    models["world judge"] = have("world judge", world_judge_dir(benchmark), "judge.json",
                                 lambda: cached_world_judge(benchmark, progress=progress))
    judge = models["world judge"][0]
    models["world judge adapted to the captioner"] = have(
        "world judge adapted to the captioner",
        adapted_judge_dir(benchmark, writer, base=judge, cuts=(NARRATIVE_CLIPS,)), "judge.json",
        lambda: cached_adapted_judge(benchmark, writer, base=judge, cuts=(NARRATIVE_CLIPS,), progress=progress))
    return models
