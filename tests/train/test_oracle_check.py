"""Oracle diagnostics: Kendall tau-b and top-1 by hand, the ground-truth oracle against
itself (perfect), a reversed oracle (tau = -1), a position-biased and a failing oracle,
and ``rlaif oracle check --json`` end to end on a real tiny world and policy."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from rlaif.core.errors import UsageError
from rlaif.core.records import Group, Ranking, Rollout
from rlaif.plugins.oracles.ground_truth import GroundTruthOracle
from rlaif.train.oracle_check import (
    context_modes,
    diagnose,
    kendall_tau_b,
    parse_options,
    reversed_group,
    top1_credit,
    unpermute_positions,
)

torch.set_num_threads(1)
QTYPES = "attribute,counting,direction,temporal"


def test_kendall_tau_b_by_hand() -> None:
    assert kendall_tau_b([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert kendall_tau_b([0, 1, 2, 3], [3, 2, 1, 0]) == -1.0
    # a ties candidates 0 and 1: C = 2, D = 0, pairs separated by a = 2, by b = 3
    assert kendall_tau_b([0.5, 0.5, 2], [0, 1, 2]) == pytest.approx(2 / math.sqrt(6))
    # one discordant pair of three: (C - D) / 3
    assert kendall_tau_b([0, 1, 2], [1, 0, 2]) == pytest.approx(1 / 3)
    assert kendall_tau_b([1, 1, 1], [1, 1, 1]) == 1.0  # nothing separated by either
    assert kendall_tau_b([1, 1, 1], [0, 1, 2]) == 0.0
    with pytest.raises(ValueError):
        kendall_tau_b([0, 1], [0, 1, 2])


def test_top1_credit_and_permutation_mapping() -> None:
    truth = Ranking("p", "gt", order=[2, 0, 1, 3], ties=[[2, 0]])
    assert top1_credit(Ranking("p", "o", order=[0, 1, 2, 3]), truth) == 1.0
    assert top1_credit(Ranking("p", "o", order=[1, 0, 2, 3]), truth) == 0.0
    assert top1_credit(Ranking("p", "o", order=[0, 1, 2, 3], ties=[[0, 1]]), truth) == 0.5
    group = Group(world_prompt(), [Rollout("p", i, t) for i, t in enumerate("abcd")])
    flipped, shown = reversed_group(group)
    assert [r.text for r in flipped.rollouts] == list("dcba") and [r.index for r in flipped.rollouts] == [0, 1, 2, 3]
    # the oracle prefers shown position 0 ("d", originally 3)
    back = unpermute_positions(Ranking("p", "o", order=[0, 1, 2, 3]), shown)
    assert back == [3.0, 2.0, 1.0, 0.0]


def world_prompt() -> Any:
    from rlaif.core.records import Prompt, VideoRef

    return Prompt("p", VideoRef("v", "v.mp4"), "q?", reference="red")


# ----------------------------------------------------------------------------- oracles
class ReversedOracle:
    """The ground truth upside down (tie blocks kept): tau-b is exactly -1."""

    name = "reversed"
    needs_context = False
    needs_reference = True

    def __init__(self, benchmark: Any) -> None:
        self.truth = GroundTruthOracle(benchmark)

    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        out = []
        for r in self.truth.rank(groups):
            blocks = r.tie_groups()[::-1]
            out.append(Ranking(r.prompt_id, self.name, order=[c for b in blocks for c in b],
                               ties=[b for b in blocks if len(b) > 1]))
        return out


class FirstShownOracle:
    """Always prefers candidates in the order shown: pure position bias."""

    name = "first-shown"
    needs_context = False
    needs_reference = False

    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        return [Ranking(g.prompt.prompt_id, self.name, order=list(range(len(g.rollouts)))) for g in groups]


class BrokenOracle:
    name = "broken"
    needs_context = False
    needs_reference = False

    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        return [Ranking(g.prompt.prompt_id, self.name, raw="???", failure="unparseable") for g in groups]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from rlaif.plugins.benchmarks.video_world import VideoWorld

    return VideoWorld(root=str(tmp_path_factory.mktemp("world")), seed=0, n_sft=2, n_rl=2, n_test=4,
                      qtypes=QTYPES, progress=False)


@pytest.fixture(scope="module")
def groups(world: Any) -> list[Group]:
    """Each test prompt with its reference, two wrong answers of other items and an empty
    answer, in a rotating order."""
    prompts = world.prompts("test")
    out = []
    for b, p in enumerate(prompts):
        wrong = [q.reference for q in prompts if q.reference != p.reference][b % 3 :][:2]
        answers = [p.reference, *wrong, ""]
        answers = answers[b % 4 :] + answers[: b % 4]
        out.append(Group(p, [Rollout(p.prompt_id, i, a) for i, a in enumerate(answers)]))
    return out


def test_ground_truth_against_itself_is_perfect(world: Any, groups: list[Group]) -> None:
    truth = GroundTruthOracle(world)
    reference = truth.rank(groups)
    d = diagnose(truth, groups, reference)
    assert d.groups == len(groups) and d.groups_used == len(groups) and d.groups_all_tied == 0
    assert d.top1 == 1.0 and d.kendall_tau == 1.0 and d.failure_rate == 0.0
    assert d.position_bias == 0.0 and d.permutation_agreement == 1.0
    assert d.latency_s >= 0.0 and d.context == "default"


def test_reversed_oracle_has_tau_minus_one(world: Any, groups: list[Group]) -> None:
    reference = GroundTruthOracle(world).rank(groups)
    d = diagnose(ReversedOracle(world), groups, reference)
    assert d.kendall_tau == pytest.approx(-1.0) and d.top1 == 0.0 and d.position_bias == 0.0
    assert set(d.kendall_tau_by_type) == {g.prompt.qtype for g in groups}  # one tau per question type
    assert all(t == pytest.approx(-1.0) for t in d.kendall_tau_by_type.values())


def test_tau_by_question_type_averages_each_types_groups(world: Any, groups: list[Group]) -> None:
    reference = GroundTruthOracle(world).rank(groups)
    d = diagnose(FirstShownOracle(), groups, reference, permute=False)
    per_group = [kendall_tau_b(r.positions(), t.positions()) for r, t in
                 zip(FirstShownOracle().rank(groups), reference, strict=True)]
    for qtype, tau in d.kendall_tau_by_type.items():
        mine = [x for x, g in zip(per_group, groups, strict=True) if g.prompt.qtype == qtype]
        assert tau == pytest.approx(sum(mine) / len(mine))
    assert d.kendall_tau == pytest.approx(sum(per_group) / len(per_group))


def test_position_bias_and_failures_are_measured(world: Any, groups: list[Group]) -> None:
    reference = GroundTruthOracle(world).rank(groups)
    biased = diagnose(FirstShownOracle(), groups, reference)
    assert biased.position_bias == 1.0 and biased.permutation_agreement == pytest.approx(-1.0)
    broken = diagnose(BrokenOracle(), groups, reference)
    assert broken.failure_rate == 1.0 and broken.failures == len(groups)
    assert broken.kendall_tau is None and broken.top1 is None and broken.groups_used == 0


def test_all_tied_groups_are_left_out(world: Any, groups: list[Group]) -> None:
    same = [Group(g.prompt, [Rollout(g.prompt.prompt_id, i, "purple") for i in range(3)]) for g in groups[:2]]
    reference = GroundTruthOracle(world).rank(same)
    d = diagnose(FirstShownOracle(), same, reference)
    assert d.groups_all_tied == 2 and d.groups_used == 0 and d.kendall_tau is None


def test_options_and_context_modes() -> None:
    assert parse_options(["n=3", "x=0.5", "flag=true", "name=narrative", "path=/a/b"]) == {
        "n": 3, "x": 0.5, "flag": True, "name": "narrative", "path": "/a/b"}
    with pytest.raises(UsageError):
        parse_options(["novalue"])

    def with_context(context: str = "narrative", benchmark: Any = None) -> None: ...

    def without(target: str = "narrative") -> None: ...

    assert context_modes(with_context, "j", None, {}) == ["narrative", "none"]
    assert context_modes(with_context, "j", "none", {}) == ["none"]
    assert context_modes(with_context, "j", "both", {}) == ["narrative", "none"]
    assert context_modes(with_context, "j", None, {"context": "gold"}) == ["gold"]
    assert context_modes(without, "e", None, {}) == [None]
    with pytest.raises(UsageError, match="no context option"):
        context_modes(without, "e", "narrative", {})


# ----------------------------------------------------------------------------- CLI
def save_tiny_policy(world: Any, directory: Path) -> Path:
    """A small real tiny-video-lm checkpoint: a world tokenizer, a 2-layer LM pre-trained
    for 100 steps on the world's text (so it ends answers), a random frozen encoder."""
    from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
    from rlaif.plugins.policies.tiny_lm import (
        load_tiny_lm,
        pretrain_tiny_lm,
        tiny_lm_config,
        train_world_tokenizer,
    )
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM, world_texts

    texts = world_texts(world)
    tokenizer = train_world_tokenizer(texts, directory / "build" / "tokenizer.json", vocab_size=512)
    config = tiny_lm_config(len(tokenizer), hidden_size=64, layers=2, heads=2, intermediate_size=128)
    pretrain_tiny_lm(texts, tokenizer, directory / "build" / "lm", steps=100, seq_len=64, config=config)
    encoder = TinyConvEncoder(feature_dim=32, width=8, n_frames=4)
    policy = TinyVideoLM(encoder, load_tiny_lm(directory / "build" / "lm"), tokenizer, frames=world.frames,
                         n_frames=4, lora_r=4, lora_alpha=4)
    policy.save(directory / "policy")
    return directory / "policy"


@pytest.mark.integration
def test_cli_json_on_a_real_world_and_policy(world: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rlaif.cli.main import app

    policy_dir = save_tiny_policy(world, tmp_path)
    args = ["oracle", "check", "--oracle", "ground-truth", "--groups", "6", "--group-size", "4", "--json",
            "--policy", str(policy_dir), "--max-new-tokens", "12", "--benchmark-option", f"root={world.root}",
            "--benchmark-option", "n_sft=2", "--benchmark-option", "n_rl=2", "--benchmark-option", "n_test=4",
            "--benchmark-option", f"qtypes={QTYPES}", "--benchmark-option", "progress=false"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["oracle"] == "ground-truth" and report["groups"] == 6 and report["group_size"] == 4
    [run] = report["runs"]
    assert run["failure_rate"] == 0.0 and run["groups_used"] + run["groups_all_tied"] == 6
    assert run["groups_used"] >= 1
    assert run["top1"] == 1.0 and run["kendall_tau"] == 1.0 and run["position_bias"] == 0.0

    bad = CliRunner().invoke(app, ["oracle", "check", "--oracle", "ground-truth", "--context", "narrative",
                                   "--policy", str(policy_dir)])
    assert bad.exit_code == 2 and "no context option" in bad.output
