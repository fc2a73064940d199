"""Any ``transformers`` text causal LM as an RL policy, trained through a LoRA adapter.

``HFCausalLM`` wraps an ``AutoModelForCausalLM`` checkpoint (local directory or hub id)
and exposes the Policy API of the video policies on text alone: the prompt is
``prompt.question`` tokenised as the tokenizer does by default (BOS where it adds one),
and the video is ignored. No chat template is applied; the earlier turns of a multi-turn
prompt (``meta["history"]``, ``[question, answer]`` pairs) come first as plain
alternating lines, question then answer, and the prompt's question is the last line
(:meth:`HFCausalLM.prompt_text`). It serves text baselines (e.g. the comparison with TRL in
``benchmarks/grpo_step.py``) and text judges (:meth:`HFCausalLM.complete`).

Sampling is a hand-written KV-cache loop rather than ``model.generate``: all
``len(prompts) * n`` rows go through the model together, one token per forward, and each
step's log-prob is read off the same logits that drew the token, so nothing is kept per
step but the sampled ids and their log-probs. The recorded log-probs are those of the
distribution sampled from, the policy at the sampling temperature T (top-p aside: the
rule of the ``Policy`` protocol), so they equal
:meth:`HFCausalLM.forward_responses` with ``temperature=T`` at the same weights (up to float rounding:
sampling runs with the adapter folded into copies of the weights) and serve directly as
``old_logprobs`` in a clipped objective. The model stays in eval mode (no dropout) for
the same reason. The reference policy is the same model with the adapter switched off.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rlaif.core.records import Prompt, Rollout
from rlaif.plugins.policies.hf_common import (
    PeftPolicyBase,
    answer_nll,
    empty_outputs,
    prompt_history,
    restore_merged_adapters,
    sampling_temperature,
    save_merged_adapters,
    token_entropies,
    value_adapter_active,
)

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
VALUE_HEAD_FILE = "value_head.safetensors"
POLICY_FILE = "rlaif_policy.json"
POLICY_FORMAT = "hf-causal-lm/1"


class HFCausalLM(PeftPolicyBase):
    """A transformers causal LM with a LoRA adapter, as a (text-only) Policy."""

    name = "hf-causal-lm"

    def __init__(self, model: Any, tokenizer: Any, *, value_head: bool | nn.Linear = False,
                 fold_adapter: bool = True) -> None:
        self._init_model(model, tokenizer, value_head)
        self.fold_adapter = fold_adapter
        self._prompt_cache: dict[str, list[int]] = {}

    def shard(self, wrap: Any) -> None:
        super().shard(wrap)
        self.fold_adapter = False  # folding swaps weights FSDP manages as shards

    @contextmanager
    def _adapter_folded(self) -> Iterator[None]:
        """For sampling: each LoRA linear's base weight swapped for a copy with ``B A * scale``
        added, adapters off. The decode loop then runs plain linears (no LoRA branch: about
        a tenth of a tiny model's decode time on CPU); copies rather than peft's in-place
        ``merge_adapter`` so the reference weights are never touched by rounding. Costs one
        copy of the adapted weights while sampling; off with ``fold_adapter=False``."""
        from peft.tuners.lora.layer import Linear as LoraLinear

        layers: list[Any] = [m for m in self.model.modules() if isinstance(m, LoraLinear)]
        if (not self.fold_adapter or not layers or any(m.disable_adapters or m.merged for m in layers)
                or any(m.use_dora.get(a, False) or m.lora_bias.get(a, False)
                       for m in layers for a in m.active_adapters)):
            yield
            return
        originals = []
        try:
            with torch.no_grad():
                for m in layers:
                    weight = m.base_layer.weight
                    folded = weight.detach().clone()
                    for adapter in m.active_adapters:
                        if adapter in m.lora_A:
                            folded += m.get_delta_weight(adapter)
                    m.base_layer.weight = nn.Parameter(folded, requires_grad=False)
                    originals.append((m, weight))
            with self.model.disable_adapter():
                yield
        finally:
            for m, weight in originals:
                m.base_layer.weight = weight

    # -- inputs ------------------------------------------------------------------------
    def _prompt_ids(self, text: str) -> list[int]:
        ids = self._prompt_cache.get(text)
        if ids is None:
            ids = list(self.tokenizer(text)["input_ids"])
            if len(self._prompt_cache) > 4096:
                self._prompt_cache.clear()
            self._prompt_cache[text] = ids
        return ids

    @staticmethod
    def prompt_text(prompt: Prompt) -> str:
        """The text the model continues: each earlier ``(question, answer)`` turn of
        ``meta["history"]`` as two lines, then the question."""
        return "\n".join([*(line for turn in prompt_history(prompt) for line in turn), prompt.question])

    def _batch(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        """Prompts left-padded so every response starts at column ``P``, responses
        right-padded to ``L`` -> (input_ids, attention_mask, position_ids, P, L), each
        ``[N, P + L]``; positions count real tokens only, as ``generate`` does."""
        width = max(len(p) for p in prompts)
        length = max((len(r) for r in responses), default=0) if responses is not None else 0
        ids = torch.full((len(prompts), width + length), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) : width] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p) : width] = 1
            if responses is not None and len(responses[row]):
                ids[row, width : width + len(responses[row])] = torch.tensor(list(responses[row]), dtype=torch.long)
                mask[row, width : width + len(responses[row])] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device), width, length

    @staticmethod
    def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Log-prob of ``targets`` ``[...]`` under ``logits / temperature`` ``[..., V]``."""
        logits = logits.float()
        if temperature != 1.0:
            logits = logits / temperature
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)

    # -- sampling ----------------------------------------------------------------------
    @torch.no_grad()
    def _sample(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 1.0,
                top_p: float = 1.0, greedy: bool = False) -> list[tuple[list[int], list[float], bool]]:
        """(response ids ending at the first EOS, their log-probs at ``temperature``,
        finished) per row; rows stop together once all have emitted EOS."""
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature}")
        with self._adapter_folded():
            tokens, logprobs, steps = self._decode_steps(prompts, max_new_tokens, temperature, top_p, greedy)
        tokens_l = tokens[:, :steps].cpu().tolist()
        logprobs_l = logprobs[:, :steps].cpu().tolist()
        results = []
        for row in range(len(prompts)):
            ends = [i for i, tok in enumerate(tokens_l[row]) if tok in self.eos_ids]
            end = ends[0] + 1 if ends else steps
            results.append((tokens_l[row][:end], logprobs_l[row][:end], bool(ends)))
        return results

    def _decode_steps(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float,
                      top_p: float, greedy: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The KV-cache loop: sampled ids ``[N, S]`` (pad after EOS), their log-probs
        ``[N, S]`` and ``S``, the number of steps taken."""
        ids, mask, positions, _, _ = self._batch(prompts)
        rows = len(prompts)
        eos = torch.tensor(self.eos_ids, device=self.device)
        tokens = torch.full((rows, max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        logprobs = torch.zeros((rows, max_new_tokens), device=self.device)
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        next_position = positions[:, -1:] + 1  # [N, 1]
        cache = None
        steps = 0
        for t in range(max_new_tokens):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                             use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[:, -1].float()  # [N, V]
            logp = torch.log_softmax(logits / sampling_temperature(temperature), dim=-1)  # the sampled distribution
            if greedy:
                token = logits.argmax(-1)
            else:
                probs = logp.exp()
                if top_p < 1.0:
                    probs = _top_p_filter(probs, top_p)
                token = torch.multinomial(probs, 1).squeeze(1)  # [N]
            token = token.masked_fill(done, self.pad_id)
            tokens[:, t] = token
            logprobs[:, t] = logp.gather(1, token[:, None]).squeeze(1)
            steps = t + 1
            done = done | torch.isin(token, eos)
            if t == max_new_tokens - 1 or self._all_done(done):
                break
            ids, positions = token[:, None], next_position
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            next_position = next_position + 1
        return tokens, logprobs, steps

    def generate(self, prompts: Sequence[Prompt], n: int = 1, *, max_new_tokens: int = 32,
                 temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False) -> list[list[Rollout]]:
        """``n`` candidates per prompt, all ``len(prompts) * n`` rows in one batch.
        ``token_ids`` are the response only, ending with EOS when the model stopped (then
        ``finished``); ``logprobs`` are per-token log-probs at ``temperature``."""
        if not prompts:
            return []
        rows = [self._prompt_ids(self.prompt_text(p)) for p in prompts for _ in range(n)]
        sampled = self._sample(rows, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                               greedy=greedy)
        return self._rollout_groups(prompts, n, sampled)

    def complete(self, texts: Sequence[str], max_new_tokens: int = 48, greedy: bool = True,
                 temperature: float = 1.0) -> list[str]:
        """Plain-text completions of ``texts`` (e.g. judging prompts)."""
        if not texts:
            return []
        sampled = self._sample([self._prompt_ids(t) for t in texts], max_new_tokens=max_new_tokens,
                               temperature=temperature, greedy=greedy)
        return [self._decode(tokens) for tokens, _, _ in sampled]

    # -- scoring -----------------------------------------------------------------------
    def forward_responses(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout], *, with_values: bool = False,
                          with_entropies: bool = False, temperature: float = 1.0) -> dict[str, torch.Tensor]:
        """Teacher-forced log-probs of ``rollouts[i]`` given ``prompts[i]`` (with grad).

        Returns ``logprobs`` ``[N, L]``, ``mask`` ``[N, L]`` (float, 1 on response tokens)
        and, with ``with_values``, ``values`` ``[N, L]``: the value model (value adapter on,
        a forward of its own) on the hidden state that predicts each token; with ``with_entropies``, ``entropies`` ``[N, L]``: the
        policy's entropy at each response position."""
        if len(prompts) != len(rollouts):
            raise ValueError(f"{len(prompts)} prompts for {len(rollouts)} rollouts; pass one prompt per rollout")
        return self._score([self._prompt_ids(self.prompt_text(p)) for p in prompts], [list(r.token_ids) for r in rollouts],
                           with_values=with_values, with_entropies=with_entropies, temperature=temperature)

    def _score(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *,
               with_values: bool = False, with_entropies: bool = False, temperature: float = 1.0
               ) -> dict[str, torch.Tensor]:
        ids, mask, positions, width, length = self._batch(prompts, responses)
        response_mask = mask[:, width:].float()  # [N, L]
        if length == 0:
            return empty_outputs(len(prompts), response_mask, with_values=with_values, with_entropies=with_entropies)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                         logits_to_keep=length + 1)
        # Kept logits sit at positions P-1 .. P+L-1; position P-1+t predicts response token t.
        logprobs = self.token_logprobs(out.logits[:, :-1], ids[:, width:], temperature) * response_mask  # [N, L]
        result = {"logprobs": logprobs, "mask": response_mask}
        if with_entropies:
            result["entropies"] = token_entropies(out.logits[:, :-1], temperature) * response_mask
        if with_values:  # the value model: its own adapter on the same frozen base
            head = self.add_value_head()
            with value_adapter_active(self.model):
                critic = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                                    logits_to_keep=1, output_hidden_states=True)
            hidden = critic.hidden_states[-1][:, width - 1 : width - 1 + length]  # [N, L, H]
            result["values"] = head(hidden.to(head.weight.dtype)).squeeze(-1) * response_mask
        return result

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of a target answer as the policy would produce it, then EOS."""
        return [*self._text_ids(" " + answer.strip()), self.eos_ids[0]]

    def sequence_loss(self, prompts: Sequence[Prompt], answers: Sequence[str], reduction: str = "sequence"
                      ) -> torch.Tensor:
        """Cross-entropy of ``answer + EOS`` given each prompt (SFT): per-answer token
        mean averaged over answers (``"sequence"``), or mean over all tokens (``"token"``)."""
        out = self._score([self._prompt_ids(self.prompt_text(p)) for p in prompts], [self.answer_ids(a) for a in answers])
        return answer_nll(out, reduction)

    def last_hidden_states(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[int]]) -> torch.Tensor:
        """``LastHiddenState``: the final hidden state ``[N, H]`` (with grad, active
        adapter on) of each response's last token, for a reward model's scalar head."""
        if any(not len(r) for r in responses):
            raise ValueError("every response needs at least one token")
        ids, mask, positions, width, _ = self._batch([self._prompt_ids(self.prompt_text(p)) for p in prompts], responses)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                         logits_to_keep=1, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # [N, P + L, H]
        last = torch.tensor([width + len(r) - 1 for r in responses], device=hidden.device)  # [N]
        return hidden[torch.arange(len(responses), device=hidden.device), last]  # [N, H]

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> None:
        """A peft adapter directory (``adapter_config.json``, ``adapter_model.safetensors``)
        plus the tokenizer, the value head (if any) and this wrapper's settings; load it
        again with ``build_hf_causal_lm(directory, new_adapter=False)``."""
        from safetensors.torch import save_file

        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        self.model.save_pretrained(directory, selected_adapters=[self.model.active_adapter])  # not the critic
        self.tokenizer.save_pretrained(directory)
        if self.value_head is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in self.value_head.state_dict().items()}
            save_file(state, os.path.join(directory, VALUE_HEAD_FILE))
        save_merged_adapters(directory, self.merged_adapters)  # e.g. the SFT adapter under an RL one
        with open(os.path.join(directory, POLICY_FILE), "w", encoding="utf-8") as f:
            json.dump({"format": POLICY_FORMAT, "merged_adapters": len(self.merged_adapters),
                       "policy_version": self.policy_version, "value_head": self.value_head is not None}, f, indent=2)


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p``."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # always keeps the top token
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return filtered / filtered.sum(-1, keepdim=True)


def _read_json(path: str, name: str) -> dict[str, Any]:
    """A JSON file of a local directory or (cached / online) hub repo; ``{}`` if absent."""
    if os.path.isdir(path):
        local = os.path.join(path, name)
        resolved: str | None = local if os.path.isfile(local) else None
    else:
        try:
            from transformers.utils import cached_file

            resolved = cached_file(path, name, _raise_exceptions_for_missing_entries=False,
                                   _raise_exceptions_for_connection_errors=False)
        except Exception:
            resolved = None
    if not resolved:
        return {}
    with open(resolved, encoding="utf-8") as f:
        return dict(json.load(f))


def _has_tokenizer(path: str) -> bool:
    if not os.path.isdir(path):
        return True
    return any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json"))


def build_hf_causal_lm(
    path: str,
    lora_r: int = 16,
    lora_alpha: int = 32,
    seed: int = 0,
    new_adapter: bool = True,
    value_head: bool = False,
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS,
    lora_dropout: float = 0.0,
    dtype: str = "auto",
    device: str = "auto",
    fold_adapter: bool = True,
) -> HFCausalLM:
    """Load a causal LM (local directory or hub id) and wrap it in a fresh LoRA adapter.

    ``path`` may also be an adapter directory written by :meth:`HFCausalLM.save` (or any
    peft adapter): its base model is loaded from ``base_model_name_or_path``. Then
    ``new_adapter=True`` merges that adapter into the weights (it becomes the reference,
    e.g. an SFT adapter) and adds a fresh one; ``new_adapter=False`` keeps training it.
    Adapters merged earlier are kept under ``merged/`` by :meth:`HFCausalLM.save` and
    merged back first, so an RL result loads on top of its SFT adapter, not the base.
    ``dtype="auto"`` is bfloat16 on CUDA and float32 on the CPU. ``fold_adapter`` samples
    with the adapter folded into copies of the adapted weights (faster decoding, one extra
    copy of those weights in memory while sampling)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch.manual_seed(seed)
    adapter_config = _read_json(path, "adapter_config.json")
    base_path = str(adapter_config.get("base_model_name_or_path") or path) if adapter_config else path
    if not adapter_config and not new_adapter:
        raise ValueError(f"new_adapter=False needs a saved adapter directory, and {path!r} has no adapter_config.json")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    torch_dtype = (torch.bfloat16 if device.startswith("cuda") else torch.float32) if dtype == "auto" \
        else getattr(torch, dtype)
    model: Any = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype, device_map=device)
    old = model.generation_config  # sampling settings come from each call, never the checkpoint
    model.generation_config = GenerationConfig(bos_token_id=old.bos_token_id, eos_token_id=old.eos_token_id,
                                               pad_token_id=old.pad_token_id)
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path if _has_tokenizer(path) else base_path)

    saved_head: nn.Linear | None = None
    saved: dict[str, Any] = {}
    with warnings.catch_warnings():  # peft asks transformers a deprecated question
        warnings.simplefilter("ignore", FutureWarning)
        model, merged = restore_merged_adapters(model, path, adapter_config, new_adapter)
        if adapter_config and not new_adapter:
            model = PeftModel.from_pretrained(model, path, is_trainable=True)
            saved = _read_json(path, POLICY_FILE)
            value_file = os.path.join(path, VALUE_HEAD_FILE)
            if os.path.isfile(value_file):
                from safetensors.torch import load_file

                saved_head = nn.Linear(int(model.config.get_text_config().hidden_size), 1)
                saved_head.load_state_dict(load_file(value_file))
        else:
            if adapter_config:  # e.g. an SFT adapter: it becomes part of the reference weights
                model = PeftModel.from_pretrained(model, path).merge_and_unload()
            lora = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias="none",
                              target_modules=list(lora_targets), task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
    policy = HFCausalLM(model, tokenizer, value_head=saved_head if saved_head is not None else value_head,
                        fold_adapter=fold_adapter)
    policy.policy_version = int(saved.get("policy_version", 0))
    policy.merged_adapters = merged
    return policy
