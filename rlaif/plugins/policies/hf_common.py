"""What every transformers-backed policy shares (``hf-causal-lm``, ``hf-vlm``): the
LoRA-adapted model kept in eval mode, the value model (its own LoRA adapter and a
zero-initialised head), the trainable
parameters, device moves, the reference policy as "adapter off", decoding, the
assembly of sampled rows into rollout groups, the copies of merged adapters a saved
policy keeps so that it loads on its own, and the earlier turns of a multi-turn prompt."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rlaif.core.records import Prompt, Rollout

#: Name of the critic's LoRA adapter beside the policy's (peft's ``"default"``).
VALUE_ADAPTER = "value"
#: Where a saved policy keeps copies of the adapters merged into its reference weights
#: (an SFT adapter under an RL one), in merge order, so the directory loads on its own.
MERGED_DIR = "merged"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


# -- merged adapters ---------------------------------------------------------------------
# A policy built on a saved adapter with ``new_adapter=True`` merges that adapter into its
# weights and trains a fresh one; saving only the fresh one (whose config names the base
# model) would lose the merged one, so a save keeps a copy of each under ``merged/NN/``
# and a load merges them back, in order, before attaching the saved adapter.
def adapter_files(path: str) -> dict[str, bytes]:
    """The peft adapter saved in directory ``path`` (file name -> bytes)."""
    out = {}
    for name in ADAPTER_FILES:
        with open(os.path.join(path, name), "rb") as f:
            out[name] = f.read()
    return out


def merged_adapters(path: str) -> list[dict[str, bytes]]:
    """The adapters a saved policy at ``path`` keeps under ``merged/``, in merge order."""
    root = os.path.join(path, MERGED_DIR)
    if not os.path.isdir(root):
        return []
    return [adapter_files(os.path.join(root, d)) for d in sorted(os.listdir(root))]


def merge_adapter_files(model: Any, files: dict[str, bytes]) -> Any:
    """``model`` with the adapter in ``files`` merged into its weights."""
    import tempfile

    from peft import PeftModel

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        return PeftModel.from_pretrained(model, tmp).merge_and_unload()


def restore_merged_adapters(model: Any, path: str, adapter_config: dict[str, Any], new_adapter: bool
                            ) -> tuple[Any, list[dict[str, bytes]]]:
    """Merge into ``model`` the adapters the saved policy at ``path`` was trained on top
    of; returns the model and the list the new policy must keep (plus ``path``'s own
    adapter when ``new_adapter`` merges it too). Not for a plain base model (no adapter)."""
    if not adapter_config:
        return model, []
    merged = merged_adapters(path)
    for files in merged:
        model = merge_adapter_files(model, files)
    if new_adapter:
        merged.append(adapter_files(path))
    return model, merged


def save_merged_adapters(directory: str, merged: Sequence[dict[str, bytes]]) -> None:
    """Write ``merged`` under ``directory/merged/NN/`` (see :func:`merged_adapters`)."""
    for k, files in enumerate(merged):
        target = os.path.join(directory, MERGED_DIR, f"{k:02d}")
        os.makedirs(target, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(target, name), "wb") as f:
                f.write(data)


def add_value_adapter(model: Any) -> None:
    """Give a peft model a second LoRA adapter for PPO's value model (idempotent): the
    policy adapter's config (rank, alpha, targets), trainable, but not active. As in
    VLM-RLAIF the critic is a model of its own beside the actor: values are computed
    with this adapter on (:func:`value_adapter_active`), so the value loss moves only it
    and the head, and the policy loss never reaches it."""
    import copy

    if VALUE_ADAPTER in model.peft_config:
        return
    trainable = [p for p in model.parameters() if p.requires_grad]
    config = copy.deepcopy(model.peft_config[model.active_adapter])
    config.inference_mode = False
    model.add_adapter(VALUE_ADAPTER, config)
    for p in trainable + value_adapter_parameters(model):  # peft leaves an inactive adapter frozen
        p.requires_grad_(True)


def trainable_lora_parameters(model: Any) -> list[tuple[str, nn.Parameter]]:
    """The peft model's trainable weights: those requiring grad, and the value adapter's
    whatever peft's flags say (toggling adapters, e.g. for the reference policy, freezes
    every adapter but the active one), so the optimizer and checkpoints see one set."""
    value = {id(p) for p in value_adapter_parameters(model)}
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad or id(p) in value]


def value_adapter_parameters(model: Any) -> list[nn.Parameter]:
    """The value adapter's LoRA weights (empty before :func:`add_value_adapter`)."""
    return [p for name, p in model.named_parameters() if f".{VALUE_ADAPTER}." in name and "lora_" in name]


@contextmanager
def value_adapter_active(model: Any) -> Iterator[None]:
    """The value adapter switched on in place of the policy's. peft's ``set_adapter``
    also freezes every inactive adapter; the trainable set is put back, so the optimizer's
    parameters (and checkpoints) do not depend on which adapter happens to be on."""
    policy = model.active_adapter
    trainable = [p for _, p in trainable_lora_parameters(model)]
    model.set_adapter(VALUE_ADAPTER)
    for p in trainable:
        p.requires_grad_(True)
    try:
        yield
    finally:
        model.set_adapter(policy)
        for p in trainable:  # still True when the backward pass reaches the value adapter
            p.requires_grad_(True)


class PeftPolicyBase:
    """Base of the transformers policies. Subclasses call :meth:`_init_model` first."""

    model: Any
    tokenizer: Any

    def _init_model(self, model: Any, tokenizer: Any, value_head: bool | nn.Linear) -> None:
        self.model = model.eval()  # no dropout: sampled and recomputed log-probs must agree
        self.tokenizer = tokenizer
        self.policy_version = 0  # optimizer steps taken; stamped on every rollout
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.hidden_size = int(model.config.get_text_config().hidden_size)
        #: the adapters merged into the reference weights, oldest first (file name -> bytes)
        self.merged_adapters: list[dict[str, bytes]] = []
        self.value_head: nn.Linear | None = None
        if isinstance(value_head, nn.Linear):
            self.value_head = value_head.to(self.device)
        if value_head is not False:
            self.add_value_head()
        self.eos_ids = eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])

    # -- parameters and modes ----------------------------------------------------------
    def add_value_head(self) -> nn.Linear:
        """The value model (``ValueModel``): a LoRA adapter of its own
        (:func:`add_value_adapter`) and a scalar head on its last hidden state,
        zero-initialised as in VLM-RLAIF's PPO (values start at 0 and learn from returns)
        unless the loop loads a reward model's head into it. Idempotent."""
        if self.value_head is None:
            head = nn.Linear(self.hidden_size, 1)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            self.value_head = head.to(self.device)
        add_value_adapter(self.model)
        return self.value_head

    def values(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout]) -> torch.Tensor:
        """``[N, L]`` values of each response position from the value model (with grad)."""
        return self.forward_responses(prompts, rollouts, with_values=True)["values"]

    def value_parameters(self) -> list[nn.Parameter]:
        """The value model's share of :meth:`trainable_parameters` (adapter and head)."""
        head = list(self.value_head.parameters()) if self.value_head is not None else []
        return value_adapter_parameters(self.model) + head

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA weights, and the value head if any."""
        params = [p for _, p in trainable_lora_parameters(self.model)]
        return params + (list(self.value_head.parameters()) if self.value_head is not None else [])

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        named = [("model." + n, p) for n, p in trainable_lora_parameters(self.model)]
        if self.value_head is not None:
            named += [("value_head." + n, p) for n, p in self.value_head.named_parameters()]
        return named

    def to(self, device: Any) -> Any:
        self.device = torch.device(device)
        self.model.to(self.device)
        if self.value_head is not None:
            self.value_head.to(self.device)
        return self

    def train(self, mode: bool = True) -> Any:
        # The model stays in eval mode (no dropout), so sampling and scoring see the same
        # function; subclasses switch training-only features (checkpointing) per pass.
        return self

    def eval(self) -> Any:
        return self.train(False)

    def shard(self, wrap: Any) -> None:
        """``Shardable``: the transformers model's own block classes (``_no_split_modules``:
        decoder layers, vision blocks) each sharded, the value head, then the model under
        the peft wrapper, whose forward ``generate`` and every pass run."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        blocks = set(getattr(base, "_no_split_modules", None) or [])
        for module in [m for m in base.modules() if type(m).__name__ in blocks]:
            wrap(module)
        if self.value_head is not None:
            wrap(self.value_head)
        wrap(base)
        self.lockstep = True

    def _all_done(self, done: torch.Tensor) -> bool:
        """Whether decoding can stop: every row done, on every rank once sharded."""
        finished = bool(done.all())
        if not getattr(self, "lockstep", False):
            return finished
        from rlaif.train.sharding import all_ranks_done

        return all_ranks_done(finished, self.device)

    @contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The frozen reference policy: the same model with the LoRA adapter switched off."""
        with self.model.disable_adapter():
            yield

    # -- text, groups, scores ------------------------------------------------------------
    def _text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens), skip_special_tokens=True)).strip()

    def _rollout_groups(self, prompts: Sequence[Prompt], n: int,
                        sampled: Sequence[tuple[list[int], list[float], bool]]) -> list[list[Rollout]]:
        """``n`` sampled rows per prompt (row ``i * n + j`` is candidate ``j`` of prompt
        ``i``) as rollout groups stamped with the current policy version."""
        groups: list[list[Rollout]] = []
        for i, prompt in enumerate(prompts):
            group = []
            for j in range(n):
                tokens, logprobs, finished = sampled[i * n + j]
                group.append(Rollout(
                    prompt_id=prompt.prompt_id, index=j, text=self._decode(tokens), token_ids=tokens,
                    logprobs=logprobs, policy_version=self.policy_version, finished=finished,
                ))
            groups.append(group)
        return groups

    def forward_responses(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout], *, with_values: bool = False,
                          with_entropies: bool = False, temperature: float = 1.0) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def logprobs(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout]) -> tuple[torch.Tensor, torch.Tensor]:
        """No-grad ``(logprobs [N, L], mask [N, L])``; see :meth:`forward_responses`."""
        out = self.forward_responses(prompts, rollouts)
        return out["logprobs"], out["mask"]


def prompt_history(prompt: Prompt) -> tuple[tuple[str, str], ...]:
    """The earlier ``(question, answer)`` turns of ``prompt``'s conversation, oldest first:
    ``meta["history"]`` as the video-qa benchmark writes it for a later turn of a
    VLM-RLAIF conversation (``[[question, answer], ...]``); empty for a single question."""
    turns = prompt.meta.get("history") or ()
    out = []
    for turn in turns:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise ValueError(f"prompt {prompt.prompt_id!r}: meta['history'] must be [question, answer] text pairs, "
                             f"got {turn!r:.60}")
        out.append((turn[0], turn[1]))
    return tuple(out)


def empty_outputs(rows: int, mask: torch.Tensor, *, with_values: bool, with_entropies: bool) -> dict[str, torch.Tensor]:
    """What ``forward_responses`` returns when every response is empty: ``[N, 0]`` tensors."""
    empty = torch.zeros((rows, 0), device=mask.device)
    extra = (["values"] if with_values else []) + (["entropies"] if with_entropies else [])
    return {"logprobs": empty, "mask": mask, **{k: empty for k in extra}}


def sampling_temperature(temperature: float) -> float:
    """The temperature whose log-probs a rollout records: the sampling one, or 1 where
    greedy decoding is asked with a non-positive one (any scale gives the same argmax)."""
    return float(temperature) if temperature > 0 else 1.0


def token_entropies(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the policy at each position, ``[..., V]`` logits -> ``[...]`` (float32),
    for a loss's entropy bonus: ``-sum p log p`` with ``p = softmax(logits / T)``. Tokens
    masked out with ``-inf`` count as p = 0."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp.clamp_min(torch.finfo(logp.dtype).min)).sum(-1)


def answer_nll(scored: dict[str, torch.Tensor], reduction: str = "sequence") -> torch.Tensor:
    """SFT cross-entropy from teacher-forced ``logprobs``/``mask`` ``[N, L]``: each answer's
    token mean averaged over answers (``"sequence"``: a one-word answer weighs as much as
    a description), or the mean over all tokens (``"token"``)."""
    nll, mask = -scored["logprobs"], scored["mask"]  # [N, L]
    if reduction == "token":
        return (nll * mask).sum() / mask.sum().clamp(min=1.0)
    return ((nll * mask).sum(1) / mask.sum(1).clamp(min=1.0)).mean()


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every end-of-sequence id the generation config, model config or tokenizer names."""
    ids: list[int] = []
    for source in (getattr(model, "generation_config", None), model.config.get_text_config(), tokenizer):
        value = getattr(source, "eos_token_id", None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    if not ids:
        raise ValueError("the model and tokenizer define no eos token")
    return ids
