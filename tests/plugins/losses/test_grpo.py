"""GRPO baseline: score -> group-normalised advantages, same objective as grpo-rank."""

from __future__ import annotations

import math

import pytest
import torch

from rlaif.plugins.losses.grpo import GRPOLoss
from rlaif.plugins.losses.grpo_rank import grpo_rank_loss

S = math.sqrt(1.5)  # 1.2247: (x - mean) / population std for three equally spaced values


def make_batch(build, rankings, shift=0.0):
    n, length = 8, 2
    old = -1.0 - 0.05 * torch.arange(n * length, dtype=torch.float64).reshape(n, length)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[0, 1] = False
    tensors = dict(logprobs=old + shift, old_logprobs=old, ref_logprobs=old + 0.02, mask=mask)
    return build.batch(rankings, [3, 3, 2], tensors)


def test_advantages_from_scores_ranks_and_failures(build):
    rankings = [
        build.from_scores(0, [1.0, 2.0, 3.0]),  # scoring oracle: scores used directly
        build.ranking(1, [1, 2, 0]),  # rank-only: scores (0, 1, 0.5) by (G-1-pos)/(G-1)
        build.failed(2),
    ]
    adv = GRPOLoss().advantages(make_batch(build, rankings))
    assert adv == pytest.approx([-S, 0.0, S, -S, S, 0.0, 0.0, 0.0], abs=1e-5)


def test_tied_scores_give_zero_advantages(build):
    rankings = [
        build.from_scores(0, [0.5, 0.5, 0.5]),
        build.ranking(1, [0, 1, 2], ties=[[0, 1, 2]]),
        build.failed(2),
    ]
    adv = GRPOLoss().advantages(make_batch(build, rankings))
    assert adv == [0.0] * 8


def test_same_objective_as_grpo_rank(build):
    rankings = [build.from_scores(0, [1.0, 2.0, 3.0]), build.ranking(1, [1, 2, 0]), build.failed(2)]
    batch = make_batch(build, rankings, shift=0.03)
    loss, metrics = GRPOLoss()(batch)
    t = batch.tensors
    adv = torch.tensor([-S, 0.0, S, -S, S, 0.0, 0.0, 0.0], dtype=torch.float64)
    valid = torch.tensor([True] * 6 + [False] * 2)  # the failed group is left out
    expected, _ = grpo_rank_loss(
        t["logprobs"], t["old_logprobs"], t["ref_logprobs"], t["mask"], adv, 0.2, 0.04, valid=valid
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert metrics["groups_failed"] == 1.0
    assert set(metrics) >= {"loss", "pg_loss", "kl", "clip_frac", "adv_mean", "adv_abs_mean"}


def test_step_zero(build):
    rankings = [build.from_scores(0, [1.0, 2.0, 3.0]), build.ranking(1, [1, 2, 0]), build.failed(2)]
    batch = make_batch(build, rankings)
    batch.tensors["ref_logprobs"] = batch.tensors["logprobs"].clone()
    loss, metrics = GRPOLoss()(batch)
    assert metrics["kl"] == 0.0 and metrics["clip_frac"] == 0.0
    assert loss.item() == metrics["pg_loss"]
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # ratio 1 and zero-mean advantages


def test_gradcheck(build):
    rankings = [build.from_scores(0, [0.1, 0.7, 0.4]), build.ranking(1, [2, 0, 1]), build.failed(2)]
    batch = make_batch(build, rankings, shift=-0.04)
    loss_fn = GRPOLoss(kl_coef=0.1)

    def f(lp):
        batch.tensors["logprobs"] = lp
        return loss_fn(batch)[0]

    assert torch.autograd.gradcheck(f, (batch.tensors["logprobs"].clone().requires_grad_(),))


def test_options_and_needs():
    assert GRPOLoss().needs == frozenset({"logprobs", "old_logprobs", "ref_logprobs", "mask"})
    assert "ref_logprobs" not in GRPOLoss(kl_coef=0).needs
    with pytest.raises(ValueError):
        GRPOLoss(clip_eps=0)
