"""The ``tiny-video-lm`` policy: the embedded default video-language model.

The shape of VLM-RLAIF's model at toy scale (methods.md §2): a frozen visual encoder
(default ``tiny-objects``: one token per object per frame; or ``tiny-conv``: Video-ChatGPT
pooled patch tokens; features cached per video) -> a projector (Linear, ReLU, Linear) ->
a causal LM fed through ``inputs_embeds``, fine-tuned with LoRA adapters (default r = 32,
alpha = 32 on q/k/v/o). A prompt reads::

    <bos> question: {question} [visual tokens] answer:

and the response is the answer's tokens followed by ``<eos>``. ``prompt.meta
["frame_range"] = [start, stop)`` restricts the frames to one clip (clip captions) and
``prompt.meta["frame_jitter"]`` picks a randomised frame sampling (SFT augmentation).
Text-only requests (:meth:`TinyVideoLM.complete`, e.g. judging) drop the visual tokens.

Reference policy. ``adapters_disabled()`` turns the LoRA adapters off (peft
``disable_adapter``). For RL the reference must be the SFT model, so loading an SFT
checkpoint with ``new_adapter=True`` (the default) merges its adapter into the LM weights
(``merge_and_unload``), freezes its projector, and attaches a *fresh* zero-initialised
adapter for RL: with adapters disabled the policy is then exactly the SFT policy, and at
step 0 the RL policy equals it too. ``train_projector=True`` lets RL train the projector as
well (where the visual features meet the LM); the SFT projector is then kept, frozen, as
the reference's, so ``adapters_disabled()`` is still exactly the SFT policy. A policy built
from the pre-trained base (for SFT) has a trainable projector, so its "reference" there is
base LM + current projector.

Log-probs. :meth:`generate` records, for each sampled token, its log-probability under
the temperature-scaled policy, ``log_softmax(logits / temperature)``; top-p filtering
changes which tokens can be drawn but not the recorded log-probs. Pass the same
``temperature`` to :meth:`forward_responses` to recompute them (1.0 by default, which is
what RL should use).

Checkpoints are Hugging Face formats: ``adapter/`` (peft), ``projector.safetensors``,
``value_head.safetensors`` (if any), ``lm/`` (the base LM, adapters excluded, merged
adapters included), ``encoder/``, ``tokenizer.json`` and ``policy.json``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from rlaif.core.cache import cache_root, cached_build, fetch_prebuilt
from rlaif.core.errors import UsageError
from rlaif.core.records import Prompt, Rollout, VideoRef
from rlaif.plugins.encoders.tiny_conv import (
    TinyConvEncoder,
    cached_tiny_conv,
    default_benchmark,
    labelled_fingerprint,
)
from rlaif.plugins.policies.hf_common import (
    add_value_adapter,
    empty_outputs,
    token_entropies,
    trainable_lora_parameters,
    value_adapter_active,
    value_adapter_parameters,
)
from rlaif.plugins.policies.tiny_lm import (
    QA_TEMPLATE,
    load_tiny_lm,
    load_world_tokenizer,
    pretrain_tiny_lm,
    quiet_hf,
    train_world_tokenizer,
)

#: Bumped when the base recipe (tokenizer, LM, pre-training) changes; invalidates caches.
BASE_RECIPE = "tiny-video-lm-base/3"
POLICY_FORMAT = "tiny-video-lm/1"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
FRAME_CACHE_VIDEOS = 256  # decoded videos kept in memory (~120 kB each at 32x32)
#: The prompt around the visual tokens: ``<bos> question: {q} [visual tokens] answer:``.
#: Ours: the visual tokens come after the question so that, in a causal LM, they can
#: attend to it (LLaVA puts the image first; in our tiny runs the two orders scored
#: within noise). The words match the LM's pre-training text.
QUESTION_TEMPLATE = "question: {question}"
ANSWER_CUE = " answer:"
#: The captioning instruction of VLM-RLAIF's context-aware judging.
DESCRIBE_QUESTION = "Describe this video in detail."

FrameSource = Callable[[VideoRef], Any]


def sample_indices(n_total: int, n_frames: int, frame_range: Sequence[int] | None = None,
                   jitter: int | None = None) -> np.ndarray:
    """``n_frames`` indices spread uniformly (``linspace``, rounded) over the video, or
    over ``frame_range = (start, stop)`` (a clip); indices repeat in short ranges. With
    ``jitter`` (a seed), one random index from each of ``n_frames`` equal segments
    instead (TSN-style sampling, used to augment SFT)."""
    lo, hi = (0, n_total) if frame_range is None else (max(0, int(frame_range[0])), min(n_total, int(frame_range[1])))
    hi = max(hi, lo + 1)
    if jitter is None:
        return np.linspace(lo, hi - 1, n_frames).round().astype(int)
    edges = np.linspace(lo, hi, n_frames + 1)
    rng = np.random.default_rng(jitter)
    picks = edges[:-1] + rng.random(n_frames) * (edges[1:] - edges[:-1])
    return np.clip(np.floor(picks), lo, hi - 1).astype(int)


def clip_ranges(n_total: int, n_clips: int) -> list[tuple[int, int]]:
    """``n_clips`` consecutive ``(start, stop)`` ranges covering ``n_total`` frames,
    sizes differing by at most one, longer clips first (as the video world splits them)."""
    n_clips = max(1, min(n_clips, n_total))
    base, extra = divmod(n_total, n_clips)
    ranges, start = [], 0
    for k in range(n_clips):
        stop = start + base + (1 if k < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def _lora_config(r: int, alpha: int) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                      target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")


def _attach_lora(lm: Any, r: int, alpha: int) -> Any:
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(lm, _lora_config(r, alpha))


@dataclass(frozen=True)
class _Request:
    """A prompt as the LM sees it: ``<bos>``, ``before`` ids, visual tokens (if any),
    ``after`` ids; the response follows."""

    before: list[int]
    features: torch.Tensor | None = None  # [T + P, D] from the frozen encoder
    after: list[int] = field(default_factory=list)

    @property
    def n_visual(self) -> int:
        return 0 if self.features is None else int(self.features.shape[0])


class EmbeddedEncoder(Protocol):
    """What this policy asks of the encoder it embeds (``tiny-objects``, ``tiny-conv``):
    ``rlaif.core.protocols.Encoder`` plus freezing, moving and saving with checkpoints."""

    name: str
    feature_dim: int

    def encode(self, frames: Any) -> torch.Tensor: ...
    def freeze(self) -> Any: ...
    def to(self, device: Any) -> Any: ...
    def save(self, directory: str | Path) -> None: ...


class TinyVideoLM:
    """Frozen encoder -> projector -> LoRA-adapted causal LM (see the module docstring)."""

    name = "tiny-video-lm"

    def __init__(
        self,
        encoder: EmbeddedEncoder,
        lm: Any,
        tokenizer: Any,
        *,
        frames: FrameSource | None = None,
        n_frames: int = 8,
        lora_r: int = 32,
        lora_alpha: int = 32,
        projector: nn.Module | None = None,
        projector_trainable: bool = True,
        value_head: bool = False,
        seed: int = 0,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        if lora_r < 1:
            raise UsageError(f"lora_r must be >= 1, got {lora_r}")
        torch.manual_seed(seed)
        self.device = torch.device("cpu")
        self.encoder = encoder.freeze()
        self.tokenizer = tokenizer
        self.frames = frames
        self.n_frames = n_frames
        self.lora_r, self.lora_alpha = lora_r, lora_alpha
        self.hidden_size = int(lm.config.hidden_size)
        self.projector = projector or nn.Sequential(
            nn.Linear(encoder.feature_dim, self.hidden_size), nn.ReLU(), nn.Linear(self.hidden_size, self.hidden_size)
        )
        self.projector.requires_grad_(projector_trainable)
        # The reference's projector where RL trains the projector (see the module docstring).
        self.reference_projector: nn.Module | None = None
        from peft import PeftModel

        if isinstance(lm, PeftModel):  # an adapter loaded to continue training it
            self.lm = lm
        else:
            lm.requires_grad_(False)
            self.lm = _attach_lora(lm, lora_r, lora_alpha)
        self.lm.eval()  # no dropout anywhere, so sampling and scoring see the same function
        self.value_head: nn.Linear | None = None
        if value_head:
            self.add_value_head()
        self.history = list(history or [])  # adapters merged into the LM so far
        self.policy_version = 0  # optimizer steps taken; stamped on every rollout
        self._features: dict[tuple[str, tuple[int, ...] | None, int | None], torch.Tensor] = {}
        self._frame_cache: dict[str, np.ndarray] = {}  # insertion order = recency
        self._text_ids: dict[str, list[int]] = {}
        self.bos_id = int(tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id)

    # -- parameters --------------------------------------------------------------------
    def add_value_head(self) -> nn.Linear:
        """The value model (``ValueModel``, PPO): a LoRA adapter of its own on the LM
        (``hf_common.add_value_adapter``) and a scalar head on its last hidden state,
        zero-initialised unless the loop loads a reward model's head. Idempotent."""
        if self.value_head is None:
            self.value_head = nn.Linear(self.hidden_size, 1).to(self.device)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        add_value_adapter(self.lm)
        return self.value_head

    def values(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout]) -> torch.Tensor:
        """``[N, L]`` values of each response position from the value model (with grad)."""
        return self.forward_responses(prompts, rollouts, with_values=True)["values"]

    def value_parameters(self) -> list[nn.Parameter]:
        """The value model's share of :meth:`trainable_parameters` (adapter and head)."""
        head = list(self.value_head.parameters()) if self.value_head is not None else []
        return value_adapter_parameters(self.lm) + head

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA weights, the projector when trainable, and the value head if any."""
        modules: list[nn.Module] = [self.projector]
        if self.value_head is not None:
            modules.append(self.value_head)
        lora = [p for _, p in trainable_lora_parameters(self.lm)]
        return lora + [p for m in modules for p in m.parameters() if p.requires_grad]

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        named = [("lm." + n, p) for n, p in trainable_lora_parameters(self.lm)]
        named += [("projector." + n, p) for n, p in self.projector.named_parameters() if p.requires_grad]
        if self.value_head is not None:
            named += [("value_head." + n, p) for n, p in self.value_head.named_parameters()]
        return named

    def to(self, device: Any) -> TinyVideoLM:
        self.device = torch.device(device)
        for module in (self.encoder, self.projector, self.reference_projector, self.lm, self.value_head):
            if module is not None:
                module.to(self.device)
        return self

    def train(self, mode: bool = True) -> TinyVideoLM:
        # Nothing in the model behaves differently in training (no dropout, no batch norm);
        # kept so loops can call it as they would on an nn.Module.
        self.projector.train(mode)
        return self

    def eval(self) -> TinyVideoLM:
        return self.train(False)

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The reference policy: LoRA adapters off (merged weights stay), and the frozen
        SFT projector where RL trains a copy of it."""
        trained = self.projector
        if self.reference_projector is not None:
            self.projector = self.reference_projector
        try:
            with self.lm.disable_adapter():
                yield
        finally:
            self.projector = trained

    # -- inputs ------------------------------------------------------------------------
    def video_features(self, video: VideoRef, frame_range: Sequence[int] | None = None,
                       jitter: int | None = None) -> torch.Tensor:
        """Frozen encoder tokens ``[T + P, D]`` for ``video``, or for its frames
        ``frame_range = (start, stop)`` (one clip); ``jitter`` picks a randomised
        sampling of the frames (see :func:`sample_indices`). Cached per key."""
        key = (video.video_id, tuple(int(c) for c in frame_range) if frame_range is not None else None, jitter)
        cached = self._features.get(key)
        if cached is None:
            frames = self._decoded(video)
            frames = frames[sample_indices(len(frames), self.n_frames, frame_range, jitter)]
            cached = self.encoder.encode(frames).cpu()
            self._features[key] = cached
        return cached

    def _decoded(self, video: VideoRef) -> np.ndarray:
        """All frames of ``video``, kept for the most recent videos (clips and jittered
        samplings of one video then cost one decode)."""
        if self.frames is None:
            raise UsageError("this policy has no frame source; build it with a benchmark")
        frames = self._frame_cache.pop(video.video_id, None)
        if frames is None:
            frames = np.asarray(self.frames(video))
        self._frame_cache[video.video_id] = frames
        while len(self._frame_cache) > FRAME_CACHE_VIDEOS:
            self._frame_cache.pop(next(iter(self._frame_cache)))
        return frames

    def _ids(self, text: str) -> list[int]:
        ids = self._text_ids.get(text)
        if ids is None:
            ids = self._text_ids[text] = list(self.tokenizer(text, add_special_tokens=False).input_ids)
        return ids

    def _requests(self, prompts: Sequence[Prompt]) -> list[_Request]:
        """One request per prompt: ``question: {q}``, the visual tokens, `` answer:``.
        ``prompt.meta["frame_range"] = [start, stop)`` restricts the frames to one clip."""
        return [
            self._request(p.question, self.video_features(p.video, p.meta.get("frame_range"), p.meta.get("frame_jitter")))
            for p in prompts
        ]

    def _request(self, question: str, features: torch.Tensor) -> _Request:
        return _Request(self._ids(QUESTION_TEMPLATE.format(question=question)), features, self._ids(ANSWER_CUE))

    def _layout(
        self, requests: Sequence[_Request], responses: Sequence[Sequence[int]] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Embed a batch: prefixes (``<bos>``, text, visual tokens, text) left-padded so
        every response starts at column ``P``, responses right-padded. Returns
        ``(embeds [N, S, H], mask [N, S], positions [N, S], P)``; gradients reach the
        projector through the visual slots."""
        n = len(requests)
        lengths = [1 + len(r.before) + r.n_visual + len(r.after) for r in requests]
        P = max(lengths)
        L = max((len(r) for r in responses), default=0) if responses is not None else 0
        ids = torch.full((n, P + L), self.pad_id, dtype=torch.long)
        is_video = torch.zeros((n, P + L), dtype=torch.bool)
        mask = torch.zeros((n, P + L), dtype=torch.long)
        for i, req in enumerate(requests):
            at = P - lengths[i]
            mask[i, at:P] = 1
            ids[i, at] = self.bos_id
            at += 1
            ids[i, at : at + len(req.before)] = torch.tensor(req.before, dtype=torch.long)
            at += len(req.before)
            is_video[i, at : at + req.n_visual] = True
            at += req.n_visual
            ids[i, at:P] = torch.tensor(req.after, dtype=torch.long)
            if responses is not None and len(responses[i]):
                ids[i, P : P + len(responses[i])] = torch.tensor(list(responses[i]), dtype=torch.long)
                mask[i, P : P + len(responses[i])] = 1
        ids, is_video, mask = ids.to(self.device), is_video.to(self.device), mask.to(self.device)
        embeds = self.lm.get_input_embeddings()(ids)  # [N, S, H]
        visual = [r.features for r in requests if r.features is not None]
        if visual:
            projected = self.projector(torch.cat(visual).to(self.device))  # [sum T+P, H]
            embeds = embeds.masked_scatter(is_video[..., None], projected.to(embeds.dtype))
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return embeds, mask, positions, P

    # -- sampling ----------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        *,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = False,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> list[list[Rollout]]:
        """Sample ``n`` answers per prompt, all ``len(prompts) * n`` rows in one batch.

        Returns one list of ``n`` rollouts per prompt; ``token_ids`` are the response only
        (ending with ``<eos>`` when the model stopped, then ``finished`` is true) and
        ``logprobs`` their log-probs under the temperature-scaled policy."""
        if not prompts:
            return []
        rows = self._sample(self._requests(prompts), n, max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=top_p, greedy=greedy, use_cache=use_cache, generator=generator)
        out: list[list[Rollout]] = []
        for i, prompt in enumerate(prompts):
            group = []
            for j in range(n):
                ids, lps = rows[i * n + j]
                group.append(Rollout(prompt_id=prompt.prompt_id, index=j, text=self._decode(ids), token_ids=ids,
                                     logprobs=lps, policy_version=self.policy_version,
                                     finished=bool(ids) and ids[-1] == self.eos_id))
            out.append(group)
        return out

    def complete(self, texts: Sequence[str], max_new_tokens: int = 48, greedy: bool = True,
                 temperature: float = 1.0) -> list[str]:
        """Text-only continuation (no visual tokens), e.g. for judging prompts."""
        if not texts:
            return []
        rows = self._sample([_Request(self._ids(t)) for t in texts], 1, max_new_tokens=max_new_tokens,
                            temperature=temperature, top_p=1.0, greedy=greedy, use_cache=True, generator=None)
        return [self._decode(ids) for ids, _ in rows]

    def describe(self, video: VideoRef, n_clips: int = 3, max_new_tokens: int = 48) -> list[str]:
        """Greedy captions of ``n_clips`` consecutive clips of ``video`` (VLM-RLAIF's
        "Describe this video in detail." narrative); join them for a judge's context."""
        if self.frames is None:
            raise UsageError("this policy has no frame source; build it with a benchmark")
        total = video.n_frames or len(self.frames(video))
        prompts = [Prompt(prompt_id=f"{video.video_id}#clip{i}", video=video, question=DESCRIBE_QUESTION,
                          qtype="caption", meta={"frame_range": list(r)})
                   for i, r in enumerate(clip_ranges(total, n_clips))]
        return [g[0].text for g in self.generate(prompts, 1, max_new_tokens=max_new_tokens, greedy=True)]

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True)).strip()

    @torch.no_grad()
    def _sample(
        self,
        requests: Sequence[_Request],
        n: int,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        greedy: bool,
        use_cache: bool,
        generator: torch.Generator | None,
    ) -> list[tuple[list[int], list[float]]]:
        if temperature <= 0:
            raise UsageError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature}")
        rows = [r for r in requests for _ in range(n)]
        embeds, mask, positions, _ = self._layout(rows, None)
        R = len(rows)
        tokens = torch.full((R, max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        logprobs = torch.zeros((R, max_new_tokens), device=self.device)
        lengths = torch.zeros(R, dtype=torch.long, device=self.device)
        done = torch.zeros(R, dtype=torch.bool, device=self.device)
        next_position = mask.sum(1, keepdim=True)  # [R, 1]: position of the next token
        step_embeds, step_positions, cache = embeds, positions, None
        embed = self.lm.get_input_embeddings()
        for t in range(max_new_tokens):
            # transformers 5.x renames past_key_values to cache with a FutureWarning on
            # stderr, where it would precede a run's one-line error.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                out = self.lm(inputs_embeds=step_embeds, attention_mask=mask, position_ids=step_positions,
                              past_key_values=cache, use_cache=use_cache, logits_to_keep=1)
            logp = torch.log_softmax(out.logits[:, -1].float() / temperature, dim=-1)  # [R, V]
            if greedy:
                token = logp.argmax(-1)
            else:
                probs = logp.exp()
                if top_p < 1.0:
                    probs = _top_p_filter(probs, top_p)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            tokens[:, t] = token
            logprobs[:, t] = logp.gather(1, token[:, None]).squeeze(1).masked_fill(done, 0.0)
            lengths += (~done).long()
            done = done | (token == self.eos_id)
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            new = embed(token)[:, None]  # [R, 1, H]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if use_cache:
                # transformers 5.x calls it cache (reading past_key_values logs a warning)
                kv = out["cache"] if "cache" in out else out.past_key_values
                cache, step_embeds, step_positions = kv, new, next_position
            else:
                step_embeds = torch.cat([step_embeds, new], dim=1)
                step_positions = torch.cat([step_positions, next_position], dim=1)
            next_position = next_position + 1
        tokens_l, logprobs_l, lengths_l = tokens.cpu().tolist(), logprobs.cpu().tolist(), lengths.cpu().tolist()
        return [(tokens_l[r][: lengths_l[r]], logprobs_l[r][: lengths_l[r]]) for r in range(R)]

    # -- scoring -----------------------------------------------------------------------
    def forward_responses(
        self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout], *, with_values: bool = False,
        with_entropies: bool = False, temperature: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced log-probs of ``rollouts[i]`` given ``prompts[i]`` (with grad).

        Returns ``logprobs`` ``[N, L]``, ``mask`` ``[N, L]`` (float, 1 on response
        tokens) and, with ``with_values``, ``values`` ``[N, L]``: the value model (value
        adapter on, a forward of its own) on the hidden state that predicts each token (the state before it is emitted); with
        ``with_entropies``, ``entropies`` ``[N, L]``: the policy's entropy there."""
        if len(prompts) != len(rollouts):
            raise ValueError(f"{len(prompts)} prompts for {len(rollouts)} rollouts; pass one prompt per rollout")
        return self._score(self._requests(prompts), [list(r.token_ids) for r in rollouts],
                           with_values=with_values, with_entropies=with_entropies, temperature=temperature)

    def logprobs(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logprobs [N, L], mask [N, L])``; see :meth:`forward_responses`."""
        out = self.forward_responses(prompts, rollouts)
        return out["logprobs"], out["mask"]

    def _score(self, requests: Sequence[_Request], responses: Sequence[list[int]],
               *, with_values: bool = False, with_entropies: bool = False, temperature: float = 1.0
               ) -> dict[str, torch.Tensor]:
        n = len(responses)
        L = max((len(r) for r in responses), default=0)
        targets = torch.full((n, L), self.pad_id, dtype=torch.long)
        resp_mask = torch.zeros((n, L))
        for i, r in enumerate(responses):
            targets[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            resp_mask[i, : len(r)] = 1.0
        targets, resp_mask = targets.to(self.device), resp_mask.to(self.device)
        if L == 0:
            return empty_outputs(n, resp_mask, with_values=with_values, with_entropies=with_entropies)
        embeds, mask, positions, P = self._layout(requests, responses)
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=L + 1)
        logits = out.logits[:, :-1].float() / temperature  # [N, L, V]: columns P-1 .. P+L-2
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1) * resp_mask
        result = {"logprobs": logprobs, "mask": resp_mask}
        if with_entropies:
            result["entropies"] = token_entropies(logits) * resp_mask
        if with_values:  # the value model: its own adapter; the (policy's) projector gets no value gradient
            head = self.add_value_head()
            with value_adapter_active(self.lm):
                critic = self.lm(inputs_embeds=embeds.detach(), attention_mask=mask, position_ids=positions,
                                 output_hidden_states=True, logits_to_keep=1)
            hidden = critic.hidden_states[-1][:, P - 1 : P + L - 1]  # [N, L, H]
            result["values"] = head(hidden).squeeze(-1) * resp_mask
        return result

    def sequence_loss(self, prompts: Sequence[Prompt], answers: Sequence[str], reduction: str = "sequence"
                      ) -> torch.Tensor:
        """Cross-entropy of ``answer + <eos>`` given each prompt (for SFT): the mean over
        each answer's tokens averaged over answers (``"sequence"``: a one-word answer
        weighs as much as a description), or the mean over all tokens (``"token"``)."""
        responses = [self.answer_ids(a) for a in answers]
        out = self._score(self._requests(prompts), responses)
        nll, mask = -out["logprobs"], out["mask"]  # [N, L]
        if reduction == "token":
            return (nll * mask).sum() / mask.sum().clamp(min=1.0)
        return ((nll * mask).sum(1) / mask.sum(1).clamp(min=1.0)).mean()

    def last_hidden_states(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[int]]) -> torch.Tensor:
        """``LastHiddenState``: the LM's final hidden state ``[N, H]`` (with grad, adapter
        on) of each response's last token, for a reward model's scalar head."""
        embeds, mask, positions, P = self._layout(self._requests(prompts), responses)  # [N, S, H], [N, S]
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                      output_hidden_states=True, logits_to_keep=1)
        hidden = out.hidden_states[-1]  # [N, S, H]
        last = torch.tensor([P + len(r) - 1 for r in responses], device=hidden.device)  # [N]
        return hidden[torch.arange(len(responses), device=hidden.device), last]  # [N, H]

    # -- judging (VLM-RLAIF: the SFT model ranks answers) ------------------------------
    def judge_prompt(self, prompt: Prompt, candidates: Sequence[str], narrative: str | None = None) -> Prompt:
        """A judging item as the SFT stage taught it: the video, and as text the question,
        the narrative if any, and the candidates labelled A, B, ...
        (:func:`rlaif.train.sft.format_judge_question`)."""
        from rlaif.train.sft import format_judge_question

        return Prompt(prompt_id=f"{prompt.prompt_id}-judge", video=prompt.video, qtype="judge",
                      question=format_judge_question(prompt.question, candidates, narrative))

    @torch.no_grad()
    def judge_label_logprobs(self, prompts: Sequence[Prompt], labels: Sequence[Sequence[str]]) -> list[list[float]]:
        """Log-probability of each label as the start of the judge's reply (the SFT reply
        is "B > A > C because ..."): the judge's belief that each candidate is the best,
        for every judging prompt in one batched forward."""
        rows: list[Prompt] = []
        firsts: list[Rollout] = []
        for prompt, prompt_labels in zip(prompts, labels, strict=True):
            for i, label in enumerate(prompt_labels):
                rows.append(prompt)
                # the label's tokens as a reply starts (" B" is two tokens here), no <eos>
                firsts.append(Rollout(prompt.prompt_id, i, label, token_ids=self.answer_ids(label)[:-1]))
        if not rows:
            return [[] for _ in prompts]
        out_rows = self.forward_responses(rows, firsts)
        values = (out_rows["logprobs"] * out_rows["mask"]).sum(-1).tolist()  # [sum of label counts]
        out, start = [], 0
        for prompt_labels in labels:
            out.append([float(v) for v in values[start : start + len(prompt_labels)]])
            start += len(prompt_labels)
        return out

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of a target answer as the policy would produce it (then ``<eos>``)."""
        return [*self._ids(" " + answer.strip()), self.eos_id]

    # -- persistence -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "format": POLICY_FORMAT,
            "n_frames": self.n_frames,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "lora_targets": list(LORA_TARGETS),
            "hidden_size": self.hidden_size,
            "feature_dim": self.encoder.feature_dim,
            "projector_trainable": any(p.requires_grad for p in self.projector.parameters()),
            "value_head": self.value_head is not None,
            "policy_version": self.policy_version,
            "history": self.history,
        }

    def save(self, directory: str | Path) -> None:
        """Write the checkpoint (see the module docstring) to ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.lm.save_pretrained(str(directory / "adapter"), selected_adapters=[self.lm.active_adapter])
        save_file(_cpu_state(self.projector), str(directory / "projector.safetensors"))
        if self.value_head is not None:
            save_file(_cpu_state(self.value_head), str(directory / "value_head.safetensors"))
        self._save_base_lm(directory / "lm")
        self.encoder.save(directory / "encoder")
        self.tokenizer.backend_tokenizer.save(str(directory / "tokenizer.json"))
        (directory / "policy.json").write_text(json.dumps(self.config(), indent=2))

    def _save_base_lm(self, directory: Path) -> None:
        """The LM without its active adapter (merged adapters included), as a plain
        ``save_pretrained`` model anyone can load with ``AutoModelForCausalLM``."""
        from transformers import AutoModelForCausalLM

        base = self.lm.get_base_model()
        state = {
            k.replace(".base_layer.", "."): v.detach().cpu()
            for k, v in base.state_dict().items()
            if "lora_" not in k
        }
        clean = AutoModelForCausalLM.from_config(base.config, attn_implementation="eager")
        clean.load_state_dict(state, strict=False)
        with quiet_hf():
            clean.save_pretrained(str(directory), safe_serialization=True)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        frames: FrameSource | None = None,
        new_adapter: bool = True,
        lora_r: int | None = None,
        lora_alpha: int | None = None,
        value_head: bool = False,
        seed: int = 0,
        train_projector: bool = False,
    ) -> TinyVideoLM:
        """Load a checkpoint written by :meth:`save`.

        ``new_adapter=True`` (for RL): merge the saved adapter into the LM, freeze the
        projector (``train_projector``: train it, keeping a frozen copy for the reference),
        attach a fresh adapter (``lora_r``/``lora_alpha``, default: the saved ones);
        ``adapters_disabled()`` is then the loaded policy. ``new_adapter=False``: continue
        training the saved adapter, projector and value head as they were."""
        from peft import PeftModel
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / "policy.json").exists():
            raise UsageError(f"{directory} is not a tiny-video-lm checkpoint (no policy.json)")
        config = json.loads((directory / "policy.json").read_text())
        encoder = load_encoder(directory / "encoder")
        tokenizer = load_world_tokenizer(directory / "tokenizer.json")
        lm = load_tiny_lm(directory / "lm")
        projector = nn.Sequential(nn.Linear(config["feature_dim"], config["hidden_size"]), nn.ReLU(),
                                  nn.Linear(config["hidden_size"], config["hidden_size"]))
        projector.load_state_dict(load_file(str(directory / "projector.safetensors")))
        history = list(config.get("history", []))
        with warnings.catch_warnings(), quiet_hf():
            warnings.simplefilter("ignore", FutureWarning)
            peft_lm = PeftModel.from_pretrained(lm, str(directory / "adapter"), is_trainable=not new_adapter)
        if new_adapter:
            lm = peft_lm.merge_and_unload()
            history.append({"merged": str(directory), "lora_r": config["lora_r"], "lora_alpha": config["lora_alpha"]})
            policy = cls(encoder, lm, tokenizer, frames=frames, n_frames=config["n_frames"],
                         lora_r=lora_r or config["lora_r"], lora_alpha=lora_alpha or config["lora_alpha"],
                         projector=projector, projector_trainable=train_projector, value_head=value_head,
                         seed=seed, history=history)
            if train_projector:
                policy.reference_projector = copy.deepcopy(projector).requires_grad_(False)
            return policy
        policy = cls(encoder, peft_lm, tokenizer, frames=frames, n_frames=config["n_frames"],
                     lora_r=config["lora_r"], lora_alpha=config["lora_alpha"], projector=projector,
                     projector_trainable=config.get("projector_trainable", True), seed=seed, history=history)
        if (directory / "value_head.safetensors").exists() or value_head:
            head = policy.add_value_head()
            if (directory / "value_head.safetensors").exists():
                head.load_state_dict(load_file(str(directory / "value_head.safetensors")))
        policy.policy_version = int(config.get("policy_version", 0))
        return policy


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p``."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # always keeps the top token
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return filtered / filtered.sum(-1, keepdim=True)


# -- the default base: encoder + tokenizer + pre-trained LM, built once per world --------
#: The default base's frozen encoder: ``tiny-objects`` (object tokens, see its module) or
#: ``tiny-conv`` (Video-ChatGPT pooled patches; SFT acc/short 0.355 against 0.444, README).
ENCODERS = ("tiny-objects", "tiny-conv")
DEFAULT_ENCODER = "tiny-objects"


def encoder_recipe(encoder: str = DEFAULT_ENCODER) -> str:
    """The encoder's recipe version (part of every cache key built on it)."""
    from rlaif.plugins.encoders import tiny_conv, tiny_objects

    return (tiny_objects if encoder == "tiny-objects" else tiny_conv).RECIPE_VERSION


def cached_encoder(benchmark: Any, *, encoder: str = DEFAULT_ENCODER, seed: int = 0, n_frames: int = 8,
                   progress: bool = False) -> Path:
    """Directory of the base's encoder, fitted or pre-trained on first use (cached)."""
    if encoder not in ENCODERS:
        raise UsageError(f"tiny-video-lm encoder must be one of {', '.join(ENCODERS)}; got {encoder!r}")
    if encoder == "tiny-objects":
        from rlaif.plugins.encoders.tiny_objects import cached_tiny_objects

        return cached_tiny_objects(benchmark, n_frames=n_frames)
    return cached_tiny_conv(benchmark, seed=seed, n_frames=n_frames, progress=progress)


def load_encoder(directory: str | Path) -> Any:
    """A saved frozen encoder of either kind, told apart by its ``config.json`` format."""
    from rlaif.plugins.encoders.tiny_objects import TinyObjectEncoder

    config = json.loads((Path(directory) / "config.json").read_text())
    if str(config.get("format", "")).startswith("tiny-objects/"):
        return TinyObjectEncoder.from_pretrained(directory)
    return TinyConvEncoder.from_pretrained(directory)

#: Fresh scenes (``benchmark.fresh_scenes``) whose text the world LM is pre-trained on.
LM_FRESH_SCENES = 3000
#: Pre-training: PASSES over the corpus in windows of 32 x 128 tokens, at least 100 and at
#: most LM_STEPS steps (the default world reaches LM_STEPS; a small test world, 100).
LM_STEPS, PASSES = 700, 2.5


def world_texts(benchmark: Any) -> list[str]:
    """Documents the tiny LM is pre-trained on, never from ``rl`` or ``test``.

    * the benchmark's own text of its labelled split (``benchmark.texts()``, the ``sft``
      split), else the captions and narratives of ``sft`` videos;
    * the ``sft`` question-answer pairs in the policy's prompt template (the format);
    * when the benchmark offers ``fresh_scenes(n, purpose)`` (scenes in no split), their
      clip captions, narratives (1 and 3 clips) and reading comprehension: a narrative,
      then a question answered from it. This is what lets a pre-trained LLM look things
      up in its context; the visual tokens of the VLM later take the narrative's place,
      and the world judge reads generated narratives the same way.

    The ``rl`` split is left out on purpose: its answers are what RL must discover, so
    an LM that had read them would make every oracle look better than it is."""
    provided = getattr(benchmark, "texts", None)
    texts: list[str] = []
    if callable(provided):
        texts.extend(str(t) for t in provided())
    else:
        for video in {p.video.video_id: p.video for p in benchmark.prompts("sft")}.values():
            texts.extend(benchmark.clip_captions(video))
            texts.append(benchmark.narrative(video))
    for prompt in benchmark.prompts("sft"):
        texts.append(QA_TEMPLATE.format(question=prompt.question) + " " + str(prompt.reference))
        narrative = prompt.meta.get("gold_narrative")
        if narrative and prompt.reference and prompt.qtype != "describe":
            texts.append(reading_comprehension(str(narrative), prompt.question, str(prompt.reference)))
    fresh = getattr(benchmark, "fresh_scenes", None)
    if callable(fresh):
        for scene in fresh(LM_FRESH_SCENES, "lm"):
            short, full = scene.narrative(1), scene.narrative(3)
            texts.extend([*scene.clip_captions(3), short, full])
            for k, qa in enumerate(scene.qa):
                if qa.qtype == "describe":
                    continue
                texts.append(reading_comprehension(full if k % 2 else short, qa.question, qa.answer))
    return texts


def reading_comprehension(narrative: str, question: str, answer: str) -> str:
    """One pre-training document: a narrative, then a question answered from it."""
    return f"context: {narrative} " + QA_TEMPLATE.format(question=question) + " " + answer


def cached_base(benchmark: Any, *, seed: int = 0, n_frames: int = 8, progress: bool = False,
                encoder: str = DEFAULT_ENCODER) -> dict[str, Path]:
    """Paths of the default base (``encoder``, ``tokenizer``, ``lm``) for ``benchmark``,
    building whatever is missing in the cache (``$RLAIF_CACHE``, see ``tiny_conv``). The
    LM does not depend on the encoder, so both encoders share one pre-trained LM."""
    encoder_dir = cached_encoder(benchmark, encoder=encoder, seed=seed, n_frames=n_frames, progress=progress)
    key = hashlib.sha256(f"{BASE_RECIPE}|{labelled_fingerprint(benchmark)}|{seed}".encode()).hexdigest()[:16]
    target = cache_root() / "tiny-video-lm-base" / key

    def build(tmp: Path) -> None:
        texts = world_texts(benchmark)
        tokenizer = train_world_tokenizer(texts, tmp / "tokenizer.json")
        words = sum(len(t.split()) for t in texts)  # ~1.3 tokens a word
        steps = min(LM_STEPS, max(100, round(PASSES * 1.3 * words / (32 * 128))))
        metrics = pretrain_tiny_lm(texts, tokenizer, tmp / "lm", seed=seed, steps=steps, batch_size=32,
                                   seq_len=128, progress=progress)
        (tmp / "base.json").write_text(json.dumps({"recipe": BASE_RECIPE, "seed": seed, "pretrain": metrics,
                                                   "vocab_size": len(tokenizer), "documents": len(texts)}, indent=2))

    cached_build(target, build, done="lm/config.json")
    return {"encoder": encoder_dir, "tokenizer": target / "tokenizer.json", "lm": target / "lm"}


def from_base(paths: dict[str, Path], *, frames: FrameSource | None = None, n_frames: int = 8, lora_r: int = 32,
              lora_alpha: int = 32, value_head: bool = False, seed: int = 0) -> TinyVideoLM:
    """A fresh policy on the pre-trained base: new projector and adapter, both trainable."""
    encoder = load_encoder(paths["encoder"])
    return TinyVideoLM(encoder, load_tiny_lm(paths["lm"]), load_world_tokenizer(paths["tokenizer"]), frames=frames,
                       n_frames=n_frames, lora_r=lora_r, lora_alpha=lora_alpha, value_head=value_head, seed=seed,
                       history=[{"base": str(paths["lm"])}])


def build_tiny_video_lm(
    path: str | None = None,
    lora_r: int = 32,
    lora_alpha: int = 32,
    n_frames: int = 8,
    new_adapter: bool = True,
    value_head: bool = False,
    seed: int = 0,
    benchmark: Any = None,
    lm: str = "tiny",
    encoder: str = DEFAULT_ENCODER,
    train_projector: bool = False,
) -> TinyVideoLM:
    """Registry factory. ``path``: a saved checkpoint (an SFT result for RL: its adapter is
    merged and a fresh one attached unless ``new_adapter`` is false; ``train_projector``
    lets RL train the projector too, the reference keeping the SFT one); ``None``: a fresh
    policy on the default base, pre-training it on ``benchmark`` on first use (cached);
    ``encoder`` picks the base's frozen encoder for such a fresh policy (a checkpoint
    carries its own)."""
    if lm != "tiny":
        raise UsageError(f"lm={lm!r} is not available yet for tiny-video-lm; use lm='tiny' "
                         "(or the hf-vlm policy for pretrained Hugging Face models)")
    if benchmark is None:
        benchmark = default_benchmark(seed)
    frames = benchmark.frames
    if path is not None:
        return TinyVideoLM.load(path, frames=frames, new_adapter=new_adapter, lora_r=lora_r, lora_alpha=lora_alpha,
                                value_head=value_head, seed=seed, train_projector=train_projector)
    paths = cached_base(benchmark, seed=seed, n_frames=n_frames, encoder=encoder)
    return from_base(paths, frames=frames, n_frames=n_frames, lora_r=lora_r, lora_alpha=lora_alpha,
                     value_head=value_head, seed=seed)


def default_sft_checkpoint(benchmark: Any, *, seed: int = 0, progress: bool = False) -> str:
    """``DefaultCheckpoint``: the SFT policy ``rlaif sft`` trains on ``benchmark``'s
    pre-trained base (once, cached under ``$RLAIF_CACHE``, or shipped pre-built:
    :mod:`rlaif.core.cache`); what RL starts from when the config gives no ``[policy] path``."""
    from rlaif.train.sft import default_sft_dir, run_sft

    out = default_sft_dir(benchmark, seed=seed)
    if not (out / "sft.json").exists():
        fetch_prebuilt(out, "sft.json")
    run_sft(out, benchmark=benchmark, seed=seed, progress=progress)
    return str(out)


build_tiny_video_lm.default_checkpoint = default_sft_checkpoint  # type: ignore[attr-defined]
