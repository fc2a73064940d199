"""The RL loop (``rlaif run``) and its replay (``rlaif replay``), written as one recipe.

One step, top to bottom:
  1. draw this step's prompts from the benchmark's RL split (seeded by (seed, step), so a
     resumed run draws exactly what an uninterrupted one would);
  2. sample G candidates per prompt with the current policy (old log-probs come with them);
  3. ask the oracle for one ranking per group (reference answers and narratives are shown
     only to oracles that declare they need them);
  4. commit the step's prompts, rollouts and rankings to the LMDB store in one transaction;
  5. compute the loss on the stored batch (``inner_epochs`` passes) and update the policy,
     averaging gradients across data-parallel processes;
  6. log metrics (store, CSV, progress bar), evaluate and checkpoint every K steps.

Resume: a checkpoint holds the trainable weights and optimizer state at some step c; the
steps after c that the store already holds are *replayed* from stored data (no sampling,
no oracle call), then the loop continues live. Because every live step reseeds the global
RNGs from (seed, step), a killed-and-resumed run stores exactly the rollouts and rankings
an uninterrupted run does, and checkpoints carry no RNG state. The checkpoint used is the
newest whole one (its manifest's hashes match), so a cut one costs a longer replay, not
the run. A replayed step keeps the metrics it logged live; what a kill left missing (the
step-0 evaluation, a committed step's metrics, the final evaluation) is computed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlaif.core.config import RunConfig, check_config
from rlaif.core.errors import CheckpointError, OracleError, StoreError, UsageError
from rlaif.core.protocols import CachesVisualFeatures, RankedBatch
from rlaif.core.records import PUBLIC_META_KEYS, Group, Prompt, Ranking, Rollout, RunInfo
from rlaif.core.registry import Registry
from rlaif.train.precision import Precision
from rlaif.train.run_dir import (
    clean_stale_temps,
    clear_uncommitted_run,
    last_committed_step,
    lock_run_dir,
    releases_run_dir,
    save_policy,
)
from rlaif.train.sharding import (
    check_shardable,
    from_main,
    full_optimizer_state,
    full_tensor,
    gathered,
    is_sharded,
    shard_like,
    shard_policy,
    sharded_optimizer_state,
    sharding_mode,
)
from rlaif.train.veripo import phase_seconds

RUN_ID = "main"


@dataclass
class Components:
    benchmark: Any
    policy: Any
    oracle: Any
    loss: Any


@dataclass
class StepData:
    """Everything the update needs for one step: aligned groups and rankings."""

    step: int
    groups: list[Group]
    rankings: list[Ranking]
    sample_seconds: float = 0.0
    rank_seconds: float = 0.0
    oracle_calls: int = 0


@dataclass
class RunSummary:
    run_dir: str
    steps: int
    sft_accuracy: float | None
    final_accuracy: float | None
    wall_seconds: float
    oracle_calls: int
    oracle: str
    loss: str
    eval: dict[str, float] = field(default_factory=dict)
    sft_eval: dict[str, float] = field(default_factory=dict)
    processes: int = 1
    param_checksums: list[float] = field(default_factory=list)
    groups_failed: int = 0  # groups whose ranking failed, over the steps this invocation judged
    phase_seconds: dict[str, float] = field(default_factory=dict)  # [[schedule]] runs: wall s per phase kind

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


# --------------------------------------------------------------------------- helpers
def select_prompts(pool: Sequence[Prompt], step: int, seed: int, k: int) -> list[Prompt]:
    """This step's prompts: a seeded draw that depends only on (seed, step)."""
    rng = random.Random(f"{seed}:{step}")
    return rng.sample(list(pool), min(k, len(pool)))


def visible_prompt(prompt: Prompt, oracle: Any) -> Prompt:
    """Hide ground truth from oracles that did not ask for it: no reference, and of
    ``meta`` only the allow-listed :data:`~rlaif.core.records.PUBLIC_META_KEYS` (gold
    narratives, clip captions and answer lengths all reveal answers)."""
    if getattr(oracle, "needs_reference", False):
        return prompt
    meta = {k: v for k, v in prompt.meta.items() if k in PUBLIC_META_KEYS}
    return replace(prompt, reference=None, meta=meta)


#: What every oracle may read from the benchmark besides frames: the labelled material a
#: judge may be *trained* on (the ``sft`` split and scenes in no split, never
#: ``rl``/``test``), which answers a judge should learn to read alone first (a
#: vocabulary, not an annotation), the fresh scenes (in no split) a judge is adapted
#: on to read its captioner's narratives, and the fresh videos' captions (in no split;
#: the SFT policy's grounding stage read them) a captioner is tuned on.
TRAINING_MATERIAL = frozenset({"judge_training_examples", "judge_focus_answers", "judge_adaptation_scenes",
                               "alignment_examples"})


class OracleBenchmarkView:
    """What an oracle is handed instead of the benchmark.

    Any oracle may decode frames (to caption clips, or count them), read the
    benchmark's ``name`` and ``has_ground_truth``, and train on its
    ``judge_training_examples()`` (with ``judge_focus_answers`` and
    ``judge_adaptation_scenes``) and tune a captioner on its ``alignment_examples()``
    when it has them. The
    rest -- ``item_score``, ``narrative``, ``prompts``, annotations -- is ground truth, and
    opens only when the built oracle declares ``needs_reference`` (:func:`build_oracle` calls :meth:`grant`);
    before that, reading it is a loud :class:`~rlaif.core.errors.OracleError`, not a quiet
    leak. The gate is checked on use because ``needs_reference`` is known only once an
    oracle is built from its options (``llm-judge context="gold"`` declares it)."""

    def __init__(self, benchmark: Any) -> None:
        self._benchmark = benchmark
        self._granted = False
        self.name = getattr(benchmark, "name", type(benchmark).__name__)
        self.has_ground_truth = bool(getattr(benchmark, "has_ground_truth", False))

    def frames(self, video: Any, n_frames: int | None = None) -> Any:
        return self._benchmark.frames(video, n_frames)

    def grant(self) -> None:
        self._granted = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in TRAINING_MATERIAL:
            return getattr(self._benchmark, name)
        if not self._granted:
            raise OracleError(f"an oracle read benchmark.{name} (ground truth) without declaring "
                              "needs_reference; declare it, or use only frames()")
        return getattr(self._benchmark, name)


def build_oracle(registry: Registry, config: RunConfig, benchmark: Any, *, policy: Any = None,
                 store: Any = None, progress: bool = False) -> Any:
    """The configured oracle, wired to an :class:`OracleBenchmarkView` of ``benchmark``
    that opens its ground truth only if the oracle declares ``needs_reference``."""
    choice = config.choice("oracle")
    view = OracleBenchmarkView(benchmark)
    oracle = registry.build("oracle", choice.name, choice.options, benchmark=view, policy=policy, store=store,
                            progress=progress)
    if getattr(oracle, "needs_reference", False):
        view.grant()
    return oracle


def pad_rows(rows: Sequence[Sequence[float]], length: int, value: float = 0.0) -> Any:
    import torch

    out = torch.full((len(rows), length), value, dtype=torch.float32)
    for i, row in enumerate(rows):
        n = min(len(row), length)
        if n:
            out[i, :n] = torch.tensor(list(row[:n]), dtype=torch.float32)
    return out


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_components(config: RunConfig, registry: Registry, *, store: Any = None,
                     policy_path: str | None = None, progress: bool = False) -> Components:
    """Build benchmark, policy, oracle and loss from the registry, wiring them together
    (``progress``: bars while an oracle trains what it needs on first use)."""
    choice = config.choice
    benchmark = registry.build("benchmark", choice("benchmark").name, choice("benchmark").options)
    policy_options = dict(choice("policy").options)
    if policy_path is not None:
        policy_options["path"] = policy_path
    policy = registry.build("policy", choice("policy").name, policy_options, benchmark=benchmark,
                            seed=config.run.seed)
    oracle = build_oracle(registry, config, benchmark, policy=policy, store=store, progress=progress)
    check_oracle_scores_split(oracle, benchmark)
    loss = registry.build("loss", choice("loss").name, choice("loss").options)
    return Components(benchmark, policy, oracle, loss)


def check_oracle_scores_split(oracle: Any, benchmark: Any, split: str = "rl") -> None:
    """Refuse a run whose oracle cannot score some of ``split``'s prompts (its optional
    ``can_score(prompt)``: ground-truth cannot score free-text answers), with one line
    naming how many and the first, before any step samples; without the check the run
    would stop at the first such prompt a step draws."""
    can_score = getattr(oracle, "can_score", None)
    if not callable(can_score):
        return
    prompts = list(benchmark.prompts(split))
    refused = [p for p in prompts if not can_score(visible_prompt(p, oracle))]
    if refused:
        name = getattr(oracle, "name", type(oracle).__name__)
        raise UsageError(
            f"oracle {name} cannot score {len(refused)} of the {len(prompts)} {split} items of "
            f"{getattr(benchmark, 'name', 'the benchmark')} (first: {refused[0].prompt_id!r}): their answers are free "
            f"text that needs a judge; use a judge oracle (e.g. --oracle llm-judge) or an {split} split without "
            "free-text answers"
        )


def init_value_head(comp: Components) -> str | None:
    """Give the policy its value model (``ValueModel``: a LoRA adapter of its own and a
    head, separate from the policy's adapter) before the optimizer is built, when the loss
    needs values (PPO): the head zero-initialised, or from a reward model when the loss
    asks for it (``[loss] value_init = "RM_DIR"``). Returns the reward model path used,
    if any. (A value model made lazily at the first forward would miss the optimizer, and
    a checkpoint holding it would not load into a policy without one.)"""
    path = getattr(comp.loss, "value_init", None)
    if not path and "values" not in getattr(comp.loss, "needs", ()):
        return None
    if not hasattr(comp.policy, "add_value_head"):
        raise UsageError(f"loss {getattr(comp.loss, 'name', '?')} needs a value model and policy "
                         f"{getattr(comp.policy, 'name', '?')} has none (ValueModel: add_value_head, values)")
    head = comp.policy.add_value_head()
    if not path:
        return None
    import torch

    from rlaif.train.reward_model import load_value_head_init

    state = load_value_head_init(path)
    if tuple(state["weight"].shape) != tuple(head.weight.shape):
        raise UsageError(f"loss option value_init: reward head {tuple(state['weight'].shape)} does not fit the "
                         f"policy's value head {tuple(head.weight.shape)}; train the RM on this policy")
    with torch.no_grad():
        head.weight.copy_(state["weight"].to(head.weight))
        head.bias.copy_(state["bias"].to(head.bias))
    return str(path)


def default_policy_path(config: RunConfig, benchmark: Any, progress: bool,
                        registry: Registry | None = None, role: str = "rlaif run") -> str | None:
    """The checkpoint RL starts from when ``[policy]`` gives no ``path``: the policy
    factory's ``DefaultCheckpoint`` (the embedded default: the SFT policy ``rlaif sft``
    builds once, cached), or ``None`` (the factory is built from its options as given).
    The default is always the seed-0 one: ``--seed`` varies the RL run (prompts,
    sampling), not its starting point, so seeds of one study share one SFT model (pass
    ``--policy`` for another)."""
    choice = config.choice("policy")
    if choice.options.get("path"):
        return None
    from rlaif.core.protocols import default_checkpoint
    from rlaif.core.registry import load_plugins
    from rlaif.train.sft import DEFAULT_SFT_SEED

    factory = (registry or load_plugins()).get("policy", choice.name).resolve()
    return default_checkpoint(factory, benchmark, seed=DEFAULT_SFT_SEED, progress=progress, name=choice.name,
                              role=role)


# --------------------------------------------------------------------------- the step
def gather_context(groups: list[Group], oracle: Any, context_fn: Callable[[Prompt], str] | None) -> list[Group]:
    if not getattr(oracle, "needs_context", False) or context_fn is None:
        return groups
    return [replace(g, context=context_fn(g.prompt)) for g in groups]


def policy_version(step: int, config: RunConfig) -> int:
    """Optimizer steps taken before step ``step`` (1-based) samples: each earlier step made
    ``inner_epochs`` of them (:func:`update_policy`). A formula, not a counter, so a
    resumed run stamps its rollouts exactly as an uninterrupted one does."""
    return (step - 1) * config.run.inner_epochs


def with_score_range(ranking: Ranking, oracle: Any) -> Ranking:
    """``ranking`` carrying what its scores mean: the oracle's declared ``score_range``
    (stored with it, so a replay without the oracle normalises them the same way)."""
    declared = getattr(oracle, "score_range", None)
    if ranking.scores is None or ranking.score_range is not None or declared is None:
        return ranking
    return replace(ranking, score_range=[float(x) for x in declared])


def sampling_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed every global RNG restarts from before ``step`` is sampled on ``rank``: a
    function of (seed, step, rank) only, so a resumed run samples what an uninterrupted one
    did and checkpoints need no RNG state. Each data-parallel rank draws its own stream
    (with one stream, every rank's k-th sample would reuse the same uniforms, correlating
    the candidates of different prompts); rank 0's stream is the single-process run's.
    A stable arithmetic seed, not hash(): string hashing is salted per process."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**31)


def sample_step(step: int, prompts: list[Prompt], comp: Components, config: RunConfig,
                context_fn: Callable[[Prompt], str] | None = None, precision: Precision | None = None,
                rank: int = 0) -> StepData:
    """Sample G candidates per prompt and have the oracle rank them (``rank``: this
    process's data-parallel rank, which picks its sampling stream, :func:`sampling_seed`)."""
    import torch

    run = config.run
    seed_everything(sampling_seed(run.seed, step, rank))
    start = time.perf_counter()
    with torch.no_grad(), (precision or Precision()).autocast():
        candidates = comp.policy.generate(prompts, run.group_size, max_new_tokens=run.max_new_tokens,
                                          temperature=run.temperature)
    version = policy_version(step, config)
    candidates = [[replace(r, policy_version=version) for r in rs] for rs in candidates]
    sampled = time.perf_counter()
    groups = [Group(visible_prompt(p, comp.oracle), rs) for p, rs in zip(prompts, candidates, strict=True)]
    groups = gather_context(groups, comp.oracle, context_fn)
    rankings = [with_score_range(r, comp.oracle) for r in comp.oracle.rank(groups)] if groups else []
    ranked = time.perf_counter()
    # Keep the full prompts (with references) for the update and the store.
    groups = [replace(g, prompt=p) for g, p in zip(groups, prompts, strict=True)]
    return StepData(step, groups, rankings, sampled - start, ranked - sampled, oracle_calls=1 if groups else 0)


class OracleFailureWatch:
    """Stops a run whose oracle keeps failing, before the failing step is stored.

    A failed ranking carries no signal: every loss leaves its group out. A step whose
    every group failed, or more than ``[run] max_failed_share`` of the groups over the
    last ``failure_window`` judged steps, means the oracle is broken (an endpoint down,
    replies that do not parse), and a run that went on would train on nothing while
    looking healthy. Nothing is committed for the step that trips the watch, so
    ``--resume`` judges it again once the oracle is fixed."""

    def __init__(self, max_share: float, window: int) -> None:
        self.max_share = max_share
        self.recent: deque[tuple[int, int]] = deque(maxlen=window)  # (failed, groups) per step
        self.total_failed = 0

    def check(self, data: StepData, oracle: Any, run_dir: Path) -> None:
        """Count ``data``'s failed rankings; raise :class:`OracleError` when the run must stop."""
        failures = [rk.failure or "empty ranking" for rk in data.rankings if not rk.ok]
        self.total_failed += len(failures)
        self.recent.append((len(failures), len(data.rankings)))
        failed, groups = (sum(column) for column in zip(*self.recent, strict=True))
        every = bool(failures) and len(failures) == len(data.rankings)
        if self.max_share >= 1 or not ((every or failed > self.max_share * groups) and failures):
            return
        name = getattr(oracle, "name", type(oracle).__name__)
        endpoint = getattr(oracle, "endpoint", None)
        where = f" at {endpoint}" if endpoint else ""
        last = " ".join(failures[-1].split())
        last = last if len(last) <= 300 else last[:297] + "..."
        raise OracleError(
            f"oracle {name}{where} failed on {len(failures)} of {len(data.rankings)} groups at step {data.step} "
            f"({failed} of {groups} over the last {len(self.recent)} steps; [run] max_failed_share = "
            f"{self.max_share:g}); last failure: {last}; step {data.step} was not stored: fix the oracle and "
            f"continue with rlaif run --resume {run_dir}")


# The policy outputs a loss may differentiate; the rest of a batch's tensors are constants.
GRAD_OUTPUTS = ("logprobs", "values", "entropies")


def micro_batches(rows: int, grad_accum: int) -> list[slice]:
    """At most ``grad_accum`` contiguous row ranges of (nearly) equal size covering ``rows``."""
    if rows <= 0:
        return [slice(0, 0)]
    parts = max(1, min(grad_accum, rows))
    size = -(-rows // parts)  # ceil
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def score_rollouts(policy: Any, prompts: Sequence[Prompt], rollouts: Sequence[Rollout], needs: frozenset[str] | set[str],
                   chunks: Sequence[slice] | None = None, *, temperature: float = 1.0) -> dict[str, Any]:
    """``policy.forward_responses`` with the outputs ``needs`` asks for (``values``,
    ``entropies``) at the sampling ``temperature`` (the ``Policy`` protocol's one-temperature
    rule: the stored log-probs are under ``logits / temperature`` too); with ``chunks``,
    one forward per row range, right-padded with zeros (mask 0) to the batch's response
    length and stacked, as one call would return them."""
    import torch

    extra: dict[str, Any] = {"with_values": "values" in needs, "temperature": temperature}
    if "entropies" in needs:
        extra["with_entropies"] = True  # only asked for, so a policy without entropies still fits
    if chunks is None or len(chunks) == 1:
        return dict(policy.forward_responses(prompts, rollouts, **extra))
    parts = [policy.forward_responses(prompts[c], rollouts[c], **extra) for c in chunks]
    width = max(part["mask"].shape[1] for part in parts)
    return {key: torch.cat([torch.nn.functional.pad(part[key], (0, width - part[key].shape[1]))
                            for part in parts]) for key in parts[0]}


def loss_tensors(data: StepData, comp: Components, config: RunConfig, chunks: Sequence[slice] | None = None,
                 precision: Precision | None = None) -> dict[str, Any]:
    """The tensors every inner epoch reuses: reference log-probs and old values (at the
    run's sampling temperature, like the stored log-probs)."""
    import torch

    needs = comp.loss.needs
    precision = precision or Precision()
    temperature = config.run.temperature
    prompts = [g.prompt for g in data.groups for _ in g.rollouts]
    rollouts = [r for g in data.groups for r in g.rollouts]
    tensors: dict[str, Any] = {}
    with torch.no_grad(), precision.autocast():
        if "ref_logprobs" in needs:
            with comp.policy.adapters_disabled():
                tensors["ref_logprobs"] = score_rollouts(comp.policy, prompts, rollouts, set(), chunks,
                                                         temperature=temperature)["logprobs"]
        if "old_values" in needs:
            tensors["old_values"] = score_rollouts(comp.policy, prompts, rollouts, {"values"}, chunks,
                                                   temperature=temperature)["values"]
    tensors["finished"] = torch.tensor([r.finished for r in rollouts], dtype=torch.bool)  # [B*G]
    return tensors


def update_policy(data: StepData, comp: Components, optimizer: Any, config: RunConfig,
                  accelerator: Any, precision: Precision | None = None) -> dict[str, float]:
    """``inner_epochs`` optimizer steps on the step's batch; gradients are averaged across
    processes so every rank applies the same update.

    With ``[run] grad_accum = k`` each forward/backward covers a k-th of the rollouts
    (about a k-th of the activation memory) and the gradient is still exactly the
    full-batch one, whatever the loss normalises over (group statistics, PPO's batch
    whitening, DPO pairs): a no-grad pass gives every micro-batch's outputs, the loss and
    its gradient with respect to those outputs are computed on the whole batch, then each
    micro-batch is run again with grad and back-propagated from its slice of that
    gradient. The price is one extra no-grad forward per epoch."""
    import torch

    if not data.groups:
        return {}
    precision = precision or Precision.for_policy(config.run.mixed_precision, comp.policy)
    needs = comp.loss.needs
    prompts = [g.prompt for g in data.groups for _ in g.rollouts]
    rollouts = [r for g in data.groups for r in g.rollouts]
    chunks = micro_batches(len(rollouts), config.run.grad_accum)
    temperature = config.run.temperature  # the distribution the stored log-probs are under
    fixed = loss_tensors(data, comp, config, chunks, precision)
    params = list(comp.policy.trainable_parameters())
    # A value model (PPO's critic) is clipped on its own: the value loss must not rescale the policy's step.
    value_ids = {id(p) for p in getattr(comp.policy, "value_parameters", list)()} if "values" in needs else set()
    actor = [p for p in params if id(p) not in value_ids]
    critic = [p for p in params if id(p) in value_ids]
    metrics: dict[str, float] = {}
    for _ in range(config.run.inner_epochs):
        optimizer.zero_grad(set_to_none=False)
        if len(chunks) == 1:
            with precision.autocast():
                out = score_rollouts(comp.policy, prompts, rollouts, needs, temperature=temperature)
            loss, metrics = comp.loss(ranked_batch(data, fixed, out, rollouts))
            precision.backward(loss)
        else:
            with torch.no_grad(), precision.autocast():
                out = score_rollouts(comp.policy, prompts, rollouts, needs, chunks, temperature=temperature)
            leaves = {k: v.detach().requires_grad_() for k, v in out.items() if k in GRAD_OUTPUTS}
            loss, metrics = comp.loss(ranked_batch(data, fixed, {**out, **leaves}, rollouts))
            precision.backward(loss)  # fills leaves[k].grad: d loss / d output, scaled like the loss
            for chunk in chunks:
                with precision.autocast():
                    part = score_rollouts(comp.policy, prompts[chunk], rollouts[chunk], needs, temperature=temperature)
                pairs = [(part[k], leaf.grad[chunk, : part[k].shape[1]]) for k, leaf in leaves.items()
                         if leaf.grad is not None and part[k].requires_grad]
                if pairs:
                    torch.autograd.backward([p for p, _ in pairs], [g for _, g in pairs])
        if accelerator is not None and accelerator.num_processes > 1:
            for p in params:
                if p.grad is not None and not is_sharded(p.grad):  # FSDP averaged the shards already
                    p.grad.copy_(accelerator.reduce(p.grad, reduction="mean"))
        precision.unscale_(optimizer)
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(actor, 1.0))
        if critic:
            metrics["value_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(critic, 1.0))
        precision.step(optimizer)
    return metrics


def on_policy(data: StepData, comp: Components, config: RunConfig, precision: Precision | None = None) -> StepData:
    """``data`` with every rollout's log-probs recomputed (no grad, at the run's sampling
    temperature) under the policy about to be updated. A replay trains another policy
    than the one that sampled, so the stored log-probs would make the clipped ratio start
    away from 1 (clipping on stale ratios from the first step); with these the replayed
    update starts on policy, as a live step does."""
    import torch

    rollouts = [r for g in data.groups for r in g.rollouts]
    if not rollouts:
        return data
    prompts = [g.prompt for g in data.groups for _ in g.rollouts]
    chunks = micro_batches(len(rollouts), config.run.grad_accum)
    with torch.no_grad(), (precision or Precision()).autocast():
        logprobs = score_rollouts(comp.policy, prompts, rollouts, set(), chunks,
                                  temperature=config.run.temperature)["logprobs"].float().cpu()  # [N, L]
    fresh = iter(replace(r, logprobs=logprobs[i, : len(r.token_ids)].tolist()) for i, r in enumerate(rollouts))
    groups = [replace(g, rollouts=[next(fresh) for _ in g.rollouts]) for g in data.groups]
    return replace(data, groups=groups)


def ranked_batch(data: StepData, fixed: dict[str, Any], out: dict[str, Any],
                 rollouts: Sequence[Rollout]) -> RankedBatch:
    """The loss's view of one pass: the policy outputs ``out``, the per-step constants
    ``fixed`` and the sampling log-probs as ``old_logprobs``, all ``[B*G, L]``."""
    tensors = {**fixed, **out}
    width = out["logprobs"].shape[1]
    tensors["old_logprobs"] = pad_rows([r.logprobs for r in rollouts], width).to(out["logprobs"].device)
    if "ref_logprobs" in tensors and tensors["ref_logprobs"].shape != out["logprobs"].shape:
        raise RuntimeError("reference and policy log-probs differ in shape")
    return RankedBatch(data.groups, data.rankings, tensors)


def step_metrics(data: StepData) -> dict[str, float]:
    scores = [s for rk in data.rankings if rk.scores for s in rk.scores]
    rollouts = [r for g in data.groups for r in g.rollouts]
    tokens = sum(len(r.token_ids) for r in rollouts)
    out = {
        "rank_failures": float(sum(not rk.ok for rk in data.rankings)),
        "response_tokens": float(tokens / max(len(rollouts), 1)),
    }
    if data.sample_seconds:  # measured only where the step was sampled, not read from the store
        out.update({"sample_s": data.sample_seconds, "rank_s": data.rank_seconds,
                    "tokens_per_s": tokens / data.sample_seconds})
    if scores:
        out["reward_mean"] = sum(scores) / len(scores)
        best = [rk.scores[rk.order[0]] for rk in data.rankings if rk.scores and rk.order]
        out["reward_best"] = sum(best) / max(len(best), 1)
    return out


# --------------------------------------------------------------------------- checkpoints
def trainable_state(policy: Any) -> dict[str, Any]:
    named = getattr(policy, "named_trainable_parameters", None)
    items = list(named()) if named else [(f"p{i}", p) for i, p in enumerate(policy.trainable_parameters())]
    # A sharded parameter is gathered whole (a collective: every rank calls this).
    return {name: full_tensor(p.detach()).clone().contiguous() for name, p in items}


#: Written last into a checkpoint: each file's size and sha256.
MANIFEST = "manifest.json"


@dataclass
class Checkpoint:
    """A checkpoint read whole into memory (:func:`read_checkpoint`), not yet applied."""

    step: int
    path: Path
    trainable: dict[str, Any]
    optimizer: dict[str, Any]
    grad_scaler: dict[str, Any] | None = None


def _digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, step: int, policy: Any, optimizer: Any, precision: Precision | None = None,
                    *, write: bool = True) -> Path:
    """Trainable weights (safetensors), optimizer state (with the fp16 loss scale) and the
    step, written to a temp dir and renamed so a kill never leaves half a checkpoint.

    The rename alone does not survive a power cut or a full disk: the directory can
    land before its files' bytes do. So the files are synced, and a manifest of their
    sizes and sha256, written last, lets :func:`read_checkpoint` tell a whole checkpoint
    from a cut one. A sharded run calls it on every rank (gathering the shards is a
    collective) and only rank 0 has ``write``."""
    import torch
    from safetensors.torch import save_file

    trainable, optimizer_state = trainable_state(policy), full_optimizer_state(optimizer)
    final = run_dir / "checkpoints" / f"step-{step:06d}"
    if not write:
        return final
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable, str(tmp / "trainable.safetensors"))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    if precision is not None and precision.state_dict():
        torch.save(precision.state_dict(), tmp / "grad_scaler.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    files = sorted(p for p in tmp.iterdir())
    for path in files:
        _fsync(path)
    (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": {p.name: _digest(p) for p in files}}, indent=1))
    _fsync(tmp / MANIFEST)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(final.parent)
    return final


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint directory of the run, newest first, whole or
    not (temp directories of an unfinished save excluded)."""
    found = []
    for path in (run_dir / "checkpoints").glob("step-*"):
        number = path.name.removeprefix("step-")
        if path.is_dir() and number.isdigit():
            found.append((int(number), path))
    return sorted(found, reverse=True)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The newest checkpoint directory, unchecked (:func:`newest_whole_checkpoint` checks)."""
    found = checkpoints(run_dir)
    return found[0] if found else None


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint into memory, checking every file against the manifest; raise
    :class:`~rlaif.core.errors.CheckpointError` saying what is wrong. Nothing is applied
    yet, so a damaged checkpoint leaves the policy and optimizer as they were."""
    import torch
    from safetensors.torch import load_file

    where = f"{path.parent.name}/{path.name}"
    if (path / MANIFEST).exists():
        try:
            listed = dict(json.loads((path / MANIFEST).read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{where}: unreadable {MANIFEST} ({exc})") from exc
        for name, want in sorted(listed.items()):
            if not (path / name).is_file():
                raise CheckpointError(f"{where}/{name} is missing")
            got = _digest(path / name)
            if got != want:
                raise CheckpointError(f"{where}/{name} is damaged ({got['bytes']} bytes, its manifest says "
                                      f"{want.get('bytes')}, and the sha256 differs)")
    # Without a manifest (checkpoints written before them) reading is the only check.
    try:
        step = int(json.loads((path / "state.json").read_text())["step"])
        trainable = load_file(str(path / "trainable.safetensors"))
        optimizer = torch.load(path / "optimizer.pt", weights_only=True)
        scaler = torch.load(path / "grad_scaler.pt", weights_only=True) if (path / "grad_scaler.pt").exists() else None
    except Exception as exc:  # a cut zip, a bad safetensors header, a missing file: all say "damaged"
        raise CheckpointError(f"{where} cannot be read ({type(exc).__name__}: {exc})") from exc
    return Checkpoint(step, path, trainable, optimizer, scaler)


def apply_checkpoint(checkpoint: Checkpoint, policy: Any, optimizer: Any, precision: Precision | None = None) -> None:
    import torch

    current = trainable_state(policy)
    if checkpoint.trainable.keys() != current.keys():
        raise StoreError(f"{checkpoint.path}: checkpoint does not match this policy's trainable parameters")
    named = getattr(policy, "named_trainable_parameters", None)
    items = list(named()) if named else [(f"p{i}", p) for i, p in enumerate(policy.trainable_parameters())]
    with torch.no_grad():
        for name, p in items:
            p.copy_(shard_like(p, checkpoint.trainable[name]))
    optimizer.load_state_dict(sharded_optimizer_state(optimizer, checkpoint.optimizer))
    if precision is not None and checkpoint.grad_scaler is not None:
        precision.load_state_dict(checkpoint.grad_scaler)


def load_checkpoint(path: Path, policy: Any, optimizer: Any, precision: Precision | None = None) -> None:
    apply_checkpoint(read_checkpoint(path), policy, optimizer, precision)


def newest_whole_checkpoint(run_dir: Path, notify: Callable[[str], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint that reads back whole. Damaged newer ones are passed over,
    and ``notify`` gets one line saying so: the steps after the one used are replayed
    from the store, so the run still ends where an uninterrupted one would."""
    damaged: list[str] = []
    found = None
    for _, path in checkpoints(run_dir):
        try:
            found = read_checkpoint(path)
            break
        except CheckpointError as exc:
            damaged.append(str(exc))
    if damaged and notify is not None:
        start = f"from {found.path.name}" if found else "from the start (no whole checkpoint)"
        notify(f"passing over a damaged checkpoint: {'; '.join(damaged)}; resuming {start} and replaying "
               "the later steps from the store")
    return found


def _notice(message: str) -> None:
    """One line to stderr for something the user should know but that stops nothing."""
    print(f"note: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- logging
class MetricsLog:
    """Per-step metrics to the store and to ``metrics.csv`` (columns grow as needed).

    With a store, rows start from it, typed, and the CSV is rewritten from them: the CSV
    gives text, with ``''`` wherever a row lacks a column, and a merged row read from it
    would store strings. Without one (a replay's directory) the CSV is read back into
    numbers, blanks dropped."""

    def __init__(self, run_dir: Path, store: Any) -> None:
        self.path = run_dir / "metrics.csv"
        self.store = store
        self.rows: list[dict[str, Any]] = []
        if store is not None:
            self.rows = [{**values, "step": step} for step, values in store.iter_metrics(RUN_ID)]
        elif self.path.exists():
            with self.path.open() as fh:
                self.rows = [_typed_row(r) for r in csv.DictReader(fh)]

    def row(self, step: int) -> dict[str, Any]:
        return next((r for r in self.rows if int(r["step"]) == step), {})

    def evaluation(self, step: int) -> dict[str, float]:
        """The evaluation logged at ``step``, ``eval/`` prefix removed; ``{}`` if none."""
        return {k.removeprefix("eval/"): float(v) for k, v in self.row(step).items()
                if k.startswith("eval/") and isinstance(v, (int, float))}  # not the '' older runs stored

    def has_update(self, step: int) -> bool:
        """Whether ``step``'s training metrics (anything but its evaluation) are logged."""
        return any(k != "step" and not k.startswith("eval/") for k in self.row(step))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Add ``metrics`` to the row of ``step`` (merging with what is already there)."""
        row = {**self.row(step), "step": step, **{k: round(float(v), 6) for k, v in metrics.items()}}
        self.rows = [r for r in self.rows if int(r["step"]) != step] + [row]
        if self.store is not None:
            self.store.put_metrics(RUN_ID, step, row, overwrite=True)
        columns: list[str] = []
        for r in self.rows:
            columns += [c for c in r if c not in columns]
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


def _typed_row(row: Mapping[str, str | None]) -> dict[str, Any]:
    """A ``metrics.csv`` row as logged: numbers as numbers, blank cells left out."""
    typed: dict[str, Any] = {}
    for key, value in row.items():
        if value in ("", None):
            continue
        try:
            typed[key] = float(value)  # type: ignore[arg-type]
        except ValueError:
            typed[key] = value
    typed["step"] = int(typed["step"])
    return typed


def evaluate(comp: Components, config: RunConfig, run_dir: Path, step: int, *, write: bool = True) -> dict[str, float]:
    """Held-out metrics; the per-item answers and scores go to ``RUN_DIR/eval/step-NNNNNN.jsonl``
    so two runs can be compared item by item (``rlaif eval --compare``); not with ``write``
    off (the other ranks of a sharded run, which evaluate alongside rank 0)."""
    from rlaif.train.evaluate import evaluate_items, run_items_path, write_items

    evaluation = evaluate_items(comp.policy, comp.benchmark, split="test", limit=config.run.eval_items)
    if write:
        write_items(run_items_path(run_dir, step), evaluation.items)
    return evaluation.metrics


def evaluates_here(wanted_on_main: bool, accelerator: Any, sharded: bool) -> bool:
    """Whether this rank evaluates now: rank 0 when it wants to; with a sharded policy
    every rank whenever rank 0 does, since each sharded forward is a collective."""
    return bool(from_main(wanted_on_main, accelerator)) if sharded else wanted_on_main


# --------------------------------------------------------------------------- the loop
# Launch configs that shard the model in ways the loop does not drive. An FSDP config
# selects the loop's own sharded mode (rlaif.train.sharding) instead.
SHARDED = ("DEEPSPEED", "MEGATRON_LM")


def make_accelerator() -> Any:
    """The process group and device of this process (data parallel; sharding, where asked,
    is :mod:`rlaif.train.sharding`'s). Precision is handled by
    :class:`~rlaif.train.precision.Precision`, not here."""
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type)).upper()
    if kind in SHARDED:
        raise UsageError(f"accelerate config asks for {kind}, and rlaif run shards only with FSDP2 "
                         "([run] sharding = \"fsdp\" or an accelerate FSDP config); launch without "
                         "DeepSpeed/Megatron (see README, 'Several processes or GPUs')")
    return accelerator


def make_optimizer(policy: Any, config: RunConfig) -> Any:
    import torch

    return torch.optim.AdamW(list(policy.trainable_parameters()), lr=config.run.lr, weight_decay=0.0)


@releases_run_dir
def run_rl(run_dir: str | Path, config: RunConfig, registry: Registry, *, resume: bool = False,
           progress: bool = True, context_fn: Callable[[Prompt], str] | None = None,
           on_step: Callable[[int], None] | None = None) -> RunSummary:
    """Run (or resume) RL in ``run_dir``; see the module docstring for the recipe."""
    from rlaif.core.store import RunStore, store_path

    run_dir = Path(run_dir)
    started = time.perf_counter()
    check_config(config)  # before anything is created or trained, as the checks below
    for kind in ("benchmark", "policy", "oracle", "loss"):
        registry.check(kind, config.choice(kind).name, config.choice(kind).options)
    accelerator = make_accelerator()
    main = accelerator.is_main_process
    run_dir.mkdir(parents=True, exist_ok=True)
    # One writer per directory, held to the end: a second `rlaif run` (or --resume) would
    # replay steps and overwrite what this one stores. The OS drops it if this process dies.
    lock = lock_run_dir(run_dir) if main else None
    if main:
        clean_stale_temps(run_dir)
    if main and not resume and (store_path(run_dir).exists() or (run_dir / "checkpoints").exists()):
        if last_committed_step(run_dir, RUN_ID) is not None or latest_checkpoint(run_dir) is not None:
            raise UsageError(f"{run_dir} already holds a run; pass --resume {run_dir} or choose a new directory")
        clear_uncommitted_run(run_dir)  # a run that failed before its first step: start afresh
    seed_everything(config.run.seed)

    store = RunStore(store_path(run_dir)) if main else None
    if store is not None and not resume:
        store.put_run(RunInfo(RUN_ID, config.to_dict(), config.run.seed, time.time(), _version()))
    if store is not None and resume:
        record_extended_steps(store, config.run.steps)
    accelerator.wait_for_everyone()

    benchmark_probe = registry.build("benchmark", config.choice("benchmark").name,
                                     config.choice("benchmark").options)
    policy_path = None
    if main:
        policy_path = default_policy_path(config, benchmark_probe, progress, registry)
    accelerator.wait_for_everyone()
    if not main:
        policy_path = default_policy_path(config, benchmark_probe, progress=False, registry=registry)
    comp = build_components(config, registry, store=store, policy_path=policy_path, progress=progress and main)
    init_value_head(comp)  # before the optimizer, which must see the head's parameters
    if hasattr(comp.policy, "to"):
        comp.policy.to(accelerator.device)
    # FSDP2 across the processes (one process holds the whole model anyway).
    sharded = sharding_mode(config.run.sharding) == "fsdp" and accelerator.num_processes > 1
    if sharded:
        check_shardable(comp.policy, accelerator.num_processes, config.run.prompts_per_step)
        shard_policy(comp.policy, accelerator.device, accelerator.num_processes)
    optimizer = make_optimizer(comp.policy, config)  # over the shards when sharded
    precision = Precision.for_policy(config.run.mixed_precision, comp.policy)
    log = MetricsLog(run_dir, store)

    # ---- where to start: checkpoint, then replay of committed-but-unsaved steps
    start_step, oracle_calls = 0, 0
    reader = store if store is not None else RunStore(run_dir, readonly=True)
    committed = reader.last_committed_step(RUN_ID) if resume else None
    sft_eval = log.evaluation(0) if main else {}
    if evaluates_here(main and not sft_eval, accelerator, sharded):
        # Before a checkpoint loads, as step 0 evaluates the starting policy; a resume of a
        # run killed before this evaluation computes it here too.
        sft_eval = evaluate(comp, config, run_dir, 0, write=main)
        if main:
            log.log(0, {f"eval/{k}": v for k, v in sft_eval.items()})
    if resume:
        found = newest_whole_checkpoint(run_dir, notify=_notice if main else None)
        if found is not None:
            start_step = found.step
            apply_checkpoint(found, comp.policy, optimizer, precision)
    prompts_pool = list(comp.benchmark.prompts("rl"))
    prompts_by_id = {p.prompt_id: p for p in prompts_pool}
    rank, world = accelerator.process_index, accelerator.num_processes

    bar = _Progress(config.run.steps, start_step, enabled=progress and main)
    failures = OracleFailureWatch(config.run.max_failed_share, config.run.failure_window)
    veripo = None
    if config.schedule:  # VerIPO's GRPO/DPO phases (rlaif.train.veripo): the loss, pool and DPO steps
        from rlaif.train.veripo import VeripoLoop

        veripo = VeripoLoop(config, registry, comp, store, reader, processes=world, run_id=RUN_ID, notify=_notice)
    for step in range(start_step + 1, config.run.steps + 1):
        step_started = time.perf_counter()
        replayed = committed is not None and step <= committed
        step_comp = comp if veripo is None else veripo.components(step, comp)
        phase_extra: dict[str, float] = {}
        if veripo is not None and veripo.is_dpo(step):  # pairs from the store: no sampling, no oracle
            data, phase_extra = veripo.dpo_step(step, prompts_by_id, commit=not replayed)
        elif replayed:
            data = stored_step(reader, step, comp.oracle.name, prompts_by_id)
        else:
            pool = prompts_pool if veripo is None else veripo.pool(step, prompts_pool)
            prompts = select_prompts(pool, step, config.run.seed, config.run.prompts_per_step)
            data = sample_step(step, prompts[rank::world], comp, config, context_fn, precision, rank=rank)
            data = gather_step(data, accelerator)
            oracle_calls += data.oracle_calls
            try:  # every rank sees the gathered rankings, so every rank stops here alike
                failures.check(data, comp.oracle, run_dir)
            except OracleError:
                bar.close()
                raise
            if store is not None:
                commit_sampled_step(store, data, comp.oracle.name)
            accelerator.wait_for_everyone()
        local = _shard(data, rank, world)
        metrics = update_policy(local, step_comp, optimizer, config, accelerator, precision)
        metrics.update(step_metrics(data))
        if isinstance(comp.policy, CachesVisualFeatures):
            metrics["feature_cache_mb"] = comp.policy.feature_cache_bytes() / 2**20
        if veripo is not None:
            metrics.update({**phase_extra, **veripo.step_metrics(step, time.perf_counter() - step_started)})
        metrics = _mean_across(metrics, accelerator)
        # A replayed step keeps what it logged live (its timings, its evaluation): it is
        # logged again only when the kill came between its commit and its metrics.
        to_log = main and not (replayed and log.has_update(step))
        due = bool(config.run.eval_every) and step % config.run.eval_every == 0 and step != config.run.steps
        if due and evaluates_here(to_log, accelerator, sharded):
            metrics.update({f"eval/{k}": v for k, v in evaluate(comp, config, run_dir, step, write=main).items()})
        if to_log:
            log.log(step, metrics)
        if step % config.run.checkpoint_every == 0 or step == config.run.steps:
            if main or sharded:  # sharded: every rank gathers, rank 0 writes
                save_checkpoint(run_dir, step, comp.policy, optimizer, precision, write=main)
            accelerator.wait_for_everyone()
        bar.advance(step, metrics)
        if on_step is not None:
            on_step(step)
    bar.close()

    final_eval: dict[str, float] = {}
    if main:
        final_eval = log.evaluation(config.run.steps)  # a resumed finished run keeps its own
    if evaluates_here(main and not final_eval, accelerator, sharded):
        final_eval = evaluate(comp, config, run_dir, config.run.steps, write=main)
        if main:
            log.log(config.run.steps, {f"eval/{k}": v for k, v in final_eval.items()})
    with gathered(comp.policy) if sharded else nullcontext():  # save() reads whole tensors
        if main:
            save_policy(comp.policy, run_dir)
    if main and store is not None:
        store.close()
    if lock is not None:
        lock.release()
    checksums = _param_checksums(comp.policy, accelerator)
    if accelerator.num_processes > 1:  # the last collective: shut the process group down in order
        accelerator.end_training()
    if len(set(checksums)) > 1:
        raise RuntimeError(f"data-parallel ranks diverged: parameter checksums {checksums}")
    return RunSummary(
        run_dir=str(run_dir), steps=config.run.steps, processes=accelerator.num_processes,
        param_checksums=checksums,
        sft_accuracy=sft_eval.get("acc/all"), final_accuracy=final_eval.get("acc/all"),
        wall_seconds=time.perf_counter() - started, oracle_calls=oracle_calls, groups_failed=failures.total_failed,
        oracle=config.choice("oracle").name, loss=config.choice("loss").name,
        eval=final_eval, sft_eval=sft_eval, phase_seconds=phase_seconds(log.rows) if veripo is not None else {},
    )


def record_extended_steps(store: Any, steps: int, run_id: str = RUN_ID) -> None:
    """Store a resumed run's new length (``--resume --steps``), so the next resume, with
    or without ``--steps``, runs to it; the rest of the stored config stays as written."""
    info = store.get_run(run_id)
    if info is None or int(info.config.get("run", {}).get("steps", steps)) >= steps:
        return
    config = {**info.config, "run": {**info.config.get("run", {}), "steps": steps}}
    store.put_run(replace(info, config=config), overwrite=True)


def _version() -> str:
    from rlaif import __version__

    return __version__


def commit_sampled_step(store: Any, data: StepData, oracle: str, run_id: str = RUN_ID) -> None:
    """Commit a sampled step: its prompts (full records, references included), rollouts
    and rankings in one transaction, so the store alone says what was asked."""
    store.commit_step(run_id, data.step, prompts=[g.prompt for g in data.groups],
                      rollouts=[r for g in data.groups for r in g.rollouts], rankings={oracle: data.rankings})


def stored_step(store: Any, step: int, oracle: str, prompts_by_id: Mapping[str, Prompt] | None = None,
                run_id: str = RUN_ID) -> StepData:
    """Rebuild a step's groups and rankings from the store (used by resume and replay).
    Prompts come from the store; ``prompts_by_id`` (the benchmark's RL split) is the
    fallback for stores written before prompts were committed with their step."""
    rollouts = list(store.iter_shard("rollouts", run_id, step))
    rankings = list(store.iter_shard("rankings", run_id, step, oracle=oracle))
    by_prompt: dict[str, list[Rollout]] = {}
    for r in rollouts:
        by_prompt.setdefault(r.prompt_id, []).append(r)
    stored = store.get_prompts(run_id, [r.prompt_id for r in rankings])
    fallback = prompts_by_id or {}
    groups = []
    for ranking in rankings:
        prompt = stored.get(ranking.prompt_id) or fallback.get(ranking.prompt_id)
        if prompt is None:
            raise StoreError(f"prompt {ranking.prompt_id!r} is neither in the store nor in the benchmark's "
                             "RL split; replay with the benchmark options the run used")
        rs = sorted(by_prompt.get(ranking.prompt_id, []), key=lambda r: r.index)
        groups.append(Group(prompt, rs))
    return StepData(step, groups, rankings)


def gather_step(data: StepData, accelerator: Any) -> StepData:
    """All ranks' groups in rank order, so rank 0 can commit the whole step."""
    if accelerator.num_processes == 1:
        return data
    from accelerate.utils import gather_object

    groups = gather_object([data.groups])
    rankings = gather_object([data.rankings])
    return replace(data, groups=[g for part in groups for g in part],
                   rankings=[r for part in rankings for r in part])


def _shard(data: StepData, rank: int, world: int) -> StepData:
    if world == 1:
        return data
    return replace(data, groups=data.groups[rank::world], rankings=data.rankings[rank::world])


def _param_checksums(policy: Any, accelerator: Any) -> list[float]:
    """One float per rank summarising its trainable weights: equal on every rank when
    gradient averaging keeps the replicas in sync (checked at the end of every run)."""
    import torch

    with torch.no_grad():
        local = float(sum((p.double() * (i + 1)).sum() for i, p in enumerate(trainable_state(policy).values())))
    if accelerator.num_processes == 1:
        return [local]
    from accelerate.utils import gather_object

    return [float(x) for x in gather_object([local])]


def _mean_across(metrics: dict[str, float], accelerator: Any) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return metrics
    from accelerate.utils import gather_object

    parts = gather_object([metrics])
    keys = set().union(*parts)
    return {k: sum(p.get(k, 0.0) for p in parts) / len(parts) for k in keys}


class _Progress:
    """A rich progress bar with the numbers people watch: reward, KL, loss, tokens/s."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]rl"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        self.progress.start()
        self.task = self.progress.add_task("rl", total=total, completed=done, info="")

    def advance(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        shown = [("reward", "reward_mean"), ("kl", "kl"), ("loss", "loss"), ("tok/s", "tokens_per_s"),
                 ("acc", "eval/acc/all")]
        info = "  ".join(f"{label} {metrics[key]:.3f}" for label, key in shown if key in metrics)
        self.progress.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


# --------------------------------------------------------------------------- replay
def replay_run(run_dir: str | Path, loss: str, registry: Registry, *, loss_options: dict[str, Any] | None = None,
               oracle: str | None = None, out_dir: str | Path | None = None, progress: bool = True) -> RunSummary:
    """Train a fresh policy (the run's starting point) on the run's stored rollouts and
    rankings with another loss: no sampling and no oracle call, so the data is held fixed
    and only the loss changes. Old log-probs are recomputed under the policy being
    trained before each step's update (:func:`on_policy`), not read from the store. Results go to ``RUN_DIR/replays/<loss>/`` by default."""
    from rlaif.core.config import ComponentChoice, config_from_dict
    from rlaif.core.store import RunStore

    started = time.perf_counter()
    run_dir = Path(run_dir)
    source = RunStore(run_dir, readonly=True)
    info = source.get_run(RUN_ID)
    if info is None:
        raise StoreError(f"{run_dir}: no run recorded in this store; check the path")
    config = config_from_dict(info.config, source=str(run_dir))
    config.components["loss"] = ComponentChoice(loss, dict(loss_options or {}))
    oracle_name = oracle or config.choice("oracle").name
    steps = source.steps(RUN_ID, kind="rankings", oracle=oracle_name)
    if not steps:
        raise StoreError(f"{run_dir}: no rankings by oracle {oracle_name!r}; stored oracles: "
                         f"{', '.join(source.oracles(RUN_ID)) or 'none'}")
    out = Path(out_dir) if out_dir else run_dir / "replays" / loss
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.run.seed)

    benchmark = registry.build("benchmark", config.choice("benchmark").name, config.choice("benchmark").options)
    policy_path = default_policy_path(config, benchmark, progress, registry, role="rlaif replay")
    policy_options = dict(config.choice("policy").options)
    if policy_path is not None:
        policy_options["path"] = policy_path
    policy = registry.build("policy", config.choice("policy").name, policy_options, benchmark=benchmark,
                            seed=config.run.seed)
    comp = Components(benchmark, policy, oracle=None, loss=registry.build("loss", loss, loss_options or {}))
    init_value_head(comp)
    optimizer = make_optimizer(policy, config)
    precision = Precision.for_policy(config.run.mixed_precision, policy)
    prompts_by_id = {p.prompt_id: p for p in benchmark.prompts("rl")}
    log = MetricsLog(out, None)
    bar = _Progress(len(steps), 0, enabled=progress)
    for i, step in enumerate(steps, start=1):
        data = on_policy(stored_step(source, step, oracle_name, prompts_by_id), comp, config, precision)
        metrics = update_policy(data, comp, optimizer, config, accelerator=None, precision=precision)
        metrics.update(step_metrics(data))
        log.log(step, metrics)
        bar.advance(i, metrics)
    bar.close()
    final_eval = evaluate(comp, config, out, steps[-1])
    log.log(steps[-1], {f"eval/{k}": v for k, v in final_eval.items()})
    policy.save(str(out / "policy"))
    from safetensors.torch import save_file

    save_file(trainable_state(policy), str(out / "trainable.safetensors"))
    source.close()
    summary = RunSummary(run_dir=str(out), steps=len(steps), sft_accuracy=None,
                         final_accuracy=final_eval.get("acc/all"), wall_seconds=time.perf_counter() - started,
                         oracle_calls=0, oracle=oracle_name, loss=loss, eval=final_eval)
    (out / "summary.json").write_text(summary.to_json())
    return summary
