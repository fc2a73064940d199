"""Records: one reading of a ranking's ties, checked when the ranking is built."""

from __future__ import annotations

import pytest

from rlaif.core.records import Ranking


def test_non_contiguous_tie_is_rejected() -> None:
    # 0 and 2 tied with 1 between them: positions() and tie_groups() used to disagree
    # (0, 1 and 2 all at position 1 vs blocks [0, 2], [1]).
    with pytest.raises(ValueError, match="not contiguous"):
        Ranking("p", "o", order=[0, 1, 2], ties=[[0, 2]])


@pytest.mark.parametrize(
    ("order", "ties", "match"),
    [
        ([0, 0, 1], [], "permutation"),
        ([0, 2], [], "permutation"),
        ([0, 1, 2], [[0, 3]], "not in order"),
        ([0, 1, 2], [[0, 0]], "disjoint"),
        ([0, 1, 2], [[0, 1], [1, 2]], "disjoint"),
    ],
)
def test_invalid_rankings_are_rejected(order: list[int], ties: list[list[int]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Ranking("p", "o", order=order, ties=ties)


def test_scores_are_one_per_candidate() -> None:
    with pytest.raises(ValueError, match="scores"):
        Ranking("p", "o", order=[0, 1], scores=[1.0])


@pytest.mark.parametrize(
    ("order", "ties"),
    [([2, 0, 1, 3], [[0, 1]]), ([3, 1, 0, 2], [[3, 1], [0, 2]]), ([0, 1, 2], [[0, 1, 2]]), ([1, 0], [])],
)
def test_positions_agree_with_tie_groups(order: list[int], ties: list[list[int]]) -> None:
    ranking = Ranking("p", "o", order=order, ties=ties)
    positions = ranking.positions()
    start = 0
    for block in ranking.tie_groups():
        mean = start + (len(block) - 1) / 2
        assert [positions[c] for c in block] == [mean] * len(block)
        start += len(block)
    assert sorted(c for b in ranking.tie_groups() for c in b) == list(range(len(order)))


def test_failed_and_scored_rankings_still_build() -> None:
    assert not Ranking("p", "o", failure="no parse").ok
    scored = Ranking.from_scores("p", "o", [0.5, 1.0, 0.5, 0.0])
    assert scored.tie_groups() == [[1], [0, 2], [3]]
    assert scored.positions() == [1.5, 0.0, 1.5, 3.0]
