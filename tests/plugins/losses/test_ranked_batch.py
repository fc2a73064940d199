"""One rule for failed rankings in every loss: a group whose ranking failed -- with an
empty order, or all tied by an oracle's ``on_failure="tie"`` -- is out of every term of
the loss (policy gradient, KL, entropy, value) and counted in ``groups_failed``."""

from __future__ import annotations

import pytest
import torch

from rlaif.core.protocols import RankedBatch
from rlaif.core.records import Ranking
from rlaif.plugins.losses.dpo import DPOLoss
from rlaif.plugins.losses.grpo import GRPOLoss
from rlaif.plugins.losses.grpo_rank import GRPORankLoss
from rlaif.plugins.losses.ppo import PPOLoss

LOSSES = {
    "grpo-rank": lambda: GRPORankLoss(kl_coef=0.1, entropy_coef=0.01),
    "grpo": lambda: GRPOLoss(kl_coef=0.1, entropy_coef=0.01),
    "ppo": PPOLoss,
    "dpo": DPOLoss,
}


def failed_as(kind: str) -> Ranking:
    if kind == "skip":
        return Ranking("p0", "test", failure="unparseable", raw="??")
    # what llm-judge's on_failure="tie" returns: an all-tied order that keeps its failure
    return Ranking("p0", "test", order=[0, 1, 2], ties=[[0, 1, 2]], failure="unparseable", raw="??")


def make_batch(build, failed: Ranking) -> RankedBatch:
    n, length = 8, 3
    torch.manual_seed(0)
    old = -1.0 - torch.rand(n, length, dtype=torch.float64)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[4, 2] = False
    tensors = dict(
        logprobs=(old + 0.03 * torch.randn(n, length, dtype=torch.float64)).requires_grad_(),
        old_logprobs=old,
        ref_logprobs=old - 0.2 * torch.rand(n, length, dtype=torch.float64),  # KL > 0 on every row
        mask=mask,
        values=(0.1 * torch.randn(n, length, dtype=torch.float64)).requires_grad_(),
        old_values=0.1 * torch.randn(n, length, dtype=torch.float64),
        entropies=torch.rand(n, length, dtype=torch.float64),
    )
    rankings = [failed, build.ranking(1, [1, 2, 0]), build.from_scores(2, [0.2, 0.9])]
    return build.batch(rankings, [3, 3, 2], tensors)


@pytest.mark.parametrize("kind", ["skip", "tie"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_failed_group_is_out_of_every_term_and_counted(build, name: str, kind: str) -> None:
    batch = make_batch(build, failed_as(kind))
    loss, metrics = LOSSES[name]()(batch)
    assert metrics["groups_failed"] == 1.0
    loss.backward()
    t = batch.tensors
    for key in ("logprobs", "values"):
        if t[key].grad is not None:
            assert (t[key].grad[:3] == 0).all(), f"{name}: the failed group moves {key}"

    # the same loss (and metrics) as the batch without the failed group
    rest = {k: (v[3:].detach().clone().requires_grad_() if v.requires_grad else v[3:]) for k, v in t.items()}
    only = RankedBatch(groups=batch.groups[1:], rankings=batch.rankings[1:], tensors=rest)
    expected, expected_metrics = LOSSES[name]()(only)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    for key in ("kl", "pg_loss", "entropy", "vf_loss"):
        if key in metrics:
            assert metrics[key] == pytest.approx(expected_metrics[key], abs=1e-12), key


@pytest.mark.parametrize("kind", ["skip", "tie"])
def test_ranked_rows_and_groups_failed(build, kind: str) -> None:
    from rlaif.plugins.losses.ranked_batch import groups_failed, ranked_rows

    batch = make_batch(build, failed_as(kind))
    assert ranked_rows(batch) == [False] * 3 + [True] * 5 and groups_failed(batch) == 1
