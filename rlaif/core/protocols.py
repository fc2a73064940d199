"""Typed interfaces of the four component kinds, and of the video encoder a policy embeds.

Components never inherit from each other; anything with these attributes and methods is
a valid component (``typing.Protocol``). Tensor-typed arguments are annotated ``Any`` so
this module stays importable without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rlaif.core.records import Group, Prompt, Ranking, Rollout

KINDS: tuple[str, ...] = ("policy", "oracle", "loss", "benchmark")


@runtime_checkable
class Encoder(Protocol):
    """Video frames -> visual features. Frozen during RL; features are cached per video.

    Not a registry kind: a policy owns its encoder and saves it with its checkpoints
    (tiny-video-lm embeds ``rlaif.plugins.encoders.tiny_objects`` or ``tiny_conv``)."""

    name: str
    feature_dim: int

    def encode(self, frames: Any) -> Any:
        """``frames`` uint8 ``[T, H, W, 3]`` -> float features ``[N_tokens, feature_dim]``."""
        ...


@runtime_checkable
class Policy(Protocol):
    """A video-language model that samples answers and scores given answers.

    One temperature: ``generate(..., temperature=T)`` records each sampled token's
    log-prob under the distribution it was drawn from, ``log_softmax(logits / T)``
    (top-p changes which tokens can be drawn, not the recorded log-probs), and
    ``forward_responses(..., temperature=T)`` recomputes exactly those. The RL loop passes
    the run's sampling temperature to every ``forward_responses`` call -- current, old and
    reference log-probs alike -- so the clipped ratio and the KL compare one distribution.
    """

    name: str

    def generate(
        self, prompts: Sequence[Prompt], n: int, *, max_new_tokens: int = 32, temperature: float = 1.0
    ) -> list[list[Rollout]]:
        """Sample ``n`` candidates per prompt with per-token log-probs at ``temperature``."""
        ...

    def logprobs(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout]) -> Any:
        """Per-token log-probs ``[B, L]`` (and mask) of ``rollouts[i]`` given ``prompts[i]``."""
        ...

    def forward_responses(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout], *,
                          with_values: bool = False, temperature: float = 1.0, **outputs: bool) -> dict[str, Any]:
        """What the RL update differentiates: ``logprobs`` ``[B, L]`` under ``logits /
        temperature`` (as :meth:`generate` records them) and ``mask`` ``[B, L]``, with grad;
        ``values`` ``[B, L]`` when ``with_values`` (only a :class:`ValueModel` has them:
        from the value model, never the policy's own trunk); ``entropies`` ``[B, L]``
        when called with ``with_entropies=True`` (asked only when a loss needs them)."""
        ...

    def trainable_parameters(self) -> Any:
        """The parameters the optimizer updates (adapters, projector, value head)."""
        ...

    def adapters_disabled(self) -> AbstractContextManager[None]:
        """Context in which the policy acts as its frozen reference (adapters off)."""
        ...

    def save(self, directory: str) -> None: ...


@runtime_checkable
class Shardable(Protocol):
    """Optional capability of a policy whose model can be sharded across processes
    (``[run] sharding = "fsdp"``, :mod:`rlaif.train.sharding`), for models that do not
    fit one device."""

    def shard(self, wrap: Callable[[Any], Any]) -> None:
        """Call ``wrap`` on each module to shard on its own (decoder layers first, then
        the module whose forward every pass and ``generate`` go through), and from then
        on decode in lock-step with the other ranks: stop only when every rank's rows are
        done, since each forward all-gathers weights across ranks."""
        ...


@runtime_checkable
class CachesVisualFeatures(Protocol):
    """Optional capability of a policy whose frozen vision tower encodes each video once
    and reuses the embeddings across a group's candidates and the update's passes
    (``hf-vlm``). A loop may clear the cache at each step's start (to hold one step's
    videos) and log its size as a metric."""

    def feature_cache_bytes(self) -> int:
        """Bytes the cached embeddings hold (on the policy's device)."""
        ...

    def clear_feature_cache(self) -> None:
        """Drop every cached embedding."""
        ...


@runtime_checkable
class ValueModel(Protocol):
    """Optional capability of a policy: PPO's critic, a model beside the actor, as in
    VLM-RLAIF (a value model initialised from the reward model, not a head on the
    policy). The built-in policies give it a LoRA adapter of its own on the frozen base
    plus a scalar head: values are computed with that adapter on, so the value loss moves
    only the value adapter and head, and the policy loss never reaches them. Its
    parameters are among ``trainable_parameters()`` (so they train and are checkpointed).
    The RL loop checks for it when a loss needs ``values`` or sets ``value_init``."""

    value_head: Any

    def add_value_head(self) -> Any:
        """Create the value model (idempotent; before the optimizer is built) and return
        its head, an ``nn.Linear(hidden, 1)`` the loop may load a reward model's head into."""
        ...

    def values(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout]) -> Any:
        """Per-token values ``[B, L]`` of ``rollouts[i]`` given ``prompts[i]``, with grad,
        zero outside the response mask."""
        ...

    def value_parameters(self) -> Any:
        """The value model's share of ``trainable_parameters()``; the loop clips its
        gradient apart from the policy's, so the value loss never rescales a policy step."""
        ...


@runtime_checkable
class SupervisedLoss(Protocol):
    """Optional capability of a policy that ``rlaif sft`` can train: teacher-forced
    cross-entropy of target answers (the policy's own prompt format and end token)."""

    def sequence_loss(self, prompts: Sequence[Prompt], answers: Sequence[str]) -> Any:
        """Differentiable scalar: the mean over answers of each ``answers[i] + EOS``'s
        token-mean negative log-likelihood given ``prompts[i]``."""
        ...


@runtime_checkable
class LastHiddenState(Protocol):
    """Optional capability of a policy a reward model can sit on (``rlaif train-rm``):
    the final hidden state of each response's last token, read through the policy's
    active adapter, so a scalar head on it trains with that adapter."""

    hidden_size: int

    def last_hidden_states(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[int]]) -> Any:
        """``[N, hidden_size]`` hidden states (with grad) of the last token of
        ``responses[i]`` (token ids, as :meth:`answer_ids` gives them) after ``prompts[i]``."""
        ...

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of a target answer as the policy would produce it, then EOS."""
        ...


@runtime_checkable
class Sampler(Protocol):
    """Optional capability of a policy that ``rlaif oracle check`` samples candidates with
    (and, for oracles reading a narrative, captions the video with, through
    :class:`~rlaif.plugins.oracles.narrative.PolicyCaptioner`)."""

    def generate(
        self, prompts: Sequence[Prompt], n: int, *, max_new_tokens: int = 32, temperature: float = 1.0
    ) -> list[list[Rollout]]:
        """Sample ``n`` candidates per prompt (see :meth:`Policy.generate`)."""
        ...


@runtime_checkable
class DefaultCheckpoint(Protocol):
    """Optional capability of a policy *factory* (the registered target, checked before
    anything is built): an embedded default starting point. ``rlaif run``, ``eval``,
    ``oracle check``, ``train-rm`` and ``replay`` use it when ``[policy]`` gives no
    ``path``; a factory without it must be given one. The factory takes the returned
    directory as ``path``, and ``new_adapter=False`` to load it as saved."""

    def default_checkpoint(self, benchmark: Any, *, seed: int = 0, progress: bool = False) -> str:
        """Directory of the default checkpoint for ``benchmark``, built (once, cached)
        if missing."""
        ...


def default_checkpoint(factory: Any, benchmark: Any, *, seed: int = 0, progress: bool = False,
                       name: str = "", role: str = "this command") -> str | None:
    """``factory``'s :class:`DefaultCheckpoint` for ``benchmark``; ``None`` if it has none
    and can be built without a ``path``. A factory that needs a ``path`` and has no
    default is a one-line :class:`~rlaif.core.errors.UsageError` naming the missing piece."""
    make = getattr(factory, "default_checkpoint", None)
    if make is not None:
        return str(make(benchmark, seed=seed, progress=progress))
    import inspect

    try:
        path = inspect.signature(factory).parameters.get("path")
    except (TypeError, ValueError):
        path = None
    if path is not None and path.default is inspect.Parameter.empty:
        from rlaif.core.errors import UsageError

        raise UsageError(f"{role} needs a policy path or the DefaultCheckpoint capability; policy {name!r} lacks "
                         "default_checkpoint: give a checkpoint with --policy DIR or --set policy.path=DIR")
    return None


def require_capability(component: Any, capability: type, role: str) -> None:
    """Raise a one-line :class:`~rlaif.core.errors.UsageError` unless ``component`` has
    every method and attribute of the optional protocol ``capability``, naming the
    missing pieces and what needs them (``role``, e.g. "rlaif sft")."""
    from rlaif.core.errors import UsageError

    missing = [n for n in _protocol_members(capability) if not hasattr(component, n)]
    if missing:
        name = getattr(component, "name", type(component).__name__)
        raise UsageError(f"{role} needs a component with the {capability.__name__} capability; {name!r} lacks "
                         f"{', '.join(missing)}")


def _protocol_members(capability: type) -> list[str]:
    names = set(getattr(capability, "__annotations__", {}))
    names |= {n for n, v in vars(capability).items() if callable(v) and not n.startswith("_")}
    return sorted(names)


@runtime_checkable
class Oracle(Protocol):
    """Orders a group of candidate answers to one prompt (no trained reward model needed)."""

    name: str
    needs_context: bool  # wants a narrative of the video
    needs_reference: bool  # reads ground truth; refused where the benchmark has none
    # Optional: ``score_range = (lo, hi)`` declares that ``Ranking.scores`` lie in [lo, hi]
    # on an absolute scale (a verifier's 0..1, a cosine's -1..1). Absent or None, scores
    # are only an order. Score losses (grpo, ppo) then see them mapped to [0, 1], else
    # rank-derived scores (see ``rlaif.plugins.losses.advantages.ranking_scores``).

    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        """One ranking per group; batched so a judge can serve a whole step at once."""
        ...


@dataclass
class RankedBatch:
    """What a loss sees: B groups of G rollouts with their rankings and the tensors the
    loss declared in ``needs`` (``logprobs``, ``old_logprobs``, ``ref_logprobs``,
    ``mask``, ``values``, ...), each shaped ``[B*G, L]`` unless documented otherwise."""

    groups: Sequence[Group]
    rankings: Sequence[Ranking]
    tensors: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Loss(Protocol):
    name: str
    needs: frozenset[str]

    def __call__(self, batch: RankedBatch) -> tuple[Any, dict[str, float]]:
        """Scalar loss (differentiable) and detached metrics."""
        ...


@runtime_checkable
class Benchmark(Protocol):
    """Items with (possibly hidden) ground truth plus a scorer."""

    name: str
    has_ground_truth: bool

    def prompts(self, split: str) -> Sequence[Prompt]:
        """``split`` is one of ``sft``, ``rl``, ``test``."""
        ...

    def frames(self, video: Any, n_frames: int | None = None) -> Any:
        """Decode ``n_frames`` uniformly sampled uint8 frames ``[T, H, W, 3]``."""
        ...

    def score(self, prompts: Sequence[Prompt], answers: Sequence[str]) -> Mapping[str, float]:
        """Metrics table (name -> value), e.g. accuracy per question type."""
        ...

    def item_score(self, prompt: Prompt, answer: str) -> float:
        """Quality of one answer in [0, 1] against ground truth (1 = correct); what a
        verifier-style oracle ranks by."""
        ...


def iter_kinds() -> Iterator[str]:
    yield from KINDS
