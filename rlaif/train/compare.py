"""Two evaluations compared item by item: the paired difference and its bootstrap interval.

Two policies evaluated on the same items differ by much less noise than two independent
accuracies suggest, because most items are easy or hard for both. Pairing by
``prompt_id`` and resampling items (not answers) gives the interval a paper reports for
"B beats A on this benchmark" (Efron & Tibshirani 1993, ch. 13, percentile interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlaif.core.errors import UsageError
from rlaif.train.evaluate import ItemResult

#: Per-item fields a comparison can be made on: ``correct`` is what ``acc/all`` counts,
#: ``score`` the benchmark's [0, 1] item score.
METRICS = ("correct", "score")
_CHUNK = 1000  # resamples per block: bounds memory at _CHUNK x items indices


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n: int = 10000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """``(mean(b - a), lo, hi)``: the mean paired difference and the ``level`` percentile
    interval of its bootstrap distribution, from ``n`` resamples of the item indices with
    numpy's generator seeded by ``seed``. ``a[i]`` and ``b[i]`` must be the same item."""
    import numpy as np

    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_bootstrap needs two equally long, non-empty sequences; "
                         f"got {len(a)} and {len(b)}")
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)  # [items]
    rng = np.random.default_rng(seed)
    means = np.concatenate([  # [n], one [chunk, items] block of indices in memory at a time
        diff[rng.integers(0, len(diff), size=(min(_CHUNK, n - start), len(diff)))].mean(axis=1)
        for start in range(0, n, _CHUNK)])
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(lo), float(hi)


@dataclass(frozen=True)
class PairedDifference:
    """One row of a comparison: ``diff`` = mean(B) - mean(A) over ``n`` paired items."""

    group: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    lo: float
    hi: float


def compare_items(a: Sequence[ItemResult], b: Sequence[ItemResult], *, metric: str = "correct",
                  n: int = 10000, seed: int = 0) -> list[PairedDifference]:
    """Pair items by ``prompt_id``; one row over all paired items (``all``), then one per
    question type. Items only one side has, or that one side could not score (a free-text
    answer no judge scored), are left out (the caller can report how many); no overlap
    at all is a :class:`UsageError`."""
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    by_id = {item.prompt_id: item for item in b}
    pairs = [(item, by_id[item.prompt_id]) for item in a
             if item.prompt_id in by_id and item.scored and by_id[item.prompt_id].scored]
    if not pairs:
        raise UsageError("the two evaluations share no items (no common prompt_id); "
                         "evaluate both on the same split and items")
    groups: dict[str, list[tuple[ItemResult, ItemResult]]] = {"all": pairs}
    for pair in pairs:
        groups.setdefault(pair[0].qtype, []).append(pair)
    rows = []
    for group, members in groups.items():
        xs = [float(getattr(x, metric)) for x, _ in members]
        ys = [float(getattr(y, metric)) for _, y in members]
        diff, lo, hi = paired_bootstrap(xs, ys, n=n, seed=seed)
        rows.append(PairedDifference(group, len(members), sum(xs) / len(xs), sum(ys) / len(ys), diff, lo, hi))
    return rows

