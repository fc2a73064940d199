"""GOPO: GRPO with linear rank advantages, reward magnitudes discarded.

Choi, Saha, Kim, Agarwal & Dwivedi, 2026, "GOPO: Policy Optimization using Ranked
Rewards" (arXiv 2602.03876; code friendshipkim/gopo); methods.md §4b. Each group's G
rollouts, ranked 1..G by the oracle (1 = best), get ``A_i = 2 - 4 (rank_i - 1) / (G - 1)``
(:func:`~rlaif.plugins.losses.advantages.gopo_advantages`), and the policy maximises the
same clipped surrogate + k3 KL as ``grpo-rank``. Ties (ours; the reference code breaks
them by ``argsort`` order): tied candidates get the mean of the advantages of the ranks
they span, i.e. the advantage of their mean rank.
"""

from __future__ import annotations

import torch

from rlaif.core.protocols import RankedBatch
from rlaif.plugins.losses.advantages import gopo_advantages
from rlaif.plugins.losses.policy_gradient import (
    SEQUENCE_LOSS_NEEDS,
    sequence_advantage_loss,
    sequence_loss_needs,
)
from rlaif.plugins.losses.ranked_batch import group_sizes


class GOPOLoss:
    """GOPO (Choi et al. 2026)::

        A_i = 2 - 4 (rank_i - 1) / (G - 1)          rank_i in 1..G, 1 = best; ties: mean over their ranks
        L = -(1/N) sum_i (1/|o_i|) sum_t min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i)
            + beta * KL_k3 - c_ent * H

    The advantages sum to zero in every group and run from +2 to -2 whatever G is, so
    they are neither centred on scores nor divided by a std. Groups whose ranking failed
    are left out of every term and counted in ``groups_failed``.

    :param clip_eps: PPO clip range epsilon.
    :param kl_coef: beta of the k3 KL penalty; 0 drops the need for ``ref_logprobs``.
    :param entropy_coef: entropy bonus; > 0 needs ``entropies`` ``[N, L]`` in the batch.
    """

    name = "gopo"
    needs: frozenset[str] = SEQUENCE_LOSS_NEEDS

    def __init__(self, clip_eps: float = 0.2, kl_coef: float = 0.04, entropy_coef: float = 0.0) -> None:
        self.needs = sequence_loss_needs(clip_eps, kl_coef, entropy_coef)
        self.clip_eps = clip_eps
        self.kl_coef = kl_coef
        self.entropy_coef = entropy_coef

    def advantages(self, batch: RankedBatch) -> list[float]:
        """Flattened per-rollout advantages ``[N]`` (group order); a failed ranking gives its
        group zeros (and the loss leaves those rollouts out)."""
        flat: list[float] = []
        for ranking, size in zip(batch.rankings, group_sizes(batch), strict=True):
            flat.extend(gopo_advantages(ranking, group_size=size))
        return flat

    def __call__(self, batch: RankedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return sequence_advantage_loss(self, batch)
