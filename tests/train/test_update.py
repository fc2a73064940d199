"""The RL update on its own (``rlaif.train.rl.update_policy``) with a real tiny Llama
through ``hf-causal-lm``: micro-batched gradients equal full-batch ones for every loss,
the entropy bonus gets its entropies, and mixed precision really runs in 16 bits."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from rlaif.core.config import RunConfig  # noqa: E402
from rlaif.core.records import Prompt, Ranking, VideoRef  # noqa: E402
from rlaif.plugins.losses.dpo import DPOLoss  # noqa: E402
from rlaif.plugins.losses.grpo import GRPOLoss  # noqa: E402
from rlaif.plugins.losses.grpo_rank import GRPORankLoss  # noqa: E402
from rlaif.plugins.losses.ppo import PPOLoss  # noqa: E402
from rlaif.plugins.policies.hf_causal_lm import build_hf_causal_lm  # noqa: E402
from rlaif.train.precision import Precision  # noqa: E402
from rlaif.train.rl import (  # noqa: E402
    Components,
    StepData,
    init_value_head,
    load_checkpoint,
    micro_batches,
    sample_step,
    sampling_seed,
    save_checkpoint,
    update_policy,
)

QUESTIONS = ["count to five :", "please count to ten and then stop now :", "count to three :", "go now :"]


class DistinctWords:
    """Scores a candidate by its number of distinct words (a real, if silly, preference)."""

    name = "distinct-words"
    needs_context = False
    needs_reference = False

    def rank(self, groups: Sequence[Any]) -> list[Ranking]:
        return [Ranking.from_scores(g.prompt.prompt_id, self.name, [float(len(set(r.text.split())))
                                                                    for r in g.rollouts]) for g in groups]


class GlobalRandom:
    """Ranks by draws from python's and numpy's global RNGs, as a careless plugin might."""

    name = "global-random"
    needs_context = False
    needs_reference = False

    def rank(self, groups: Sequence[Any]) -> list[Ranking]:
        import numpy as np

        return [Ranking.from_scores(g.prompt.prompt_id, self.name,
                                    [random.random() + float(np.random.rand()) for _ in g.rollouts]) for g in groups]


def step_prompts() -> list[Prompt]:
    video = VideoRef(video_id="none", path="")
    return [Prompt(prompt_id=f"p{i}", video=video, question=q) for i, q in enumerate(QUESTIONS)]


def make_config(**run: Any) -> RunConfig:
    config = RunConfig()
    config.run.group_size, config.run.prompts_per_step, config.run.max_new_tokens = 4, len(QUESTIONS), 10
    for key, value in run.items():
        setattr(config.run, key, value)
    return config


def setup(llama_dir: str, loss: Any, config: RunConfig) -> tuple[Components, StepData]:
    """A policy whose adapter differs from its reference, and one sampled, ranked step."""
    policy = build_hf_causal_lm(llama_dir, lora_r=4, lora_alpha=8, device="cpu", dtype="float32", seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_trainable_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    comp = Components(benchmark=None, policy=policy, oracle=DistinctWords(), loss=loss)
    init_value_head(comp)
    if comp.policy.value_head is not None:  # a non-zero head, so the value loss has a gradient
        torch.nn.init.normal_(comp.policy.value_head.weight, std=0.1, generator=gen)
    prompts = step_prompts()
    return comp, sample_step(1, prompts, comp, config)


def gradients(comp: Components, data: StepData, config: RunConfig) -> tuple[dict[str, Any], dict[str, float]]:
    """The update's gradient (after averaging and clipping), with a zero learning rate so
    the weights stay put for the next call."""
    optimizer = torch.optim.SGD(list(comp.policy.trainable_parameters()), lr=0.0)
    metrics = update_policy(data, comp, optimizer, config, accelerator=None)
    return {n: p.grad.clone() for n, p in comp.policy.named_trainable_parameters()}, metrics


def test_each_step_reseeds_every_global_rng(llama_dir: str) -> None:
    # A resumed process reaches step 5 with other RNG states than an uninterrupted one.
    import numpy as np

    comp, _ = setup(llama_dir, GRPORankLoss(), make_config())
    comp.oracle = GlobalRandom()
    prompts = step_prompts()
    steps = []
    for state in (1, 2):
        random.seed(state)
        np.random.seed(state)
        torch.manual_seed(state)
        steps.append(sample_step(5, prompts, comp, make_config()))
    first, second = steps
    assert [r.to_dict() for r in first.rankings] == [r.to_dict() for r in second.rankings]
    assert [[r.token_ids for r in g.rollouts] for g in first.groups] == \
        [[r.token_ids for r in g.rollouts] for g in second.groups]


def test_each_rank_samples_its_own_stream(llama_dir: str) -> None:
    # Two data-parallel ranks must not draw the same uniforms; rank 0 is the 1-process run.
    comp, _ = setup(llama_dir, GRPORankLoss(), make_config())
    prompts = step_prompts()
    samples = {rank: [[r.token_ids for r in g.rollouts] for g in sample_step(3, prompts, comp, make_config(),
                                                                          rank=rank).groups]
               for rank in (0, 1)}
    assert samples[0] != samples[1]
    assert samples[0] == [[r.token_ids for r in g.rollouts] for g in sample_step(3, prompts, comp, make_config()).groups]
    assert len({sampling_seed(0, 3, rank) for rank in range(8)}) == 8


def test_micro_batches_cover_every_row_once() -> None:
    assert micro_batches(10, 1) == [slice(0, 10)]
    assert micro_batches(10, 3) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert micro_batches(2, 5) == [slice(0, 1), slice(1, 2)]
    assert micro_batches(0, 4) == [slice(0, 0)]
    for rows in range(1, 20):
        for k in range(1, 8):
            covered = [i for s in micro_batches(rows, k) for i in range(rows)[s]]
            assert covered == list(range(rows))


@pytest.mark.parametrize("loss", [GRPORankLoss(), GRPOLoss(entropy_coef=0.01), PPOLoss(), DPOLoss(pairs="all")],
                         ids=["grpo-rank", "grpo+entropy", "ppo", "dpo"])
def test_micro_batched_gradient_equals_full_batch(llama_dir: str, loss: Any) -> None:
    # 16 rollouts in 3 micro-batches: the splits cut through groups, and PPO whitens and
    # DPO pairs over the whole batch, so only an exact scheme gives the same gradient.
    comp, data = setup(llama_dir, loss, make_config())
    full, full_metrics = gradients(comp, data, make_config())
    split, split_metrics = gradients(comp, data, make_config(grad_accum=3))
    assert any(float(g.abs().sum()) > 0 for g in full.values())
    for name, g in full.items():
        torch.testing.assert_close(split[name], g, atol=1e-6, rtol=1e-4, msg=name)
    assert split_metrics["loss"] == pytest.approx(full_metrics["loss"], rel=1e-5, abs=1e-7)
    assert split_metrics["grad_norm"] == pytest.approx(full_metrics["grad_norm"], rel=1e-4)


def test_entropy_bonus_gets_entropies_and_changes_the_gradient(llama_dir: str) -> None:
    comp, data = setup(llama_dir, GRPOLoss(entropy_coef=0.5), make_config())
    with_bonus, metrics = gradients(comp, data, make_config())
    comp.loss = GRPOLoss(entropy_coef=0.0)
    without, _ = gradients(comp, data, make_config())
    vocab = len(comp.policy.tokenizer)
    assert 0 < metrics["entropy"] < float(torch.log(torch.tensor(float(vocab))))
    assert any(not torch.allclose(with_bonus[n], without[n]) for n in with_bonus)


def test_bf16_runs_sampling_and_update_in_16_bits(llama_dir: str) -> None:
    config = make_config(mixed_precision="bf16")
    comp, _ = setup(llama_dir, GRPORankLoss(), make_config())
    seen: list[Any] = []
    layer = comp.policy.model.get_base_model().model.layers[0].mlp.down_proj
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    precision = Precision.for_policy("bf16", comp.policy)
    prompts = step_prompts()
    data = sample_step(1, prompts, comp, config, precision=precision)
    sampled = len(seen)
    before = {n: p.detach().clone() for n, p in comp.policy.named_trainable_parameters()}
    optimizer = torch.optim.AdamW(list(comp.policy.trainable_parameters()), lr=1e-3)
    metrics = update_policy(data, comp, optimizer, config, accelerator=None, precision=precision)
    handle.remove()
    assert sampled > 0 and len(seen) > sampled and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in comp.policy.trainable_parameters())  # master weights stay fp32
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    assert any(not torch.equal(p, before[n]) for n, p in comp.policy.named_trainable_parameters())


def test_fp16_loss_scale_is_checkpointed(llama_dir: str, tmp_path: Path) -> None:
    config = make_config(mixed_precision="fp16")
    comp, data = setup(llama_dir, GRPORankLoss(), config)
    precision = Precision.for_policy("fp16", comp.policy)
    optimizer = torch.optim.AdamW(list(comp.policy.trainable_parameters()), lr=1e-3)
    metrics = update_policy(data, comp, optimizer, config, accelerator=None, precision=precision)
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    scale = precision.scaler.get_scale()
    assert scale > 0
    save_checkpoint(tmp_path, 1, comp.policy, optimizer, precision)
    restored = Precision.for_policy("fp16", comp.policy)
    assert restored.scaler.get_scale() != scale or restored.state_dict() != precision.state_dict()
    load_checkpoint(tmp_path / "checkpoints" / "step-000001", comp.policy, optimizer, restored)
    assert restored.state_dict() == precision.state_dict()


def test_accelerate_launch_precision_applies_when_the_run_leaves_it_unset(
        llama_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = build_hf_causal_lm(llama_dir, lora_r=4, lora_alpha=8, device="cpu", dtype="float32")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert Precision.for_policy("no", policy).dtype == torch.bfloat16
    assert Precision.for_policy("fp16", policy).dtype == torch.float16  # the run's own setting wins
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert Precision.for_policy("no", policy).dtype is None


def tiny_video_policy(directory: Path) -> Any:
    """A small real ``tiny-video-lm`` (random encoder, 2-layer LM) on blank frames."""
    import numpy as np

    from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
    from rlaif.plugins.policies.tiny_lm import (
        load_world_tokenizer,
        new_tiny_lm,
        tiny_lm_config,
        train_world_tokenizer,
    )
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM

    path = directory / "tokenizer.json"
    train_world_tokenizer([" ".join(QUESTIONS)] * 4, path, vocab_size=120)
    tok = load_world_tokenizer(path)
    lm = new_tiny_lm(tiny_lm_config(len(tok), hidden_size=32, layers=2, heads=2, intermediate_size=64), seed=0)
    frames = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    return TinyVideoLM(TinyConvEncoder(feature_dim=16, width=8), lm, tok, frames=lambda *_: frames, n_frames=4,
                       lora_r=4, lora_alpha=8, seed=0)


@pytest.mark.parametrize("which", ["hf-causal-lm", "tiny-video-lm"])
def test_first_update_is_on_policy_at_the_sampling_temperature(llama_dir: str, which: str, tmp_path: Path) -> None:
    """One temperature: at T != 1 the loop recomputes the log-probs the policy stored
    while sampling, so the first pass's ratios are 1 (nothing clipped, even with a tiny
    clip range) and KL to the reference is 0 (fresh adapter = reference)."""
    config = make_config(temperature=0.5)
    loss = GRPORankLoss(clip_eps=1e-3)
    if which == "hf-causal-lm":
        policy = build_hf_causal_lm(llama_dir, lora_r=4, lora_alpha=8, device="cpu", dtype="float32", seed=0)
    else:
        policy = tiny_video_policy(tmp_path)
    comp = Components(benchmark=None, policy=policy, oracle=DistinctWords(), loss=loss)
    data = sample_step(1, step_prompts(), comp, config)
    assert any(r.token_ids for g in data.groups for r in g.rollouts)
    _, metrics = gradients(comp, data, config)
    assert metrics["clip_frac"] == 0.0
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-8)


def test_replayed_step_is_on_policy(llama_dir: str) -> None:
    """Replay trains another policy than the one that sampled: its old log-probs are
    recomputed under that policy, so the first pass's ratios are 1 again."""
    from rlaif.train.rl import on_policy

    config = make_config(temperature=0.7)
    comp, data = setup(llama_dir, GRPORankLoss(clip_eps=1e-3), config)
    with torch.no_grad():  # the policy now differs from the one that sampled
        for name, p in comp.policy.named_trainable_parameters():
            if "lora_B" in name:
                p.mul_(-1.0)
    _, stale = gradients(comp, data, config)
    assert stale["clip_frac"] > 0  # the stored log-probs are another policy's
    fresh = on_policy(data, comp, config)
    assert [[r.token_ids for r in g.rollouts] for g in fresh.groups] == \
        [[r.token_ids for r in g.rollouts] for g in data.groups]
    _, metrics = gradients(comp, fresh, config)
    assert metrics["clip_frac"] == 0.0


@pytest.mark.parametrize("which", ["hf-causal-lm", "tiny-video-lm"])
def test_ppo_value_model_is_separate_from_the_policy_adapter(llama_dir: str, which: str, tmp_path: Path) -> None:
    """PPO as VLM-RLAIF does it: the critic is a LoRA adapter and head of its own. The
    value loss adds nothing to the policy's (clipped) gradient, the policy loss nothing
    to the critic's, and the value adapter does learn from the value loss."""
    config = make_config()
    if which == "hf-causal-lm":
        comp, data = setup(llama_dir, PPOLoss(vf_coef=1.0), config)
    else:
        comp = Components(None, tiny_video_policy(tmp_path), DistinctWords(), PPOLoss(vf_coef=1.0))
        init_value_head(comp)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():  # a policy adapter away from its reference, a non-zero value head
            torch.nn.init.normal_(comp.policy.value_head.weight, std=0.1, generator=gen)
            for name, p in comp.policy.named_trainable_parameters():
                if "lora_B.default" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        data = sample_step(1, step_prompts(), comp, config)
    with_value, metrics = gradients(comp, data, config)
    comp.loss = PPOLoss(vf_coef=0.0)
    policy_only, _ = gradients(comp, data, config)
    actor = [n for n in with_value if ("lora_" in n and ".default." in n) or n.startswith("projector")]
    critic = [n for n in with_value if n not in actor]
    assert metrics["vf_loss"] > 0 and any(float(policy_only[n].abs().sum()) > 0 for n in actor)
    for name in actor:
        torch.testing.assert_close(with_value[name], policy_only[name], atol=1e-9, rtol=0, msg=name)
    assert any(".value." in n for n in critic) and {"value_head.weight", "value_head.bias"} <= set(critic)
    assert {id(p) for p in comp.policy.value_parameters()} == \
        {id(p) for n, p in comp.policy.named_trainable_parameters() if n in critic}
    for name in critic:
        assert float(policy_only[name].abs().sum()) == 0.0, name
    assert any(float(with_value[n].abs().sum()) > 0 for n in critic if ".value." in n)


def test_ppo_value_model_is_checkpointed_and_restored(llama_dir: str, tmp_path: Path) -> None:
    from rlaif.train.rl import make_optimizer, trainable_state

    config = make_config(lr=1e-2)
    comp, data = setup(llama_dir, PPOLoss(vf_coef=1.0), config)
    before = trainable_state(comp.policy)
    optimizer = make_optimizer(comp.policy, config)
    update_policy(data, comp, optimizer, config, accelerator=None)
    state = trainable_state(comp.policy)
    assert any(not torch.equal(state[n], before[n]) for n in state if ".value." in n)  # the critic trained
    save_checkpoint(tmp_path, 1, comp.policy, optimizer)

    fresh = Components(None, build_hf_causal_lm(llama_dir, lora_r=4, lora_alpha=8, device="cpu", dtype="float32"),
                       None, PPOLoss())
    init_value_head(fresh)  # as the loop does on resume, before the optimizer
    load_checkpoint(tmp_path / "checkpoints" / "step-000001", fresh.policy, make_optimizer(fresh.policy, config))
    restored = trainable_state(fresh.policy)
    assert restored.keys() == state.keys()
    for name in state:
        assert torch.equal(restored[name], state[name]), name
    prompts = [g.prompt for g in data.groups for _ in g.rollouts]
    rollouts = [r for g in data.groups for r in g.rollouts]
    with torch.no_grad():
        torch.testing.assert_close(fresh.policy.values(prompts, rollouts), comp.policy.values(prompts, rollouts))
