"""CoRPO: the clipped baseline by hand on the one score normalisation, failed groups left
out, the shared objective, gradients."""

from __future__ import annotations

import pytest
import torch

from rlaif.plugins.losses.advantages import corpo_advantages
from rlaif.plugins.losses.corpo import CoRPOLoss
from rlaif.plugins.losses.grpo_rank import grpo_rank_loss


def test_clipped_baseline_by_hand():
    # mean 0.1 < tau 0.5: the baseline is tau, so nothing is reinforced
    assert corpo_advantages([0.0, 0.2, 0.1], 0.5) == pytest.approx([-0.5, -0.3, -0.4])
    # mean 2/3 >= tau: GRPO's mean-centred advantage (not divided by the std)
    assert corpo_advantages([1.0, 1.0, 0.0], 0.5) == pytest.approx([1 / 3, 1 / 3, -2 / 3])
    # an all-wrong verifier group is pushed down instead of giving zeros as GRPO does
    assert corpo_advantages([0.0, 0.0, 0.0], 0.5) == pytest.approx([-0.5] * 3)
    assert corpo_advantages([0.3, 0.9], 0.0) == pytest.approx([-0.3, 0.3])  # tau = 0: mean-centred
    assert corpo_advantages([], 0.5) == []


def make_batch(build, rankings, sizes, shift=0.0):
    n = sum(sizes)
    old = -1.0 - 0.05 * torch.arange(n * 2, dtype=torch.float64).reshape(n, 2)
    mask = torch.ones(n, 2, dtype=torch.bool)
    mask[0, 1] = False
    tensors = dict(logprobs=old + shift, old_logprobs=old, ref_logprobs=old.clone(), mask=mask)
    return build.batch(rankings, sizes, tensors)


def test_advantages_through_ranking_scores(build):
    rankings = [
        build.from_scores(0, [0.0, 0.2, 0.1], score_range=[0, 1]),  # mean 0.1 -> baseline 0.5
        build.from_scores(1, [2.0, 6.0, 4.0], score_range=[0, 10]),  # -> 0.2, 0.6, 0.4; mean 0.4
        build.ranking(2, [1, 2, 0]),  # rank-only: scores (0, 1, 0.5), mean 0.5
        build.failed(3),
    ]
    batch = make_batch(build, rankings, [3, 3, 3, 2])
    assert CoRPOLoss(threshold=0.5).advantages(batch) == pytest.approx(
        [-0.5, -0.3, -0.4, -0.3, 0.1, -0.1, -0.5, 0.5, 0.0, 0.0, 0.0]
    )
    # a rank-only oracle's scores always average 1/2: tau above that shifts every advantage
    adv = CoRPOLoss(threshold=0.8).advantages(batch)
    assert adv[6:9] == pytest.approx([-0.8, 0.2, -0.3])


def test_loss_at_step_zero_and_metrics(build):
    rankings = [build.from_scores(0, [0.0, 0.2, 0.1], score_range=[0, 1]), build.failed(1)]
    batch = make_batch(build, rankings, [3, 2])
    batch.tensors["logprobs"] = batch.tensors["logprobs"].clone()
    batch.tensors["logprobs"][3:] += 1.0  # the failed group's ratios must not count
    loss, metrics = CoRPOLoss()(batch)
    # ratio 1 on the ranked rows: objective = A, so pg = -mean(-0.5, -0.3, -0.4) = 0.4
    assert loss.item() == pytest.approx(0.4) and metrics["pg_loss"] == pytest.approx(0.4)
    assert metrics["kl"] == 0.0 and metrics["clip_frac"] == 0.0
    assert metrics["groups_failed"] == 1.0
    assert metrics["adv_mean"] == pytest.approx(-0.4)  # not zero-sum while clipped
    assert metrics["baseline_clipped"] == 1.0
    assert all(isinstance(v, float) for v in metrics.values())


def test_same_objective_as_grpo_rank_and_clip_share(build):
    rankings = [
        build.from_scores(0, [1.0, 1.0, 0.0], score_range=[0, 1]),  # mean 2/3: not clipped
        build.from_scores(1, [0.0, 0.0, 0.0], score_range=[0, 1]),  # clipped
        build.failed(2),
    ]
    batch = make_batch(build, rankings, [3, 3, 2], shift=0.03)
    batch.tensors["ref_logprobs"] = batch.tensors["ref_logprobs"] - 0.02
    loss, metrics = CoRPOLoss()(batch)
    adv = [1 / 3, 1 / 3, -2 / 3, -0.5, -0.5, -0.5, 0.0, 0.0]
    t = batch.tensors
    expected, _ = grpo_rank_loss(
        t["logprobs"], t["old_logprobs"], t["ref_logprobs"], t["mask"],
        torch.tensor(adv, dtype=torch.float64),
        valid=torch.tensor([True] * 6 + [False] * 2),
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    assert metrics["baseline_clipped"] == 0.5


def test_gradcheck(build):
    rankings = [build.from_scores(0, [0.1, 0.7, 0.4], score_range=[0, 1]), build.ranking(1, [2, 0, 1]),
                build.failed(2)]
    batch = make_batch(build, rankings, [3, 3, 2], shift=-0.04)
    loss_fn = CoRPOLoss(threshold=0.6, kl_coef=0.1)

    def f(lp):
        batch.tensors["logprobs"] = lp
        return loss_fn(batch)[0]

    assert torch.autograd.gradcheck(f, (batch.tensors["logprobs"].clone().requires_grad_(),))


def test_options_and_needs():
    assert CoRPOLoss().needs == frozenset({"logprobs", "old_logprobs", "ref_logprobs", "mask"})
    assert "ref_logprobs" not in CoRPOLoss(kl_coef=0).needs
    for bad in ({"threshold": -0.1}, {"threshold": 1.5}, {"clip_eps": 0}, {"kl_coef": -1}):
        with pytest.raises(ValueError):
            CoRPOLoss(**bad)
