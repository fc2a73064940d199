"""The language half of the embedded default policy: a byte-level BPE tokenizer trained on
the world's text and a tiny Llama-style causal LM pre-trained from scratch on that text.

Together they play the part of "the pretrained LLM" of a real video-language model
(VLM-RLAIF starts from Vicuna): the LM has read descriptions, questions and answers about
the world, but has never seen a video; :mod:`rlaif.plugins.policies.tiny_video_lm` adds the
frozen visual encoder, the projector and LoRA adapters on top. Both artefacts are saved in
Hugging Face formats (``tokenizer.json``; ``save_pretrained`` with safetensors), so the
rest of the toolkit treats them exactly like a downloaded model.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: Special tokens, in id order: ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3,
#: ``<video>`` = 4 (marks where visual tokens go; never produced as text).
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>", "<video>")

#: How a question and its answer read as plain text; the policy's prompt uses the same
#: words, so what the LM learned in pre-training carries over to SFT.
QA_TEMPLATE = "question: {question} answer:"


def train_world_tokenizer(texts: Iterable[str], path: str | Path, *, vocab_size: int = 1024) -> Any:
    """Train a byte-level BPE on ``texts`` and save it as ``tokenizer.json`` at ``path``.

    Byte-level so that any string round-trips exactly (judging prompts quote arbitrary
    answers); small because the world's vocabulary is small and every extra row of the
    embedding costs time on CPU. Returns the loaded ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return load_world_tokenizer(path)


def load_world_tokenizer(path: str | Path) -> Any:
    """Load ``tokenizer.json`` as a ``PreTrainedTokenizerFast`` with our special tokens."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"video_token": "<video>"},
    )
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_lm_config(vocab_size: int, *, hidden_size: int = 128, layers: int = 3, heads: int = 4,
                   intermediate_size: int = 256, max_positions: int = 512) -> Any:
    """A Llama config small enough to pre-train in well under a minute on two CPU cores."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


def new_tiny_lm(config: Any, seed: int = 0) -> Any:
    """A randomly initialised causal LM (eager attention: fastest for these sizes on CPU)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM._from_config(config, attn_implementation="eager")


def load_tiny_lm(path: str | Path) -> Any:
    from transformers import AutoModelForCausalLM

    with quiet_hf():
        return AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager")


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Hide transformers' per-file progress bars (loading a 4 MB model needs none)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def pretrain_tiny_lm(
    texts: Sequence[str],
    tokenizer: Any,
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 300,
    batch_size: int = 16,
    seq_len: int = 96,
    lr: float = 3e-3,
    config: Any = None,
    progress: bool = False,
) -> dict[str, float]:
    """Pre-train a tiny LM from scratch on ``texts`` (each one document) and save it to
    ``out_dir`` with ``save_pretrained``. Documents are wrapped as ``<bos> text <eos>`` and
    packed into ``seq_len`` windows; AdamW with linear warm-up and cosine decay.
    Returns ``{"loss_first", "loss_last", "seconds"}``."""
    import torch

    start = time.perf_counter()
    rng = random.Random(seed)
    docs = list(texts)
    rng.shuffle(docs)
    stream: list[int] = []
    for doc in docs:
        stream += [tokenizer.bos_token_id, *tokenizer(doc, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    while len(stream) < (seq_len + 1) * batch_size:
        stream = stream + stream
    data = torch.tensor(stream, dtype=torch.long)
    config = config or tiny_lm_config(len(tokenizer))
    model = new_tiny_lm(config, seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    from rich.progress import track

    for _ in track(range(steps), description="pre-training tiny LM", disable=not progress, transient=True):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=gen)
        windows = torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])  # [B, S+1]
        loss = model(input_ids=windows, labels=windows).loss  # HF shifts the labels itself
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    out_dir = Path(out_dir)
    with quiet_hf():
        model.save_pretrained(str(out_dir), safe_serialization=True)
    head = losses[: max(1, len(losses) // 20)]
    tail = losses[-max(1, len(losses) // 20) :]
    return {
        "loss_first": sum(head) / len(head),
        "loss_last": sum(tail) / len(tail),
        "seconds": time.perf_counter() - start,
    }
