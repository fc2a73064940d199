"""CoRPO: GRPO whose mean baseline is clipped from below at a correctness threshold.

Garg, Zhang, Neema, Bick, Venkatesh & Hestness, 2025, "CoRPO: Adding a Correctness Bias
to GRPO Improves Generalization" (arXiv 2511.04439; v1/v2 titled "The Peril of
Preference: Why GRPO fails on Ordinal Rewards"); methods.md §4b. GRPO's baseline, the
group mean, gives a positive advantage to a wrong answer that is merely less wrong than
its group; CoRPO uses ``max(mean_j r_j, tau)`` instead, so below the threshold ``tau``
nothing is reinforced, and once the group's mean reaches ``tau`` it is GRPO again
("relative preference mode").

Scores ``r_i`` come through the one normalisation every score loss reads,
:func:`~rlaif.plugins.losses.advantages.ranking_scores`: the oracle's scores mapped from
its declared range to [0, 1] (a verifier's 0/1 stays 0/1), else rank-derived
``(G - 1 - position) / (G - 1)``. ``tau`` is on that [0, 1] scale. With a rank-only
oracle the scores of every group average exactly 1/2, so ``tau <= 0.5`` is plain
mean-centring and ``tau > 0.5`` shifts every advantage down by ``tau - 0.5``: CoRPO means
something only with an oracle that declares a score range (a verifier, a P(correct) judge).

Normalisation (ours; the paper's full text was not available, and the secondary account of
v1 writes ``A = R - b`` without a std): the advantage is **not** divided by the group's
std. Dividing would undo the point of the clip: an all-wrong group (equal or nearly equal
scores, std near 0) would turn its small negative ``r - tau`` into a huge one, and for a
group below ``tau`` the division rescales by a spread the baseline no longer uses.
"""

from __future__ import annotations

import torch

from rlaif.core.protocols import RankedBatch
from rlaif.plugins.losses.advantages import corpo_advantages, ranking_scores
from rlaif.plugins.losses.policy_gradient import (
    SEQUENCE_LOSS_NEEDS,
    sequence_advantage_loss,
    sequence_loss_needs,
)
from rlaif.plugins.losses.ranked_batch import group_sizes


class CoRPOLoss:
    """CoRPO (Garg et al. 2025)::

        A_i = r_i - max(mean_j r_j, tau)               r_i in [0, 1] (ranking_scores)
        L = -(1/N) sum_i (1/|o_i|) sum_t min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i)
            + beta * KL_k3 - c_ent * H

    Groups whose ranking failed are left out of every term and counted in
    ``groups_failed``. Metrics add ``baseline_clipped``: the share of ranked groups whose
    mean score was below ``tau`` (where the threshold, not the mean, was the baseline).

    :param threshold: ``tau`` in [0, 1], the correctness threshold on the normalised
        score scale (default 0.5: half marks, or between a verifier's 0 and 1).
    :param clip_eps: PPO clip range epsilon.
    :param kl_coef: beta of the k3 KL penalty; 0 drops the need for ``ref_logprobs``.
    :param entropy_coef: entropy bonus; > 0 needs ``entropies`` ``[N, L]`` in the batch.
    """

    name = "corpo"
    needs: frozenset[str] = SEQUENCE_LOSS_NEEDS

    def __init__(
        self, threshold: float = 0.5, clip_eps: float = 0.2, kl_coef: float = 0.04, entropy_coef: float = 0.0
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1] (the normalised score scale), got {threshold}")
        self.needs = sequence_loss_needs(clip_eps, kl_coef, entropy_coef)
        self.threshold = threshold
        self.clip_eps = clip_eps
        self.kl_coef = kl_coef
        self.entropy_coef = entropy_coef

    def group_scores(self, batch: RankedBatch) -> list[list[float] | None]:
        """Each group's scores on the [0, 1] scale, ``None`` where the ranking failed."""
        return [ranking_scores(r, size) for r, size in zip(batch.rankings, group_sizes(batch), strict=True)]

    def advantages(self, batch: RankedBatch) -> list[float]:
        """Flattened per-rollout advantages ``[N]`` (group order); a failed ranking gives its
        group zeros (and the loss leaves those rollouts out)."""
        flat: list[float] = []
        for scores, size in zip(self.group_scores(batch), group_sizes(batch), strict=True):
            flat.extend([0.0] * size if scores is None else corpo_advantages(scores, self.threshold))
        return flat

    def __call__(self, batch: RankedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = sequence_advantage_loss(self, batch)
        ranked = [s for s in self.group_scores(batch) if s]
        clipped = sum(sum(s) / len(s) < self.threshold for s in ranked)
        metrics["baseline_clipped"] = clipped / max(len(ranked), 1)
        return loss, metrics
