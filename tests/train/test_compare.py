"""Paired comparison of two evaluations: the bootstrap interval on hand-checkable inputs,
pairing by prompt_id, and the one-line errors."""

from __future__ import annotations

import pytest

from rlaif.core.errors import UsageError
from rlaif.train.compare import compare_items, paired_bootstrap
from rlaif.train.evaluate import ItemResult


def item(pid: str, qtype: str, correct: bool, score: float | None = None) -> ItemResult:
    return ItemResult(pid, qtype, "x", float(correct) if score is None else score, correct)


def test_identical_inputs_give_zero() -> None:
    a = [0.0, 1.0, 1.0, 0.0, 0.3]
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)


def test_a_constant_shift_gives_exactly_that_shift() -> None:
    a = [0.0, 0.25, 0.5, 0.125]
    assert paired_bootstrap(a, [x + 0.5 for x in a]) == (0.5, 0.5, 0.5)
    assert paired_bootstrap([x + 0.5 for x in a], a) == (-0.5, -0.5, -0.5)


def test_two_items_interval_by_hand() -> None:
    # Differences (0, 1): a resample's mean is 0, 0.5 or 1 with chance 1/4, 1/2, 1/4, so the
    # 2.5th percentile is 0 and the 97.5th is 1.
    assert paired_bootstrap([0, 0], [0, 1]) == (0.5, 0.0, 1.0)


def test_seeded_and_paired() -> None:
    a = [0, 1, 0, 1, 1, 0, 0, 1, 0, 0]
    b = [1, 1, 0, 1, 1, 1, 0, 1, 1, 0]
    first = paired_bootstrap(a, b, seed=3)
    assert first == paired_bootstrap(a, b, seed=3)
    diff, lo, hi = first
    assert diff == pytest.approx(0.3) and lo <= diff <= hi and lo >= 0.0  # B never loses an item
    with pytest.raises(ValueError):
        paired_bootstrap([0, 1], [1])


def test_compare_items_pairs_by_prompt_id_per_qtype() -> None:
    a = [item("p1", "counting", False), item("p2", "counting", True), item("p3", "attribute", False),
         item("only-a", "attribute", True)]
    b = [item("p3", "attribute", True), item("p2", "counting", True), item("p1", "counting", True),
         item("only-b", "attribute", False)]
    rows = {r.group: r for r in compare_items(a, b, n=200)}
    assert list(rows) == ["all", "counting", "attribute"]
    assert (rows["all"].n, rows["all"].mean_a, rows["all"].mean_b) == (3, pytest.approx(1 / 3), 1.0)
    assert rows["all"].diff == pytest.approx(2 / 3)
    assert (rows["counting"].diff, rows["attribute"].diff) == (0.5, 1.0)
    assert rows["attribute"].lo == rows["attribute"].hi == 1.0
    scored = compare_items([item("p1", "describe", False, 0.4)], [item("p1", "describe", False, 0.9)],
                           metric="score", n=10)
    assert scored[0].diff == pytest.approx(0.5)


def test_no_overlap_and_bad_metric_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="share no items"):
        compare_items([item("p1", "counting", True)], [item("p2", "counting", True)])
    with pytest.raises(UsageError, match="--metric"):
        compare_items([item("p1", "counting", True)], [item("p1", "counting", True)], metric="bleu")
