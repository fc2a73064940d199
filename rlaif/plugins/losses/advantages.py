"""Turning an oracle's ranking of a group into per-candidate advantages (or scores).

Everything here is plain Python on lists, with no torch, so it can be unit-tested by hand
and reused by any loss. Advantages are per *candidate* (one number per rollout of a
group); the losses broadcast them over the rollout's tokens.

Conventions: a group has G candidates indexed ``0..G-1`` in the order of
``Group.rollouts``; a rank or position is 0 for the best. A failed ranking
(``ranking.ok`` is false) carries no signal and yields zeros; callers count such groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlaif.core.records import Ranking

#: Gain functions accepted by :func:`dcg_gain` and :func:`rank_advantages`.
GAINS: tuple[str, ...] = ("dcg_log", "dcg_secondary", "linear")

RankingOrPositions = Ranking | Sequence[float]


class ExperimentalWarning(UserWarning):
    """Emitted when an experimental, unvalidated advantage mode is switched on."""


#: Default DCG discount ``1 / log_base(offset + r)``: base 2, offset 2, so ``g(0) = 1``.
DCG_BASE = 2.0
DCG_OFFSET = 2.0


def check_dcg_discount(base: float, offset: float) -> None:
    """Reject a discount ``1 / log_base(offset + r)`` that is not positive and decreasing
    from rank 0: it needs ``base > 1`` and ``offset > 1``."""
    if not base > 1:
        raise ValueError(f"the DCG log base must be > 1, got {base}")
    if not offset > 1:
        raise ValueError(f"the DCG offset must be > 1 (so log(offset + 0) > 0), got {offset}")


def _log_base(x: float, base: float) -> float:
    # log2 itself for base 2, so the default gains are bit-for-bit the historical ones
    return math.log2(x) if base == 2.0 else math.log(x) / math.log(base)


def dcg_gain(
    rank: float,
    kind: str = "dcg_log",
    group_size: int | None = None,
    *,
    base: float = DCG_BASE,
    offset: float = DCG_OFFSET,
) -> float:
    """Gain of the candidate at ``rank`` (0 = best).

    - ``dcg_log``: ``1 / log_b(c + r)``, the DCG discount alone; with the defaults
      ``b = 2, c = 2`` it is the standard ``1 / log2(2 + r)``, so ``g(0) = 1``
      (Oracle-RLAIF default, methods.md §1).
    - ``dcg_secondary``: ``1 / ((1 + r) * log_b(c + r))``, the secondary sources' reading
      (a reciprocal-rank gain times the same discount).
    - ``linear``: ``(G - 1 - r) / (G - 1)``, 1 for the best and 0 for the worst; needs
      ``group_size``; a group of one gets 1. It has no discount, so ``base`` and
      ``offset`` are ignored.

    ``base`` (b) only rescales the DCG gains (``1 / log_b x = ln b / ln x``); ``offset`` (c)
    changes their shape: a larger c flattens the gaps between the top ranks.
    """
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    if kind in ("dcg_log", "dcg_secondary"):
        check_dcg_discount(base, offset)
        log = _log_base(offset + rank, base)
        return 1.0 / log if kind == "dcg_log" else 1.0 / ((1.0 + rank) * log)
    if kind == "linear":
        if group_size is None:
            raise ValueError("the linear gain needs group_size")
        if group_size <= 1:
            return 1.0
        return (group_size - 1 - rank) / (group_size - 1)
    raise ValueError(f"unknown gain {kind!r}; expected one of {', '.join(GAINS)}")


def rank_blocks(ranking_or_positions: RankingOrPositions) -> list[list[int]]:
    """Candidates grouped into blocks of equal rank, best block first.

    A :class:`Ranking` gives its ``tie_groups()``. A sequence of positions (one per
    candidate, lower is better) is read as an *ordering only*: candidates with equal
    positions form a block, so ``[0, 1.5, 1.5, 3]``, ``[0, 1, 1, 3]`` and ``[0, 1, 1, 2]``
    all mean "best, then a two-way tie, then worst".
    """
    if isinstance(ranking_or_positions, Ranking):  # validated when it was built
        return ranking_or_positions.tie_groups()
    positions = [float(p) for p in ranking_or_positions]
    return [[i for i, p in enumerate(positions) if p == value] for value in sorted(set(positions))]


def tie_aware_gains(
    blocks: Sequence[Sequence[int]],
    gain: str = "dcg_log",
    *,
    base: float = DCG_BASE,
    offset: float = DCG_OFFSET,
) -> list[float]:
    """Gain per candidate; a tie block spanning positions ``s..e`` gets the *mean gain*
    ``mean(g(s), ..., g(e))`` (not the gain of the mean position; methods.md §1).
    ``base`` and ``offset`` parametrise the DCG discount (see :func:`dcg_gain`)."""
    group_size = sum(len(b) for b in blocks)
    gains = [0.0] * group_size
    start = 0
    for block in blocks:
        span = range(start, start + len(block))
        mean_gain = sum(dcg_gain(r, gain, group_size, base=base, offset=offset) for r in span) / len(block)
        for c in block:
            gains[c] = mean_gain
        start += len(block)
    return gains


def std_normalize(values: Sequence[float], eps: float = 1e-6) -> list[float]:
    """Divide by the population standard deviation (``unbiased=False``) plus ``eps``."""
    if not values:
        return []
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [v / (std + eps) for v in values]


def _failed_size(ranking: Ranking, group_size: int | None) -> int:
    return group_size if group_size is not None else len(ranking.order)


def _check_size(n: int, group_size: int | None) -> None:
    if group_size is not None and n != group_size:
        raise ValueError(f"the ranking covers {n} candidates but the group has {group_size}")


def rank_advantages(
    ranking_or_positions: RankingOrPositions,
    gain: str = "dcg_log",
    normalize_std: bool = False,
    eps: float = 1e-6,
    *,
    group_size: int | None = None,
    base: float = DCG_BASE,
    offset: float = DCG_OFFSET,
) -> list[float]:
    """GRPO_rank advantages of one group (Shi et al. 2025, Oracle-RLAIF; methods.md §1).

    ``A_i = g(r_i) - mean_j g(r_j)`` with ``g`` from :func:`dcg_gain` (``base`` and
    ``offset`` are its DCG discount's parameters) and tied candidates sharing the mean
    gain of the positions they span. The advantages sum to zero and lie
    in ``[-1, 1]``; the largest gaps sit at the top of the ranking. With
    ``normalize_std`` they are divided by their population std plus ``eps``, as GRPO does.

    Worked example (G = 5, ranks 0..4, ``dcg_log``): ``A = +.4103, +.0412, -.0897,
    -.1590, -.2028``; std-normalised ``+1.855, +.187, -.406, -.719, -.917``.

    A failed ranking gives ``group_size`` zeros (its ``order`` is empty, so pass
    ``group_size``; without it the length of ``order`` is used). A group of one, or a
    group whose candidates are all tied, gives zeros too.
    """
    if isinstance(ranking_or_positions, Ranking) and not ranking_or_positions.ok:
        return [0.0] * _failed_size(ranking_or_positions, group_size)
    blocks = rank_blocks(ranking_or_positions)
    gains = tie_aware_gains(blocks, gain, base=base, offset=offset)
    _check_size(len(gains), group_size)
    if not gains:
        return []
    mean = sum(gains) / len(gains)
    advantages = [g - mean for g in gains]
    return std_normalize(advantages, eps) if normalize_std else advantages


def group_normalized_advantages(scores: Sequence[float], eps: float = 1e-6) -> list[float]:
    """GRPO advantages of one group (Shao et al. 2024; methods.md §4).

    ``A_i = (r_i - mean r) / (std r + eps)`` with the *population* std (``unbiased=False``,
    as in DeepSeekMath's description; TRL uses the unbiased one). Equal scores give zeros.
    """
    scores = [float(s) for s in scores]
    if not scores:
        return []
    mean = sum(scores) / len(scores)
    return std_normalize([s - mean for s in scores], eps)


def rank_to_scores(ranking_or_positions: RankingOrPositions, *, group_size: int | None = None) -> list[float]:
    """Scores for a rank-only oracle, so score-based losses (``grpo``, ``ppo``) can use it.

    ``score_i = (G - 1 - position_i) / (G - 1)``: 1 for the best, 0 for the worst, tied
    candidates get the mean of the positions they span (i.e. equal scores). A group of
    one gets ``[0.0]``; a failed ranking gives ``group_size`` zeros. Scores on a declared
    scale are used instead (see :func:`ranking_scores`).
    """
    if isinstance(ranking_or_positions, Ranking) and not ranking_or_positions.ok:
        return [0.0] * _failed_size(ranking_or_positions, group_size)
    blocks = rank_blocks(ranking_or_positions)
    n = sum(len(b) for b in blocks)
    _check_size(n, group_size)
    if n <= 1:
        return [0.0] * n
    scores = [0.0] * n
    start = 0
    for block in blocks:
        mean_position = start + (len(block) - 1) / 2
        for c in block:
            scores[c] = (n - 1 - mean_position) / (n - 1)
        start += len(block)
    return scores


def ranking_scores(ranking: Ranking, group_size: int) -> list[float] | None:
    """Per-candidate scores of one group on one scale, [0, 1], or ``None`` if the ranking
    failed: the one normalisation every score loss (``grpo``, ``ppo``) reads.

    - scores with a declared ``ranking.score_range = [lo, hi]`` are clamped to it and
      mapped to ``(s - lo) / (hi - lo)`` (so a verifier's 0/1 stays 0/1);
    - scores without a declared range (label log-likelihoods, reward-model outputs: an
      order only, possibly with sentinels such as -100 for a label a judge never named)
      and rank-only rankings give :func:`rank_to_scores`: 1 for the best, 0 for the worst.
    """
    if not ranking.ok:
        return None
    if ranking.scores is not None and ranking.score_range is not None:
        _check_size(len(ranking.scores), group_size)
        lo, hi = (float(x) for x in ranking.score_range)
        return [(min(max(float(s), lo), hi) - lo) / (hi - lo) for s in ranking.scores]
    return rank_to_scores(ranking, group_size=group_size)


def pred_vs_oracle_advantages(
    ranking_or_positions: RankingOrPositions,
    policy_scores: Sequence[float],
    gain: str = "dcg_log",
    *,
    group_size: int | None = None,
    base: float = DCG_BASE,
    offset: float = DCG_OFFSET,
) -> list[float]:
    """EXPERIMENTAL "prediction vs oracle" advantages (secondary reading of Oracle-RLAIF).

    ``r_hat_i`` is candidate i's rank under the policy (by ``policy_scores``, e.g. the
    sequence log-prob; higher is better, exact ties share the mean gain), ``r_i`` its
    oracle rank, ``delta_i = 1 - g(r_hat_i) / g(r_i)`` and ``A_i = mean_j delta_j - delta_i``.

    Flagged experimental (methods.md §1): as written it can reinforce the oracle's worst
    answer, e.g. a worst answer the policy ranks first gets ``delta < 0`` and so a large
    positive advantage. A policy that agrees with the oracle gets all zeros. Needs a
    strictly positive gain (``dcg_log`` or ``dcg_secondary``).
    """
    if gain not in ("dcg_log", "dcg_secondary"):
        raise ValueError(
            f"pred_vs_oracle needs a strictly positive gain (dcg_log or dcg_secondary), got {gain!r}"
        )
    if isinstance(ranking_or_positions, Ranking) and not ranking_or_positions.ok:
        return [0.0] * _failed_size(ranking_or_positions, group_size)
    oracle_gains = tie_aware_gains(rank_blocks(ranking_or_positions), gain, base=base, offset=offset)
    _check_size(len(oracle_gains), group_size)
    if len(policy_scores) != len(oracle_gains):
        raise ValueError(f"{len(policy_scores)} policy scores for {len(oracle_gains)} candidates")
    policy_blocks = rank_blocks([-float(s) for s in policy_scores])
    policy_gains = tie_aware_gains(policy_blocks, gain, base=base, offset=offset)
    deltas = [1.0 - p / o for p, o in zip(policy_gains, oracle_gains, strict=True)]
    if not deltas:
        return []
    mean = sum(deltas) / len(deltas)
    return [mean - d for d in deltas]


def mean_positions(blocks: Sequence[Sequence[int]]) -> list[float]:
    """Position of each candidate (0 = best) from tie blocks, best block first; a block
    spanning positions ``s..e`` gives each of its candidates ``(s + e) / 2`` (as
    :meth:`Ranking.positions` does)."""
    positions = [0.0] * sum(len(b) for b in blocks)
    start = 0
    for block in blocks:
        for c in block:
            positions[c] = start + (len(block) - 1) / 2
        start += len(block)
    return positions


def gopo_advantages(
    ranking_or_positions: RankingOrPositions, *, group_size: int | None = None
) -> list[float]:
    """GOPO advantages of one group (Choi et al. 2026, arXiv 2602.03876, eq. for
    ``A^rank``; methods.md §4b).

    With ranks ``rho_i`` in ``1..G`` (1 = best), ``A_i = 2 - 4 (rho_i - 1) / (G - 1)``: linear
    from +2 for the best to -2 for the worst, whatever the reward magnitudes. Ties (ours;
    the reference code breaks them by ``argsort`` order): tied candidates get the mean of
    the advantages of the ranks they span, which, the map being linear, is the advantage
    of their mean rank; so the advantages still sum to zero. Equal to 4x
    :func:`rank_advantages` with the ``linear`` gain. A failed ranking gives
    ``group_size`` zeros; a group of one gives ``[0.0]``.
    """
    if isinstance(ranking_or_positions, Ranking) and not ranking_or_positions.ok:
        return [0.0] * _failed_size(ranking_or_positions, group_size)
    positions = mean_positions(rank_blocks(ranking_or_positions))  # rho_i - 1
    n = len(positions)
    _check_size(n, group_size)
    if n <= 1:
        return [0.0] * n
    return [2.0 - 4.0 * p / (n - 1) for p in positions]


def corpo_advantages(scores: Sequence[float], threshold: float) -> list[float]:
    """CoRPO advantages of one group (Garg et al. 2025, arXiv 2511.04439; methods.md §4b).

    ``A_i = r_i - max(mean_j r_j, tau)``: GRPO's mean baseline clipped from below at the
    correctness threshold ``tau``, so while the group's mean is under ``tau`` no answer
    below ``tau`` gets a positive advantage (and an all-wrong group is pushed down
    instead of giving zeros); once the mean reaches ``tau`` it is GRPO's mean-centred
    advantage. Not divided by the group std: see :mod:`rlaif.plugins.losses.corpo`.
    """
    scores = [float(s) for s in scores]
    if not scores:
        return []
    baseline = max(sum(scores) / len(scores), threshold)
    return [s - baseline for s in scores]


def rank_mismatch(
    ranking_or_positions: RankingOrPositions,
    policy_scores: Sequence[float],
    *,
    group_size: int | None = None,
) -> list[float]:
    """How far the policy's own ranking of a group is from the oracle's, per candidate:
    ``p_i = |r_hat_i - r_i| / (G - 1)`` in ``[0, 1]``.

    ``r_i`` is the oracle's position (0 = best; tied candidates share the mean position
    of their block), ``r_hat_i`` the position of candidate i when the group is sorted by
    ``policy_scores`` (higher is better; exactly equal scores share the mean position).
    A failed ranking gives ``group_size`` zeros; a group of one gives ``[0.0]``.
    """
    if isinstance(ranking_or_positions, Ranking) and not ranking_or_positions.ok:
        return [0.0] * _failed_size(ranking_or_positions, group_size)
    oracle = mean_positions(rank_blocks(ranking_or_positions))
    n = len(oracle)
    _check_size(n, group_size)
    if len(policy_scores) != n:
        raise ValueError(f"{len(policy_scores)} policy scores for {n} candidates")
    if n <= 1:
        return [0.0] * n
    predicted = mean_positions(rank_blocks([-float(s) for s in policy_scores]))
    return [abs(p - o) / (n - 1) for p, o in zip(predicted, oracle, strict=True)]
