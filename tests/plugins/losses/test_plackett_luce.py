"""Plackett–Luce: the stages read off a ranking (ties unordered), the NLL by hand, equality
with DPO at G = 2, skipped and failed groups, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rlaif.core.records import Ranking
from rlaif.plugins.losses.dpo import DPOLoss
from rlaif.plugins.losses.plackett_luce import PlackettLuceLoss, plackett_luce_loss, plackett_luce_stages

F64 = torch.float64
LN2, LN3 = math.log(2.0), math.log(3.0)


def rk(order, ties=(), failure=None):
    ties = [list(t) for t in ties]
    return Ranking(prompt_id="p", oracle="o", order=list(order), ties=ties, failure=failure)


def test_stages():
    assert plackett_luce_stages(rk([2, 0, 1])) == [(2, [2, 0, 1]), (0, [0, 1])]
    # {0, 1} tied on top: each is drawn from itself and the candidates below, never the other
    assert plackett_luce_stages(rk([0, 1, 2], ties=[[0, 1]])) == [(0, [0, 2]), (1, [1, 2])]
    # a tie at the bottom is the last block: no stage
    assert plackett_luce_stages(rk([0, 1, 2], ties=[[1, 2]])) == [(0, [0, 1, 2])]
    assert plackett_luce_stages(rk([0, 1, 2], ties=[[0, 1, 2]])) == []
    assert plackett_luce_stages(rk([0])) == []
    assert plackett_luce_stages(rk([], failure="timeout")) == []


def nll(weights_best_first, stages):
    """The pure function on rewards log(w), reference 0, beta 1."""
    r = torch.log(torch.tensor(weights_best_first, dtype=F64))
    chosen = torch.tensor([c for c, _ in stages])
    sets = torch.zeros(len(stages), len(weights_best_first), dtype=torch.bool)
    for p, (_, rows) in enumerate(stages):
        sets[p, rows] = True
    return plackett_luce_loss(r, torch.zeros_like(r), chosen, sets, n_groups=1, beta=1.0)


def test_nll_by_hand():
    # weights 3 > 2 > 1: -log(3/6) - log(2/3) = log 3
    loss, metrics = nll([3.0, 2.0, 1.0], plackett_luce_stages(rk([0, 1, 2])))
    assert loss.item() == pytest.approx(LN3)
    assert metrics["loss"] == pytest.approx(LN3) and metrics["nll_per_stage"] == pytest.approx(LN3 / 2)
    # {0, 1} tied above 2: -log(3/4) - log(2/3) = log 2
    loss, _ = nll([3.0, 2.0, 1.0], plackett_luce_stages(rk([0, 1, 2], ties=[[0, 1]])))
    assert loss.item() == pytest.approx(LN2)
    # 0 above a tied {1, 2}: -log(3/6) = log 2
    loss, _ = nll([3.0, 2.0, 1.0], plackett_luce_stages(rk([0, 1, 2], ties=[[1, 2]])))
    assert loss.item() == pytest.approx(LN2)


def make_batch(build, rankings, sizes, logprobs, ref=None):
    """One-token rollouts (a padded second token) so sequence log-probs are the first column."""
    n = sum(sizes)
    lp = torch.tensor(logprobs, dtype=F64).reshape(n, 1)
    lp = torch.cat([lp, torch.full((n, 1), -9.0, dtype=F64)], dim=1)  # [N, 2]; column 1 is padding
    mask = torch.zeros(n, 2, dtype=torch.bool)
    mask[:, 0] = True
    ref_lp = torch.full((n, 2), -5.0, dtype=F64) if ref is None else ref
    tensors = dict(logprobs=lp, ref_logprobs=ref_lp, mask=mask, old_logprobs=lp.detach().clone())
    return build.batch(rankings, sizes, tensors)


def test_loss_class_by_hand(build):
    # beta = 1, reference -5: rewards are the offsets from -5. Group 0 ranked 2 > 0 > 1 with
    # weights e^r = (2, 1, 3) -> 3 > 2 > 1: log 3. Group 1 ranked 0 > 1 with weights
    # (1, 3): -log(1/4) = log 4. Group 2 failed. Loss = (log 3 + log 4) / 2.
    offsets = [LN2, 0.0, LN3, 0.0, LN3, 0.0, 0.0]
    batch = make_batch(build, [build.ranking(0, [2, 0, 1]), build.ranking(1, [0, 1]), build.failed(2)],
                       [3, 2, 2], [-5.0 + o for o in offsets])
    loss, metrics = PlackettLuceLoss(beta=1.0)(batch)
    assert loss.item() == pytest.approx(math.log(12) / 2)  # 1.242453
    assert metrics["n_groups"] == 2.0 and metrics["groups_failed"] == 1.0 and metrics["groups_skipped"] == 1.0
    assert metrics["pref_acc"] == pytest.approx(3 / 4)  # group 1's only pair is the wrong way round
    assert metrics["reward_margin"] == pytest.approx(0.0)  # best - worst: ln 3 and -ln 3
    assert metrics["chosen_reward"] == pytest.approx(LN3 / 2)
    assert metrics["rejected_reward"] == pytest.approx(LN3 / 2)
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_equals_dpo_at_two_candidates(build, beta):
    torch.manual_seed(0)
    rankings = [build.ranking(0, [1, 0]), build.ranking(1, [0, 1]), build.failed(2),
                build.ranking(3, [0, 1], ties=[[0, 1]]), build.ranking(4, [1, 0])]
    n, length = 10, 3
    lp = -torch.rand(n, length, dtype=F64) * 3
    ref = -torch.rand(n, length, dtype=F64) * 3
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[0, 2] = mask[5, 1:] = mask[9, 2] = False
    losses, grads, metrics = [], [], []
    for loss_fn in (PlackettLuceLoss(beta=beta), DPOLoss(beta=beta)):
        x = lp.clone().requires_grad_()
        batch = build.batch(rankings, [2] * 5, dict(logprobs=x, ref_logprobs=ref, mask=mask))
        loss, m = loss_fn(batch)
        loss.backward()
        losses.append(loss.item())
        grads.append(x.grad)
        metrics.append(m)
    assert losses[0] == pytest.approx(losses[1], rel=1e-12, abs=1e-15)
    assert torch.allclose(grads[0], grads[1], rtol=1e-12, atol=1e-15)
    shared = ("reward_margin", "pref_acc", "chosen_reward", "rejected_reward", "groups_skipped", "groups_failed")
    for key in shared:
        assert metrics[0][key] == pytest.approx(metrics[1][key], rel=1e-12, abs=1e-15), key
    assert metrics[0]["n_groups"] == metrics[1]["n_pairs"] == 3.0


def test_tied_candidates_are_symmetric_and_the_last_block_is_free(build):
    # 0 and 1 tied on top of 2, then a tie {0, 1, 2} of the whole second group
    rankings = [build.ranking(0, [0, 1, 2], ties=[[0, 1]]), build.ranking(1, [0, 1, 2], ties=[[0, 1, 2]])]
    base = [-1.0, -2.5, -2.0, -1.0, -2.0, -3.0]
    swapped = [-2.5, -1.0, -2.0, -1.0, -2.0, -3.0]
    a, _ = PlackettLuceLoss(beta=0.5)(make_batch(build, rankings, [3, 3], base))
    b, _ = PlackettLuceLoss(beta=0.5)(make_batch(build, rankings, [3, 3], swapped))
    assert a.item() == pytest.approx(b.item(), abs=1e-14)  # swapping tied candidates changes nothing
    batch = make_batch(build, rankings, [3, 3], base)
    x = batch.tensors["logprobs"].clone().requires_grad_()
    batch.tensors["logprobs"] = x
    loss, metrics = PlackettLuceLoss(beta=0.5)(batch)
    loss.backward()
    assert metrics["n_groups"] == 1.0 and metrics["groups_skipped"] == 1.0
    assert (x.grad[3:] == 0).all() and (x.grad[:, 1] == 0).all()  # all-tied group, padding


def test_zero_stages_give_zero_loss_with_grad(build):
    batch = make_batch(build, [build.failed(0), build.ranking(1, [0, 1], ties=[[0, 1]])], [3, 2],
                       [-1.0, -2.0, -3.0, -1.0, -2.0])
    x = batch.tensors["logprobs"].clone().requires_grad_()
    batch.tensors["logprobs"] = x
    loss, metrics = PlackettLuceLoss()(batch)
    assert loss.item() == 0.0 and loss.requires_grad
    assert metrics["n_groups"] == 0.0 and metrics["groups_skipped"] == 2.0 and metrics["groups_failed"] == 1.0
    loss.backward()
    assert (x.grad == 0).all()


def test_gradcheck(build):
    torch.manual_seed(1)
    rankings = [build.ranking(0, [2, 0, 3, 1]), build.ranking(1, [0, 1, 2], ties=[[1, 2]]), build.failed(2)]
    n, length = 9, 3
    lp = -torch.rand(n, length, dtype=F64)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[1, 2] = False
    ref = -torch.rand(n, length, dtype=F64)
    batch = build.batch(rankings, [4, 3, 2], dict(logprobs=lp, ref_logprobs=ref, mask=mask))
    loss_fn = PlackettLuceLoss(beta=0.5)

    def f(x):
        batch.tensors["logprobs"] = x
        return loss_fn(batch)[0]

    assert torch.autograd.gradcheck(f, (lp.clone().requires_grad_(),))


def test_needs_options_and_checks(build):
    assert PlackettLuceLoss().needs == frozenset({"logprobs", "ref_logprobs", "mask"})
    with pytest.raises(ValueError):
        PlackettLuceLoss(beta=0)
    batch = make_batch(build, [build.ranking(0, [1, 0])], [3], [-1.0, -2.0, -3.0])
    with pytest.raises(ValueError, match="covers 2 candidates"):
        PlackettLuceLoss()(batch)
    batch = make_batch(build, [build.ranking(0, [2, 1, 0])], [3], [-1.0, -2.0, -3.0])
    del batch.tensors["ref_logprobs"]
    with pytest.raises(ValueError, match="ref_logprobs"):
        PlackettLuceLoss()(batch)
