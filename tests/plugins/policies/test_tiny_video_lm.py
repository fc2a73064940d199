"""The embedded default policy: tokenizer, frozen encoder, LoRA + projector training,
reference = adapters off, exact sampled log-probs, KV cache, save/load, curriculum."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

WORLD = {"n_sft": 16, "n_rl": 8, "n_test": 8, "min_frames": 16, "max_frames": 20, "progress": False}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("tiny")
    os.environ["RLAIF_CACHE"] = str(root / "cache")
    from rlaif.plugins.benchmarks.video_world import VideoWorld
    from rlaif.plugins.policies.tiny_video_lm import build_tiny_video_lm

    world = VideoWorld(root=str(root / "world"), seed=0, **WORLD)
    torch.manual_seed(0)
    policy = build_tiny_video_lm(None, lora_r=8, lora_alpha=8, seed=0, benchmark=world)
    return {"root": root, "world": world, "policy": policy}


def test_tokenizer_round_trip(tmp_path: Path) -> None:
    from rlaif.plugins.policies.tiny_lm import load_world_tokenizer, train_world_tokenizer

    texts = ["a red circle moves left.", "how many objects are there? two", "Describe this video in detail."]
    train_world_tokenizer(texts * 5, tmp_path / "tokenizer.json", vocab_size=300)
    tok = load_world_tokenizer(tmp_path / "tokenizer.json")
    for text in [*texts, "unseen wörds & symbols 123"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_encoder_is_frozen_and_pools_video_chatgpt_style(stack) -> None:  # type: ignore[no-untyped-def]
    from rlaif.plugins.encoders.tiny_conv import build_tiny_conv

    world = stack["world"]
    encoder = build_tiny_conv(n_frames=8, benchmark=world)
    assert all(not p.requires_grad for p in encoder.parameters())
    frames = world.frames(world.prompts("sft")[0].video, 8)
    features = encoder.encode(frames)
    assert features.ndim == 2 and features.shape[1] == encoder.feature_dim
    assert features.shape[0] > 8  # T temporal tokens + P spatial tokens
    assert not features.requires_grad


def test_only_lora_and_projector_train(stack) -> None:  # type: ignore[no-untyped-def]
    names = [n for n, _ in stack["policy"].named_trainable_parameters()]
    assert names and all("lora_" in n or "projector" in n or "value" in n for n in names)
    assert any("lora_" in n for n in names) and any("projector" in n for n in names)
    frozen = [p for p in stack["policy"].encoder.parameters()]
    assert frozen and all(not p.requires_grad for p in frozen)


def test_sampled_logprobs_equal_recomputed_and_reference_is_base(stack) -> None:  # type: ignore[no-untyped-def]
    policy, world = stack["policy"], stack["world"]
    prompts = world.prompts("rl")[:3]
    torch.manual_seed(1)
    with torch.no_grad():
        groups = policy.generate(prompts, 4, max_new_tokens=10, temperature=1.0)
    assert [len(g) for g in groups] == [4, 4, 4]
    flat_prompts = [p for p, g in zip(prompts, groups, strict=True) for _ in g]
    rollouts = [r for g in groups for r in g]
    with torch.no_grad():
        out = policy.forward_responses(flat_prompts, rollouts)
    for i, r in enumerate(rollouts):
        n = len(r.token_ids)
        assert n == int(out["mask"][i].sum())
        assert torch.allclose(out["logprobs"][i, :n], torch.tensor(r.logprobs), atol=1e-4)

    # A fresh adapter is a no-op, so the reference (adapters off) equals the policy;
    # after an update it still equals the base model exactly.
    with torch.no_grad(), policy.adapters_disabled():
        reference = policy.forward_responses(flat_prompts, rollouts)["logprobs"]
    assert torch.allclose(reference, out["logprobs"], atol=1e-5)
    with torch.no_grad():
        for name, p in policy.named_trainable_parameters():
            if "lora_B" in name:
                p.add_(0.05 * torch.randn_like(p))
        moved = policy.forward_responses(flat_prompts, rollouts)["logprobs"]
        with policy.adapters_disabled():
            reference_after = policy.forward_responses(flat_prompts, rollouts)["logprobs"]
    assert not torch.allclose(moved, reference, atol=1e-4)
    assert torch.allclose(reference_after, reference, atol=1e-5)


def test_kv_cache_matches_no_cache_and_save_load(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rlaif.plugins.policies.tiny_video_lm import build_tiny_video_lm

    policy, world = stack["policy"], stack["world"]
    prompts = world.prompts("test")[:4]
    with torch.no_grad():
        cached = policy.generate(prompts, 1, max_new_tokens=8, greedy=True, use_cache=True)
        plain = policy.generate(prompts, 1, max_new_tokens=8, greedy=True, use_cache=False)
    assert [g[0].token_ids for g in cached] == [g[0].token_ids for g in plain]

    policy.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "ckpt" / "projector.safetensors").exists()
    loaded = build_tiny_video_lm(str(tmp_path / "ckpt"), new_adapter=False, benchmark=world)
    rollouts = [g[0] for g in cached]
    with torch.no_grad():
        a = policy.forward_responses(prompts, rollouts)["logprobs"]
        b = loaded.forward_responses(prompts, rollouts)["logprobs"]
    assert torch.allclose(a, b, atol=1e-5)


def test_curriculum_puts_short_answers_first(stack) -> None:  # type: ignore[no-untyped-def]
    from rlaif.train.sft import build_sft_items, curriculum_stages

    items = build_sft_items(stack["world"], seed=0)
    kinds = {it.kind for it in items}
    assert {"qa", "caption", "judge"} <= kinds
    (easy_name, easy), (hard_name, hard) = curriculum_stages(items, lambda a: len(a.split()), seed=0, replay=0.0)
    assert (easy_name, hard_name) == ("easy", "hard")
    assert max(len(it.answer.split()) for it in easy) < min(len(it.answer.split()) for it in hard)
    (name, everything), = curriculum_stages(items, lambda a: len(a.split()), curriculum=False, seed=0, replay=0.0)
    assert name == "all" and len(everything) == len(easy) + len(hard)


def test_short_sft_lowers_loss(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rlaif.train.sft import run_sft

    metrics = run_sft(tmp_path / "sft", benchmark=stack["world"], seed=0, lora_r=8, lora_alpha=8, max_steps=12,
                      progress=False)
    assert (tmp_path / "sft" / "sft.json").exists()
    first = [v for k, v in metrics.items() if k.startswith("loss_first/")]
    last = [v for k, v in metrics.items() if k.startswith("loss/")]
    assert first and sum(last) < sum(first)
    again = run_sft(tmp_path / "sft", benchmark=stack["world"], seed=0, progress=False)  # resumable: reuses
    assert again == {k: v for k, v in metrics.items()} or again["steps"] == metrics["steps"]
