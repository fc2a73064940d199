"""GRPO_rank, the Oracle-RLAIF loss: GRPO whose advantages come from an oracle's ranking.

Shi et al., 2025, "Oracle-RLAIF" (arXiv 2510.02561); formulas as pinned in methods.md §1.
Each group's G rollouts get rank-aware advantages ``A_i = g(r_i) - mean_j g(r_j)`` with the
DCG gain ``g(r) = 1 / log2(2 + r)`` (see :mod:`rlaif.plugins.losses.advantages`), and the
policy maximises the clipped surrogate with a k3 KL penalty to the reference.
"""

from __future__ import annotations

import warnings

import torch

from rlaif.core.protocols import RankedBatch
from rlaif.plugins.losses.advantages import (
    GAINS,
    ExperimentalWarning,
    pred_vs_oracle_advantages,
    rank_advantages,
    std_normalize,
)
from rlaif.plugins.losses.policy_gradient import (
    clipped_policy_loss,
    sequence_advantage_loss,
)
from rlaif.plugins.losses.ranked_batch import group_offsets, group_sizes

MODES: tuple[str, ...] = ("rank", "pred_vs_oracle")


def grpo_rank_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
    kl_coef: float = 0.04,
    entropies: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO_rank objective on explicit tensors (Oracle-RLAIF, methods.md §1)::

        L = -(1/N) sum_i (1/|o_i|) sum_t min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i)
            + beta * KL_k3(pi_theta || pi_ref) - c_ent * H

    ``logprobs``, ``old_logprobs``, ``ref_logprobs``, ``mask``: ``[N, L]``; ``advantages``:
    ``[N]`` rank advantages; ``valid``: ``[N]`` bool, rollouts of ranked groups. See :func:`~rlaif.plugins.losses.policy_gradient.clipped_policy_loss`.
    """
    return clipped_policy_loss(
        logprobs, old_logprobs, ref_logprobs, mask, advantages, clip_eps, kl_coef, entropies, entropy_coef, valid
    )


class GRPORankLoss:
    """Oracle-RLAIF GRPO_rank (Shi et al. 2025): DCG rank advantages + clipped objective
    + k3 KL to the reference.

    :param clip_eps: PPO clip range epsilon.
    :param kl_coef: beta of the k3 KL penalty; 0 drops the need for ``ref_logprobs``.
    :param entropy_coef: entropy bonus; > 0 needs ``entropies`` ``[N, L]`` in the batch.
    :param gain: ``dcg_log`` (default), ``dcg_secondary`` or ``linear``.
    :param normalize_std: divide each group's advantages by their std + 1e-6.
    :param mode: ``rank`` (default) or the experimental ``pred_vs_oracle``, which ranks
        the candidates by their sequence log-prob under the sampling policy
        (``old_logprobs`` summed over the mask) and compares with the oracle's ranks.
    """

    name = "grpo-rank"
    needs: frozenset[str] = frozenset({"logprobs", "old_logprobs", "ref_logprobs", "mask"})

    def __init__(
        self,
        clip_eps: float = 0.2,
        kl_coef: float = 0.04,
        entropy_coef: float = 0.0,
        gain: str = "dcg_log",
        normalize_std: bool = False,
        mode: str = "rank",
    ) -> None:
        if clip_eps <= 0:
            raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        if gain not in GAINS:
            raise ValueError(f"unknown gain {gain!r}; expected one of {', '.join(GAINS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode == "pred_vs_oracle":
            if gain == "linear":
                raise ValueError("mode='pred_vs_oracle' needs gain dcg_log or dcg_secondary")
            warnings.warn(
                "grpo-rank mode='pred_vs_oracle' is experimental: as written it can reinforce the worst answer",
                ExperimentalWarning,
                stacklevel=2,
            )
        self.clip_eps = clip_eps
        self.kl_coef = kl_coef
        self.entropy_coef = entropy_coef
        self.gain = gain
        self.normalize_std = normalize_std
        self.mode = mode
        needs = set(type(self).needs)
        if kl_coef == 0:
            needs.discard("ref_logprobs")
        if entropy_coef != 0:
            needs.add("entropies")
        self.needs = frozenset(needs)

    def advantages(self, batch: RankedBatch) -> list[float]:
        """Flattened per-rollout advantages ``[N]`` (group order); a failed ranking gives its
        group zeros (and the loss leaves those rollouts out)."""
        sizes = group_sizes(batch)
        seq_logprobs: list[float] = []
        if self.mode == "pred_vs_oracle":
            t = batch.tensors
            seq_logprobs = (t["old_logprobs"] * t["mask"].to(t["old_logprobs"].dtype)).sum(-1).tolist()  # [N]
        flat: list[float] = []
        for ranking, size, start in zip(batch.rankings, sizes, group_offsets(sizes), strict=True):
            if self.mode == "rank":
                adv = rank_advantages(ranking, self.gain, self.normalize_std, group_size=size)
            else:
                adv = pred_vs_oracle_advantages(
                    ranking, seq_logprobs[start : start + size], self.gain, group_size=size
                )
                adv = std_normalize(adv) if self.normalize_std else adv
            flat.extend(adv)
        return flat

    def __call__(self, batch: RankedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return sequence_advantage_loss(self, batch)
