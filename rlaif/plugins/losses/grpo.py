"""GRPO baseline: group-normalised score advantages with the clipped objective.

Shao et al., 2024, "DeepSeekMath" (arXiv 2402.03300), §4.1; methods.md §4. Each group's
scores become ``A_i = (r_i - mean r) / (std r + 1e-6)`` (population std); the objective
is the same clipped surrogate + k3 KL as ``grpo-rank``. Scores come through the one
normalisation :func:`~rlaif.plugins.losses.advantages.ranking_scores`: the oracle's
scores mapped from its declared range to [0, 1], else rank-derived ``(G - 1 - position) /
(G - 1)``.
"""

from __future__ import annotations

import torch

from rlaif.core.protocols import RankedBatch
from rlaif.plugins.losses.advantages import group_normalized_advantages, ranking_scores
from rlaif.plugins.losses.policy_gradient import (
    SEQUENCE_LOSS_NEEDS,
    sequence_advantage_loss,
    sequence_loss_needs,
)
from rlaif.plugins.losses.ranked_batch import group_sizes


class GRPOLoss:
    """GRPO (Shao et al. 2024)::

        A_i = (r_i - mean_j r_j) / (std_j r_j + 1e-6)
        L = -(1/N) sum_i (1/|o_i|) sum_t min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i)
            + beta * KL_k3 - c_ent * H

    :param clip_eps: PPO clip range epsilon.
    :param kl_coef: beta of the k3 KL penalty; 0 drops the need for ``ref_logprobs``.
    :param entropy_coef: entropy bonus; > 0 needs ``entropies`` ``[N, L]`` in the batch.
    """

    name = "grpo"
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
            scores = ranking_scores(ranking, size)
            flat.extend([0.0] * size if scores is None else group_normalized_advantages(scores))
        return flat

    def __call__(self, batch: RankedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return sequence_advantage_loss(self, batch)
