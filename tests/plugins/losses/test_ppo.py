"""VLM-RLAIF PPO: shaped rewards, GAE, whitening and value clipping by hand."""

from __future__ import annotations

import pytest
import torch

from rlaif.plugins.losses.ppo import PPOLoss, clipped_value_loss, gae, token_rewards, whiten

F64 = torch.float64


def t(rows):
    return torch.tensor(rows, dtype=F64)


def close(actual, expected, tol=1e-9):
    torch.testing.assert_close(actual, t(expected), atol=tol, rtol=0)


def test_token_rewards_kl_score_and_no_eos_penalty():
    old = t([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    ref = old - t([[0.5, -0.2, 0.1], [0.3, 0.0, 9.0]])  # k1 = old - ref; negatives clamp to 0
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards = token_rewards(
        t([1.0, 2.0]), old, ref, mask, kl_coef=0.1, finished=torch.tensor([True, False]), no_eos_penalty=-8.0
    )
    # row 0: -0.1 * (0.5, 0, 0.1), score 1 on the last token
    # row 1: -0.1 * (0.3, 0), score 2 - 8 (no EOS) on its last response token (t = 1)
    close(rewards, [[-0.05, 0.0, 0.99], [-0.03, -6.0, 0.0]])
    all_finished = token_rewards(t([1.0, 2.0]), old, ref, mask, 0.1, torch.tensor([True, True]), -8.0)
    assert all_finished[1, 1].item() == pytest.approx(2.0)
    default = token_rewards(t([1.0, 2.0]), old, ref, mask, 0.1)  # finished defaults to all true
    assert default.tolist() == all_finished.tolist()


def test_token_rewards_empty_response_gets_nothing():
    zeros = torch.zeros(1, 3, dtype=F64)
    rewards = token_rewards(t([5.0]), zeros, zeros, torch.zeros(1, 3), 0.1, torch.tensor([False]), -8.0)
    assert rewards.tolist() == [[0.0, 0.0, 0.0]]


def test_gae_three_tokens_by_hand():
    rewards = t([[0.0, 0.0, 1.0]])
    values = t([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # t=2: delta = 1 - .7 = .3                       A2 = .3
    # t=1: delta = .9 * .7 - .6 = .03                A1 = .03 + .72 * .3 = .246
    # t=0: delta = .9 * .6 - .5 = .04                A0 = .04 + .72 * .246 = .21712
    close(adv, [[0.21712, 0.246, 0.3]])
    close(ret, [[0.71712, 0.846, 1.0]])
    # gamma = lam = 1 (VLM-RLAIF): A_t = sum of future rewards - V_t, returns = reward-to-go
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    close(adv, [[0.5, 0.4, 0.3]])
    close(ret, [[1.0, 1.0, 1.0]])


def test_gae_skips_masked_positions():
    rewards, values = t([[0.0, 5.0, 1.0], [0.0, 1.0, 3.0]]), t([[0.5, 9.0, 0.7], [0.5, 0.6, 4.0]])
    adv, ret = gae(rewards, values, torch.tensor([[1, 0, 1], [1, 1, 0]]), gamma=0.9, lam=0.8)
    # row 0 links t=0 to t=2: delta_0 = .9 * .7 - .5 = .13, A0 = .13 + .72 * .3 = .346
    # row 1 ends at t=1: A1 = 1 - .6 = .4, A0 = .9 * .6 - .5 + .72 * .4 = .328
    close(adv, [[0.346, 0.0, 0.3], [0.328, 0.4, 0.0]])
    close(ret, [[0.846, 0.0, 1.0], [0.828, 1.0, 0.0]])


def test_whiten_over_valid_tokens():
    x = t([[1.0, 2.0], [3.0, 100.0]])
    out = whiten(x, torch.tensor([[1, 1], [1, 0]]))
    # valid 1, 2, 3: mean 2, population var 2/3
    close(out, [[-1.224744, 0.0], [1.224744, 0.0]], 1e-6)
    kept = whiten(x, torch.tensor([[1, 1], [1, 0]]), shift_mean=False)
    assert kept[0, 1].item() == pytest.approx(2.0)


def test_clipped_value_loss_by_hand():
    values, old, returns = t([[1.0, 0.0]]), t([[0.5, 0.1]]), t([[2.0, 0.0]])
    loss, clip_frac = clipped_value_loss(values, old, returns, torch.ones(1, 2), value_clip=0.2)
    # token 0: V_clip = .5 + .2 = .7: max((1 - 2)^2, (.7 - 2)^2) = 1.69; token 1: V_clip = 0 -> 0
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.0) / 2)
    assert clip_frac.item() == pytest.approx(0.5)


def make_batch(build, shift=0.0, value_shift=0.0, rankings=None, finished=None):
    """Group 0: 2 rollouts scored 0.9 / 0.1; group 1: 3 rollouts ranked 1 > 2 > 0."""
    n, length = 5, 3
    old = -0.6 - 0.1 * torch.arange(n * length, dtype=F64).reshape(n, length)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[0, 2] = False
    old_values = 0.1 * torch.arange(n * length, dtype=F64).reshape(n, length).cos()
    tensors = dict(
        logprobs=old + shift,
        old_logprobs=old,
        ref_logprobs=old - 0.05,
        mask=mask,
        values=old_values + value_shift,
        old_values=old_values,
    )
    if rankings is None:
        rankings = [build.from_scores(0, [0.9, 0.1], score_range=(0.0, 1.0)), build.ranking(1, [1, 2, 0])]
    return build.batch(rankings, [2, 3], tensors, finished=finished)


def test_scores_from_oracle_scores_or_ranks(build):
    scores = PPOLoss().scores(make_batch(build))
    assert scores == pytest.approx([0.9, 0.1, 0.0, 1.0, 0.5])


def test_step_zero(build):
    loss, metrics = PPOLoss()(make_batch(build))
    assert metrics["clip_frac"] == 0.0 and metrics["vf_clip_frac"] == 0.0
    # ratio 1 and whitened (zero-mean over valid tokens) advantages: pg term is 0
    assert metrics["pg_loss"] == pytest.approx(0.0, abs=1e-12)
    assert loss.item() == pytest.approx(0.1 * metrics["vf_loss"])
    assert metrics["kl"] == pytest.approx(0.05)
    assert metrics["score_mean"] == pytest.approx((0.9 + 0.1 + 0 + 1 + 0.5) / 5)
    # shaped reward per rollout: score - 0.1 * 0.05 per response token (14 tokens)
    assert metrics["reward_mean"] == pytest.approx((2.5 - 0.005 * 14) / 5)


def test_no_eos_penalty_from_rollout_records_or_tensor(build):
    _, base = PPOLoss()(make_batch(build))
    _, penalised = PPOLoss()(make_batch(build, finished=[[True, False], [True, True, True]]))
    assert penalised["no_eos"] == 1.0 and base["no_eos"] == 0.0
    assert penalised["reward_mean"] == pytest.approx(base["reward_mean"] - 1.0 / 5)  # -1: the [0, 1] scale
    batch = make_batch(build)
    batch.tensors["finished"] = torch.tensor([True, False, True, True, True])
    _, from_tensor = PPOLoss()(batch)
    assert from_tensor["reward_mean"] == pytest.approx(penalised["reward_mean"])
    _, custom = PPOLoss(no_eos_penalty=-2.0)(batch)
    assert custom["reward_mean"] == pytest.approx(base["reward_mean"] - 2.0 / 5)


def test_failed_groups_are_left_out(build):
    rankings = [build.failed(0), build.ranking(1, [1, 2, 0])]
    loss, metrics = PPOLoss()(make_batch(build, shift=0.02, value_shift=0.03, rankings=rankings))
    assert metrics["groups_failed"] == 1.0
    # the same loss as a batch holding only group 1
    full = make_batch(build, shift=0.02, value_shift=0.03)
    only = build.batch([build.ranking(0, [1, 2, 0])], [3], {k: v[2:] for k, v in full.tensors.items()})
    expected, _ = PPOLoss()(only)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)


def test_all_failed_gives_zero_loss_with_grad(build):
    batch = make_batch(build, rankings=[build.failed(0), build.failed(1)])
    batch.tensors["logprobs"] = batch.tensors["logprobs"].clone().requires_grad_()
    loss, metrics = PPOLoss()(batch)
    assert loss.item() == 0.0 and metrics["groups_failed"] == 2.0
    loss.backward()
    assert (batch.tensors["logprobs"].grad == 0).all()


def test_gradcheck_wrt_logprobs_and_values(build):
    batch = make_batch(build, shift=0.05, value_shift=0.1)  # ratios ~1.05 and |V - V_old| < clip
    loss_fn = PPOLoss()

    def f(lp, v):
        batch.tensors["logprobs"], batch.tensors["values"] = lp, v
        return loss_fn(batch)[0]

    lp = batch.tensors["logprobs"].clone().requires_grad_()
    v = batch.tensors["values"].clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (lp, v))


def test_needs_and_options():
    assert PPOLoss().needs == frozenset(
        {"logprobs", "old_logprobs", "ref_logprobs", "mask", "values", "old_values"}
    )
    with pytest.raises(ValueError):
        PPOLoss(gamma=1.5)
    with pytest.raises(ValueError):
        PPOLoss(value_clip=0)


def test_scores_reach_ppo_on_one_scale(build):
    # a score-mode judge's label log-likelihoods, -100 for a label missing from its top-k,
    # declare no scale: PPO sees rank-derived scores in [0, 1], never a -100 reward
    judge = [build.from_scores(0, [-0.1, -100.0]), build.from_scores(1, [-0.5, -100.0, -1.2])]
    assert PPOLoss().scores(make_batch(build, rankings=judge)) == [1.0, 0.0, 1.0, 0.0, 0.5]
    # a verifier on [0, 1] keeps its scores; one on 0..5 is mapped to [0, 1]
    verifier = [build.from_scores(0, [1.0, 0.0], (0.0, 1.0)), build.from_scores(1, [5.0, 2.5, 0.0], (0.0, 5.0))]
    assert PPOLoss().scores(make_batch(build, rankings=verifier)) == [1.0, 0.0, 1.0, 0.5, 0.0]
    # the no-EOS penalty is on that scale too: -1, the scale's width, not VLM-RLAIF's -8
    assert PPOLoss().no_eos_penalty == -1.0
