"""VLM-RLAIF's reward model: the loss by hand, pairs from rankings, and a real training
run on a store of ground-truth rankings over a tiny world that generalises to held-out
prompts; then the saved model as the ``reward-model`` oracle and as a PPO value-head init."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from rlaif.core.records import Group, Prompt, Ranking, Rollout, RunInfo
from rlaif.train.reward_model import (
    PreferencePair,
    bradley_terry_loss,
    group_pairs,
    ranking_pairs,
    split_prompts,
    take_train_pairs,
)

torch.set_num_threads(1)
QTYPES = "attribute,counting,direction,temporal"


def test_bradley_terry_loss_by_hand() -> None:
    chosen = torch.tensor([1.0, 0.0], requires_grad=True)
    rejected = torch.tensor([0.0, 2.0])
    loss, metrics = bradley_terry_loss(chosen, rejected, center_coef=1e-3)
    bt = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(2.0)))) / 2  # (0.3133 + 2.1269) / 2
    assert float(loss.detach()) == pytest.approx(bt + 1e-3 * abs((1.0 + 0.0 + 0.0 + 2.0) / 2), rel=1e-6)
    assert metrics["bt_loss"] == pytest.approx(bt, rel=1e-6)
    assert metrics["accuracy"] == 0.5 and metrics["margin"] == pytest.approx(-0.5)
    loss.backward()  # the margin gradient pushes the chosen reward up
    assert chosen.grad is not None and bool((chosen.grad < 0).all())
    tied, m = bradley_terry_loss(torch.zeros(3), torch.zeros(3), center_coef=0.0)
    assert float(tied) == pytest.approx(math.log(2)) and m["accuracy"] == 0.5


def test_pairs_from_rankings_respect_tie_blocks() -> None:
    ranking = Ranking("p", "o", order=[2, 0, 1, 3], ties=[[0, 1]])  # blocks: [2], [0, 1], [3]
    assert sorted(ranking_pairs(ranking, "all")) == [(0, 3), (1, 3), (2, 0), (2, 1), (2, 3)]
    assert ranking_pairs(ranking, "best-worst") == [(2, 3)]
    # scored: a verifier's score 1 > 0 > 0 > 0, the last three ordered only by its tie-break
    scored = Ranking("p", "o", order=[2, 0, 1, 3], scores=[0.0, 0.0, 1.0, 0.0])
    assert sorted(ranking_pairs(scored, "scored")) == [(2, 0), (2, 1), (2, 3)]
    assert sorted(ranking_pairs(ranking, "scored")) == sorted(ranking_pairs(ranking, "all"))  # no scores
    assert ranking_pairs(Ranking("p", "o", failure="x"), "all") == []
    assert ranking_pairs(Ranking("p", "o", order=[0, 1], ties=[[0, 1]]), "all") == []
    rollouts = [Rollout("p", i, t) for i, t in enumerate(["a", "b", "best", "b"])]
    pairs = group_pairs(Ranking("p", "o", order=[2, 0, 1, 3]), rollouts, "all")
    assert ("b", "b") not in {(p.chosen.text, p.rejected.text) for p in pairs}  # no identical pairs
    assert len(pairs) == 5


def test_holdout_splits_by_prompt() -> None:
    r = Rollout("x", 0, "a")
    pairs = [PreferencePair(f"p{i % 10}", r, r) for i in range(40)]
    train, held = split_prompts(pairs, 0.2, seed=0)
    held_ids = {p.prompt_id for p in held}
    assert len(held_ids) == 2 and not held_ids & {p.prompt_id for p in train}
    assert len(train) + len(held) == 40


def test_train_pairs_nest_and_leave_the_held_out_pairs_alone() -> None:
    """A preference-data scaling study: N training pairs after the held-out prompts are set
    aside, the smaller sets inside the larger, the held-out set the same at every N."""
    from rlaif.core.errors import UsageError

    pairs = [PreferencePair(f"p{i % 10}", Rollout("x", i, f"a{i}"), Rollout("x", i, "b")) for i in range(40)]
    train, held = split_prompts(pairs, 0.2, seed=0)
    small, large = take_train_pairs(train, 8, seed=0), take_train_pairs(train, 16, seed=0)
    assert len(small) == 8 and small == large[:8] and set(map(id, large)) <= set(map(id, train))
    assert take_train_pairs(train, None) == train and take_train_pairs(train, 8, seed=1) != small
    with pytest.raises(UsageError, match="the data gives 32 training pairs"):
        take_train_pairs(train, 33)


# ----------------------------------------------------------------------------- training
def tiny_policy(world: Any, directory: Path) -> Any:
    """A small real tiny-video-lm: world tokenizer, a 2-layer LM pre-trained for 100 steps
    on the world's text, a random frozen encoder, a fresh LoRA (r = 16)."""
    from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
    from rlaif.plugins.policies.tiny_lm import (
        load_tiny_lm,
        pretrain_tiny_lm,
        tiny_lm_config,
        train_world_tokenizer,
    )
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM, world_texts

    texts = world_texts(world)
    tokenizer = train_world_tokenizer(texts, directory / "tokenizer.json", vocab_size=512)
    config = tiny_lm_config(len(tokenizer), hidden_size=64, layers=2, heads=2, intermediate_size=128)
    pretrain_tiny_lm(texts, tokenizer, directory / "lm", steps=100, seq_len=64, config=config)
    return TinyVideoLM(TinyConvEncoder(feature_dim=32, width=8, n_frames=4), load_tiny_lm(directory / "lm"),
                       tokenizer, frames=world.frames, n_frames=4, lora_r=16, lora_alpha=16,
                       projector_trainable=False)


def candidates(prompt: Prompt, pool: list[Prompt], rng: random.Random) -> list[str]:
    """The reference among three wrong answers taken from other items."""
    wrong = sorted({q.reference for q in pool if q.reference and q.reference != prompt.reference})
    answers = [prompt.reference, *rng.sample(wrong, 3)]
    rng.shuffle(answers)
    return answers


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from rlaif.core.store import RunStore
    from rlaif.plugins.benchmarks.video_world import VideoWorld
    from rlaif.plugins.oracles.ground_truth import GroundTruthOracle
    from rlaif.train.reward_model import train_reward_model

    tmp = tmp_path_factory.mktemp("rm")
    options = {"root": str(tmp / "world"), "seed": 0, "n_sft": 4, "n_rl": 30, "n_test": 0, "qtypes": QTYPES,
               "progress": False}
    world = VideoWorld(**options)
    prompts = world.prompts("rl")
    rng = random.Random(0)
    truth = GroundTruthOracle(world)
    run_dir = tmp / "run"
    with RunStore(run_dir) as store:
        store.put_run(RunInfo("main", {"benchmark": {"name": "video-world", **options},
                                       "oracle": {"name": "ground-truth"}}, seed=0))
        for step, start in enumerate(range(0, len(prompts), 16), start=1):
            groups = [Group(p, [Rollout(p.prompt_id, i, a) for i, a in enumerate(candidates(p, prompts, rng))])
                      for p in prompts[start : start + 16]]
            store.commit_step("main", step, rollouts=[r for g in groups for r in g.rollouts],
                              rankings={"ground-truth": truth.rank(groups)})
    policy = tiny_policy(world, tmp / "base")
    result = train_reward_model(run_dir, policy=policy, benchmark=world, epochs=3, progress=False)
    return {"world": world, "run_dir": run_dir, "result": result, "prompts": prompts}


@pytest.mark.integration
def test_reward_model_beats_chance_on_held_out_prompts(trained: dict[str, Any]) -> None:
    result, run_dir = trained["result"], trained["run_dir"]
    assert result["oracle"] == "ground-truth" and result["pairs"] > 300
    assert result["heldout_prompts"] == 30  # 20 % of the 150 prompts
    assert result["heldout_accuracy"] > 0.6, result
    assert result["heldout_accuracy"] > result["heldout_accuracy_before"]
    assert result["loss_last"] < result["loss_first"]
    saved = run_dir / "reward_model"
    assert (saved / "head.safetensors").exists() and (saved / "policy" / "adapter").is_dir()
    assert json.loads((saved / "rm.json").read_text())["heldout_accuracy"] == result["heldout_accuracy"]


@pytest.mark.integration
def test_saved_model_ranks_as_an_oracle_and_seeds_a_value_head(trained: dict[str, Any]) -> None:
    from rlaif.core.registry import load_plugins
    from rlaif.core.store import RunStore
    from rlaif.train.reward_model import load_value_head_init, split_prompts, stored_pairs

    prompts = trained["prompts"]
    # rebuilt from rm.json's benchmark options, through the registry like any oracle
    oracle = load_plugins().build("oracle", "reward-model", {"path": str(trained["run_dir"])})
    assert not oracle.needs_reference and not oracle.needs_context
    # The held-out prompts, each: its reference against a wrong answer from another item.
    with RunStore(trained["run_dir"], readonly=True) as store:
        _, held = split_prompts(stored_pairs(store, "ground-truth"), 0.2, seed=0)
    held_ids = {p.prompt_id for p in held}
    rng = random.Random(1)
    groups = []
    for p in [p for p in prompts if p.prompt_id in held_ids]:
        wrong = rng.choice(sorted({q.reference for q in prompts if q.reference != p.reference}))
        visible = Prompt(p.prompt_id, p.video, p.question, qtype=p.qtype)  # no reference shown
        groups.append(Group(visible, [Rollout(p.prompt_id, 0, p.reference), Rollout(p.prompt_id, 1, wrong)]))
    rankings = oracle.rank(groups)
    assert all(r.ok and r.scores is not None for r in rankings)
    accuracy = sum(r.order[0] == 0 for r in rankings) / len(rankings)
    assert len(rankings) == 30 and accuracy > 0.6, accuracy

    state = load_value_head_init(trained["run_dir"])
    assert state["weight"].shape == (1, 64) and float(state["bias"].abs().sum()) == 0.0
    head = torch.nn.Linear(64, 1)
    head.load_state_dict(state)  # what policy.add_value_head().load_state_dict(...) does
    assert torch.equal(head.weight, oracle.model.head.weight)


@pytest.mark.integration
def test_ppo_value_init_puts_the_reward_head_into_the_policy(trained: dict[str, Any], tmp_path: Path) -> None:
    """``[loss] name = "ppo", value_init = RM``: the loop's init gives the policy's value
    head the reward head (bias 0) before the optimizer is built; a wrong size is refused."""
    from rlaif.core.errors import UsageError
    from rlaif.core.registry import load_plugins
    from rlaif.train.rl import Components, init_value_head

    world = trained["world"]
    loss = load_plugins().build("loss", "ppo", {"value_init": str(trained["run_dir"])})
    policy = tiny_policy(world, tmp_path / "policy")  # hidden 64, like the RM's backbone
    assert policy.value_head is None
    assert init_value_head(Components(world, policy, None, loss)) == str(trained["run_dir"])
    rm_head = load_plugins().build("oracle", "reward-model", {"path": str(trained["run_dir"])}).model.head
    assert torch.equal(policy.value_head.weight, rm_head.weight)
    assert float(policy.value_head.bias.detach().abs().sum()) == 0.0
    assert any(p is policy.value_head.weight for p in policy.trainable_parameters())

    class Wider:  # a policy whose value head has another hidden size
        def add_value_head(self) -> torch.nn.Linear:
            return torch.nn.Linear(32, 1)

    with pytest.raises(UsageError, match="does not fit the policy's value head"):
        init_value_head(Components(world, Wider(), None, loss))


def test_train_rm_cli_reports_a_missing_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rlaif.cli.main import app

    result = CliRunner().invoke(app, ["train-rm", str(tmp_path / "nothing")])
    assert result.exit_code != 0 and "no rlaif store" in result.output
