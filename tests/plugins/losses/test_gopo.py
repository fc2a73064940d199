"""GOPO: linear rank advantages by hand (ties averaged), the shared clipped objective,
failed groups left out, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rlaif.core.records import Ranking
from rlaif.plugins.losses.advantages import gopo_advantages, rank_advantages
from rlaif.plugins.losses.gopo import GOPOLoss
from rlaif.plugins.losses.grpo_rank import grpo_rank_loss


def rk(order, ties=(), failure=None):
    ties = [list(t) for t in ties]
    return Ranking(prompt_id="p", oracle="o", order=list(order), ties=ties, failure=failure)


def test_linear_advantages_by_hand():
    # ranks 1..5 -> 2 - 4 (rank - 1) / 4
    assert gopo_advantages([0, 1, 2, 3, 4]) == pytest.approx([2.0, 1.0, 0.0, -1.0, -2.0])
    # ranking 2 > 0 > 1: candidate 2 has rank 1 (+2), 0 rank 2 (0), 1 rank 3 (-2)
    assert gopo_advantages(rk([2, 0, 1]), group_size=3) == pytest.approx([0.0, -2.0, 2.0])
    assert gopo_advantages(rk([1, 0])) == pytest.approx([-2.0, 2.0])  # G = 2: +-2


def test_ties_get_the_mean_advantage_of_their_ranks():
    # {1, 2} tied over ranks 2 and 3 (A = 2/3 and -2/3): both get 0
    assert gopo_advantages(rk([0, 1, 2, 3], ties=[[1, 2]])) == pytest.approx([2.0, 0.0, 0.0, -2.0])
    # {0, 1} tied over ranks 1 and 2 (A = 2 and 2/3): both get 4/3; sums stay zero
    adv = gopo_advantages(rk([0, 1, 2, 3], ties=[[0, 1]]))
    assert adv == pytest.approx([4 / 3, 4 / 3, -2 / 3, -2.0])
    assert sum(adv) == pytest.approx(0.0, abs=1e-12)
    assert gopo_advantages(rk([0, 1, 2], ties=[[0, 1, 2]])) == [0.0, 0.0, 0.0]


def test_failed_single_and_equal_to_four_times_the_linear_gain():
    assert gopo_advantages(rk([], failure="timeout"), group_size=3) == [0.0] * 3
    assert gopo_advantages(rk([0])) == [0.0]
    for ranking in (rk([3, 1, 0, 2]), rk([0, 1, 2, 3, 4], ties=[[1, 2, 3]])):
        linear = rank_advantages(ranking, "linear", group_size=len(ranking.order))
        assert gopo_advantages(ranking) == pytest.approx([4 * a for a in linear])


def make_batch(build, ratios=(1.1, 0.9, 1.3, 5.0, 0.2), dtype=torch.float64):
    """Group 0: 3 one-token rollouts ranked 2 > 0 > 1 (A = 0, -2, +2); group 1: 2
    rollouts whose ranking failed (wild ratios and reference: they must not count)."""
    old = torch.tensor([[-1.0], [-2.0], [-1.5], [-0.7], [-3.0]], dtype=dtype)
    logprobs = old + torch.log(torch.tensor(ratios, dtype=dtype)).unsqueeze(-1)
    ref = logprobs.clone()
    ref[0] += math.log(2.0)  # k3 = 2 - ln 2 - 1 on row 0
    ref[3:] -= 4.0  # failed group: a large KL that must be left out
    mask = torch.ones(5, 1, dtype=torch.bool)
    tensors = dict(logprobs=logprobs, old_logprobs=old, ref_logprobs=ref, mask=mask)
    return build.batch([build.ranking(0, [2, 0, 1]), build.failed(1)], [3, 2], tensors)


def test_loss_by_hand(build):
    loss, metrics = GOPOLoss(clip_eps=0.2, kl_coef=0.04)(make_batch(build))
    # objective: row 0 A = 0 -> 0; row 1 A = -2, ratio 0.9 -> -1.8; row 2 A = +2, ratio
    # 1.3 clipped to 1.2 -> 2.4. pg = -(0 - 1.8 + 2.4) / 3 = -0.2
    kl = (1 - math.log(2)) / 3  # 0.102284: rows 0..2 only
    assert metrics["pg_loss"] == pytest.approx(-0.2)
    assert metrics["kl"] == pytest.approx(kl)
    assert loss.item() == pytest.approx(-0.2 + 0.04 * kl)  # -0.195909
    assert metrics["clip_frac"] == pytest.approx(1 / 3)  # row 2's token
    assert metrics["groups_failed"] == 1.0
    assert metrics["adv_mean"] == pytest.approx(0.0) and metrics["adv_abs_mean"] == pytest.approx(4 / 3)
    assert all(isinstance(v, float) for v in metrics.values())


def test_same_objective_as_grpo_rank_with_gopo_advantages(build):
    batch = make_batch(build)
    loss, _ = GOPOLoss()(batch)
    assert GOPOLoss().advantages(batch) == pytest.approx([0.0, -2.0, 2.0, 0.0, 0.0])
    t = batch.tensors
    expected, _ = grpo_rank_loss(
        t["logprobs"], t["old_logprobs"], t["ref_logprobs"], t["mask"],
        torch.tensor([0.0, -2.0, 2.0, 0.0, 0.0], dtype=torch.float64),
        valid=torch.tensor([True, True, True, False, False]),
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)


def test_gradient_and_gradcheck(build):
    batch = make_batch(build, ratios=(1.05, 0.95, 1.1, 0.9, 1.02))  # inside the clip range
    lp = batch.tensors["logprobs"].clone().requires_grad_()
    batch.tensors["logprobs"] = lp
    GOPOLoss(kl_coef=0.0)(batch)[0].backward()
    # d(-A rho / 3) / d lp = -A rho / 3
    assert lp.grad[:, 0].tolist() == pytest.approx([0.0, 2 * 0.95 / 3, -2 * 1.1 / 3, 0.0, 0.0])

    loss_fn = GOPOLoss(kl_coef=0.1)

    def f(x):
        batch.tensors["logprobs"] = x
        return loss_fn(batch)[0]

    assert torch.autograd.gradcheck(f, (lp.detach().clone().requires_grad_(),))


def test_options_and_needs():
    assert GOPOLoss().needs == frozenset({"logprobs", "old_logprobs", "ref_logprobs", "mask"})
    assert "ref_logprobs" not in GOPOLoss(kl_coef=0).needs
    assert "entropies" in GOPOLoss(entropy_coef=0.01).needs
    with pytest.raises(ValueError):
        GOPOLoss(clip_eps=0)
    with pytest.raises(ValueError):
        GOPOLoss(kl_coef=-1)
