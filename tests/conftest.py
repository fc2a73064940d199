"""Shared test setup: offline, single-threaded torch, and a tiny local Llama checkpoint."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):  # type: ignore[no-untyped-def]
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


WORDS = "count to one two three four five six seven eight nine ten : please now and then stop go".split()


def save_tiny_llama(path: str) -> str:
    """A random-init 2-layer Llama with a word-level tokenizer trained here, saved like a
    hub checkpoint (for the hf-causal-lm policy and the RL update tests)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                                     eos_token="<eos>")
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=None, eos_token_id=2, pad_token_id=1,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # make EOS likely enough that some rows finish early
        model.lm_head.weight[2] += 0.3 * model.model.norm.weight.sign() * model.lm_head.weight.abs().mean()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    return save_tiny_llama(str(tmp_path_factory.mktemp("tiny_llama")))


def _entropies_match_the_distribution(policy, prompt, support) -> None:  # type: ignore[no-untyped-def]
    """``forward_responses(..., with_entropies=True)`` at the first response position
    equals ``-sum_v p(v) log p(v)`` over the tokens the policy can emit (``support``),
    with every ``log p(v)`` got by scoring the one-token response ``v``: an independent
    route through the same policy."""
    import torch

    from rlaif.core.records import Rollout

    support = list(support)
    vocab = len(support)
    rollouts = [Rollout(prompt_id=prompt.prompt_id, index=i, text="", token_ids=[v], logprobs=[0.0])
                for i, v in enumerate(support)]
    with torch.no_grad():
        out = policy.forward_responses([prompt] * vocab, rollouts, with_entropies=True)
    logp = out["logprobs"][:, 0]  # [V]
    torch.testing.assert_close(torch.logsumexp(logp, 0), torch.tensor(0.0), atol=1e-4, rtol=0)  # all of V
    expected = -(logp.exp() * logp).sum()
    assert 0 < float(expected) < float(torch.log(torch.tensor(float(vocab))))
    torch.testing.assert_close(out["entropies"][:, 0], expected.expand(vocab), atol=1e-4, rtol=1e-4)
    assert out["entropies"].shape == out["mask"].shape


@pytest.fixture
def entropies_match_the_distribution():  # type: ignore[no-untyped-def]
    return _entropies_match_the_distribution
