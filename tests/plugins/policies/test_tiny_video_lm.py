"""The embedded default policy: tokenizer, frozen encoder, LoRA + projector training,
reference = adapters off (= the SFT policy after loading with a fresh adapter), exact
sampled log-probs, KV cache, save/load.

Unit tests build a TINY stack (random encoder, 2-layer LM of width 32) on a synthetic
world; the ``integration`` tests build the real default stack on a small video world."""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rlaif.core.errors import UsageError
from rlaif.core.records import Prompt, Rollout, VideoRef
from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
from rlaif.plugins.policies.tiny_lm import (
    load_world_tokenizer,
    new_tiny_lm,
    tiny_lm_config,
    train_world_tokenizer,
)
from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM, build_tiny_video_lm, clip_ranges, sample_indices

torch.set_num_threads(1)

TEXTS = [
    "a small red square moves left.", "the blue circle stops.", "question: What colour is the square? answer: red",
    "question: How many objects are there? answer: two", "Describe this video in detail.",
]  # fmt: skip


class FakeWorld:
    """Random frames per video; two questions each."""

    name = "fake"
    has_ground_truth = True

    def __init__(self, n_videos: int = 4) -> None:
        rng = np.random.default_rng(0)
        self._frames = {f"v{i}": rng.integers(0, 255, (10 + i, 32, 32, 3), dtype=np.uint8) for i in range(n_videos)}

    def prompts(self, split: str) -> list[Prompt]:
        out = []
        for vid, frames in self._frames.items():
            ref = VideoRef(vid, f"/none/{vid}.mp4", len(frames))
            out.append(Prompt(f"{vid}-a", ref, "What colour is the square?", "red", "attribute"))
            out.append(Prompt(f"{vid}-b", ref, "How many objects are there?", "two", "counting"))
        return out

    def frames(self, video: VideoRef, n_frames: int | None = None) -> np.ndarray:
        return self._frames[video.video_id]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_world_tokenizer(TEXTS * 4, path, vocab_size=300)
    return path


def tiny_policy(tokenizer_path: Path, world: FakeWorld, *, seed: int = 0, value_head: bool = False,
                lm: object = None) -> TinyVideoLM:
    tok = load_world_tokenizer(tokenizer_path)
    torch.manual_seed(seed)
    base = lm if lm is not None else new_tiny_lm(tiny_lm_config(len(tok), hidden_size=32, layers=2, heads=2,
                                                                intermediate_size=64), seed=seed)
    encoder = TinyConvEncoder(feature_dim=16, width=8)
    return TinyVideoLM(encoder, base, tok, frames=world.frames, n_frames=4, lora_r=4, lora_alpha=8,
                       value_head=value_head, seed=seed)


def perturb_adapter(policy: TinyVideoLM, scale: float = 0.3) -> None:
    """Make the (zero-initialised) LoRA adapter matter."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, p in policy.named_trainable_parameters():
            if "lora_B" in name:
                p.add_(scale * torch.randn(p.shape, generator=gen))


def make_eos_likely(policy: TinyVideoLM, world: FakeWorld, logit: float = 4.0) -> None:
    """Point the (tied) <eos> embedding along the mean final hidden state, so an untrained
    LM stops after a few tokens."""
    embeds, mask, positions, _ = policy._layout(policy._requests(world.prompts("rl")), None)
    with torch.no_grad():
        hidden = policy.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                           output_hidden_states=True).hidden_states[-1][mask.bool()]
        direction = hidden.mean(0)
        policy.lm.get_input_embeddings().weight[policy.eos_id] = logit * direction / direction.norm() ** 2


def sample(policy: TinyVideoLM, prompts: list[Prompt], n: int, **kwargs: object) -> tuple[list[Prompt], list[Rollout]]:
    gen = torch.Generator().manual_seed(7)
    groups = policy.generate(prompts, n, max_new_tokens=8, generator=gen, **kwargs)
    assert [len(g) for g in groups] == [n] * len(prompts)
    flat_prompts = [p for p, g in zip(prompts, groups, strict=True) for _ in g]
    return flat_prompts, [r for g in groups for r in g]


def test_tokenizer_round_trip_and_special_tokens(tokenizer_path: Path) -> None:
    tok = load_world_tokenizer(tokenizer_path)
    assert [tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id] == [0, 1, 2, 3]
    assert tok.convert_tokens_to_ids("<video>") == 4
    for text in [*TEXTS, "unseen wörds & symbols 123", " leading space"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode([*tok.encode("red", add_special_tokens=False), tok.eos_token_id], skip_special_tokens=True) == "red"


def test_frame_sampling_and_clip_ranges() -> None:
    assert sample_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_indices(10, 4, (5, 10)).tolist() == [5, 6, 8, 9]
    jittered = sample_indices(40, 8, jitter=3)
    assert len(jittered) == 8 and all(5 * k <= i < 5 * (k + 1) for k, i in enumerate(jittered))
    assert clip_ranges(41, 3) == [(0, 14), (14, 28), (28, 41)]


def test_only_lora_projector_and_value_head_train(tokenizer_path: Path) -> None:
    policy = tiny_policy(tokenizer_path, FakeWorld(), value_head=True)
    names = [n for n, _ in policy.named_trainable_parameters()]
    assert any("lora_A" in n for n in names) and any("projector" in n for n in names)
    assert any(n.startswith("value_head") for n in names)
    assert all("lora_" in n or n.startswith(("projector", "value_head")) for n in names)
    assert {id(p) for _, p in policy.named_trainable_parameters()} == {id(p) for p in policy.trainable_parameters()}
    assert all(not p.requires_grad for p in policy.encoder.parameters())
    base = [p for n, p in policy.lm.named_parameters() if "lora_" not in n]
    assert base and all(not p.requires_grad for p in base)
    # A training step moves only those parameters.
    world = FakeWorld()
    frozen_before = [p.detach().clone() for p in base]
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=0.1)
    loss = policy.sequence_loss(world.prompts("sft")[:2], ["red", "two"])
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, base, strict=True))


def test_sampled_logprobs_equal_recomputed(tokenizer_path: Path) -> None:
    world = FakeWorld()
    policy = tiny_policy(tokenizer_path, world)
    perturb_adapter(policy)
    make_eos_likely(policy, world)  # so that rows stop at different lengths
    prompts = world.prompts("rl")[:3]
    finished = []
    for temperature in (1.0, 0.7):
        flat_prompts, rollouts = sample(policy, prompts, 4, temperature=temperature)
        finished += [r.finished for r in rollouts]
        out = policy.forward_responses(flat_prompts, rollouts, temperature=temperature)
        assert out["logprobs"].requires_grad  # the RL loss backpropagates through this
        assert out["logprobs"].shape == out["mask"].shape == (12, max(len(r.token_ids) for r in rollouts))
        for i, r in enumerate(rollouts):
            n = len(r.token_ids)
            assert n == int(out["mask"][i].sum()) and len(r.logprobs) == n
            assert torch.allclose(out["logprobs"][i, :n].detach(), torch.tensor(r.logprobs), atol=1e-4)
            assert r.finished == (n > 0 and r.token_ids[-1] == policy.eos_id)
            assert r.index == i % 4 and r.prompt_id == flat_prompts[i].prompt_id
    assert any(finished) and len({len(r.token_ids) for r in rollouts}) > 1
    logprobs, mask = policy.logprobs(flat_prompts, rollouts)  # temperature 1
    out = policy.forward_responses(flat_prompts, rollouts)
    assert torch.allclose(logprobs, out["logprobs"]) and torch.equal(mask, out["mask"])


def test_reference_is_the_base_model(tokenizer_path: Path) -> None:
    world = FakeWorld()
    tok = load_world_tokenizer(tokenizer_path)
    lm = new_tiny_lm(tiny_lm_config(len(tok), hidden_size=32, layers=2, heads=2, intermediate_size=64), seed=3)
    plain_lm = copy.deepcopy(lm)
    policy = tiny_policy(tokenizer_path, world, lm=lm)
    base = tiny_policy(tokenizer_path, world, lm=plain_lm)  # fresh adapter: exactly the base LM
    base.projector.load_state_dict(policy.projector.state_dict())
    prompts = world.prompts("rl")[:2]
    flat_prompts, rollouts = sample(policy, prompts, 3)
    with torch.no_grad():
        expected = base.forward_responses(flat_prompts, rollouts)["logprobs"]
        perturb_adapter(policy)
        moved = policy.forward_responses(flat_prompts, rollouts)["logprobs"]
        with policy.adapters_disabled():
            reference = policy.forward_responses(flat_prompts, rollouts)["logprobs"]
        after = policy.forward_responses(flat_prompts, rollouts)["logprobs"]
    assert not torch.allclose(moved, expected, atol=1e-3)
    assert torch.allclose(reference, expected, atol=1e-5)
    assert torch.equal(after, moved)  # adapters back on after the context


def test_kv_cache_and_no_cache_generate_the_same_tokens(tokenizer_path: Path) -> None:
    world = FakeWorld()
    policy = tiny_policy(tokenizer_path, world)
    perturb_adapter(policy)
    make_eos_likely(policy, world, logit=2.0)
    prompts = world.prompts("test")
    cached = policy.generate(prompts, 2, max_new_tokens=10, greedy=True, use_cache=True)
    plain = policy.generate(prompts, 2, max_new_tokens=10, greedy=True, use_cache=False)
    assert [r.token_ids for g in cached for r in g] == [r.token_ids for g in plain for r in g]
    for a, b in zip([r for g in cached for r in g], [r for g in plain for r in g], strict=True):
        assert np.allclose(a.logprobs, b.logprobs, atol=1e-4)
    _, sampled_cached = sample(policy, prompts, 3, use_cache=True)
    _, sampled_plain = sample(policy, prompts, 3, use_cache=False)
    assert [r.token_ids for r in sampled_cached] == [r.token_ids for r in sampled_plain]
    assert any(r.finished for r in sampled_cached) and not all(r.finished for r in sampled_cached)


def test_value_head_starts_at_zero(tokenizer_path: Path) -> None:
    world = FakeWorld()
    policy = tiny_policy(tokenizer_path, world)
    assert policy.value_head is None
    flat_prompts, rollouts = sample(policy, world.prompts("rl")[:2], 2)
    out = policy.forward_responses(flat_prompts, rollouts, with_values=True)  # created lazily
    assert policy.value_head is not None and out["values"].shape == out["logprobs"].shape
    assert torch.count_nonzero(out["values"]) == 0
    out["values"].sum().backward()
    assert policy.value_head.weight.grad is not None


def test_save_load_round_trip_and_merge_for_rl(tokenizer_path: Path, tmp_path: Path) -> None:
    world = FakeWorld()
    policy = tiny_policy(tokenizer_path, world, value_head=True)
    perturb_adapter(policy)
    flat_prompts, rollouts = sample(policy, world.prompts("rl")[:2], 3)
    with torch.no_grad():
        before = policy.forward_responses(flat_prompts, rollouts)["logprobs"]
    policy.save(tmp_path / "ckpt")
    for name in ("adapter/adapter_config.json", "projector.safetensors", "value_head.safetensors",
                 "lm/config.json", "lm/model.safetensors", "encoder/model.safetensors", "tokenizer.json",
                 "policy.json"):
        assert (tmp_path / "ckpt" / name).exists(), name

    same = TinyVideoLM.load(tmp_path / "ckpt", frames=world.frames, new_adapter=False)
    assert same.value_head is not None
    assert {n for n, _ in same.named_trainable_parameters()} == {n for n, _ in policy.named_trainable_parameters()}
    with torch.no_grad():
        assert torch.allclose(same.forward_responses(flat_prompts, rollouts)["logprobs"], before, atol=1e-6)

    # For RL: the saved adapter is merged, the projector frozen, a fresh adapter added; the
    # policy starts equal to the saved one and its reference (adapters off) stays equal.
    rl = TinyVideoLM.load(tmp_path / "ckpt", frames=world.frames, new_adapter=True, lora_r=2, lora_alpha=4)
    assert rl.lora_r == 2 and rl.value_head is None and rl.history and "merged" in rl.history[-1]
    assert all("lora_" in n for n, _ in rl.named_trainable_parameters())
    perturb_adapter(rl)
    with torch.no_grad(), rl.adapters_disabled():
        reference = rl.forward_responses(flat_prompts, rollouts)["logprobs"]
    assert torch.allclose(reference, before, atol=1e-5)

    # A merged policy saves its merged LM, so loading it again reproduces it.
    rl.save(tmp_path / "rl")
    again = TinyVideoLM.load(tmp_path / "rl", frames=world.frames, new_adapter=False)
    with torch.no_grad():
        a = rl.forward_responses(flat_prompts, rollouts)["logprobs"]
        b = again.forward_responses(flat_prompts, rollouts)["logprobs"]
    assert torch.allclose(a, b, atol=1e-5)


def test_rl_can_train_the_projector_and_the_reference_keeps_the_sft_one(tokenizer_path: Path, tmp_path: Path) -> None:
    """``train_projector``: the projector joins the trainable parameters, and a changed
    projector changes the policy but not its reference (adapters off = the SFT policy)."""
    world = FakeWorld()
    policy = tiny_policy(tokenizer_path, world)
    perturb_adapter(policy)
    flat_prompts, rollouts = sample(policy, world.prompts("rl")[:2], 3)
    with torch.no_grad():
        sft = policy.forward_responses(flat_prompts, rollouts)["logprobs"]
    policy.save(tmp_path / "ckpt")
    rl = TinyVideoLM.load(tmp_path / "ckpt", frames=world.frames, new_adapter=True, train_projector=True)
    names = {n for n, _ in rl.named_trainable_parameters()}
    assert any(n.startswith("projector.") for n in names) and any("lora_" in n for n in names)
    with torch.no_grad():
        for p in rl.projector.parameters():
            p.add_(0.5 * torch.randn_like(p))
        trained = rl.forward_responses(flat_prompts, rollouts)["logprobs"]
        with rl.adapters_disabled():
            reference = rl.forward_responses(flat_prompts, rollouts)["logprobs"]
    assert torch.allclose(reference, sft, atol=1e-5) and not torch.allclose(trained, sft, atol=1e-3)
    assert rl.projector is not rl.reference_projector  # restored after the context
    frozen = TinyVideoLM.load(tmp_path / "ckpt", frames=world.frames, new_adapter=True)
    assert frozen.reference_projector is None and not any(n.startswith("projector.")
                                                          for n, _ in frozen.named_trainable_parameters())


def test_text_completion_describe_and_options(tokenizer_path: Path) -> None:
    world = FakeWorld()
    policy = tiny_policy(tokenizer_path, world)
    texts = policy.complete(["question: What colour is the square? answer:", "a small"], max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    captions = policy.describe(world.prompts("rl")[0].video, n_clips=2, max_new_tokens=4)
    assert len(captions) == 2
    assert policy.generate([], 3) == []
    with pytest.raises(UsageError):
        policy.generate(world.prompts("rl")[:1], 1, temperature=0.0)
    with pytest.raises(UsageError):
        build_tiny_video_lm(lm="smollm2", benchmark=world)
    with pytest.raises(UsageError):
        TinyVideoLM.load(Path("/nonexistent/checkpoint"))


# -- integration: the real default stack on a small video world --------------------------
WORLD = {"n_sft": 16, "n_rl": 8, "n_test": 8, "min_frames": 16, "max_frames": 20, "progress": False}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("tiny")
    patch = pytest.MonkeyPatch()
    patch.setenv("RLAIF_CACHE", str(root / "cache"))
    from rlaif.plugins.benchmarks.video_world import VideoWorld

    world = VideoWorld(root=str(root / "world"), seed=0, **WORLD)
    random.seed(0)
    policy = build_tiny_video_lm(None, lora_r=8, lora_alpha=8, seed=0, benchmark=world)
    yield {"root": root, "world": world, "policy": policy}
    patch.undo()


@pytest.mark.integration
def test_default_stack_builds_once_and_samples_exactly(stack) -> None:  # type: ignore[no-untyped-def]
    policy, world = stack["policy"], stack["world"]
    cache = stack["root"] / "cache"
    assert len(list((cache / "tiny-objects").iterdir())) == 1
    assert (next((cache / "tiny-video-lm-base").iterdir()) / "lm" / "model.safetensors").exists()
    again = build_tiny_video_lm(None, lora_r=8, lora_alpha=8, seed=0, benchmark=world)  # from the cache
    assert len(list((cache / "tiny-video-lm-base").iterdir())) == 1
    assert again.encoder.feature_dim == policy.encoder.feature_dim

    prompts = world.prompts("rl")[:3]
    torch.manual_seed(1)
    flat_prompts, rollouts = sample(policy, prompts, 4)
    with torch.no_grad():
        out = policy.forward_responses(flat_prompts, rollouts)
        with policy.adapters_disabled():
            reference = policy.forward_responses(flat_prompts, rollouts)["logprobs"]
    for i, r in enumerate(rollouts):
        n = len(r.token_ids)
        assert torch.allclose(out["logprobs"][i, :n], torch.tensor(r.logprobs), atol=1e-4)
    assert torch.allclose(reference, out["logprobs"], atol=1e-5)  # fresh adapter: a no-op


@pytest.mark.integration
def test_registry_builds_the_default_policy(stack) -> None:  # type: ignore[no-untyped-def]
    from rlaif.core.registry import load_plugins

    registry = load_plugins()
    assert "tiny-video-lm" in registry.names("policy")
    policy = registry.build("policy", "tiny-video-lm", {"lora_r": 4, "lora_alpha": 4}, benchmark=stack["world"])
    assert isinstance(policy, TinyVideoLM) and policy.lora_r == 4
    assert all(not p.requires_grad for p in policy.encoder.parameters())
    assert os.environ["RLAIF_CACHE"] == str(stack["root"] / "cache")


def test_entropies_for_the_entropy_bonus(tokenizer_path: Path, entropies_match_the_distribution) -> None:  # type: ignore[no-untyped-def]
    world = FakeWorld()
    policy = tiny_policy(tokenizer_path, world)
    perturb_adapter(policy)
    entropies_match_the_distribution(policy, world.prompts("rl")[0], range(policy.lm.config.vocab_size))
