"""Pieces shared by the clipped policy-gradient losses (``grpo-rank``, ``grpo``, ``gopo``,
``corpo``, ``ppo``).

Shapes: ``N = B*G`` rollouts, ``L`` response tokens. ``logprobs``, ``old_logprobs``,
``ref_logprobs`` and ``mask`` are ``[N, L]``; ``mask`` (bool or float) is 1 on response
tokens. ``old_logprobs`` (the sampling policy), ``ref_logprobs`` and advantages are
constants of the objective, so they are detached here; gradients flow into ``logprobs``
(and, for PPO, the values) only.
"""

from __future__ import annotations

from typing import Any

import torch


def sequence_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence token mean ``(1/|o_i|) sum_t x_it`` -> ``[N]``; empty sequences give 0."""
    m = mask.to(x.dtype)  # [N, L]
    return (x * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # [N]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """GRPO averaging: token mean within each sequence, then mean over sequences ->
    scalar ``(1/N) sum_i (1/|o_i|) sum_t x_it``. With ``rows`` (``[N]`` bool) only those
    sequences count, numerator and denominator alike; none gives 0."""
    seq = sequence_mean(x, mask)  # [N]
    if rows is None:
        return seq.mean()
    w = rows.to(seq.dtype)  # [N]
    return (seq * w).sum() / w.sum().clamp(min=1.0)


def token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PPO averaging: mean over every valid token of the batch -> scalar; 0 if none."""
    m = mask.to(x.dtype)  # [N, L]
    return (x * m).sum() / m.sum().clamp(min=1.0)


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), per token.

    ``min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)`` with ``rho = exp(logprobs -
    old_logprobs)``. ``advantages`` is ``[N]`` (one per sequence, broadcast over tokens)
    or ``[N, L]`` (per token). Returns the objective ``[N, L]`` (to be *maximised*) and
    the clip fraction: the share of valid tokens where the clipped branch is the smaller
    one, i.e. where the gradient is cut off (detached 0-dim tensor).
    """
    adv = advantages.detach().to(logprobs.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)  # [N, 1]
    ratio = torch.exp(logprobs - old_logprobs.detach())  # [N, L]
    unclipped = ratio * adv  # [N, L]
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv  # [N, L]
    objective = torch.minimum(unclipped, clipped)  # [N, L]
    clip_frac = token_mean((clipped < unclipped).to(logprobs.dtype), mask).detach()
    return objective, clip_frac


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi_theta || pi_ref) (Schulman 2020, as in GRPO):
    ``exp(ref - lp) - (ref - lp) - 1`` -> ``[N, L]``; >= 0 and exactly 0 where equal."""
    log_ratio = ref_logprobs.detach() - logprobs  # [N, L]
    return torch.exp(log_ratio) - log_ratio - 1.0


def clipped_policy_loss(
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
    """The GRPO-family objective with sequence-level advantages (methods.md §1, §4)::

        L = -(1/N) sum_i (1/|o_i|) sum_t min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i)
            + beta * (1/N) sum_i (1/|o_i|) sum_t KL_k3,it  -  c_ent * H

    ``advantages`` is ``[N]``. ``valid`` (``[N]`` bool, default all) keeps only those
    rollouts: the others (groups whose ranking failed) are out of every term, and ``N``
    counts the valid ones. ``ref_logprobs`` may be ``None`` only when ``kl_coef`` is
    0; ``entropies`` (``[N, L]``, per-token policy entropy) only when ``entropy_coef`` is 0.
    Returns the scalar loss and detached metrics ``loss, pg_loss, kl, clip_frac`` (and
    ``entropy`` when given).
    """
    if valid is not None:
        mask = mask.to(logprobs.dtype) * valid.to(logprobs.dtype).unsqueeze(-1)  # [N, L]
    objective, clip_frac = clipped_surrogate(logprobs, old_logprobs, advantages, mask, clip_eps)  # [N, L]
    pg_loss = -masked_mean(objective, mask, valid)
    loss = pg_loss
    if ref_logprobs is None:
        if kl_coef != 0:
            raise ValueError(f"kl_coef={kl_coef} needs ref_logprobs; pass them or set kl_coef=0")
        kl = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    else:
        kl = masked_mean(kl_k3(logprobs, ref_logprobs), mask, valid)
        if kl_coef != 0:
            loss = loss + kl_coef * kl
    metrics = {"pg_loss": float(pg_loss.detach()), "kl": float(kl.detach()), "clip_frac": float(clip_frac)}
    if entropies is not None:
        entropy = masked_mean(entropies, mask, valid)
        if entropy_coef != 0:
            loss = loss - entropy_coef * entropy
        metrics["entropy"] = float(entropy.detach())
    elif entropy_coef != 0:
        raise ValueError(
            f"entropy_coef={entropy_coef} needs per-token entropies in batch.tensors['entropies']"
        )
    return loss, {"loss": float(loss.detach()), **metrics}


#: What every sequence-advantage loss reads from the batch at its default options.
SEQUENCE_LOSS_NEEDS: frozenset[str] = frozenset({"logprobs", "old_logprobs", "ref_logprobs", "mask"})


def sequence_loss_needs(clip_eps: float, kl_coef: float, entropy_coef: float) -> frozenset[str]:
    """Check the options shared by the sequence-advantage losses and return the tensors
    they need: no ``ref_logprobs`` when ``kl_coef`` is 0, ``entropies`` when
    ``entropy_coef`` is not."""
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    needs = set(SEQUENCE_LOSS_NEEDS)
    if kl_coef == 0:
        needs.discard("ref_logprobs")
    if entropy_coef != 0:
        needs.add("entropies")
    return frozenset(needs)


def advantage_metrics(advantages: list[float], valid: list[bool], groups_failed: int) -> dict[str, float]:
    """``adv_mean``, ``adv_abs_mean`` over the rollouts of ranked groups and
    ``groups_failed`` (rankings that carried no signal), for the sequence-advantage losses."""
    kept = [a for a, ok in zip(advantages, valid, strict=True) if ok]
    n = max(len(kept), 1)
    return {
        "adv_mean": sum(kept) / n,
        "adv_abs_mean": sum(abs(a) for a in kept) / n,
        "groups_failed": float(groups_failed),
    }


def sequence_advantage_loss(loss: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """``__call__`` shared by the GRPO-family losses: check the batch, take the loss's
    sequence-level ``advantages(batch)`` and apply :func:`clipped_policy_loss` to the
    rollouts of groups with a usable ranking (the one rule of :mod:`ranked_batch`)."""
    from rlaif.plugins.losses.ranked_batch import (
        group_sizes,
        groups_failed,
        ranked_rows,
        require_tensors,
        tensors_on,
    )

    require_tensors(batch, loss.needs, loss.name, sum(group_sizes(batch)))
    t = tensors_on(batch, batch.tensors["logprobs"].device)
    logprobs = t["logprobs"]  # [N, L]
    adv = loss.advantages(batch)
    rows = ranked_rows(batch)
    advantages = torch.tensor(adv, dtype=logprobs.dtype, device=logprobs.device)  # [N]
    valid = torch.tensor(rows, dtype=torch.bool, device=logprobs.device)  # [N]
    value, metrics = clipped_policy_loss(
        logprobs, t["old_logprobs"], t.get("ref_logprobs"), t["mask"], advantages,
        loss.clip_eps, loss.kl_coef, t.get("entropies"), loss.entropy_coef, valid,
    )
    metrics.update(advantage_metrics(adv, rows, groups_failed(batch)))
    return value, metrics
