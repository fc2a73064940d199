"""GRPO_rank: the clipped objective and k3 KL by hand, step-0 identities, gradients."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from rlaif.plugins.losses.advantages import ExperimentalWarning, rank_advantages
from rlaif.plugins.losses.grpo_rank import GRPORankLoss, grpo_rank_loss
from rlaif.plugins.losses.policy_gradient import clipped_surrogate, kl_k3, masked_mean, token_mean

WORKED = [0.4103, 0.0412, -0.0897, -0.1590, -0.2028]


def two_sequences(dtype=torch.float64):
    """2 sequences, L = 2; the second has one response token (its 2nd is padding).

    ratios: seq 0 -> 1.1 (inside the clip range), 1.5 (outside, A > 0 so clipped to 1.2);
            seq 1 -> 0.5 (A < 0: min(0.5 * -0.5, 0.8 * -0.5) = -0.4, clipped branch)
    ref - logprobs: seq 0 -> 0, ln 2; seq 1 -> ln 0.5
    """
    old = torch.tensor([[-1.0, -1.0], [-2.0, -2.0]], dtype=dtype)
    logprobs = old + torch.log(torch.tensor([[1.1, 1.5], [0.5, 0.3]], dtype=dtype))
    ref = logprobs + torch.log(torch.tensor([[1.0, 2.0], [0.5, 7.0]], dtype=dtype))
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    advantages = torch.tensor([1.0, -0.5], dtype=dtype)
    return logprobs, old, ref, mask, advantages


def test_clipped_objective_and_k3_by_hand():
    logprobs, old, ref, mask, adv = two_sequences()
    objective, clip_frac = clipped_surrogate(logprobs, old, adv, mask, 0.2)
    assert objective[0].tolist() == pytest.approx([1.1, 1.2])
    assert objective[1, 0].item() == pytest.approx(-0.4)
    assert clip_frac.item() == pytest.approx(2 / 3)  # 2 of 3 valid tokens are clipped
    kl = kl_k3(logprobs, ref)
    # exp(d) - d - 1: d = 0 -> 0; d = ln 2 -> 0.306853; d = ln 0.5 -> 0.193147
    assert kl[0].tolist() == pytest.approx([0.0, 2 - math.log(2) - 1])
    assert kl[1, 0].item() == pytest.approx(0.5 + math.log(2) - 1)

    loss, metrics = grpo_rank_loss(logprobs, old, ref, mask, adv, clip_eps=0.2, kl_coef=0.04)
    pg = -((1.1 + 1.2) / 2 + (-0.4)) / 2  # -0.375: per-sequence token mean, then mean over sequences
    kl_mean = ((0.0 + 0.306853) / 2 + 0.193147) / 2  # 0.173287
    assert metrics["pg_loss"] == pytest.approx(pg)
    assert metrics["kl"] == pytest.approx(kl_mean, abs=1e-6)
    assert loss.item() == pytest.approx(pg + 0.04 * kl_mean, abs=1e-6)  # -0.368069
    assert metrics["loss"] == pytest.approx(loss.item())
    assert metrics["clip_frac"] == pytest.approx(2 / 3)


def test_masked_means():
    x = torch.tensor([[1.0, 3.0], [5.0, 100.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    assert masked_mean(x, mask).item() == pytest.approx((2.0 + 5.0) / 2)
    assert token_mean(x, mask).item() == pytest.approx(9.0 / 3)
    assert masked_mean(x, torch.zeros(2, 2)).item() == 0.0


def test_step_zero_kl_is_zero_and_loss_is_the_pg_term():
    torch.manual_seed(0)
    logprobs = -torch.rand(5, 4, dtype=torch.float64)
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[3, 2:] = False
    adv = torch.tensor(WORKED, dtype=torch.float64)
    loss, metrics = grpo_rank_loss(logprobs, logprobs.clone(), logprobs.clone(), mask, adv, 0.2, 0.04)
    assert metrics["kl"] == 0.0  # exactly
    assert metrics["clip_frac"] == 0.0  # ratio is 1
    assert loss.item() == metrics["pg_loss"]
    assert loss.item() == pytest.approx(-sum(WORKED) / 5, abs=1e-12)  # ratio 1: -mean A


def test_gradcheck_wrt_logprobs():
    logprobs, old, ref, mask, adv = two_sequences()
    # keep every ratio away from the clip boundaries (0.8, 1.2)
    logprobs = (
        old + torch.log(torch.tensor([[1.05, 0.9], [0.95, 1.1]], dtype=torch.float64))
    ).requires_grad_()

    def f(lp):
        return grpo_rank_loss(lp, old, ref, mask, adv, clip_eps=0.2, kl_coef=0.04, entropies=None)[0]

    assert torch.autograd.gradcheck(f, (logprobs,))


def make_batch(build, dtype=torch.float64, shift=0.0):
    """Group 0: 3 rollouts ranked 2 > 0 > 1; group 1: 2 rollouts, ranking failed."""
    n, length = 5, 3
    old = -0.5 - 0.1 * torch.arange(n * length, dtype=dtype).reshape(n, length)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[1, 2] = False
    tensors = dict(logprobs=old + shift, old_logprobs=old, ref_logprobs=old - 0.05, mask=mask)
    return build.batch([build.ranking(0, [2, 0, 1]), build.failed(1)], [3, 2], tensors)


def test_loss_class_matches_pure_function(build):
    batch = make_batch(build, shift=0.01)
    loss_fn = GRPORankLoss()
    loss, metrics = loss_fn(batch)
    expected_adv = rank_advantages([1, 2, 0]) + [0.0, 0.0]
    adv = loss_fn.advantages(batch)
    assert adv == pytest.approx(expected_adv)
    t = batch.tensors
    ref_loss, _ = grpo_rank_loss(
        t["logprobs"],
        t["old_logprobs"],
        t["ref_logprobs"],
        t["mask"],
        torch.tensor(expected_adv, dtype=torch.float64),
        valid=torch.tensor([True, True, True, False, False]),
    )
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-12)
    assert metrics["groups_failed"] == 1.0
    assert metrics["adv_mean"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["adv_abs_mean"] == pytest.approx(sum(abs(a) for a in expected_adv) / 3)  # ranked rollouts
    assert set(metrics) >= {"loss", "pg_loss", "kl", "clip_frac", "adv_mean", "adv_abs_mean", "groups_failed"}
    assert all(isinstance(v, float) for v in metrics.values())


def test_gradient_raises_the_best_and_lowers_the_worst(build):
    batch = make_batch(build)
    batch.tensors["logprobs"] = batch.tensors["logprobs"].clone().requires_grad_()
    loss, metrics = GRPORankLoss(kl_coef=0.0)(batch)
    assert metrics["clip_frac"] == 0.0
    loss.backward()
    grad = batch.tensors["logprobs"].grad
    assert (grad[2] < 0).all()  # candidate 2 is best: descent raises its log-probs
    assert (grad[1, :2] > 0).all() and grad[1, 2] == 0  # worst; its padding gets no gradient
    assert (grad[3:] == 0).all()  # failed group: zero advantage, no KL term


def test_gradcheck_through_the_class(build):
    batch = make_batch(build, shift=0.03)
    batch.tensors["entropies"] = torch.full((5, 3), 0.7, dtype=torch.float64)
    loss_fn = GRPORankLoss(entropy_coef=0.01, normalize_std=True, gain="dcg_secondary")
    assert "entropies" in loss_fn.needs

    def f(lp):
        batch.tensors["logprobs"] = lp
        return loss_fn(batch)[0]

    assert torch.autograd.gradcheck(f, (batch.tensors["logprobs"].clone().requires_grad_(),))


def test_entropy_bonus(build):
    batch = make_batch(build)
    base, _ = GRPORankLoss()(batch)
    batch.tensors["entropies"] = torch.full((5, 3), 2.0, dtype=torch.float64)
    loss, metrics = GRPORankLoss(entropy_coef=0.1)(batch)
    assert metrics["entropy"] == pytest.approx(2.0)
    assert loss.item() == pytest.approx(base.item() - 0.2)
    del batch.tensors["entropies"]
    with pytest.raises(ValueError, match="entropies"):
        GRPORankLoss(entropy_coef=0.1)(batch)


def test_reference_logprobs_required_only_with_kl(build):
    batch = make_batch(build)
    del batch.tensors["ref_logprobs"]
    with pytest.raises(ValueError, match="ref_logprobs"):
        GRPORankLoss(kl_coef=0.04)(batch)
    loss_fn = GRPORankLoss(kl_coef=0.0)
    assert "ref_logprobs" not in loss_fn.needs
    loss, metrics = loss_fn(batch)
    assert metrics["kl"] == 0.0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_rank_loss(
            batch.tensors["logprobs"],
            batch.tensors["old_logprobs"],
            None,
            batch.tensors["mask"],
            torch.zeros(5, dtype=torch.float64),
            0.2,
            0.04,
        )


def test_batch_shape_and_options_are_checked(build):
    batch = make_batch(build)
    batch.tensors["mask"] = batch.tensors["mask"][:4]
    with pytest.raises(ValueError, match="rows"):
        GRPORankLoss()(batch)
    batch = make_batch(build)
    batch.rankings = batch.rankings[:1]
    with pytest.raises(ValueError, match="one per group"):
        GRPORankLoss()(batch)
    with pytest.raises(ValueError):
        GRPORankLoss(gain="ndcg")
    with pytest.raises(ValueError):
        GRPORankLoss(mode="pairwise")


def test_pred_vs_oracle_is_flagged_experimental(build):
    with pytest.warns(ExperimentalWarning):
        loss_fn = GRPORankLoss(mode="pred_vs_oracle")
    batch = make_batch(build)
    adv = loss_fn.advantages(batch)
    # sequence log-probs (old_logprobs summed over the mask): -1.8, -1.7, -3.6, so the
    # policy ranks 1 > 0 > 2 while the oracle says 2 > 0 > 1. delta = 1 - g(r_hat)/g(r):
    # (0, 1 - 1/0.5, 1 - 0.5/1) = (0, -1, 0.5), mean -1/6 -> A = (-1/6, 5/6, -2/3)
    assert adv[3:] == [0.0, 0.0]
    assert adv[:3] == pytest.approx([-1 / 6, 5 / 6, -2 / 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GRPORankLoss()  # the default mode does not warn


def test_float32_constants_like_the_trainer_builds(build):
    batch = make_batch(build, shift=0.01)
    expected, _ = GRPORankLoss()(batch)
    batch.tensors["old_logprobs"] = batch.tensors["old_logprobs"].float()  # pad_rows gives float32 on CPU
    loss, _ = GRPORankLoss()(batch)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_dcg_discount_options_by_hand(build):
    batch = make_batch(build)  # group 0 ranked 2 > 0 > 1, so positions (1, 2, 0)
    default = GRPORankLoss().advantages(batch)
    assert GRPORankLoss(dcg_base=2.0, dcg_offset=2.0).advantages(batch) == default  # bit for bit
    # offset 3: gains 1/log2(3), 1/log2(4), 1/log2(5) = .6309, .5, .4307 for ranks 0, 1, 2
    adv = GRPORankLoss(dcg_offset=3.0).advantages(batch)
    assert adv[:3] == pytest.approx([-0.0205354, -0.0898589, 0.1103943], abs=1e-6)
    # base e only rescales: 1/ln(2 + r) = (1/log2(2 + r)) / ln 2
    adv = GRPORankLoss(dcg_base=math.e).advantages(batch)
    assert adv == pytest.approx([a / math.log(2) for a in default])
    assert adv[:3] == pytest.approx([-0.1145214, -0.3034131, 0.4179344], abs=1e-6)
    secondary = GRPORankLoss(gain="dcg_secondary", dcg_offset=3.0).advantages(batch)
    g = [1 / math.log2(3), 1 / (2 * math.log2(4)), 1 / (3 * math.log2(5))]  # ranks 0, 1, 2
    mean = sum(g) / 3
    assert secondary[:3] == pytest.approx([g[1] - mean, g[2] - mean, g[0] - mean])


@pytest.mark.parametrize("options", [{"dcg_base": 1.0}, {"dcg_offset": 1.0}, {"dcg_base": 0.5},
                                     {"gain": "linear", "dcg_offset": 3.0}])
def test_dcg_discount_options_are_checked(options):
    with pytest.raises(ValueError):
        GRPORankLoss(**options)


def test_rank_penalty_is_off_by_default(build):
    loss_fn = GRPORankLoss()
    assert loss_fn.rank_penalty == 0.0
    _, metrics = loss_fn(make_batch(build))
    assert "rank_mismatch" not in metrics


def test_rank_penalty_by_hand(build):
    batch = make_batch(build)
    # length-normalised sampling log-probs: row 0 (-.5 -.6 -.7) -> -0.6, row 1 (-.8 -.9; the
    # third token is padding) -> -0.85, row 2 -> -1.2: the policy ranks 0 > 1 > 2. (Summed
    # log-probs would rank 1 first: -1.7 > -1.8.) The oracle ranks 2 > 0 > 1, positions
    # (1, 2, 0). p = |r_hat - r| / 2 = (0.5, 0.5, 1.0), mean 2/3.
    with pytest.warns(ExperimentalWarning):
        loss_fn = GRPORankLoss(rank_penalty=0.3)
    assert loss_fn.rank_mismatches(batch) == pytest.approx([0.5, 0.5, 1.0, 0.0, 0.0])
    base = rank_advantages([1, 2, 0])
    penalty = [0.3 * (p - 2 / 3) for p in (0.5, 0.5, 1.0)]  # -0.05, -0.05, +0.1
    expected = [a - q for a, q in zip(base, penalty, strict=True)] + [0.0, 0.0]
    adv = loss_fn.advantages(batch)
    assert adv == pytest.approx(expected)
    assert adv[:3] == pytest.approx([-0.0293802, -0.1603099, 0.1896901], abs=1e-6)
    assert sum(adv[:3]) == pytest.approx(0.0, abs=1e-12)  # still zero-sum
    loss, metrics = loss_fn(batch)
    assert metrics["rank_mismatch"] == pytest.approx(2 / 3)  # ranked rows only
    t = batch.tensors
    ref_loss, _ = grpo_rank_loss(
        t["logprobs"], t["old_logprobs"], t["ref_logprobs"], t["mask"],
        torch.tensor(expected, dtype=torch.float64),
        valid=torch.tensor([True, True, True, False, False]),
    )
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-12)
    with pytest.warns(ExperimentalWarning):
        normalized = GRPORankLoss(rank_penalty=0.3, normalize_std=True).advantages(batch)
    assert normalized[:3] == pytest.approx(
        [a - q for a, q in zip(rank_advantages([1, 2, 0], normalize_std=True), penalty, strict=True)]
    )


def test_rank_penalty_zero_when_the_policy_agrees_and_ties_share_positions():
    from rlaif.plugins.losses.advantages import rank_mismatch

    assert rank_mismatch([1, 2, 0], [-1.0, -2.0, -0.5]) == [0.0, 0.0, 0.0]
    # policy ties 0 and 1 (positions 0.5, 0.5) while the oracle says 0 > 1 > 2
    assert rank_mismatch([0, 1, 2], [-1.0, -1.0, -3.0]) == pytest.approx([0.25, 0.25, 0.0])
    assert rank_mismatch([0], [-1.0]) == [0.0]
    with pytest.raises(ValueError):
        rank_mismatch([0, 1], [-1.0])


def test_rank_penalty_gradcheck_and_checks(build):
    batch = make_batch(build, shift=0.03)
    with pytest.warns(ExperimentalWarning):
        loss_fn = GRPORankLoss(rank_penalty=0.5)

    def f(lp):
        batch.tensors["logprobs"] = lp
        return loss_fn(batch)[0]

    assert torch.autograd.gradcheck(f, (batch.tensors["logprobs"].clone().requires_grad_(),))
    with pytest.raises(ValueError):
        GRPORankLoss(rank_penalty=-0.1)
    with pytest.raises(ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GRPORankLoss(rank_penalty=0.1, mode="pred_vs_oracle")
