"""DPO on preference pairs read off each group's ranking.

Rafailov et al., 2023, "Direct Preference Optimization" (arXiv 2305.18290), eq. 7; used
by VerIPO (β = 0.1) and as a baseline (methods.md §3, §4)::

    L = -mean_pairs log sigma(beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))])

Sequence log-probs are token log-probs summed over the response mask. Pairs come from
the ranking's tie blocks: ``best_worst`` (default) pairs every candidate of the best block
with every candidate of the worst block (one pair when there are no ties); ``all`` pairs
every candidate with every candidate of every lower block. Tied candidates are never
paired; groups whose ranking failed, or whose candidates are all tied, give no pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlaif.core.protocols import RankedBatch
from rlaif.core.records import Ranking
from rlaif.plugins.losses.advantages import rank_blocks
from rlaif.plugins.losses.ranked_batch import (
    group_offsets,
    group_sizes,
    groups_failed,
    require_tensors,
    tensors_on,
)

PAIR_MODES: tuple[str, ...] = ("best_worst", "all")


def preference_pairs(ranking: Ranking, mode: str = "best_worst") -> list[tuple[int, int]]:
    """``(chosen, rejected)`` candidate indexes within the group, in a deterministic order."""
    if mode not in PAIR_MODES:
        raise ValueError(f"unknown pairs mode {mode!r}; expected one of {', '.join(PAIR_MODES)}")
    if not ranking.ok:
        return []
    blocks = rank_blocks(ranking)
    if len(blocks) < 2:
        return []
    if mode == "best_worst":
        return [(w, lose) for w in blocks[0] for lose in blocks[-1]]
    return [
        (w, lose)
        for i, better in enumerate(blocks)
        for worse in blocks[i + 1 :]
        for w in better
        for lose in worse
    ]


def dpo_loss(
    chosen_logprobs: torch.Tensor,
    rejected_logprobs: torch.Tensor,
    chosen_ref_logprobs: torch.Tensor,
    rejected_ref_logprobs: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO loss (Rafailov et al. 2023, eq. 7) on ``[P]`` sequence log-probs of P pairs.

    Returns the mean loss and detached metrics: ``loss``, ``reward_margin`` (mean of
    ``beta * (chosen log-ratio - rejected log-ratio)``, the implicit reward gap),
    ``pref_acc`` (share of pairs whose implicit reward is higher for the chosen one),
    ``chosen_reward``, ``rejected_reward`` and ``n_pairs``.
    """
    chosen_reward = beta * (chosen_logprobs - chosen_ref_logprobs.detach())  # [P]
    rejected_reward = beta * (rejected_logprobs - rejected_ref_logprobs.detach())  # [P]
    margin = chosen_reward - rejected_reward  # [P]
    loss = -F.logsigmoid(margin).mean()
    margin_d = margin.detach()
    return loss, {
        "loss": float(loss.detach()),
        "reward_margin": float(margin_d.mean()),
        "pref_acc": float((margin_d > 0).to(margin_d.dtype).mean()),
        "chosen_reward": float(chosen_reward.detach().mean()),
        "rejected_reward": float(rejected_reward.detach().mean()),
        "n_pairs": float(margin_d.numel()),
    }


class DPOLoss:
    """DPO over ranking-derived pairs (Rafailov et al. 2023).

    :param beta: inverse temperature of the implicit reward.
    :param pairs: ``best_worst`` (default) or ``all``; see :func:`preference_pairs`.
    """

    name = "dpo"
    needs: frozenset[str] = frozenset({"logprobs", "ref_logprobs", "mask"})

    def __init__(self, beta: float = 0.1, pairs: str = "best_worst") -> None:
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if pairs not in PAIR_MODES:
            raise ValueError(f"unknown pairs mode {pairs!r}; expected one of {', '.join(PAIR_MODES)}")
        self.beta = beta
        self.pairs = pairs

    def pair_rows(self, batch: RankedBatch) -> tuple[list[int], list[int], int]:
        """Flattened row indexes of chosen and rejected rollouts, and how many groups gave
        no pair (failed ranking or all tied)."""
        sizes = group_sizes(batch)
        chosen: list[int] = []
        rejected: list[int] = []
        skipped = 0
        for ranking, size, start in zip(batch.rankings, sizes, group_offsets(sizes), strict=True):
            pairs = preference_pairs(ranking, self.pairs)
            if ranking.ok and len(ranking.order) != size:
                raise ValueError(
                    f"the ranking covers {len(ranking.order)} candidates but the group has {size}"
                )
            skipped += not pairs
            chosen.extend(start + w for w, _ in pairs)
            rejected.extend(start + lose for _, lose in pairs)
        return chosen, rejected, skipped

    def __call__(self, batch: RankedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        require_tensors(batch, self.needs, self.name, sum(group_sizes(batch)))
        t = tensors_on(batch, batch.tensors["logprobs"].device)
        logprobs = t["logprobs"]  # [N, L]
        mask = t["mask"].to(logprobs.dtype)  # [N, L]
        failed = float(groups_failed(batch))
        chosen, rejected, skipped = self.pair_rows(batch)
        if not chosen:
            zero = (logprobs * mask).sum() * 0.0  # keeps the graph so backward() still works
            metrics = {"loss": 0.0, "reward_margin": 0.0, "pref_acc": 0.0, "chosen_reward": 0.0}
            metrics.update(
                rejected_reward=0.0, n_pairs=0.0, groups_skipped=float(skipped), groups_failed=failed
            )
            return zero, metrics
        seq = (logprobs * mask).sum(-1)  # [N]
        ref_seq = (t["ref_logprobs"] * mask).sum(-1)  # [N]
        c = torch.tensor(chosen, device=logprobs.device)  # [P]
        r = torch.tensor(rejected, device=logprobs.device)  # [P]
        loss, metrics = dpo_loss(seq[c], seq[r], ref_seq[c], ref_seq[r], self.beta)
        metrics.update(groups_skipped=float(skipped), groups_failed=failed)
        return loss, metrics
