"""VerIPO's loop: the verifier's pair kinds on hand-made rollouts, the seeded drop of
solved prompts, the schedule's placing of steps, and a tiny scheduled run whose DPO
phase samples nothing and calls no oracle, killed (an exception) mid-DPO-phase and
resumed to the records and weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rlaif.core.records import Group, Prompt, Ranking, Rollout, VideoRef
from rlaif.train.verifier import (
    BackendConsistencyJudge,
    StepGroup,
    VerifierSettings,
    build_pairs,
    repeated_ngram_share,
    split_reasoning,
)


def group(texts: list[str], scores: list[float], finished: list[bool] | None = None,
          prompt_id: str = "p0") -> StepGroup:
    prompt = Prompt(prompt_id, VideoRef("v0", "v0.mp4"), "what colour is the ball?", reference="red")
    finished = finished or [True] * len(texts)
    rollouts = [Rollout(prompt_id, i, t, token_ids=[1, 2], logprobs=[-0.1, -0.2], finished=f)
                for i, (t, f) in enumerate(zip(texts, finished, strict=True))]
    ranked = Ranking.from_scores(prompt_id, "ground-truth", scores)
    ranking = Ranking(prompt_id, "ground-truth", order=ranked.order, ties=ranked.ties, scores=list(scores),
                      score_range=[0.0, 1.0])  # as the loop stamps the oracle's declared range
    return StepGroup(1, Group(prompt, rollouts), ranking)


# --------------------------------------------------------------------------- pair kinds
def test_penalty_pairs_a_clean_correct_answer_against_wrong_truncated_and_repetitive() -> None:
    entry = group(["red", "blue", "red red", "red ball red ball red ball red ball red ball"],
                  [1.0, 0.0, 1.0, 1.0], finished=[True, True, False, True])
    result = build_pairs([entry], VerifierSettings(repetition_ngram=2, repetition_threshold=0.3))
    got = [(p.kind, p.reason, p.chosen_index, p.rejected_index) for p in result.pairs]
    assert got == [("penalty", "wrong", 0, 1), ("penalty", "truncated", 0, 2), ("penalty", "repetitive", 0, 3)]
    assert result.pairs[0].chosen_text == "red" and result.pairs[0].rejected_text == "blue"
    assert result.counts["pairs/penalty"] == 3 and result.solved == []  # not every rollout was correct
    assert repeated_ngram_share("a b a b a b", 2) == pytest.approx(1 - 2 / 5)


def test_an_all_correct_group_gives_no_penalty_pair_and_is_solved() -> None:
    result = build_pairs([group(["red", "red"], [1.0, 1.0])])
    assert result.pairs == [] and result.solved == ["p0"]


def test_reflection_is_skipped_with_a_count_where_the_data_has_none_and_built_where_it_has() -> None:
    plain = build_pairs([group(["red", "blue"], [1.0, 0.0])])
    assert plain.counts["reflection_skipped_no_data"] == 1 and plain.counts["pairs/reflection"] == 0
    reflective = build_pairs([group(["blue... wait, on second thought: red", "blue"], [1.0, 0.0])])
    kinds = [(p.kind, p.reason) for p in reflective.pairs]
    assert kinds == [("penalty", "wrong"), ("reflection", "direct")]


class ScriptedJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint: 'no' when the reasoning mentions blue, else 'yes'."""

    requests: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        ScriptedJudge.requests.append(user)
        reasoning = user.split("Reasoning:")[1].split("\n")[0]
        reply = json.dumps({"choices": [{"message": {"content": "no" if "blue" in reasoning else "yes"}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_consistency_pairs_come_from_a_judge_and_are_skipped_with_a_count_without_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    texts = ["<think>the ball is red</think><answer>red</answer>", "<think>it looks blue</think> red", "blue"]
    assert split_reasoning(texts[0]) == ("the ball is red", "red")
    assert split_reasoning("red because the ball is red") == ("the ball is red", "red")
    assert split_reasoning("red") is None
    entry = group(texts, [1.0, 1.0, 0.0])

    no_judge = build_pairs([entry])
    assert no_judge.counts["consistency_skipped_no_judge"] == 1 and no_judge.counts["pairs/consistency"] == 0
    no_reasoning = build_pairs([group(["red", "blue"], [1.0, 0.0])])
    assert no_reasoning.counts["consistency_skipped_no_reasoning"] == 1

    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from rlaif.train.verifier import build_consistency_judge

        judge = build_consistency_judge({"judge_url": f"http://127.0.0.1:{server.server_port}/v1"})
        assert isinstance(judge, BackendConsistencyJudge)
        result = build_pairs([entry], judge=judge)
    finally:
        server.shutdown()
        server.server_close()
    consistency = [p for p in result.pairs if p.kind == "consistency"]
    assert [(p.reason, p.chosen_index, p.rejected_index) for p in consistency] == [("inconsistent", 0, 1)]
    assert len(ScriptedJudge.requests) == 2  # the two correct answers with reasoning, one call
    assert result.counts["pairs/penalty"] == 1  # one wrong answer, one penalty pair


# --------------------------------------------------------------------------- drop and schedule
def test_drop_removes_eighty_percent_of_solved_prompts_seeded() -> None:
    from rlaif.train.veripo import drop_count, drop_solved

    solved = [f"p{i}" for i in range(13)]
    dropped = drop_solved(solved, 0.8, seed=3, phase_start=5)
    assert len(dropped) == drop_count(13, 0.8) == 10 and set(dropped) <= set(solved)
    assert dropped == drop_solved(list(reversed(solved)), 0.8, seed=3, phase_start=5)  # order-free, seeded
    assert drop_count(5, 0.8) == 4 and drop_count(1, 0.8) == 0


def test_schedule_repeats_and_places_each_step() -> None:
    from rlaif.core.config import config_from_dict
    from rlaif.core.errors import ConfigError
    from rlaif.core.schedule import phase_at

    config = config_from_dict({"schedule": [{"phase": "grpo", "steps": 2}, {"phase": "dpo", "steps": 3, "beta": 0.2}]})
    kinds = [phase_at(config.schedule, s).phase.kind for s in range(1, 11)]
    assert kinds == ["grpo"] * 2 + ["dpo"] * 3 + ["grpo"] * 2 + ["dpo"] * 3
    pos = phase_at(config.schedule, 9)
    assert (pos.start, pos.offset, pos.iteration, pos.phase.option("beta")) == (8, 1, 1, 0.2)
    assert config.to_dict()["schedule"][1] == {"phase": "dpo", "steps": 3, "beta": 0.2}
    with pytest.raises(ConfigError) as err:
        config_from_dict({"schedule": [{"phase": "dpo", "steps": 0, "betta": 1}]})
    assert "steps must be an integer" in str(err.value)


# --------------------------------------------------------------------------- a tiny scheduled run
# Counting questions only (answers one/two/three) and a 40-step SFT, so that the policy is
# sometimes right: an all-wrong policy builds no pairs and its DPO phase would train nothing.
WORLD = {"n_sft": 24, "n_rl": 24, "n_test": 12, "min_frames": 16, "max_frames": 24, "progress": False,
         "qtypes": "counting"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("veripo")
    os.environ["RLAIF_CACHE"] = str(root / "cache")
    from rlaif.plugins.benchmarks.video_world import VideoWorld
    from rlaif.train.sft import run_sft

    world = VideoWorld(root=str(root / "world"), seed=0, **WORLD)
    run_sft(root / "sft", benchmark=world, seed=0, max_steps=40, align_videos=0, progress=False)
    return {"root": root, "data": {
        "run": {"steps": 6, "prompts_per_step": 4, "group_size": 3, "max_new_tokens": 8, "eval_items": 4,
                "checkpoint_every": 2, "lr": 0.002},
        "benchmark": {"name": "video-world", "root": str(root / "world"), **WORLD},
        "policy": {"name": "tiny-video-lm", "path": str(root / "sft")},
        "oracle": {"name": "ground-truth"}, "loss": {"name": "grpo-rank"},
        # grpo 1-2, dpo 3-4 (pairs from steps 1-2), grpo 5-6 on the pool left after the drop
        "schedule": [{"phase": "grpo", "steps": 2}, {"phase": "dpo", "steps": 2, "pairs_per_step": 3, "correct_threshold": 0.5}],
    }}


class Counting:
    """Counts policy.generate and oracle.rank calls per step (on_step closes a step)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from rlaif.plugins.oracles.ground_truth import GroundTruthOracle
        from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM

        self.calls: list[str] = []
        self.per_step: dict[int, list[str]] = {}
        for cls, name in ((TinyVideoLM, "generate"), (GroundTruthOracle, "rank")):
            original = getattr(cls, name)

            def wrapped(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
                self.calls.append(_name)
                return _original(*args, **kwargs)

            monkeypatch.setattr(cls, name, wrapped)

    def on_step(self, step: int) -> None:
        self.per_step[step], self.calls = self.calls, []


def records(run_dir: Path) -> dict[str, Any]:
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        return {
            "committed": store.steps("main", kind="committed"),
            "rollouts": {s: [r.to_dict() for r in store.iter_shard("rollouts", "main", s)]
                         for s in store.steps("main", kind="rollouts")},
            "pairs": {s: [p.to_dict() for p in store.iter_shard("pairs", "main", s)]
                      for s in store.steps("main", kind="pairs")},
            "summaries": {s: store.pairs_summary("main", s) for s in store.steps("main", kind="pairs")},
            "verified": store.verify().ok,
        }


def weights(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / "step-000006" / "trainable.safetensors"))


@pytest.mark.integration
def test_scheduled_run_dpo_phase_is_oracle_free_and_resumes_mid_phase(tiny: dict[str, Any],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.core.config import config_from_dict
    from rlaif.core.registry import load_plugins
    from rlaif.train.rl import run_rl

    registry = load_plugins()
    config = config_from_dict(tiny["data"])
    counting = Counting(monkeypatch)
    full = tiny["root"] / "full"
    summary = run_rl(full, config, registry, progress=False, on_step=counting.on_step)
    # DPO steps: no sampling and no oracle call; GRPO steps: one of each.
    assert {s: sorted(c) for s, c in counting.per_step.items() if s in (3, 4)} == {3: [], 4: []}
    # (step 1 also holds the step-0 evaluation's generate calls)
    assert all(counting.per_step[s].count("rank") == 1 and "generate" in counting.per_step[s] for s in (1, 2, 5, 6))
    assert summary.oracle_calls == 4 and set(summary.phase_seconds) == {"grpo", "dpo"}
    full_records = records(full)
    assert full_records["committed"] == [1, 2, 3, 4, 5, 6] and sorted(full_records["rollouts"]) == [1, 2, 5, 6]
    assert list(full_records["pairs"]) == [3] and full_records["verified"]
    stored_summary = full_records["summaries"][3]
    assert stored_summary["count"] == len(full_records["pairs"][3])
    assert {p["kind"] for p in full_records["pairs"][3]} <= {"penalty"}  # no judge, no reflections in the world
    # The drop is what the seeded rule gives on the phase's solved prompts, and they leave the pool.
    from rlaif.train.veripo import drop_count

    assert len(stored_summary["dropped"]) == drop_count(stored_summary["solved"], 0.8)
    later = {r["prompt_id"] for s in (5, 6) for r in full_records["rollouts"][s]}
    assert not later & set(stored_summary["dropped"])
    import csv

    rows = {int(float(r["step"])): r for r in csv.DictReader((full / "metrics.csv").open())}
    assert [float(rows[s]["phase"]) for s in range(1, 7)] == [0, 0, 1, 1, 0, 0]
    assert rows[3].get("verifier/pairs/penalty") not in (None, "") and not rows[4].get("verifier/pairs/penalty")
    assert stored_summary["count"] > 0  # the DPO phase really trains on pairs
    assert float(rows[3]["n_pairs"]) == min(3, stored_summary["count"])

    # An exception after DPO step 3 (checkpoint at 2): resume replays 3 from the stored pairs, runs 4 live.
    broken = tiny["root"] / "broken"

    def stop_mid_phase(step: int) -> None:
        if step == 3:
            raise RuntimeError("killed mid-DPO-phase")

    with pytest.raises(RuntimeError, match="mid-DPO"):
        run_rl(broken, config, registry, progress=False, on_step=stop_mid_phase)
    resumed = Counting(monkeypatch)
    run_rl(broken, config, registry, resume=True, progress=False, on_step=resumed.on_step)
    assert resumed.per_step[3] == [] and resumed.per_step[4] == []
    assert records(broken) == full_records
    a, b = weights(full), weights(broken)
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max() < 1e-6, name
