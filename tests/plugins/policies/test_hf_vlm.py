"""hf-vlm: tiny random-init LLaVA-OneVision (and Qwen2.5-VL, SmolVLM) saved locally with a
tokenizer trained in the test, then built through the factory like a real checkpoint."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from rlaif.core.protocols import Policy  # noqa: E402
from rlaif.core.records import Prompt, Rollout, VideoRef  # noqa: E402
from rlaif.plugins.policies.hf_vlm import HFVideoVLM, build_hf_vlm, smart_resize  # noqa: E402

WORDS = (
    "what is the man doing in this video ? he is running jumping cooking a cat dog sits on "
    "red blue car road USER ASSISTANT : describe answer yes no the woman plays guitar"
).split()


class FakeBenchmark:
    """Only ``frames``: small random uint8 frames, deterministic per video id; a 16-frame
    video of which ``n_frames`` are sampled (``linspace``), optionally within one clip."""

    def __init__(self, height: int = 32, width: int = 32) -> None:
        self.height, self.width = height, width

    def frames(self, video, n_frames=None, *, frame_range=None):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(sum(map(ord, video.video_id)))
        every = rng.integers(0, 256, size=(16, self.height, self.width, 3), dtype=np.uint8)
        start, stop = frame_range or (0, 16)
        if n_frames is None:
            return every[start:stop]
        return every[np.linspace(start, stop - 1, n_frames).round().astype(int)]


def tiny_tokenizer(specials: list[str]):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    base = ["<unk>", "<pad>", "<eos>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=base + specials))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
        extra_special_tokens=specials,
    )


def tiny_qwen2_text(vocab: int, **extra):  # type: ignore[no-untyped-def]
    return dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=None, eos_token_id=2, pad_token_id=1,
        **extra,
    )


def save_llava_onevision(path: str) -> str:
    tokenizer = tiny_tokenizer(["<image>", "<video>"])
    config = transformers.LlavaOnevisionConfig(
        vision_config=transformers.SiglipVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=16, patch_size=4, vision_use_head=False,
        ).to_dict(),
        text_config=transformers.Qwen2Config(**tiny_qwen2_text(len(tokenizer))).to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    transformers.LlavaOnevisionForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return save_llava_onevision(str(tmp_path_factory.mktemp("llava_ov")))


@pytest.fixture(scope="module")
def policy(llava_dir):  # type: ignore[no-untyped-def]
    return build_cpu(llava_dir, lora_r=4, lora_alpha=8, n_frames=4, benchmark=FakeBenchmark())


def build_cpu(path: str, **options):  # type: ignore[no-untyped-def]
    """The factory, pinned to float32 on the CPU so tolerances hold on any machine."""
    return build_hf_vlm(path, **{"device": "cpu", "dtype": "float32", **options})


def prompts() -> list[Prompt]:
    return [
        Prompt(prompt_id="p0", video=VideoRef(video_id="v0", path="v0.mp4"), question="what is the man doing ?"),
        Prompt(prompt_id="p1", video=VideoRef(video_id="v1", path="v1.mp4", n_frames=64, fps=8.0),
               question="describe this video"),
    ]


def flatten(groups):  # type: ignore[no-untyped-def]
    batch = prompts()
    pairs = [(batch[i], r) for i, g in enumerate(groups) for r in g]
    return [p for p, _ in pairs], [r for _, r in pairs]


def word_rollouts(policy: HFVideoVLM) -> list[Rollout]:
    """One 4-token and one 2-token answer made of ordinary words (+ EOS)."""
    ids = policy.tokenizer.convert_tokens_to_ids(["he", "is", "running", "cat"])
    eos = policy.tokenizer.eos_token_id
    return [Rollout(prompt_id="p0", index=0, text="", token_ids=[*ids[:3], eos]),
            Rollout(prompt_id="p1", index=0, text="", token_ids=[ids[3], eos])]


def perturb_lora(model, seed: int = 1) -> None:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def check_policy_contract(policy: HFVideoVLM) -> None:
    """What every family must do; shared by the per-family tests."""
    assert isinstance(policy, Policy)
    torch.manual_seed(0)
    groups = policy.generate(prompts(), 3, max_new_tokens=6)
    assert [len(g) for g in groups] == [3, 3]
    assert [r.index for r in groups[0]] == [0, 1, 2] and groups[1][0].prompt_id == "p1"
    for rollout in (r for g in groups for r in g):
        assert 1 <= len(rollout.token_ids) <= 6 and len(rollout.logprobs) == len(rollout.token_ids)
        assert all(np.isfinite(rollout.logprobs)) and all(lp <= 0 for lp in rollout.logprobs)
        assert not set(rollout.token_ids) & set(policy.suppressed)
        assert rollout.finished == (rollout.token_ids[-1] in policy.eos_ids)
        assert isinstance(rollout.text, str)
    texts = policy.complete(["describe the car", "is the cat red ?"], max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)

    # Recomputed log-probs equal the sampled ones, token for token.
    batch_prompts, rollouts = flatten(groups)
    out = policy.forward_responses(batch_prompts, rollouts, with_values=True, with_entropies=True)
    n, length = len(rollouts), max(len(r.token_ids) for r in rollouts)
    assert out["logprobs"].shape == out["mask"].shape == out["values"].shape == out["entropies"].shape == (n, length)
    vocab = policy.model.config.get_text_config().vocab_size
    assert torch.all((out["entropies"] > 0) == (out["mask"] > 0))  # positive on response tokens, 0 after
    assert float(out["entropies"].detach().max()) < float(torch.log(torch.tensor(float(vocab))))
    assert out["logprobs"].requires_grad
    for i, r in enumerate(rollouts):
        k = len(r.token_ids)
        assert out["mask"][i].sum().item() == k
        torch.testing.assert_close(out["logprobs"][i, :k].detach(), torch.tensor(r.logprobs), atol=1e-4, rtol=0)
    assert torch.all(out["values"] == 0)  # zero-initialised value head

    # Gradients reach the LoRA weights (B first: at init B = 0, so A's gradient is 0).
    (-(out["logprobs"].sum())).backward()
    lora = [p for name, p in policy.model.named_parameters() if "lora_B" in name]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    policy.model.zero_grad(set_to_none=True)

    # At init LoRA B = 0, so the reference (adapters off) is the same model.
    logprobs, mask = policy.logprobs(batch_prompts, rollouts)
    with policy.adapters_disabled():
        ref, _ = policy.logprobs(batch_prompts, rollouts)
    torch.testing.assert_close(logprobs, ref, atol=1e-6, rtol=0)


def test_llava_onevision_contract(policy):  # type: ignore[no-untyped-def]
    # 4 frames x ceil((16/4)/2)^2 pooled tokens + 1 newline per video.
    encoded = policy._encode(prompts()[0])
    video_id = policy.model.config.video_token_index
    assert encoded.ids.count(video_id) == 4 * 4 + 1
    assert encoded.video["pixel_values_videos"].shape == (4, 3, 16, 16)
    assert video_id in policy.suppressed and policy.model.config.image_token_index in policy.suppressed
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "language_model" in n for n in names)
    assert len(policy.trainable_parameters()) == len(names) and policy.value_head is None
    check_policy_contract(policy)
    # with_values added the value model: an adapter of its own (as many weights as the policy's) and a head
    assert len(policy.trainable_parameters()) == 2 * len(names) + 2


def test_placeholders_never_sampled_even_when_favoured(llava_dir):  # type: ignore[no-untyped-def]
    policy = build_cpu(llava_dir, lora_r=4, lora_alpha=8, n_frames=2, benchmark=FakeBenchmark())
    head = policy.model.get_output_embeddings()
    with torch.no_grad():  # make the placeholders overwhelmingly likely
        head.weight[policy.suppressed] = head.weight[policy.suppressed] * 0 + 5.0
    torch.manual_seed(0)
    groups = policy.generate(prompts(), 4, max_new_tokens=5, temperature=1.5)
    assert all(not set(r.token_ids) & set(policy.suppressed) for g in groups for r in g)


def test_greedy_top_p_and_complete(policy):  # type: ignore[no-untyped-def]
    a = policy.generate(prompts()[:1], 2, max_new_tokens=5, greedy=True)[0]
    assert a[0].token_ids == a[1].token_ids
    # Stored log-probs are those of the sampled distribution (temperature T, top-p aside),
    # recomputed by forward_responses at the same T.
    torch.manual_seed(3)
    b = policy.generate(prompts()[:1], 2, max_new_tokens=5, temperature=0.7, top_p=0.9)[0]
    with torch.no_grad():
        lp = policy.forward_responses(prompts()[:1] * 2, b, temperature=0.7)["logprobs"]
    for i, r in enumerate(b):
        torch.testing.assert_close(lp[i, : len(r.token_ids)], torch.tensor(r.logprobs), atol=1e-4, rtol=0)
    texts = policy.complete(["describe the car", "is the cat red ?"], max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_adapters_disabled_differs_after_training_and_save_roundtrip(llava_dir, tmp_path):  # type: ignore[no-untyped-def]
    policy = build_cpu(llava_dir, lora_r=4, lora_alpha=8, n_frames=4, benchmark=FakeBenchmark(), value_head=True)
    rollouts = word_rollouts(policy)
    perturb_lora(policy.model)
    with torch.no_grad():
        policy.value_head.bias.fill_(0.25)
    logprobs, mask = policy.logprobs(prompts(), rollouts)
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    with policy.adapters_disabled():
        ref, _ = policy.logprobs(prompts(), rollouts)
    assert not torch.allclose(logprobs, ref, atol=1e-4)
    after, _ = policy.logprobs(prompts(), rollouts)
    torch.testing.assert_close(after, logprobs)  # the context restored the adapter

    policy.policy_version = 7
    out_dir = str(tmp_path / "adapter")
    policy.save(out_dir)
    for name in ("adapter_config.json", "adapter_model.safetensors", "value_head.safetensors",
                 "tokenizer.json", "rlaif_policy.json"):
        assert os.path.isfile(os.path.join(out_dir, name)), name
    with open(os.path.join(out_dir, "adapter_config.json")) as f:
        assert json.load(f)["base_model_name_or_path"] == llava_dir

    # Keep training the saved adapter: same log-probs, same value head, same version.
    again = build_cpu(out_dir, new_adapter=False, n_frames=4, benchmark=FakeBenchmark())
    torch.testing.assert_close(again.logprobs(prompts(), rollouts)[0], logprobs, atol=1e-5, rtol=0)
    assert again.policy_version == 7 and float(again.value_head.bias.detach()) == 0.25
    assert any(p.requires_grad for p in again.model.parameters())

    # Merge the saved adapter (e.g. SFT) into the reference and start a fresh one.
    fresh = build_cpu(out_dir, new_adapter=True, lora_r=2, n_frames=4, benchmark=FakeBenchmark())
    merged, _ = fresh.logprobs(prompts(), rollouts)
    torch.testing.assert_close(merged, logprobs, atol=1e-4, rtol=0)
    with fresh.adapters_disabled():
        torch.testing.assert_close(fresh.logprobs(prompts(), rollouts)[0], logprobs, atol=1e-4, rtol=0)


def test_gradient_checkpointing_gives_the_same_gradients(llava_dir):  # type: ignore[no-untyped-def]
    grads = []
    for checkpointing in (False, True):
        policy = build_cpu(llava_dir, lora_r=4, n_frames=2, benchmark=FakeBenchmark(),
                              gradient_checkpointing=checkpointing)
        perturb_lora(policy.model)
        out = policy.forward_responses(prompts(), word_rollouts(policy))
        out["logprobs"].sum().backward()
        grads.append([p.grad.clone() for p in policy.trainable_parameters() if p.grad is not None])
        # Sampling still uses the KV cache and matches the scoring pass.
        torch.manual_seed(0)
        rollout = policy.generate(prompts()[:1], 1, max_new_tokens=4)[0][0]
        lp, _ = policy.logprobs(prompts()[:1], [rollout])
        torch.testing.assert_close(lp[0], torch.tensor(rollout.logprobs), atol=1e-4, rtol=0)
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_builtin_hook_registers_hf_vlm():
    import rlaif.plugins.policies as builtin_policies

    seen = {}
    builtin_policies.rlaif_register_policies(register=lambda name, target, description="": seen.update(
        {name: (target, description)}))
    assert seen["hf-vlm"][0] == "rlaif.plugins.policies.hf_vlm:build_hf_vlm" and seen["hf-vlm"][1]


def test_built_through_the_registry_with_benchmark_wiring(llava_dir):  # type: ignore[no-untyped-def]
    import rlaif.plugins.policies as builtin_policies
    from rlaif.core.registry import Registry

    registry = Registry()
    registry.add_plugin(builtin_policies, "builtin-policies")
    policy = registry.build("policy", "hf-vlm", {"path": llava_dir, "lora_r": 2, "n_frames": 2, "device": "cpu"},
                            benchmark=FakeBenchmark())
    assert policy.n_frames == 2 and len(policy.generate(prompts()[:1], 2, max_new_tokens=2)[0]) == 2


def test_sft_loss_and_clip_captions(policy):  # type: ignore[no-untyped-def]
    ids = policy.answer_ids("he is running")
    assert ids[-1] == policy.tokenizer.eos_token_id and len(ids) == 4
    loss = policy.sequence_loss(prompts(), ["he is running", "a cat"])
    out = policy.forward_responses(prompts(), [
        Rollout(prompt_id="p0", index=0, text="", token_ids=ids),
        Rollout(prompt_id="p1", index=0, text="", token_ids=policy.answer_ids("a cat")),
    ])
    per_answer = -(out["logprobs"].sum(1) / out["mask"].sum(1))
    torch.testing.assert_close(loss, per_answer.mean())
    loss.backward()
    policy.model.zero_grad(set_to_none=True)

    video = VideoRef(video_id="v9", path="v9.mp4", n_frames=16)
    captions = policy.describe(video, n_clips=2, max_new_tokens=3)
    assert len(captions) == 2
    first, second = (policy._video(video, clip).tensors["pixel_values_videos"] for clip in ((0, 8), (8, 16)))
    assert not torch.allclose(first, second)  # each caption saw its own clip

    class AllFrames:  # a benchmark without clip support: the policy samples the clip itself
        def frames(self, video, n_frames=None):  # type: ignore[no-untyped-def]
            return FakeBenchmark().frames(video, n_frames)

    policy.benchmark, policy._videos = AllFrames(), type(policy._videos)()
    try:
        torch.testing.assert_close(policy._video(video, (8, 16)).tensors["pixel_values_videos"], second)
    finally:
        policy.benchmark = FakeBenchmark()


def test_factory_errors(llava_dir, tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="adapter"):
        build_hf_vlm(llava_dir, new_adapter=False)
    policy = build_cpu(llava_dir, lora_r=2)
    with pytest.raises(RuntimeError, match="benchmark"):
        policy.generate(prompts(), 1, max_new_tokens=2)


def test_chat_template_places_the_video(llava_dir):  # type: ignore[no-untyped-def]
    policy = build_cpu(llava_dir, lora_r=2, n_frames=2, benchmark=FakeBenchmark())
    assert policy.render("what is he doing ?") == "USER: <video>\nwhat is he doing ?\nASSISTANT:"
    policy.chat_template = (
        "{% for m in messages %}USER : {% for c in m['content'] %}{% if c['type'] == 'video' %}<video>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %} ASSISTANT :"
    )
    assert policy.render("what ?") == "USER : <video>what ? ASSISTANT :"
    policy.chat_template = "{% for m in messages %}{{ m['content'][-1]['text'] }}{% endfor %}"
    assert policy.render("what ?") == "<video>\nwhat ?"


def two_turn_prompt(history: bool = True) -> Prompt:
    """The second turn of a VLM-RLAIF conversation, as video-qa's ``sft_examples`` gives it."""
    meta = {"history": [["what is the man doing ?", "he is running"]]} if history else {}
    return Prompt(prompt_id="conv0-t1", video=VideoRef(video_id="v0", path="v0.mp4"), question="is the dog red ?",
                  reference="no", qtype="conversation", meta=meta)


#: A role-aware template in the shape of LLaVA's and Qwen's: user and assistant turns, the
#: video where a user message has one.
ROLE_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }} : {% for c in m['content'] %}{% if c['type'] == 'video' %}"
    "<video>{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT :{% endif %}"
)


@pytest.mark.parametrize("template", [None, ROLE_TEMPLATE], ids=["fallback", "chat-template"])
def test_history_is_rendered_as_earlier_turns(llava_dir, template):  # type: ignore[no-untyped-def]
    """A later turn of a conversation is scored in its context: the first question and
    answer come before the second question, the video with the first question only, and
    the answer tokens alone are the target."""
    torch.set_num_threads(1)
    policy = build_cpu(llava_dir, lora_r=2, n_frames=2, benchmark=FakeBenchmark())
    policy.chat_template = template
    text = policy.render("is the dog red ?", history=[("what is the man doing ?", "he is running")])
    if template is None:
        assert text == ("USER: <video>\nwhat is the man doing ?\nASSISTANT: he is running\n"
                        "USER: is the dog red ?\nASSISTANT:")
    else:
        assert text == ("USER : <video>what is the man doing ? ASSISTANT : he is running "
                        "USER : is the dog red ? ASSISTANT :")

    with_history, alone = policy._encode(two_turn_prompt()), policy._encode(two_turn_prompt(history=False))
    video_id = policy.model.config.video_token_index
    assert with_history.ids.count(video_id) == alone.ids.count(video_id) == 2 * 4 + 1  # one video, not two
    decoded = policy.tokenizer.decode(with_history.ids)
    first_q, first_a, second_q = (decoded.index(t) for t in ("what is the man doing", "he is running",
                                                              "is the dog red"))
    assert decoded.index("<video>") < first_q < first_a < second_q
    tail = alone.ids[len(alone.ids) - alone.ids[::-1].index(video_id):]  # after the video: the question
    assert with_history.ids[-len(tail):] == tail
    assert "what" not in policy.tokenizer.decode(alone.ids)

    perturb_lora(policy.model)
    answer = policy.answer_ids("no")
    rollout = Rollout(prompt_id="conv0-t1", index=0, text="", token_ids=answer)
    out = policy.forward_responses([two_turn_prompt(), two_turn_prompt(history=False)], [rollout, rollout])
    assert out["mask"].tolist() == [[1.0] * len(answer)] * 2  # the response only, history or not
    assert not torch.allclose(out["logprobs"][0], out["logprobs"][1], atol=1e-5)
    # the SFT loss reads the same prompts: its target is the final answer alone
    loss = policy.sequence_loss([two_turn_prompt()], ["no"])
    torch.testing.assert_close(loss.detach(), -out["logprobs"][0].detach().mean())
    policy.model.zero_grad(set_to_none=True)


def test_qwen_patch_layout_matches_the_reference():
    """Two identical frames must flatten exactly as Qwen2-VL's image processor flattens one
    image (numpy transcription of its patchify: (gh, gw, mh, mw, C, tp, ph, pw))."""
    from rlaif.plugins.policies.hf_vlm import _QwenVLLayout

    class Cfg:
        model_type = "qwen2_vl"
        video_token_id, image_token_id = 5, 4

        class vision_config:  # noqa: N801
            patch_size, spatial_merge_size, temporal_patch_size = 2, 2, 2

    class Tok:
        def convert_ids_to_tokens(self, i):  # type: ignore[no-untyped-def]
            return "<|video_pad|>"

    layout = _QwenVLLayout(Cfg(), Tok(), {"image_mean": [0, 0, 0], "image_std": [1, 1, 1]}, 8 * 12)
    frame = np.random.default_rng(0).integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    inputs = layout.video_inputs(np.stack([frame, frame]), VideoRef(video_id="v", path="v"))
    assert inputs.tensors["video_grid_thw"].tolist() == [1, 4, 6]
    assert inputs.placeholder == "<|video_pad|>" * 6

    image = frame.transpose(2, 0, 1).astype(np.float32) / 255.0  # [C, H, W]
    p = m = 2
    patches = image.reshape(3, 4 // m, m, p, 6 // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
    patches = np.broadcast_to(patches[:, :, :, :, :, None], (*patches.shape[:5], 2, *patches.shape[5:]))
    expected = torch.from_numpy(patches.reshape(4 * 6, 3 * 2 * p * p).copy())
    torch.testing.assert_close(inputs.tensors["pixel_values_videos"], expected, atol=1e-6, rtol=0)


def test_smart_resize_rules():
    assert smart_resize(32, 32, 8, 64, 4096) == (32, 32)
    h, w = smart_resize(480, 640, 28, 128 * 28 * 28, 256 * 28 * 28)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 256 * 28 * 28


def save_qwen2_5_vl(path: str) -> str:
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = tiny_tokenizer(specials)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    text = tiny_qwen2_text(len(tokenizer), rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2],  # sums to head_dim / 2
    })
    config = transformers.Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(
            depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=4,
            spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=2, pad_token_id=1,
    )
    torch.manual_seed(0)
    transformers.Qwen2_5_VLForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_qwen2_5_vl_contract(tmp_path):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    path = save_qwen2_5_vl(str(tmp_path / "qwen"))
    policy = build_cpu(path, lora_r=4, lora_alpha=8, n_frames=3, benchmark=FakeBenchmark(24, 40),
                          max_frame_pixels=32 * 32)
    encoded = policy._encode(prompts()[1])
    grid = encoded.video["video_grid_thw"].tolist()
    assert grid[0] == 2 and grid[1] * grid[2] * 16 <= 32 * 32  # 3 frames padded to 4 -> t = 2
    assert encoded.ids.count(policy.model.config.video_token_id) == grid[0] * grid[1] * grid[2] // 4
    assert encoded.video["pixel_values_videos"].shape == (grid[0] * grid[1] * grid[2], 3 * 2 * 4 * 4)
    torch.testing.assert_close(encoded.video["second_per_grid_ts"], torch.tensor(2 / (3 / 8.0)))
    check_policy_contract(policy)
    perturb_lora(policy.model)
    batch = prompts()
    rollouts = word_rollouts(policy)
    with policy.adapters_disabled():
        ref, _ = policy.logprobs(batch, rollouts)
    assert not torch.allclose(policy.logprobs(batch, rollouts)[0], ref, atol=1e-4)


def save_smolvlm(path: str) -> str:
    specials = ["<image>", "<fake_token_around_image>", "<global-img>"]
    tokenizer = tiny_tokenizer(specials)
    config = transformers.SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=16, patch_size=4),
        text_config=dict(model_type="llama", **tiny_qwen2_text(len(tokenizer))),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2,
    )
    torch.manual_seed(0)
    transformers.SmolVLMForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_smolvlm_contract(tmp_path):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    path = save_smolvlm(str(tmp_path / "smol"))
    policy = build_cpu(path, lora_r=4, lora_alpha=8, n_frames=3, benchmark=FakeBenchmark())
    encoded = policy._encode(prompts()[0])
    # (16/4)^2 patches / 2^2 pixel shuffle = 4 image tokens per frame.
    assert encoded.ids.count(policy.model.config.image_token_id) == 3 * 4
    assert len(policy.suppressed) == 3
    check_policy_contract(policy)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_llava_onevision_contract_on_cuda(llava_dir):  # type: ignore[no-untyped-def]
    policy = build_hf_vlm(llava_dir, lora_r=4, n_frames=4, benchmark=FakeBenchmark(), dtype="float32")
    assert policy.device.type == "cuda"
    check_policy_contract(policy)


def test_entropies_are_over_the_distribution_the_policy_samples(policy, entropies_match_the_distribution):  # type: ignore[no-untyped-def]
    # placeholder (image/video) tokens are never sampled, so they carry no entropy either
    vocab = policy.model.config.get_text_config().vocab_size
    assert policy.suppressed
    support = [v for v in range(vocab) if v not in set(policy.suppressed)]
    entropies_match_the_distribution(policy, prompts()[0], support)


# -- visual features computed once ----------------------------------------------------
@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return save_qwen2_5_vl(str(tmp_path_factory.mktemp("qwen2_5_vl")))


def build_family(family: str, llava_dir: str, qwen_dir: str, **options):  # type: ignore[no-untyped-def]
    if family == "qwen":
        return build_cpu(qwen_dir, lora_r=4, lora_alpha=8, n_frames=4, benchmark=FakeBenchmark(24, 40),
                         max_frame_pixels=32 * 32, **options)
    return build_cpu(llava_dir, lora_r=4, lora_alpha=8, n_frames=4, benchmark=FakeBenchmark(), **options)


def vision_tower(policy: HFVideoVLM):  # type: ignore[no-untyped-def]
    inner = policy.model.get_base_model().model
    return getattr(inner, "visual", None) or inner.vision_tower


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_reused_visual_features_give_the_same_samples_and_logprobs(family, llava_dir, qwen_dir):  # type: ignore[no-untyped-def]
    policy = build_family(family, llava_dir, qwen_dir, value_head=True)
    perturb_lora(policy.model)
    assert policy.reuses_visual_features()
    results = {}
    for reuse in (True, False):
        policy.reuse_visual_features = reuse
        policy.clear_feature_cache()
        torch.manual_seed(0)
        groups = policy.generate(prompts(), 3, max_new_tokens=5)
        batch_prompts, rollouts = flatten(groups)
        out = policy.forward_responses(batch_prompts, rollouts, with_values=True, with_entropies=True)
        with policy.adapters_disabled():
            ref, _ = policy.logprobs(batch_prompts, rollouts)
        results[reuse] = (groups, out, ref)
    (groups, out, ref), (groups_off, out_off, ref_off) = results[True], results[False]
    assert [[r.token_ids for r in g] for g in groups] == [[r.token_ids for r in g] for g in groups_off]
    for a, b in zip((r for g in groups for r in g), (r for g in groups_off for r in g), strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
    for key in ("logprobs", "values", "entropies"):
        torch.testing.assert_close(out[key].detach(), out_off[key].detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ref, ref_off, atol=1e-5, rtol=0)
    assert not torch.allclose(out["logprobs"].detach(), ref, atol=1e-4)  # the adapter matters here
    # Gradients still reach the LoRA weights through the cached embeddings.
    out["logprobs"].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.trainable_parameters())


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_vision_tower_runs_once_per_video_per_step(family, llava_dir, qwen_dir):  # type: ignore[no-untyped-def]
    """G = 4 candidates of 2 prompts, then the update's passes (old, reference and new
    log-probs, with grad): the tower sees each video once, not once per row and pass."""
    policy = build_family(family, llava_dir, qwen_dir)
    calls: list[int] = []
    handle = vision_tower(policy).register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        def one_step() -> None:
            groups = policy.generate(prompts(), 4, max_new_tokens=4)
            batch_prompts, rollouts = flatten(groups)
            policy.logprobs(batch_prompts, rollouts)
            with policy.adapters_disabled():
                policy.logprobs(batch_prompts, rollouts)
            policy.forward_responses(batch_prompts, rollouts)["logprobs"].sum().backward()

        one_step()
        assert len(calls) == 2  # one per prompt's video
        per_video = calls[0]
        policy.clear_feature_cache()
        policy.reuse_visual_features = False
        calls.clear()
        one_step()
        # generation and every pass encode all 2 x 4 rows again
        assert sum(calls) == 4 * (2 * 4) * per_video
    finally:
        handle.remove()


def test_feature_cache_bytes_are_reported_and_bounded(llava_dir):  # type: ignore[no-untyped-def]
    policy = build_cpu(llava_dir, lora_r=2, n_frames=4, benchmark=FakeBenchmark())
    assert policy.feature_cache_bytes() == 0
    policy.generate(prompts(), 2, max_new_tokens=2)
    hidden = policy.model.config.text_config.hidden_size
    assert policy.feature_cache_bytes() == 2 * (4 * 4 + 1) * hidden * 4  # 2 videos x 17 tokens, float32
    policy.clear_feature_cache()
    assert policy.feature_cache_bytes() == 0

    # The cache keeps at most feature_cache_mb: here room for one video, the latest.
    one_video_mb = (4 * 4 + 1) * hidden * 4 / 2**20
    small = build_cpu(llava_dir, lora_r=2, n_frames=4, benchmark=FakeBenchmark(), feature_cache_mb=1.5 * one_video_mb)
    small.generate(prompts(), 2, max_new_tokens=2)
    assert len(small._features) == 1 and small.feature_cache_bytes() <= 1.5 * one_video_mb * 2**20

    # Bf16 autocast changes what the tower makes: kept apart from the float32 entries.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        policy.logprobs(prompts(), word_rollouts(policy))
    policy.logprobs(prompts(), word_rollouts(policy))
    assert len(policy._features) == 4


def test_no_reuse_when_the_tower_can_change(llava_dir):  # type: ignore[no-untyped-def]
    policy = build_cpu(llava_dir, lora_r=2, n_frames=2, benchmark=FakeBenchmark())
    assert policy.reuses_visual_features()
    vision_tower(policy).embeddings.patch_embedding.weight.requires_grad_(True)
    assert not policy.reuses_visual_features()
    policy.logprobs(prompts(), word_rollouts(policy))
    assert policy.feature_cache_bytes() == 0
    off = build_cpu(llava_dir, lora_r=2, n_frames=2, benchmark=FakeBenchmark(), feature_cache_mb=0)
    assert not off.reuses_visual_features()


# -- QLoRA -----------------------------------------------------------------------------
def test_4bit_quantization_is_refused_without_cuda(llava_dir, monkeypatch):  # type: ignore[no-untyped-def]
    from rlaif.core.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError) as info:
        build_hf_vlm(llava_dir, quantization="4bit")
    message = str(info.value)
    assert "\n" not in message and "CUDA" in message and "4bit" in message
    with pytest.raises(UsageError, match="4bit"):
        build_hf_vlm(llava_dir, quantization="3bit", device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_qlora_4bit_base_with_lora_on_cuda(qwen_dir):  # type: ignore[no-untyped-def]
    pytest.importorskip("bitsandbytes")
    policy = build_hf_vlm(qwen_dir, lora_r=4, n_frames=4, benchmark=FakeBenchmark(24, 40), max_frame_pixels=32 * 32,
                          quantization="4bit")
    assert getattr(policy.model.get_base_model(), "is_loaded_in_4bit", False)
    kinds = {type(m).__name__ for n, m in policy.model.named_modules() if "language_model" in n}
    assert "Linear4bit" in kinds
    assert policy.reuses_visual_features()
    torch.manual_seed(0)
    groups = policy.generate(prompts(), 2, max_new_tokens=4)
    batch_prompts, rollouts = flatten(groups)
    out = policy.forward_responses(batch_prompts, rollouts)
    for i, r in enumerate(rollouts):  # bf16 compute: sampled and recomputed agree loosely
        k = len(r.token_ids)
        torch.testing.assert_close(out["logprobs"][i, :k].detach().cpu(), torch.tensor(r.logprobs), atol=5e-2, rtol=0)
    perturb_lora(policy.model)
    policy.forward_responses(batch_prompts, rollouts)["logprobs"].sum().backward()
    lora = [p for name, p in policy.model.named_parameters() if "lora_" in name]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


def test_hf_vlm_declares_the_feature_cache_capability(policy):  # type: ignore[no-untyped-def]
    from rlaif.core.protocols import CachesVisualFeatures

    assert isinstance(policy, CachesVisualFeatures)
