"""The ``ground-truth`` verifier oracle on a real (small) video world: score first, then
the configured tie-break; ties reported; refusal without ground truth."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from rlaif.core.errors import OracleError
from rlaif.core.records import Group, Rollout
from rlaif.plugins.oracles.ground_truth import GroundTruthOracle


def counting_group(world: Any) -> tuple[Group, str]:
    prompt = next(p for p in world.prompts("rl") if p.qtype == "counting")
    wrong = next(w for w in ("zero", "one", "two", "three", "four") if w != prompt.reference)
    rollouts = [
        Rollout(prompt.prompt_id, 0, f"{wrong} {wrong} {wrong}", token_ids=[5, 5, 5, 3], finished=True),
        Rollout(prompt.prompt_id, 1, prompt.reference or "", token_ids=[7, 3], finished=True),
        Rollout(prompt.prompt_id, 2, wrong, token_ids=[5, 3], finished=True),
        Rollout(prompt.prompt_id, 3, wrong, token_ids=[5], finished=False),
        Rollout(prompt.prompt_id, 4, prompt.reference or "", token_ids=[7, 3], finished=True),
    ]
    return Group(prompt, rollouts), wrong


@pytest.mark.parametrize(
    ("tie_break", "order", "ties"),
    [
        # correct (tied: same length) > short wrong > long wrong > truncated wrong
        ("formed-length", [1, 4, 2, 0, 3], [[1, 4]]),
        # correct (tied) > finished wrong (tied) > truncated wrong
        ("formed", [1, 4, 0, 2, 3], [[1, 4], [0, 2]]),
        # correct (tied) > every wrong answer (tied)
        ("none", [1, 4, 0, 2, 3], [[1, 4], [0, 2, 3]]),
    ],
)
def test_score_first_then_the_tie_break(world: Any, tie_break: str, order: list[int], ties: list[list[int]]) -> None:
    group, _ = counting_group(world)
    (ranking,) = GroundTruthOracle(world, tie_break=tie_break).rank([group])
    assert ranking.ok and ranking.order == order and ranking.ties == ties
    assert ranking.scores == [0.0, 1.0, 0.0, 0.0, 1.0]


def test_default_ranking_carries_only_what_the_scores_carry(world: Any) -> None:
    """No hidden length prior: by default the order adds nothing to the scores, so a rank
    loss sees the same preferences as a score loss (all wrong answers tied, whatever
    their length or whether they finished)."""
    from rlaif.core.records import Ranking

    group, _ = counting_group(world)
    (ranking,) = GroundTruthOracle(world).rank([group])
    assert ranking.scores is not None
    assert ranking.tie_groups() == Ranking.from_scores("p", "o", ranking.scores).tie_groups()
    wrong_only = replace(group, rollouts=[r for r in group.rollouts if r.index in (0, 2, 3)])
    (all_wrong,) = GroundTruthOracle(world).rank([wrong_only])
    assert all_wrong.tie_groups() == [[0, 1, 2]]


def test_prompt_without_reference_is_a_recorded_failure(world: Any) -> None:
    group, _ = counting_group(world)
    (ranking,) = GroundTruthOracle(world).rank([replace(group, prompt=replace(group.prompt, reference=None))])
    assert not ranking.ok and "reference" in (ranking.failure or "")


def test_unknown_tie_break_and_benchmark_without_ground_truth_are_refused(world: Any) -> None:
    with pytest.raises(OracleError, match="tie_break must be one of none, formed, formed-length"):
        GroundTruthOracle(world, tie_break="longest")
    with pytest.raises(OracleError, match="needs a benchmark with ground truth"):
        GroundTruthOracle(benchmark=None)


def test_can_score_says_which_prompts_exact_match_cannot_score(world: Any) -> None:
    """Free-text items (the benchmark's ``needs_judge``, else the prompt's meta) are the
    ones ``rlaif run`` refuses up front for this oracle."""
    prompt = next(iter(world.prompts("rl")))
    oracle = GroundTruthOracle(world)
    assert oracle.can_score(prompt)
    assert not oracle.can_score(replace(prompt, meta={**prompt.meta, "needs_judge": True}))

    class Judged:  # a benchmark that answers needs_judge itself
        name, has_ground_truth = "judged", True

        def needs_judge(self, p: Any) -> bool:
            return p.prompt_id == prompt.prompt_id

    assert not GroundTruthOracle(Judged()).can_score(prompt)
