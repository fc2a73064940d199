"""GRPO_rank, the Oracle-RLAIF loss: GRPO whose advantages come from an oracle's ranking.

Shi et al., 2025, "Oracle-RLAIF" (arXiv 2510.02561); formulas as pinned in methods.md §1.
Each group's G rollouts get rank-aware advantages ``A_i = g(r_i) - mean_j g(r_j)`` with the
DCG gain ``g(r) = 1 / log2(2 + r)`` (see :mod:`rlaif.plugins.losses.advantages`), and the
policy maximises the clipped surrogate with a k3 KL penalty to the reference.

Options cover the paper's other readings (methods.md §1): the DCG gain's shape and its
discount ``1 / log_b(c + r)`` (``gain``, ``dcg_base``, ``dcg_offset``), and a penalty
from the policy's own ranking of the group against the oracle's (``rank_penalty``,
experimental, off by default).
"""

from __future__ import annotations

import warnings

import torch

from rlaif.core.protocols import RankedBatch
from rlaif.plugins.losses.advantages import (
    DCG_BASE,
    DCG_OFFSET,
    GAINS,
    ExperimentalWarning,
    check_dcg_discount,
    pred_vs_oracle_advantages,
    rank_advantages,
    rank_mismatch,
    std_normalize,
)
from rlaif.plugins.losses.policy_gradient import (
    SEQUENCE_LOSS_NEEDS,
    clipped_policy_loss,
    sequence_advantage_loss,
    sequence_loss_needs,
    sequence_mean,
)
from rlaif.plugins.losses.ranked_batch import group_offsets, group_sizes, ranked_rows

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
    :param dcg_base: log base b of the DCG discount ``1 / log_b(c + r)`` used by the
        ``dcg_log`` and ``dcg_secondary`` gains (default 2). It only rescales the gains.
    :param dcg_offset: offset c of that discount (default 2, so ``g(0) = 1`` for
        ``dcg_log``); a larger c flattens the gaps between the top ranks. The ``linear``
        gain has no discount and takes neither.
    :param normalize_std: divide each group's advantages by their std + 1e-6.
    :param mode: ``rank`` (default) or the experimental ``pred_vs_oracle``, which ranks
        the candidates by their sequence log-prob under the sampling policy
        (``old_logprobs`` summed over the mask) and compares with the oracle's ranks.
    :param rank_penalty: lambda >= 0 of the experimental predicted-rank penalty (0, the
        default, switches it off). With ``mode="rank"`` only::

            l_i     = (1/|o_i|) sum_t log pi_old(o_it)     length-normalised sequence log-prob
            r_hat_i = position of i when the group is sorted by l (0 = highest l)
            r_i     = the oracle's position of i (0 = best)
            p_i     = |r_hat_i - r_i| / (G - 1)            in [0, 1]
            A_i     = A_rank_i - lambda * (p_i - mean_j p_j)

        ``A_rank`` is the advantage above (after ``normalize_std`` when set); tied
        candidates, in either ranking, share the mean position of their block. The penalty
        is centred so the group's advantages still sum to zero. ``pi_old`` is the sampling
        policy, so the penalty is a constant of the objective, like the advantages.
        Experimental: the penalty is symmetric, so it also lowers an answer the oracle
        ranks above where the policy puts it (methods.md §1's second reading, whose
        direction the sources leave open).
    """

    name = "grpo-rank"
    needs: frozenset[str] = SEQUENCE_LOSS_NEEDS

    def __init__(
        self,
        clip_eps: float = 0.2,
        kl_coef: float = 0.04,
        entropy_coef: float = 0.0,
        gain: str = "dcg_log",
        normalize_std: bool = False,
        mode: str = "rank",
        dcg_base: float = DCG_BASE,
        dcg_offset: float = DCG_OFFSET,
        rank_penalty: float = 0.0,
    ) -> None:
        self.needs = sequence_loss_needs(clip_eps, kl_coef, entropy_coef)
        if gain not in GAINS:
            raise ValueError(f"unknown gain {gain!r}; expected one of {', '.join(GAINS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        check_dcg_discount(dcg_base, dcg_offset)
        if gain == "linear" and (dcg_base, dcg_offset) != (DCG_BASE, DCG_OFFSET):
            raise ValueError("dcg_base and dcg_offset shape the DCG gains; the linear gain has no discount")
        if rank_penalty < 0:
            raise ValueError(f"rank_penalty must be >= 0, got {rank_penalty}")
        if rank_penalty and mode != "rank":
            raise ValueError(
                "rank_penalty applies to mode='rank' (pred_vs_oracle already compares the rankings)"
            )
        if mode == "pred_vs_oracle":
            if gain == "linear":
                raise ValueError("mode='pred_vs_oracle' needs gain dcg_log or dcg_secondary")
            warnings.warn(
                "grpo-rank mode='pred_vs_oracle' is experimental: as written it can reinforce the worst answer",
                ExperimentalWarning,
                stacklevel=2,
            )
        if rank_penalty:
            warnings.warn(
                "grpo-rank rank_penalty is experimental: the penalty is symmetric in the rank error, so it "
                "also lowers good answers the policy under-ranks",
                ExperimentalWarning,
                stacklevel=2,
            )
        self.clip_eps = clip_eps
        self.kl_coef = kl_coef
        self.entropy_coef = entropy_coef
        self.gain = gain
        self.normalize_std = normalize_std
        self.mode = mode
        self.dcg_base = dcg_base
        self.dcg_offset = dcg_offset
        self.rank_penalty = rank_penalty

    def rank_mismatches(self, batch: RankedBatch) -> list[float]:
        """``p_i = |r_hat_i - r_i| / (G - 1)`` per rollout ``[N]`` (group order), with
        ``r_hat`` from the length-normalised sampling log-probs; 0 for failed groups."""
        t = batch.tensors
        lengthwise = sequence_mean(t["old_logprobs"], t["mask"]).tolist()  # [N]
        sizes = group_sizes(batch)
        flat: list[float] = []
        for ranking, size, start in zip(batch.rankings, sizes, group_offsets(sizes), strict=True):
            flat.extend(rank_mismatch(ranking, lengthwise[start : start + size], group_size=size))
        return flat

    def advantages(self, batch: RankedBatch) -> list[float]:
        """Flattened per-rollout advantages ``[N]`` (group order); a failed ranking gives its
        group zeros (and the loss leaves those rollouts out)."""
        sizes = group_sizes(batch)
        seq_logprobs: list[float] = []
        mismatch: list[float] = []
        if self.mode == "pred_vs_oracle":
            t = batch.tensors
            seq_logprobs = (t["old_logprobs"] * t["mask"].to(t["old_logprobs"].dtype)).sum(-1).tolist()  # [N]
        if self.rank_penalty:
            mismatch = self.rank_mismatches(batch)
        dcg = {"base": self.dcg_base, "offset": self.dcg_offset}
        flat: list[float] = []
        for ranking, size, start in zip(batch.rankings, sizes, group_offsets(sizes), strict=True):
            if self.mode == "rank":
                adv = rank_advantages(ranking, self.gain, self.normalize_std, group_size=size, **dcg)
                if self.rank_penalty:
                    p = mismatch[start : start + size]
                    mean_p = sum(p) / max(len(p), 1)
                    adv = [a - self.rank_penalty * (pi - mean_p) for a, pi in zip(adv, p, strict=True)]
            else:
                adv = pred_vs_oracle_advantages(
                    ranking, seq_logprobs[start : start + size], self.gain, group_size=size, **dcg
                )
                adv = std_normalize(adv) if self.normalize_std else adv
            flat.extend(adv)
        return flat

    def __call__(self, batch: RankedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = sequence_advantage_loss(self, batch)
        if self.rank_penalty:
            kept = [p for p, ok in zip(self.rank_mismatches(batch), ranked_rows(batch), strict=True) if ok]
            metrics["rank_mismatch"] = sum(kept) / max(len(kept), 1)
        return loss, metrics
