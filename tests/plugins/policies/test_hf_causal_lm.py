"""hf-causal-lm: a tiny random-init Llama saved locally with a word-level tokenizer trained
in the test, then built through the factory like a downloaded checkpoint."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from rlaif.core.protocols import Policy  # noqa: E402
from rlaif.core.records import Prompt, Rollout, VideoRef  # noqa: E402
from rlaif.plugins.policies.hf_causal_lm import HFCausalLM, build_hf_causal_lm  # noqa: E402


def build_cpu(path: str, **options):  # type: ignore[no-untyped-def]
    return build_hf_causal_lm(path, **{"device": "cpu", "dtype": "float32", "lora_r": 4, "lora_alpha": 8, **options})


def prompts() -> list[Prompt]:
    video = VideoRef(video_id="none", path="")
    return [Prompt(prompt_id="p0", video=video, question="count to five :"),
            Prompt(prompt_id="p1", video=video, question="please count to ten and then stop now :")]


def perturb_lora(policy: HFCausalLM, seed: int = 1) -> None:
    """Non-zero LoRA B matrices, so the policy differs from its reference."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_trainable_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def flatten(groups):  # type: ignore[no-untyped-def]
    batch = prompts()
    pairs = [(batch[i], r) for i, g in enumerate(groups) for r in g]
    return [p for p, _ in pairs], [r for _, r in pairs]


def test_sampled_logprobs_equal_recomputed(llama_dir):  # type: ignore[no-untyped-def]
    policy = build_cpu(llama_dir)
    assert isinstance(policy, Policy)
    perturb_lora(policy)
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.9)):
        torch.manual_seed(0)
        groups = policy.generate(prompts(), 4, max_new_tokens=12, temperature=temperature, top_p=top_p)
        assert [len(g) for g in groups] == [4, 4]
        assert [r.index for r in groups[1]] == [0, 1, 2, 3] and groups[1][0].prompt_id == "p1"
        batch, rollouts = flatten(groups)
        out = policy.forward_responses(batch, rollouts, temperature=temperature)  # one temperature
        assert out["logprobs"].requires_grad and out["logprobs"].shape == out["mask"].shape
        for i, r in enumerate(rollouts):
            n = len(r.token_ids)
            assert n == len(r.logprobs) and out["mask"][i].sum() == n
            assert r.finished == (r.token_ids[-1] == policy.tokenizer.eos_token_id)
            assert r.finished or n == 12
            torch.testing.assert_close(out["logprobs"][i, :n], torch.tensor(r.logprobs), atol=1e-4, rtol=0)
    lengths = {len(r.token_ids) for r in rollouts}
    assert len(lengths) > 1, "expected rows of different lengths (some stopped at EOS)"
    # Greedy is deterministic; complete() gives text.
    a = policy.generate(prompts(), 1, max_new_tokens=6, greedy=True)
    b = policy.generate(prompts(), 1, max_new_tokens=6, greedy=True)
    assert [g[0].token_ids for g in a] == [g[0].token_ids for g in b]
    texts = policy.complete(["count to three :"], max_new_tokens=4)
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_folded_sampling_leaves_the_reference_untouched(llama_dir):  # type: ignore[no-untyped-def]
    policy = build_cpu(llama_dir)
    perturb_lora(policy)
    before = {n: (p, p.detach().clone()) for n, p in policy.model.named_parameters() if "base_layer" in n}
    runs = []
    for fold in (True, False):
        policy.fold_adapter = fold
        torch.manual_seed(3)
        runs.append(policy.generate(prompts(), 2, max_new_tokens=8))
    for folded, plain in zip(*runs, strict=True):
        for a, b in zip(folded, plain, strict=True):
            assert a.token_ids == b.token_ids
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
    after = dict(policy.model.named_parameters())
    assert all(after[n] is p and torch.equal(p, saved) for n, (p, saved) in before.items())
    with policy.adapters_disabled():  # sampling the reference itself is not folded
        policy.fold_adapter = True
        ref = policy.generate(prompts()[:1], 1, max_new_tokens=6, greedy=True)[0][0]
        lp, _ = policy.logprobs(prompts()[:1], [ref])
    torch.testing.assert_close(lp[0], torch.tensor(ref.logprobs), atol=1e-4, rtol=0)


def test_reference_and_trainable_parameters(llama_dir):  # type: ignore[no-untyped-def]
    policy = build_cpu(llama_dir)
    rollouts = [Rollout(prompt_id="p0", index=0, text="", token_ids=policy.tokenizer.convert_tokens_to_ids(
                    ["one", "two", "three", "<eos>"])),
                Rollout(prompt_id="p1", index=0, text="", token_ids=policy.tokenizer.convert_tokens_to_ids(["ten"]))]
    names = [n for n, _ in policy.named_trainable_parameters()]
    assert names and all("lora_" in n for n in names)
    assert len(policy.trainable_parameters()) == len(names) == 2 * 2 * 4  # A, B x 2 layers x q/k/v/o
    assert all(not p.requires_grad for n, p in policy.model.named_parameters() if "lora_" not in n)

    base = transformers.AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).eval()
    fresh, mask = policy.logprobs(prompts(), rollouts)
    assert mask.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    with policy.adapters_disabled():
        ref, _ = policy.logprobs(prompts(), rollouts)
    torch.testing.assert_close(fresh, ref, atol=1e-6, rtol=0)  # a fresh adapter is the identity
    with torch.no_grad():  # the reference is the checkpoint itself
        ids = policy._prompt_ids(prompts()[0].question) + rollouts[0].token_ids
        logits = base(input_ids=torch.tensor([ids])).logits[0, -5:-1]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(rollouts[0].token_ids)[:, None]).squeeze(-1)
    torch.testing.assert_close(ref[0], expected, atol=1e-5, rtol=0)

    perturb_lora(policy)
    trained, _ = policy.logprobs(prompts(), rollouts)
    with policy.adapters_disabled():
        torch.testing.assert_close(policy.logprobs(prompts(), rollouts)[0], ref, atol=1e-6, rtol=0)
    assert not torch.allclose(trained, ref, atol=1e-3)
    out = policy.forward_responses(prompts(), rollouts)
    (out["logprobs"].sum()).backward()
    assert all(p.grad is not None for p in policy.trainable_parameters())


def test_save_and_reload(llama_dir, tmp_path):  # type: ignore[no-untyped-def]
    policy = build_cpu(llama_dir, value_head=True)
    perturb_lora(policy)
    policy.policy_version = 3
    rollouts = [Rollout(prompt_id="p0", index=0, text="", token_ids=[5, 6, 2])] * 2
    logprobs, _ = policy.logprobs(prompts(), rollouts)
    values = policy.forward_responses(prompts(), rollouts, with_values=True)["values"]
    assert values.shape == logprobs.shape
    out = str(tmp_path / "adapter")
    policy.save(out)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "value_head.safetensors",
                 "rlaif_policy.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "adapter_config.json")) as f:
        assert json.load(f)["base_model_name_or_path"] == llama_dir
    again = build_cpu(out, new_adapter=False)
    torch.testing.assert_close(again.logprobs(prompts(), rollouts)[0], logprobs, atol=1e-6, rtol=0)
    assert again.policy_version == 3 and again.value_head is not None
    merged = build_cpu(out)  # the saved adapter becomes the reference; a fresh one on top
    with merged.adapters_disabled():
        torch.testing.assert_close(merged.logprobs(prompts(), rollouts)[0], logprobs, atol=1e-5, rtol=0)


def test_rl_policy_keeps_its_sft_adapter(llama_dir, tmp_path):  # type: ignore[no-untyped-def]
    """A policy built on an SFT adapter (merged, a fresh one on top) saves a copy of the
    merged one under merged/00/, and reloading the save gives the same log-probs: the RL
    result evaluates on top of its SFT, not the base."""
    torch.set_num_threads(1)
    sft = build_cpu(llama_dir)
    perturb_lora(sft, seed=1)
    sft.save(str(tmp_path / "sft"))
    rl = build_cpu(str(tmp_path / "sft"))
    perturb_lora(rl, seed=2)
    rl.save(str(tmp_path / "rl"))
    assert os.path.isfile(tmp_path / "rl" / "merged" / "00" / "adapter_model.safetensors")
    rollouts = [Rollout(prompt_id="p0", index=0, text="", token_ids=[5, 6, 2])] * 2
    expected, _ = rl.logprobs(prompts(), rollouts)
    again = build_cpu(str(tmp_path / "rl"), new_adapter=False)
    torch.testing.assert_close(again.logprobs(prompts(), rollouts)[0], expected, atol=1e-5, rtol=0)
    with sft.adapters_disabled():
        base, _ = sft.logprobs(prompts(), rollouts)
    assert not torch.allclose(base, expected, atol=1e-3)  # the check would catch a lost SFT adapter
    # Built for RL again, both adapters sit in the reference and a third trains on top.
    stacked = build_cpu(str(tmp_path / "rl"))
    assert len(stacked.merged_adapters) == 2
    with stacked.adapters_disabled():
        torch.testing.assert_close(stacked.logprobs(prompts(), rollouts)[0], expected, atol=1e-5, rtol=0)


def test_registered_and_built_through_the_registry(llama_dir):  # type: ignore[no-untyped-def]
    import rlaif.plugins.policies as builtin_policies
    from rlaif.core.registry import Registry

    registry = Registry()
    registry.add_plugin(builtin_policies, "builtin-policies")
    policy = registry.build("policy", "hf-causal-lm", {"path": llama_dir, "lora_r": 2, "device": "cpu"},
                            benchmark=object(), seed=1)
    assert isinstance(policy, HFCausalLM) and len(policy.generate(prompts()[:1], 2, max_new_tokens=2)[0]) == 2


def test_entropies_for_the_entropy_bonus(llama_dir, entropies_match_the_distribution):  # type: ignore[no-untyped-def]
    policy = build_cpu(llama_dir)
    perturb_lora(policy)
    entropies_match_the_distribution(policy, prompts()[0], range(policy.model.config.vocab_size))


def test_history_comes_first_as_plain_lines(llama_dir):  # type: ignore[no-untyped-def]
    """No chat template: the earlier turns of a conversation are plain lines, question then
    answer, before the question; only the answer is scored."""
    torch.set_num_threads(1)
    policy = build_cpu(llama_dir)
    video = VideoRef(video_id="none", path="")
    later = Prompt(prompt_id="c-t1", video=video, question="count to ten :",
                   meta={"history": [["count to five :", "one two three four five"]]})
    alone = Prompt(prompt_id="c-t1", video=video, question="count to ten :")
    assert policy.prompt_text(later) == "count to five :\none two three four five\ncount to ten :"
    assert policy.prompt_text(alone) == "count to ten :"
    ids = policy._prompt_ids(policy.prompt_text(later))
    words = policy.tokenizer.convert_ids_to_tokens(ids)
    assert words.index("five") < words.index("one") < words.index("ten")

    perturb_lora(policy)
    answer = policy.answer_ids("six seven")
    rollout = Rollout(prompt_id="c-t1", index=0, text="", token_ids=answer)
    out = policy.forward_responses([later, alone], [rollout, rollout])
    assert out["mask"].tolist() == [[1.0] * len(answer)] * 2
    assert not torch.allclose(out["logprobs"][0], out["logprobs"][1], atol=1e-5)
    loss = policy.sequence_loss([later], ["six seven"])
    torch.testing.assert_close(loss.detach(), -out["logprobs"][0].detach().mean())
