"""Held-out evaluation: pass@k and majority@k by hand, per-item files, and a tiny real
evaluation (the conftest's random Llama through hf-causal-lm on a text-only benchmark)
whose items the RL loop writes beside its run and ``rlaif eval --compare`` reads back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from rlaif.core.errors import UsageError
from rlaif.core.records import Prompt, VideoRef
from rlaif.train.evaluate import (
    ItemResult,
    items_file,
    majority_answer,
    pass_at_k,
    plain_normalize,
    read_items,
    run_items_path,
    sampling_metrics,
    write_items,
)

NUMBERS = frozenset("one two three four five six seven eight nine ten".split())


class NumberWorld:
    """Counting and attribute questions in the tiny Llama's vocabulary, one describe item.
    A short answer is right when it starts with a number word, so a random model gets
    some right; ``describe`` earns the share of its words that are numbers."""

    name = "number-world"
    has_ground_truth = True

    def prompts(self, split: str) -> list[Prompt]:
        video = VideoRef("none", "")
        qtypes = ["counting", "counting", "counting", "attribute", "attribute", "describe"]
        return [Prompt(f"{split}-{i}", video, "please count to ten :", "one", qtype)
                for i, qtype in enumerate(qtypes)]

    def item_score(self, prompt: Prompt, answer: str) -> float:
        words = answer.split()
        if prompt.qtype == "describe":
            return sum(w in NUMBERS for w in words) / max(1, len(words))
        return float(bool(words) and words[0] in NUMBERS)

    def score(self, prompts: Sequence[Prompt], answers: Sequence[str]) -> dict[str, float]:
        ok = [float(self.item_score(p, a) >= 0.5) for p, a in zip(prompts, answers, strict=True)]
        return {"acc/all": sum(ok) / len(ok), "n/all": float(len(ok))}


def test_pass_at_k_by_hand() -> None:
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(8, 1, 1) == 1 / 8 and pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(10, 2, 3) == pytest.approx(1 - 56 / 120)  # 1 - C(8,3)/C(10,3)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 8)


def test_majority_groups_normalised_answers_and_keeps_the_first_spelling() -> None:
    assert majority_answer(["Two.", "one", "two", "three"], plain_normalize) == "Two."
    assert majority_answer(["one", "two"], plain_normalize) == "one"  # a tie: sampled first
    assert plain_normalize("  The  Red, circle! ") == "the red circle"


def test_sampling_metrics_from_stored_items() -> None:
    def sampled(pid: str, qtype: str, hits: int, majority: bool) -> ItemResult:
        return ItemResult(pid, qtype, "x", 0.0, False, ("s",) * 4, hits, majority)

    items = [sampled("a", "counting", 0, False), sampled("b", "counting", 1, False),
             sampled("c", "attribute", 4, True), ItemResult("d", "describe", "long", 0.5, False)]
    metrics = sampling_metrics(items, k=4)
    assert metrics["pass@1/counting"] == 1 / 8 and metrics["pass@4/counting"] == 0.5
    assert metrics["maj@4/counting"] == 0.0 and metrics["maj@4/attribute"] == 1.0
    assert metrics["pass@1/short"] == pytest.approx((0 + 0.25 + 1) / 3)
    assert metrics["pass@4/short"] == pytest.approx(2 / 3) and metrics["maj@4/short"] == pytest.approx(1 / 3)
    assert not any(key.endswith("/describe") for key in metrics)


def test_items_round_trip_and_the_last_evaluation_is_found(tmp_path: Path) -> None:
    first = [ItemResult("p1", "counting", "two", 1.0, True, ("two", "one"), 1, True)]
    last = [ItemResult("p1", "counting", "one", 0.0, False)]
    write_items(run_items_path(tmp_path, 0), first)
    write_items(run_items_path(tmp_path, 12), last)
    assert run_items_path(tmp_path, 12) == tmp_path / "eval" / "step-000012.jsonl"
    assert read_items(run_items_path(tmp_path, 0)) == first
    assert read_items(tmp_path) == last and items_file(tmp_path).name == "step-000012.jsonl"
    with pytest.raises(UsageError, match="no per-item evaluation results"):
        items_file(tmp_path / "empty")


@pytest.fixture(scope="module")
def number_policy(llama_dir: str):  # type: ignore[no-untyped-def]
    pytest.importorskip("peft")
    from rlaif.plugins.policies.hf_causal_lm import build_hf_causal_lm

    return build_hf_causal_lm(llama_dir, device="cpu", dtype="float32", lora_r=2, lora_alpha=4)


@pytest.mark.integration
def test_tiny_real_evaluation_keeps_every_item(number_policy) -> None:  # type: ignore[no-untyped-def]
    from rlaif.train.evaluate import evaluate_items, evaluate_policy

    world = NumberWorld()
    evaluation = evaluate_items(number_policy, world, max_new_tokens=3, long_max_new_tokens=4, k=3, samples=4)
    items = evaluation.items
    assert [i.prompt_id for i in items] == [p.prompt_id for p in world.prompts("test")]
    assert evaluation.metrics["acc/all"] == sum(i.correct for i in items) / len(items)
    short = [i for i in items if i.qtype != "describe"]
    assert all(len(i.samples) == 4 and i.samples_correct is not None for i in short)
    assert items[-1].samples == () and items[-1].samples_correct is None  # describe: greedy only
    assert {"pass@1/short", "pass@3/short", "maj@3/short", "pass@3/counting"} <= set(evaluation.metrics)
    assert sampling_metrics(items, 3) == {k: v for k, v in evaluation.metrics.items() if "@" in k}
    # Seeded sampling, the caller's RNG untouched; evaluate_policy keeps returning the metrics table.
    again = evaluate_items(number_policy, world, max_new_tokens=3, long_max_new_tokens=4, k=3, samples=4)
    assert again.items == items
    assert evaluate_policy(number_policy, world, max_new_tokens=3, long_max_new_tokens=4) == {
        k: v for k, v in evaluation.metrics.items() if "@" not in k}
    with pytest.raises(UsageError, match="needs at least 3 samples"):
        evaluate_items(number_policy, world, k=3, samples=2)


@pytest.mark.integration
def test_run_evaluation_writes_items_that_compare_to_zero(number_policy, tmp_path):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from rlaif.cli.main import app
    from rlaif.core.config import RunConfig
    from rlaif.train.rl import Components, evaluate

    config = RunConfig()
    config.run.eval_items = 4
    metrics = evaluate(Components(NumberWorld(), number_policy, oracle=None, loss=None), config, tmp_path, 0)
    path = tmp_path / "eval" / "step-000000.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == metrics["n/all"] == 4
    assert all({"prompt_id", "qtype", "answer", "score", "correct"} <= set(line) for line in lines)

    result = CliRunner().invoke(app, ["eval", "--compare", str(tmp_path), str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rows"][0]["group"] == "all" and report["rows"][0]["n"] == 4
    assert all((row["diff"], row["lo"], row["hi"]) == (0.0, 0.0, 0.0) for row in report["rows"])
    table = CliRunner().invoke(app, ["eval", "--compare", str(tmp_path), str(tmp_path)])
    assert table.exit_code == 0 and "+0.000" in table.output
