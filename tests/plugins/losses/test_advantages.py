"""Rank -> advantage maps, checked against numbers computed by hand (methods.md §1, §4)."""

from __future__ import annotations

import math

import pytest

from rlaif.core.records import Ranking
from rlaif.plugins.losses.advantages import (
    dcg_gain,
    group_normalized_advantages,
    pred_vs_oracle_advantages,
    rank_advantages,
    rank_blocks,
    rank_to_scores,
    ranking_scores,
)

# methods.md §1, G = 5, ranks 0..4, dcg_log
WORKED = [0.4103, 0.0412, -0.0897, -0.1590, -0.2028]
WORKED_STD = [1.855, 0.187, -0.406, -0.719, -0.917]


def close(actual, expected, tol=1e-3):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a == pytest.approx(e, abs=tol)


def rk(order, ties=(), **kw):
    return Ranking(prompt_id="p", oracle="o", order=list(order), ties=[list(t) for t in ties], **kw)


def test_dcg_gains_by_hand():
    close([dcg_gain(r) for r in range(5)], [1.0, 0.6309, 0.5, 0.4307, 0.3869], 1e-4)
    # 1 / ((1 + r) log2(2 + r)): r=1 -> 1 / (2 * 1.58496) = 0.31546
    close([dcg_gain(r, "dcg_secondary") for r in range(3)], [1.0, 0.31546, 1 / 6], 1e-5)
    close([dcg_gain(r, "linear", group_size=5) for r in range(5)], [1.0, 0.75, 0.5, 0.25, 0.0], 1e-12)
    assert dcg_gain(0, "linear", group_size=1) == 1.0


@pytest.mark.parametrize("bad", [dict(rank=-1), dict(rank=0, kind="ndcg"), dict(rank=0, kind="linear")])
def test_dcg_gain_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        dcg_gain(**bad)


def test_worked_values_from_ranking_and_positions():
    close(rank_advantages(rk([0, 1, 2, 3, 4])), WORKED)
    close(rank_advantages([0, 1, 2, 3, 4]), WORKED)
    close(rank_advantages(rk([0, 1, 2, 3, 4]), normalize_std=True), WORKED_STD)


def test_advantages_are_zero_sum_and_bounded():
    for gain in ("dcg_log", "dcg_secondary", "linear"):
        adv = rank_advantages(rk([3, 0, 4, 1, 2]), gain=gain)
        assert sum(adv) == pytest.approx(0.0, abs=1e-12)
        assert all(-1 <= a <= 1 for a in adv)


def test_ranking_order_maps_to_candidates():
    # order lists candidates best first: candidate 4 is best, candidate 0 worst
    close(rank_advantages(rk([4, 3, 2, 1, 0])), WORKED[::-1])
    # candidate 2 best, then 0, then 1
    adv = rank_advantages(rk([2, 0, 1]))
    g = [1.0, 1 / math.log2(3), 0.5]
    mean = sum(g) / 3
    close(adv, [g[1] - mean, g[2] - mean, g[0] - mean], 1e-12)


def test_group_of_one_and_all_tied_give_zeros():
    assert rank_advantages(rk([0])) == [0.0]
    assert rank_advantages(rk([0]), normalize_std=True) == [0.0]
    close(rank_advantages(rk([0, 1, 2], ties=[[0, 1, 2]])), [0.0, 0.0, 0.0], 1e-12)
    close(rank_advantages(rk([0, 1, 2], ties=[[0, 1, 2]]), normalize_std=True), [0.0, 0.0, 0.0], 1e-12)
    close(rank_advantages([2.0, 2.0, 2.0]), [0.0, 0.0, 0.0], 1e-12)


def test_ties_share_the_mean_gain_not_the_gain_of_the_mean_position():
    # order 2 > {0, 1} > 3: candidates 0 and 1 span positions 1 and 2.
    ranking = rk([2, 0, 1, 3], ties=[[0, 1]])
    g1, g2, g3 = 1 / math.log2(3), 0.5, 1 / math.log2(5)
    tied = (g1 + g2) / 2  # 0.565465
    mean = (1.0 + 2 * tied + g3) / 4
    expected = [tied - mean, tied - mean, 1.0 - mean, g3 - mean]  # -.0749, -.0749, +.3596, -.2097
    close(rank_advantages(ranking), expected, 1e-12)
    close(expected, [-0.0749, -0.0749, 0.3596, -0.2097], 1e-4)
    assert tied != pytest.approx(1 / math.log2(2 + 1.5))  # gain of the mean position differs
    # the same ordering given as positions (averaged, competition or dense ranks)
    for positions in ([1.5, 1.5, 0, 3], [1, 1, 0, 3], [1, 1, 0, 2]):
        close(rank_advantages(positions), expected, 1e-12)


def test_tie_groups_of_ranking_are_used():
    assert rank_blocks(rk([2, 0, 1, 3], ties=[[1, 0]])) == [[2], [0, 1], [3]]


def test_failed_ranking_gives_zeros():
    failed = Ranking(prompt_id="p", oracle="o", failure="no parse")
    assert rank_advantages(failed, group_size=4) == [0.0] * 4
    assert rank_advantages(failed) == []
    assert rank_to_scores(failed, group_size=3) == [0.0] * 3
    assert ranking_scores(failed, 3) is None
    assert pred_vs_oracle_advantages(failed, [0.0, 1.0], group_size=2) == [0.0, 0.0]


def test_bad_rankings_raise():
    with pytest.raises(ValueError, match="permutation"):
        rank_advantages(rk([0, 2]))
    with pytest.raises(ValueError, match="group has 3"):
        rank_advantages(rk([0, 1]), group_size=3)


def test_group_normalized_advantages_use_population_std():
    # scores 1, 2, 3: mean 2, population std sqrt(2/3) = 0.8165
    close(group_normalized_advantages([1.0, 2.0, 3.0]), [-1.2247, 0.0, 1.2247], 1e-4)
    assert group_normalized_advantages([0.7, 0.7]) == [0.0, 0.0]
    assert group_normalized_advantages([]) == []


def test_rank_to_scores():
    assert rank_to_scores(rk([1, 2, 0])) == [0.0, 1.0, 0.5]
    assert rank_to_scores(rk([0])) == [0.0]
    # 2 > {0, 1} > 3: tied candidates average positions 1 and 2 -> (3 - 1.5) / 3
    assert rank_to_scores(rk([2, 0, 1, 3], ties=[[0, 1]])) == [0.5, 0.5, 1.0, 0.0]


def test_ranking_scores_prefers_the_oracles_scores():
    scored = Ranking.from_scores("p", "o", [0.2, 0.9, 0.2], score_range=[0.0, 1.0])
    assert ranking_scores(scored, 3) == [0.2, 0.9, 0.2]
    assert ranking_scores(rk([1, 2, 0]), 3) == [0.0, 1.0, 0.5]
    with pytest.raises(ValueError):
        ranking_scores(scored, 4)


def test_one_score_scale():
    # a declared range maps to [0, 1], clamped: a cosine in [-1, 1], a judge's 0..5
    cosine = Ranking.from_scores("p", "o", [-1.0, 0.0, 1.0], score_range=[-1.0, 1.0])
    assert ranking_scores(cosine, 3) == [0.0, 0.5, 1.0]
    judge = Ranking.from_scores("p", "o", [5.0, 7.0, 2.5], score_range=[0.0, 5.0])
    assert ranking_scores(judge, 3) == [1.0, 1.0, 0.5]
    # no declared scale (label log-likelihoods with a -100 sentinel for a label a judge
    # never named): an order only, so rank-derived scores, never -100
    label_logprobs = Ranking.from_scores("p", "o", [-0.1, -100.0, -2.3])
    assert ranking_scores(label_logprobs, 3) == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="score_range"):
        Ranking.from_scores("p", "o", [0.0, 1.0], score_range=[1.0, 1.0])


def test_pred_vs_oracle_by_hand():
    # policy agrees with the oracle -> no signal
    close(pred_vs_oracle_advantages(rk([0, 1, 2]), [-1.0, -2.0, -3.0]), [0.0, 0.0, 0.0], 1e-12)
    # oracle: 0 > 1; policy log-probs prefer 1. delta_0 = 1 - g(1)/g(0) = 0.36907,
    # delta_1 = 1 - g(0)/g(1) = -0.58496, mean = -0.10795 -> A = (-0.47702, +0.47702):
    # the oracle's worse answer is reinforced (why the mode is experimental).
    close(pred_vs_oracle_advantages(rk([0, 1]), [-5.0, -1.0]), [-0.47702, 0.47702], 1e-5)
    with pytest.raises(ValueError):
        pred_vs_oracle_advantages(rk([0, 1]), [0.0, 1.0], gain="linear")


def test_dcg_discount_parameters():
    from rlaif.plugins.losses.advantages import dcg_gain

    assert dcg_gain(0, base=10.0, offset=10.0) == pytest.approx(1.0)  # 1 / log10(10)
    assert dcg_gain(3, "dcg_secondary", base=3.0, offset=6.0) == pytest.approx(1 / (4 * 2.0))  # log3(9) = 2
    assert dcg_gain(2, offset=2.0) == dcg_gain(2) == 0.5
    with pytest.raises(ValueError):
        dcg_gain(0, offset=0.5)  # log(0.5) < 0: not a discount
