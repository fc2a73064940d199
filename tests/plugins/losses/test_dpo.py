"""DPO: pairs read off rankings, the closed form on one pair, zero-pair batches."""

from __future__ import annotations

import math

import pytest
import torch

from rlaif.core.records import Ranking
from rlaif.plugins.losses.dpo import DPOLoss, dpo_loss, preference_pairs

F64 = torch.float64


def rk(order, ties=(), failure=None):
    return Ranking(
        prompt_id="p", oracle="o", order=list(order), ties=[list(t) for t in ties], failure=failure
    )


def test_pairs_modes():
    assert preference_pairs(rk([2, 0, 1])) == [(2, 1)]
    assert preference_pairs(rk([2, 0, 1]), "all") == [(2, 0), (2, 1), (0, 1)]
    assert len(preference_pairs(rk([4, 3, 2, 1, 0]), "all")) == 10
    # {0, 1} tied at the top: both beat the worst; tied candidates are never paired
    assert preference_pairs(rk([0, 1, 2, 3], ties=[[0, 1]])) == [(0, 3), (1, 3)]
    assert preference_pairs(rk([0, 1, 2, 3], ties=[[0, 1]]), "all") == [
        (0, 2),
        (1, 2),
        (0, 3),
        (1, 3),
        (2, 3),
    ]
    with pytest.raises(ValueError):
        preference_pairs(rk([0, 1]), "random")


@pytest.mark.parametrize("mode", ["best_worst", "all"])
def test_groups_without_pairs(mode):
    assert preference_pairs(rk([0, 1, 2], ties=[[0, 1, 2]]), mode) == []  # best and worst tied
    assert preference_pairs(rk([0]), mode) == []
    assert preference_pairs(Ranking(prompt_id="p", oracle="o", failure="timeout"), mode) == []


def test_single_pair_closed_form():
    chosen = torch.tensor([-10.0], dtype=F64, requires_grad=True)
    rejected = torch.tensor([-12.0], dtype=F64, requires_grad=True)
    loss, metrics = dpo_loss(
        chosen, rejected, torch.tensor([-11.0], dtype=F64), torch.tensor([-11.0], dtype=F64), 0.1
    )
    # margin = 0.1 * ((-10 + 11) - (-12 + 11)) = 0.2; loss = -log sigma(0.2) = log(1 + e^-0.2)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.2)))  # 0.598139
    assert metrics["reward_margin"] == pytest.approx(0.2)
    assert metrics["pref_acc"] == 1.0 and metrics["n_pairs"] == 1.0
    assert metrics["chosen_reward"] == pytest.approx(0.1) and metrics["rejected_reward"] == pytest.approx(
        -0.1
    )
    loss.backward()
    sig = 1 / (1 + math.exp(0.2))  # sigma(-0.2)
    assert chosen.grad.item() == pytest.approx(-0.1 * sig)  # -0.0450166
    assert rejected.grad.item() == pytest.approx(0.1 * sig)


def make_batch(build, rankings, sizes):
    n = sum(sizes)
    logprobs = -0.5 - 0.1 * torch.arange(n * 2, dtype=F64).reshape(n, 2)
    mask = torch.ones(n, 2, dtype=torch.bool)
    mask[0, 1] = False
    tensors = dict(logprobs=logprobs, ref_logprobs=logprobs.flip(0), mask=mask, old_logprobs=logprobs)
    return build.batch(rankings, sizes, tensors)


def test_loss_class_against_closed_form(build):
    batch = make_batch(
        build, [build.ranking(0, [2, 0, 1]), build.failed(1), build.ranking(2, [0, 1])], [3, 2, 2]
    )
    loss, metrics = DPOLoss(beta=0.1)(batch)
    t = batch.tensors
    seq = (t["logprobs"] * t["mask"]).sum(-1).tolist()
    ref = (t["ref_logprobs"] * t["mask"]).sum(-1).tolist()
    pairs = [(2, 1), (5, 6)]  # group 0: candidate 2 over 1; group 2 (rows 5, 6): 0 over 1
    margins = [0.1 * ((seq[w] - ref[w]) - (seq[lo] - ref[lo])) for w, lo in pairs]
    expected = sum(math.log1p(math.exp(-m)) for m in margins) / 2
    assert loss.item() == pytest.approx(expected)
    assert metrics["n_pairs"] == 2.0 and metrics["groups_failed"] == 1.0 and metrics["groups_skipped"] == 1.0
    assert metrics["reward_margin"] == pytest.approx(sum(margins) / 2)
    assert metrics["pref_acc"] == pytest.approx(sum(m > 0 for m in margins) / 2)


def test_all_pairs_mode_counts(build):
    batch = make_batch(
        build, [build.ranking(0, [2, 0, 1]), build.ranking(1, [0, 1, 2, 3], ties=[[0, 1]])], [3, 4]
    )
    _, metrics = DPOLoss(pairs="all")(batch)
    assert metrics["n_pairs"] == 3 + 5


def test_zero_pairs_gives_zero_loss_with_grad(build):
    batch = make_batch(build, [build.failed(0), build.ranking(1, [0, 1], ties=[[0, 1]])], [3, 2])
    batch.tensors["logprobs"] = batch.tensors["logprobs"].clone().requires_grad_()
    loss, metrics = DPOLoss()(batch)
    assert loss.item() == 0.0 and loss.requires_grad
    assert metrics["n_pairs"] == 0.0 and metrics["groups_skipped"] == 2.0
    loss.backward()
    assert (batch.tensors["logprobs"].grad == 0).all()


def test_gradcheck(build):
    batch = make_batch(build, [build.ranking(0, [2, 0, 1]), build.ranking(1, [1, 0])], [3, 2])
    loss_fn = DPOLoss(beta=0.5, pairs="all")

    def f(lp):
        batch.tensors["logprobs"] = lp
        return loss_fn(batch)[0]

    assert torch.autograd.gradcheck(f, (batch.tensors["logprobs"].clone().requires_grad_(),))


def test_needs_and_options(build):
    assert DPOLoss().needs == frozenset({"logprobs", "ref_logprobs", "mask"})
    with pytest.raises(ValueError):
        DPOLoss(pairs="random")
    with pytest.raises(ValueError):
        DPOLoss(beta=0)
    batch = make_batch(build, [build.ranking(0, [2, 0, 1])], [3])
    del batch.tensors["ref_logprobs"]
    with pytest.raises(ValueError, match="ref_logprobs"):
        DPOLoss()(batch)
