"""Held-out evaluation: greedy answers from the policy, scored by the benchmark.

Long-answer question types (``describe``, ``caption``) get a larger token budget than
short ones and are generated in their own batches, so one long description does not keep
a whole batch of one-word answers decoding. Baselines that the benchmark ships (a
single-frame and a blind "random" baseline for the video world) are scored by
:func:`baseline_metrics` on the same items for comparison.
"""

from __future__ import annotations

import functools
import importlib
import random
from collections.abc import Callable, Sequence
from typing import Any

from rlaif.core.records import Prompt

#: Question types whose answers are descriptions rather than a few words.
LONG_QTYPES: frozenset[str] = frozenset({"describe", "caption"})


def eval_prompts(benchmark: Any, split: str = "test", limit: int | None = None, seed: int = 0) -> list[Prompt]:
    """The split's prompts, or a seeded random subset of ``limit`` of them kept in split
    order (the first ``limit`` would over-represent the first videos)."""
    prompts = list(benchmark.prompts(split))
    if limit is not None and 0 < limit < len(prompts):
        keep = sorted(random.Random(f"eval:{seed}").sample(range(len(prompts)), limit))
        prompts = [prompts[i] for i in keep]
    return prompts


def greedy_answers(policy: Any, prompts: Sequence[Prompt], *, batch_size: int = 64, max_new_tokens: int = 24,
                   long_max_new_tokens: int = 96) -> list[str]:
    """One greedy answer per prompt, batched, long-answer types with a larger budget."""
    answers: list[str] = [""] * len(prompts)
    short = [i for i, p in enumerate(prompts) if p.qtype not in LONG_QTYPES]
    long = [i for i, p in enumerate(prompts) if p.qtype in LONG_QTYPES]
    for indices, budget in ((short, max_new_tokens), (long, long_max_new_tokens)):
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            groups = policy.generate([prompts[i] for i in chunk], 1, max_new_tokens=budget, greedy=True)
            for i, group in zip(chunk, groups, strict=False):
                answers[i] = group[0].text
    return answers


def evaluate_policy(policy: Any, benchmark: Any, split: str = "test", limit: int | None = None,
                    batch_size: int = 64, max_new_tokens: int = 24, long_max_new_tokens: int = 96,
                    seed: int = 0) -> dict[str, float]:
    """Greedy answers on ``split`` (all items, or a seeded subset of ``limit``) scored by
    ``benchmark.score``: e.g. ``acc/all``, ``acc/short``, ``acc/<qtype>``, ``score/describe``."""
    import torch

    prompts = eval_prompts(benchmark, split, limit, seed)
    with torch.no_grad():
        answers = greedy_answers(policy, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 long_max_new_tokens=long_max_new_tokens)
    return {k: float(v) for k, v in benchmark.score(prompts, answers).items()}


def _baseline_functions(benchmark: Any) -> dict[str, Callable[[str], Any]]:
    """Baselines the benchmark offers: methods ``single_frame_baseline`` /
    ``random_baseline``, or functions of those names in a ``baselines`` module next to
    the benchmark's module, called as ``fn(benchmark, split)``."""
    found: dict[str, Callable[[str], Any]] = {}
    module = None
    package = type(benchmark).__module__.rpartition(".")[0]
    if package:
        try:
            module = importlib.import_module(package + ".baselines")
        except ImportError:
            module = None
    for name in ("single_frame_baseline", "random_baseline"):
        method = getattr(benchmark, name, None)
        if callable(method):
            found[name.removesuffix("_baseline")] = method
        elif module is not None and callable(getattr(module, name, None)):
            found[name.removesuffix("_baseline")] = functools.partial(getattr(module, name), benchmark)
    return found


def baseline_metrics(benchmark: Any, split: str = "test") -> dict[str, dict[str, float]]:
    """``{"single_frame": metrics, "random": metrics}`` for whichever baselines the
    benchmark provides (empty when it provides none), on the whole ``split``."""
    return {name: {k: float(v) for k, v in fn(split).items()} for name, fn in _baseline_functions(benchmark).items()}
