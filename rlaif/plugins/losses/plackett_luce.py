"""Plackett–Luce: the listwise likelihood of the oracle's whole ranking under DPO's
implicit reward.

Plackett (1975) and Luce (1959) model a ranking as successive choices: the best item is
drawn from all G with probability ``exp(r_i) / sum_j exp(r_j)``, the next from the rest,
and so on. Rafailov et al., 2023 ("Direct Preference Optimization", arXiv 2305.18290,
appendix A.3) give the listwise DPO loss under this model with the implicit reward
``r_i = beta * (log pi(y_i) - log pi_ref(y_i))``; used as a rank-based estimator by PLPO
and others (methods.md §4b). For a group ranked ``y_(1) > y_(2) > ... > y_(G)``::

    L_group = -sum_{k=1}^{G-1} [ r_(k) - log sum_{m>=k} exp(r_(m)) ]

At G = 2 that is ``-log sigma(r_w - r_l)``, DPO's sigmoid loss exactly. Sequence log-probs
are token log-probs summed over the response mask, as in ``dpo``.

Ties (ours): a tie block is unordered. Each candidate i of a block that is not the last is
drawn from a choice set of itself and every candidate ranked strictly below its block;
its tied peers are in neither's choice set, so nothing is asserted about their order::

    L_group = -sum_{i not in the last block} [ r_i - log( exp(r_i) + sum_{j below i's block} exp(r_j) ) ]

Without ties this is the Plackett–Luce likelihood above; the last block, and a group whose
candidates are all tied, contribute nothing (and no gradient). It is a composite
likelihood, not the exact marginal probability of the tied order (which sums over every
order within a block), but it needs no enumeration and never pushes tied candidates
apart or together.
"""

from __future__ import annotations

import torch

from rlaif.core.protocols import RankedBatch
from rlaif.core.records import Ranking
from rlaif.plugins.losses.advantages import rank_blocks
from rlaif.plugins.losses.dpo import preference_pairs
from rlaif.plugins.losses.ranked_batch import (
    group_offsets,
    group_sizes,
    groups_failed,
    require_tensors,
    tensors_on,
)


def plackett_luce_stages(ranking: Ranking) -> list[tuple[int, list[int]]]:
    """The choices the likelihood is made of: ``(chosen, choice set)`` candidate indexes
    within the group, the chosen one first in its set, best block first. No stages for a
    failed ranking or one whose candidates are all tied."""
    if not ranking.ok:
        return []
    blocks = rank_blocks(ranking)
    stages: list[tuple[int, list[int]]] = []
    for k, block in enumerate(blocks[:-1]):
        below = [c for lower in blocks[k + 1 :] for c in lower]
        stages.extend((c, [c, *below]) for c in block)
    return stages


def plackett_luce_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    chosen: torch.Tensor,
    choice_sets: torch.Tensor,
    n_groups: int,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Listwise Plackett–Luce negative log-likelihood on explicit tensors::

        r = beta * (logprobs - ref_logprobs)                        [N]
        L = (1/B) sum_stages [ log sum_{j in S_p} exp(r_j) - r_{c_p} ]

    ``logprobs``, ``ref_logprobs``: ``[N]`` sequence log-probs; ``chosen``: ``[P]`` row of
    each stage's chosen candidate; ``choice_sets``: ``[P, N]`` bool, the rows each stage
    chooses from (its chosen row included); ``n_groups``: B, the groups the stages come
    from (the loss is the mean over groups of each group's summed NLL). Returns the loss and
    detached metrics ``loss`` and ``nll_per_stage``.
    """
    rewards = beta * (logprobs - ref_logprobs.detach())  # [N]
    logits = rewards.unsqueeze(0).masked_fill(~choice_sets, float("-inf"))  # [P, N]
    nll = torch.logsumexp(logits, dim=-1) - rewards[chosen]  # [P]
    loss = nll.sum() / max(n_groups, 1)
    return loss, {"loss": float(loss.detach()), "nll_per_stage": float(nll.detach().mean())}


class PlackettLuceLoss:
    """Listwise Plackett–Luce loss on each group's ranking with DPO's implicit reward
    (Rafailov et al. 2023, appendix A.3); equals ``dpo`` at G = 2.

    Metrics, besides ``loss`` and ``nll_per_stage``: ``reward_margin``, ``chosen_reward``
    and ``rejected_reward`` as ``dpo`` reports them on best-vs-worst pairs;
    ``pref_acc``, the share of ordered pairs across blocks whose implicit rewards agree
    with the oracle; ``n_groups`` (groups with a stage), ``groups_skipped`` (groups with
    none: failed, all tied or single, as in ``dpo``) and ``groups_failed``.

    :param beta: inverse temperature of the implicit reward.
    """

    name = "plackett-luce"
    needs: frozenset[str] = frozenset({"logprobs", "ref_logprobs", "mask"})

    def __init__(self, beta: float = 0.1) -> None:
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = beta

    def stage_rows(self, batch: RankedBatch) -> tuple[list[int], list[list[int]], int, int]:
        """Flattened chosen rows, their choice sets' rows, the groups with a stage and the
        groups without one."""
        sizes = group_sizes(batch)
        chosen: list[int] = []
        sets: list[list[int]] = []
        used = skipped = 0
        for ranking, size, start in zip(batch.rankings, sizes, group_offsets(sizes), strict=True):
            if ranking.ok and len(ranking.order) != size:
                raise ValueError(
                    f"the ranking covers {len(ranking.order)} candidates but the group has {size}"
                )
            stages = plackett_luce_stages(ranking)
            used += bool(stages)
            skipped += not stages
            chosen.extend(start + c for c, _ in stages)
            sets.extend([start + j for j in choice] for _, choice in stages)
        return chosen, sets, used, skipped

    def pair_rows(self, batch: RankedBatch, mode: str) -> tuple[list[int], list[int]]:
        """Flattened (better, worse) rows of ``dpo``'s pairs, for the metrics."""
        sizes = group_sizes(batch)
        pairs = [
            (start + w, start + lose)
            for ranking, start in zip(batch.rankings, group_offsets(sizes), strict=True)
            for w, lose in preference_pairs(ranking, mode)
        ]
        return [w for w, _ in pairs], [lose for _, lose in pairs]

    def __call__(self, batch: RankedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        n_rows = sum(group_sizes(batch))
        require_tensors(batch, self.needs, self.name, n_rows)
        t = tensors_on(batch, batch.tensors["logprobs"].device)
        logprobs = t["logprobs"]  # [N, L]
        mask = t["mask"].to(logprobs.dtype)  # [N, L]
        failed = float(groups_failed(batch))
        chosen, sets, used, skipped = self.stage_rows(batch)
        if not chosen:
            zero = (logprobs * mask).sum() * 0.0  # keeps the graph so backward() still works
            metrics = {"loss": 0.0, "nll_per_stage": 0.0, "reward_margin": 0.0, "pref_acc": 0.0}
            metrics.update(chosen_reward=0.0, rejected_reward=0.0, n_groups=0.0,
                           groups_skipped=float(skipped), groups_failed=failed)
            return zero, metrics
        device = logprobs.device
        seq = (logprobs * mask).sum(-1)  # [N]
        ref_seq = (t["ref_logprobs"] * mask).sum(-1)  # [N]
        choice_sets = torch.zeros(len(sets), n_rows, dtype=torch.bool, device=device)  # [P, N]
        for p, rows in enumerate(sets):
            choice_sets[p, rows] = True
        loss, metrics = plackett_luce_loss(
            seq, ref_seq, torch.tensor(chosen, device=device), choice_sets, used, self.beta
        )
        rewards = (self.beta * (seq - ref_seq)).detach()  # [N]
        best, worst = (torch.tensor(rows, device=device) for rows in self.pair_rows(batch, "best_worst"))
        better, lower = (torch.tensor(rows, device=device) for rows in self.pair_rows(batch, "all"))
        metrics.update(
            reward_margin=float((rewards[best] - rewards[worst]).mean()),
            chosen_reward=float(rewards[best].mean()),
            rejected_reward=float(rewards[worst].mean()),
            pref_acc=float((rewards[better] > rewards[lower]).to(rewards.dtype).mean()),
            n_groups=float(used),
            groups_skipped=float(skipped),
            groups_failed=failed,
        )
        return loss, metrics
