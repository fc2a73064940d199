"""Reading a :class:`~rlaif.core.protocols.RankedBatch` the way every loss needs to.

A batch holds B groups; group b has G_b rollouts and one ranking. Tensors are flattened
in group order, so rows ``offsets[b] .. offsets[b] + G_b - 1`` belong to group b and
``N = sum_b G_b``. Candidate indices in a ranking are positions in ``group.rollouts``.

One rule for failed rankings, in every loss: a group whose ranking is not ``ok`` (no
ranking, or an oracle's ``on_failure="tie"`` stand-in, which keeps ``failure`` set)
carries no preference, so its rollouts are left out of *every* term of the loss (policy
gradient, KL, entropy, value) and the group is counted in the ``groups_failed`` metric.
:func:`ranked_rows` and :func:`groups_failed` are where that rule lives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rlaif.core.protocols import RankedBatch


def group_sizes(batch: RankedBatch) -> list[int]:
    """G_b for each group; checks there is one ranking per group."""
    if len(batch.rankings) != len(batch.groups):
        raise ValueError(
            f"{len(batch.rankings)} rankings for {len(batch.groups)} groups; expected one per group"
        )
    for group, ranking in zip(batch.groups, batch.rankings, strict=True):
        if ranking.ok and ranking.prompt_id != group.prompt.prompt_id:
            raise ValueError(
                f"ranking for prompt {ranking.prompt_id!r} paired with group of prompt {group.prompt.prompt_id!r}"
            )
    return [len(group.rollouts) for group in batch.groups]


def ranked_rows(batch: RankedBatch) -> list[bool]:
    """``[N]`` flags, group order: True where the rollout's group has a usable ranking."""
    return [ranking.ok for ranking, size in zip(batch.rankings, group_sizes(batch), strict=True)
            for _ in range(size)]


def groups_failed(batch: RankedBatch) -> int:
    """How many groups' rankings failed (their rollouts are left out of the loss)."""
    return sum(not ranking.ok for ranking in batch.rankings)


def group_offsets(sizes: Iterable[int]) -> list[int]:
    """First flattened row of each group."""
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += size
    return offsets


def require_tensors(batch: RankedBatch, names: Iterable[str], loss: str, n_rows: int) -> None:
    """Fail loudly, naming every missing tensor, if the batch lacks what the loss needs;
    check that each present tensor has one row per rollout."""
    missing = sorted(n for n in names if batch.tensors.get(n) is None)
    if missing:
        raise ValueError(
            f"loss {loss!r} needs tensors {missing} in batch.tensors (got {sorted(batch.tensors)})"
        )
    for name in names:
        rows = _rows(batch.tensors[name])
        if rows != n_rows:
            raise ValueError(f"batch.tensors[{name!r}] has {rows} rows; the groups hold {n_rows} rollouts")


def _rows(tensor: Any) -> int:
    shape = getattr(tensor, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) else len(tensor)


def tensors_on(batch: RankedBatch, device: Any) -> dict[str, Any]:
    """``batch.tensors`` with every tensor moved to ``device`` (dtypes kept): constants such
    as ``old_logprobs`` or ``finished`` are often built on the CPU while the policy's
    ``logprobs`` live on the accelerator."""
    return {
        k: v.to(device) if hasattr(v, "to") and hasattr(v, "device") else v for k, v in batch.tensors.items()
    }
