"""VLM-RLAIF PPO: token-level PPO with a value head, KL-shaped rewards and GAE.

Ahn et al., ACL 2024, "Tuning Large Multimodal Models for Videos using Reinforcement
Learning from AI Feedback" (code: yonseivnl/vlm-rlaif, after LLaVA-RLHF / AlpacaFarm);
methods.md §2. Per rollout i with score s_i in [0, 1] (the one normalisation,
:func:`~rlaif.plugins.losses.advantages.ranking_scores`: the oracle's scores mapped from
its declared range, else rank-derived):

    r_it = -beta * max(log pi_old(o_it) - log pi_ref(o_it), 0)        (every response token)
           + [t = last] * (s_i + no_eos_penalty * [no EOS])           (last response token)
    A, R = GAE(r, V_old; gamma, lambda);  A <- whiten(A)
    L = -mean_t min(rho A, clip(rho) A) + vf_coef * 0.5 * mean_t max((V - R)^2, (V_clip - R)^2)

with ``V_clip = V_old + clip(V - V_old, -c, c)`` and means over the batch's valid tokens
(the reference code averages over padded tensors; we mask). The value head lives in the
policy; this loss only consumes ``values`` (current, with grad) and ``old_values``.
"""

from __future__ import annotations

import torch

from rlaif.core.protocols import RankedBatch
from rlaif.plugins.losses.advantages import ranking_scores
from rlaif.plugins.losses.policy_gradient import clipped_surrogate, token_mean
from rlaif.plugins.losses.ranked_batch import (
    group_sizes,
    groups_failed,
    ranked_rows,
    require_tensors,
    tensors_on,
)


def token_rewards(
    scores: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    finished: torch.Tensor | None = None,
    no_eos_penalty: float = -1.0,
) -> torch.Tensor:
    """Shaped per-token rewards ``[N, L]`` (VLM-RLAIF ``_shape_reward`` with the k1 estimator).

    Every response token gets ``-kl_coef * max(old_logprobs - ref_logprobs, 0)``; the last
    response token also gets ``scores[i]``, plus ``no_eos_penalty`` when ``finished[i]`` is
    false (the reference run adds it: ``relative_stop_token_penalty=True``). ``scores`` and
    ``finished`` are ``[N]``; ``finished`` defaults to all true. Rows with no response
    token get no reward.
    """
    m = mask.to(old_logprobs.dtype)  # [N, L]
    n, length = m.shape
    k1 = (old_logprobs - ref_logprobs).clamp(min=0.0)  # [N, L]
    rewards = -kl_coef * k1 * m  # [N, L]
    terminal = scores.to(m.dtype)  # [N]
    if finished is not None:
        terminal = terminal + (~finished.to(torch.bool)).to(m.dtype) * no_eos_penalty
    positions = torch.arange(length, device=m.device).expand(n, length)  # [N, L]
    last = torch.where(m > 0, positions, torch.full_like(positions, -1)).max(-1).values  # [N]
    has_tokens = (last >= 0).to(m.dtype)  # [N]
    at_last = torch.nn.functional.one_hot(last.clamp(min=0), length).to(m.dtype)  # [N, L]
    return rewards + at_last * (terminal * has_tokens).unsqueeze(-1)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over response tokens.

    ``delta_t = r_t + gamma * V_{t+1} - V_t``, ``A_t = delta_t + gamma * lam * A_{t+1}``,
    with ``V`` and ``A`` zero after the last valid token. Masked positions are skipped
    (the recursion links each valid token to the next *valid* one) and get zeros.
    ``rewards``, ``values``, ``mask``: ``[N, L]``. Returns ``(advantages, returns)``,
    both ``[N, L]``, ``returns = advantages + values`` on valid tokens.
    """
    m = mask.to(rewards.dtype)  # [N, L]
    n, length = rewards.shape
    next_value = rewards.new_zeros(n)  # [N]
    next_adv = rewards.new_zeros(n)  # [N]
    reversed_adv = []
    for t in reversed(range(length)):
        valid = m[:, t]  # [N]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        reversed_adv.append(valid * adv_t)
        next_adv = valid * adv_t + (1 - valid) * next_adv
        next_value = valid * values[:, t] + (1 - valid) * next_value
    advantages = torch.stack(reversed_adv[::-1], dim=1)  # [N, L]
    return advantages, (advantages + values) * m


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Whiten over the valid tokens of the whole batch: ``(x - mean) / sqrt(var + eps)``
    with the population variance (AlpacaFarm ``whiten``); masked positions become 0.
    ``shift_mean=False`` keeps the mean."""
    m = mask.to(x.dtype)  # [N, L]
    count = m.sum().clamp(min=1.0)
    mean = (x * m).sum() / count
    var = (((x - mean) * m) ** 2).sum() / count
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    value_clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO value loss with clipping: ``0.5 * mean_t max((V - R)^2, (V_clip - R)^2)``,
    ``V_clip = V_old + clip(V - V_old, -c, c)``; all ``[N, L]``. Returns the scalar loss
    and the share of valid tokens where the clipped term is the larger (detached)."""
    old = old_values.detach()
    ret = returns.detach()
    clipped = old + torch.clamp(values - old, -value_clip, value_clip)  # [N, L]
    loss_unclipped = (values - ret) ** 2  # [N, L]
    loss_clipped = (clipped - ret) ** 2  # [N, L]
    loss = 0.5 * token_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    clip_frac = token_mean((loss_clipped > loss_unclipped).to(values.dtype), mask).detach()
    return loss, clip_frac


class PPOLoss:
    """VLM-RLAIF PPO (Ahn et al. 2024): KL-shaped token rewards, GAE, whitened advantages,
    clipped policy and value losses.

    :param clip_eps: policy clip range.
    :param value_clip: value clip range around ``old_values``.
    :param vf_coef: weight of the value loss.
    :param kl_coef: per-token k1 KL penalty (clamped at 0) in the reward.
    :param gamma: GAE discount; :param lam: GAE lambda.
    :param no_eos_penalty: added to the score of a rollout that did not finish with EOS
        (``batch.tensors["finished"]`` ``[N]`` bool, else ``Rollout.finished``). Expressed
        on the normalised [0, 1] score scale: -1 (default) is the scale's whole width, so
        a truncated answer ends no better than a finished worst one. VLM-RLAIF's -8 was
        set against an unbounded reward model and would dwarf a [0, 1] verifier.
    :param whiten: whiten advantages over the batch's valid tokens.
    :param reward_scale: multiplies the shaped rewards before GAE. The reference code
        multiplies by 10 when reward whitening is off, as in its released run; 1 (default)
        follows methods.md.
    :param value_init: a reward model (``rlaif train-rm`` output dir, or the run dir it
        was trained from) whose head initialises the policy's value head, as VLM-RLAIF
        does. The loss only carries the path: ``rlaif run`` applies it to the policy before
        the first step (a resumed run takes the head from its checkpoint instead).

    Rollouts of groups whose ranking failed carry no score; they are left out of every
    term (their mask is zeroed) and counted in ``groups_failed``
    (:mod:`~rlaif.plugins.losses.ranked_batch`'s one rule).
    """

    name = "ppo"
    needs: frozenset[str] = frozenset(
        {"logprobs", "old_logprobs", "ref_logprobs", "mask", "values", "old_values"}
    )

    def __init__(
        self,
        clip_eps: float = 0.2,
        value_clip: float = 0.2,
        vf_coef: float = 0.1,
        kl_coef: float = 0.1,
        gamma: float = 1.0,
        lam: float = 1.0,
        no_eos_penalty: float = -1.0,
        whiten: bool = True,
        reward_scale: float = 1.0,
        value_init: str | None = None,
    ) -> None:
        if clip_eps <= 0 or value_clip <= 0:
            raise ValueError(f"clip_eps and value_clip must be > 0, got {clip_eps} and {value_clip}")
        if kl_coef < 0 or vf_coef < 0:
            raise ValueError(f"kl_coef and vf_coef must be >= 0, got {kl_coef} and {vf_coef}")
        if not (0 <= gamma <= 1 and 0 <= lam <= 1):
            raise ValueError(f"gamma and lam must lie in [0, 1], got {gamma} and {lam}")
        self.clip_eps = clip_eps
        self.value_clip = value_clip
        self.vf_coef = vf_coef
        self.kl_coef = kl_coef
        self.gamma = gamma
        self.lam = lam
        self.no_eos_penalty = no_eos_penalty
        self.whiten = whiten
        self.reward_scale = reward_scale
        self.value_init = value_init

    def scores(self, batch: RankedBatch) -> list[float]:
        """Per-rollout scores ``[N]``; rollouts of failed groups get 0 (and are masked out)."""
        scores: list[float] = []
        for ranking, size in zip(batch.rankings, group_sizes(batch), strict=True):
            group_scores = ranking_scores(ranking, size)
            scores.extend(group_scores if group_scores is not None else [0.0] * size)
        return scores

    def __call__(self, batch: RankedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        require_tensors(batch, self.needs, self.name, sum(group_sizes(batch)))
        t = tensors_on(batch, batch.tensors["logprobs"].device)
        logprobs, old_logprobs, ref_logprobs = t["logprobs"], t["old_logprobs"], t["ref_logprobs"]  # [N, L]
        values, old_values = t["values"], t["old_values"]  # [N, L]
        dtype, device = logprobs.dtype, logprobs.device
        scores = torch.tensor(self.scores(batch), dtype=dtype, device=device)  # [N]
        valid = torch.tensor(ranked_rows(batch), dtype=dtype, device=device)  # [N]
        finished = t.get("finished")
        if finished is None:
            finished = [r.finished for g in batch.groups for r in g.rollouts]
        finished = torch.as_tensor(finished, dtype=torch.bool, device=device)  # [N]
        mask = t["mask"].to(dtype) * valid.unsqueeze(-1)  # [N, L]; failed groups masked out

        with torch.no_grad():
            rewards = self.reward_scale * token_rewards(
                scores, old_logprobs, ref_logprobs, mask, self.kl_coef, finished, self.no_eos_penalty
            )  # [N, L]
            advantages, returns = gae(rewards, old_values.detach(), mask, self.gamma, self.lam)  # [N, L]
            raw_adv_mean = token_mean(advantages, mask)
            if self.whiten:
                advantages = whiten(advantages, mask)

        objective, clip_frac = clipped_surrogate(logprobs, old_logprobs, advantages, mask, self.clip_eps)
        pg_loss = -token_mean(objective, mask)
        vf_loss, vf_clip_frac = clipped_value_loss(values, old_values, returns, mask, self.value_clip)
        loss = pg_loss + self.vf_coef * vf_loss

        n_valid = valid.sum().clamp(min=1.0)
        k1 = (old_logprobs - ref_logprobs).clamp(min=0.0)
        metrics = {
            "loss": float(loss.detach()),
            "pg_loss": float(pg_loss.detach()),
            "vf_loss": float(vf_loss.detach()),
            "clip_frac": float(clip_frac),
            "vf_clip_frac": float(vf_clip_frac),
            "kl": float(token_mean(k1.detach(), mask)),
            "score_mean": float((scores * valid).sum() / n_valid),
            "reward_mean": float(rewards.sum() / n_valid),
            "return_mean": float(token_mean(returns, mask)),
            "value_mean": float(token_mean(values.detach(), mask)),
            "adv_mean": float(raw_adv_mean),
            "no_eos": float(((~finished).to(dtype) * valid).sum()),
            "groups_failed": float(groups_failed(batch)),
        }
        return loss, metrics
