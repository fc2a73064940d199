"""The world judge: trained from the benchmark's judge material only, cached by what it
read, and run pointwise by ``llm-judge`` (one verdict per answer, P(correct) scores)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from rlaif.core.errors import OracleError
from rlaif.plugins.oracles.llm_judge import LLMJudgeOracle, build_llm_judge
from rlaif.plugins.oracles.world_judge import WorldJudgeBackend, cached_world_judge, train_world_judge


@pytest.fixture(scope="module")
def examples(world: Any) -> list[tuple[str, str, str]]:
    return world.judge_training_examples(n_fresh=30)


@pytest.fixture(scope="module")
def judge_dir(examples: list[tuple[str, str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("judge")
    metrics = train_world_judge(examples, out, steps=40, batch_size=8, seed=0)
    assert metrics["answer_loss_last"] < metrics["answer_loss_first"]  # it learns something
    return out


def test_backend_scores_each_answer_with_a_probability(judge_dir: Path, world: Any) -> None:
    backend = WorldJudgeBackend(judge_dir)
    prompt = world.prompts("rl")[0]
    item = backend.judge_prompt(prompt, ["red"], "a big red circle sits still.")
    assert item[0].startswith("context: a big red circle") and item[0].endswith("answer:")
    replies = backend.score_native([item, backend.judge_prompt(prompt, ["red"], None)], [["yes", "no"]] * 2)
    for reply in replies:
        yes, no = reply.label_logprobs
        assert math.isclose(math.exp(yes) + math.exp(no), 1.0, rel_tol=1e-6)
        assert 0.0 < math.exp(yes) < 1.0
    assert replies[0].label_logprobs != replies[1].label_logprobs  # the context is read
    with pytest.raises(OracleError, match="one answer at a time"):
        backend.judge_prompt(prompt, ["red", "blue"], None)


def test_pointwise_ranking_has_no_position_bias(judge_dir: Path, group_of: Any) -> None:
    oracle = LLMJudgeOracle(WorldJudgeBackend(judge_dir, calibrate=False), pointwise=True, context="none")
    answers = ["red", "blue", "two", "red"]
    forward = oracle.rank([group_of(0, answers)])[0]
    backward = oracle.rank([group_of(0, answers[::-1])])[0]
    assert forward.ok and forward.scores is not None and backward.scores is not None
    assert forward.scores == backward.scores[::-1]  # each answer judged on its own
    assert forward.scores[0] == forward.scores[3]  # the same answer, the same verdict
    assert any(sorted(block) == [0, 3] for block in forward.tie_groups())
    assert oracle.score_range == (0.0, 1.0) and all(0.0 <= s <= 1.0 for s in forward.scores)


def test_calibrated_verdicts_weigh_the_narrative_against_the_prior(judge_dir: Path, world: Any) -> None:
    raw, calibrated = WorldJudgeBackend(judge_dir), WorldJudgeBackend(judge_dir, calibrate=True)
    prompt = world.prompts("rl")[0]
    narrative = "a big red circle sits still. the red circle turns blue."
    items = [calibrated.judge_prompt(prompt, [a], narrative) for a in ("red", "blue", "two")]
    read = raw.answer_probabilities([(text, answer) for text, _, answer in items])
    prior = raw.answer_probabilities([(blind, answer) for _, blind, answer in items])
    assert calibrated.verdicts(items) == pytest.approx([r / (r + q) for r, q in zip(read, prior, strict=True)])
    blind = [calibrated.judge_prompt(prompt, [a], None) for a in ("red", "blue", "two")]
    assert calibrated.verdicts(blind) == pytest.approx([0.5, 0.5, 0.5])  # no narrative, no evidence


def test_judge_is_cached_by_what_it_read(world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.plugins.oracles import world_judge

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    calls: list[int] = []
    real = world_judge.train_world_judge

    def small(examples: Any, out: Any, **kw: Any) -> Any:
        calls.append(len(examples))
        return real(examples, out, **{**kw, "steps": 2, "batch_size": 4})

    monkeypatch.setattr(world_judge, "train_world_judge", small)

    class Few:
        def __init__(self, n: int) -> None:
            self.n = n

        def judge_training_examples(self) -> list[tuple[str, str, str]]:
            return world.judge_training_examples(n_fresh=self.n)

    first = cached_world_judge(Few(3))
    assert cached_world_judge(Few(3)) == first and len(calls) == 1
    assert cached_world_judge(Few(4)) != first and len(calls) == 2

    class Focused(Few):
        judge_focus_answers = ("left", "right")

    assert cached_world_judge(Focused(3)) not in (first, cached_world_judge(Few(4))) and len(calls) == 3


def test_focus_answers_are_read_alone_first(examples: list[tuple[str, str, str]], tmp_path: Path) -> None:
    directions = ("left", "right", "up", "down")
    metrics = train_world_judge(examples, tmp_path / "judge", steps=2, batch_size=4, seed=0,
                                focus_answers=directions, focus_steps=3)
    held_in = len(examples) - max(1, len(examples) // 20)
    assert 0 < metrics["focus_examples"] <= sum(a in directions for _, _, a in examples) <= held_in
    assert metrics["focus_steps"] == 3
    plain = train_world_judge(examples, tmp_path / "plain", steps=2, batch_size=4, seed=0)
    assert plain["focus_examples"] == 0 and plain["focus_steps"] == 0


def test_world_judge_needs_judge_material() -> None:
    class Bare:
        name = "bare"

    with pytest.raises(OracleError, match="judge_training_examples"):
        build_llm_judge(judge="world", benchmark=Bare())


def test_score_levels_put_verdicts_on_a_fixed_scale(judge_dir: Path, group_of: Any) -> None:
    from rlaif.core.errors import ConfigError

    fine = LLMJudgeOracle(WorldJudgeBackend(judge_dir, calibrate=False), pointwise=True, context="none")
    coarse = LLMJudgeOracle(WorldJudgeBackend(judge_dir, calibrate=False), pointwise=True, score_levels=6,
                            context="none")
    answers = ["red", "blue", "two", "up"]
    exact = fine.rank([group_of(0, answers)])[0].scores
    levelled = coarse.rank([group_of(0, answers)])[0].scores
    assert exact is not None and levelled is not None
    assert levelled == [round(p * 5) / 5 for p in exact]
    with pytest.raises(ConfigError, match="score_levels"):
        LLMJudgeOracle(WorldJudgeBackend(judge_dir), score_levels=6)
