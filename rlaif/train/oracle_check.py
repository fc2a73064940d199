"""Oracle diagnostics (``rlaif oracle check``): how well does an oracle rank, before any
RL step is spent on it?

Recipe:
  1. draw N prompts with known answers from the benchmark's ``test`` (or ``rl``) split
     (seeded) and sample G candidates per prompt with the SFT policy;
  2. rank every group with the ``ground-truth`` oracle (the reference order) and with
     the oracle under test, which sees the prompts as the RL loop shows them (reference
     and ``gold*`` meta hidden unless it declares ``needs_reference``);
  3. rank again with each group's candidates shown in reversed order, and map the
     result back;
  4. report, per context setting of the oracle:

     * ``top1``: how often the oracle's best candidate is among the ground truth's best
       (a tied top block earns the fraction of its members that are);
     * ``kendall_tau``: mean Kendall tau-b (ties handled) between the oracle's and the
       ground truth's positions;
     * ``failure_rate``: rankings with ``failure`` set (unparseable judge output, ...);
     * ``position_bias``: how often the winner changes when the candidates are reversed;
     * ``permutation_agreement``: mean tau-b between the original and reversed rankings;
     * ``latency_s``: oracle seconds per group (original order only).

     Groups whose candidates all tie under the ground truth carry no order and are left
     out of ``top1`` and ``kendall_tau`` (``groups_used`` counts the rest).

An oracle whose factory takes a ``context`` option (``llm-judge``) is checked with
``context="narrative"`` and ``context="none"`` side by side unless one is asked for.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rlaif.core.errors import UsageError
from rlaif.core.records import Group, Prompt, Ranking

CONTEXT_MODES = ("narrative", "none")


# --------------------------------------------------------------------------- the math
def kendall_tau_b(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall tau-b between two rank-position vectors (lower = better; ties allowed).

    1.0 when neither separates any pair (both all tied), 0.0 when only one does."""
    if len(a) != len(b):
        raise ValueError(f"kendall_tau_b needs equal lengths, got {len(a)} and {len(b)}")
    concordant = discordant = only_a = only_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if db == 0:
            only_a += 1  # a separates the pair, b ties it
        elif da == 0:
            only_b += 1
        elif (da > 0) == (db > 0):
            concordant += 1
        else:
            discordant += 1
    pairs_a = concordant + discordant + only_a
    pairs_b = concordant + discordant + only_b
    if pairs_a == 0 and pairs_b == 0:
        return 1.0
    if pairs_a == 0 or pairs_b == 0:
        return 0.0
    return (concordant - discordant) / math.sqrt(pairs_a * pairs_b)


def top_block(ranking: Ranking) -> list[int]:
    """The candidates sharing the best rank (one unless the oracle tied its top)."""
    blocks = ranking.tie_groups()
    return blocks[0] if blocks else []


def top1_credit(ranking: Ranking, reference: Ranking) -> float:
    """Share of the oracle's top block that is among the reference's best block: the
    chance that the oracle's winner, ties broken at random, is a best answer."""
    mine, best = top_block(ranking), set(top_block(reference))
    return sum(c in best for c in mine) / len(mine) if mine else 0.0


def reversed_group(group: Group) -> tuple[Group, list[int]]:
    """The group with its candidates shown in reverse order, and ``shown`` where
    ``shown[k]`` is the original index of the candidate now at position ``k``."""
    shown = list(range(len(group.rollouts)))[::-1]
    rollouts = [replace(group.rollouts[i], index=k) for k, i in enumerate(shown)]
    return replace(group, rollouts=rollouts), shown


def unpermute_positions(ranking: Ranking, shown: Sequence[int]) -> list[float]:
    """Positions of a ranking of a permuted group, indexed by the original candidates."""
    permuted = ranking.positions()
    positions = [0.0] * len(shown)
    for k, original in enumerate(shown):
        positions[original] = permuted[k]
    return positions


def all_tied(ranking: Ranking) -> bool:
    return len(ranking.tie_groups()) <= 1


@dataclass
class OracleDiagnostics:
    """What ``rlaif oracle check`` reports for one oracle setting (see module docstring)."""

    oracle: str
    context: str
    groups: int
    groups_used: int
    groups_all_tied: int
    failures: int
    failure_rate: float
    top1: float | None
    kendall_tau: float | None
    position_bias: float | None
    permutation_agreement: float | None
    latency_s: float
    options: dict[str, Any]
    #: Kendall tau per question type (``Prompt.qtype``), over the same groups.
    kendall_tau_by_type: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def diagnose(oracle: Any, groups: Sequence[Group], reference: Sequence[Ranking], *, context: str = "default",
             options: dict[str, Any] | None = None, permute: bool = True) -> OracleDiagnostics:
    """Rank ``groups`` with ``oracle`` (and, with ``permute``, their reversed versions) and
    compare with the ground-truth ``reference`` rankings. ``groups`` hold the full
    prompts; the oracle sees them as the RL loop would show them."""
    from rlaif.train.rl import visible_prompt

    if len(groups) != len(reference):
        raise ValueError(f"{len(groups)} groups for {len(reference)} reference rankings")
    shown_groups = [replace(g, prompt=visible_prompt(g.prompt, oracle)) for g in groups]
    start = time.perf_counter()
    rankings = list(oracle.rank(shown_groups)) if shown_groups else []
    seconds = time.perf_counter() - start
    if len(rankings) != len(groups):
        raise UsageError(f"oracle {getattr(oracle, 'name', oracle)!r} returned {len(rankings)} rankings "
                         f"for {len(groups)} groups")
    permuted: list[Ranking | None] = [None] * len(groups)
    orders: list[list[int]] = []
    if permute and shown_groups:
        flipped = [reversed_group(g) for g in shown_groups]
        orders = [shown for _, shown in flipped]
        permuted = list(oracle.rank([g for g, _ in flipped]))

    taus, tops, agreements, changed = [], [], [], []
    by_type: dict[str, list[float]] = {}
    tied = 0
    failures = sum(not r.ok for r in rankings)
    for b, (ranking, truth) in enumerate(zip(rankings, reference, strict=True)):
        if not truth.ok or all_tied(truth):
            tied += 1
        elif ranking.ok:
            taus.append(kendall_tau_b(ranking.positions(), truth.positions()))
            by_type.setdefault(groups[b].prompt.qtype, []).append(taus[-1])
            tops.append(top1_credit(ranking, truth))
        again = permuted[b]
        if ranking.ok and again is not None and again.ok:
            back = unpermute_positions(again, orders[b])
            agreements.append(kendall_tau_b(ranking.positions(), back))
            winner = {orders[b][k] for k in top_block(again)}
            changed.append(float(winner != set(top_block(ranking))))
    return OracleDiagnostics(
        oracle=str(getattr(oracle, "name", type(oracle).__name__)), context=context, groups=len(groups),
        groups_used=len(taus), groups_all_tied=tied, failures=failures,
        failure_rate=failures / len(groups) if groups else 0.0, top1=_mean(tops), kendall_tau=_mean(taus),
        position_bias=_mean(changed), permutation_agreement=_mean(agreements),
        latency_s=seconds / len(groups) if groups else 0.0, options=dict(options or {}),
        kendall_tau_by_type={q: sum(v) / len(v) for q, v in sorted(by_type.items())},
    )


# --------------------------------------------------------------------------- the data
def check_prompts(benchmark: Any, split: str, n_groups: int, seed: int) -> list[Prompt]:
    """A seeded sample of ``n_groups`` prompts of ``split`` that have a reference."""
    pool = [p for p in benchmark.prompts(split) if p.reference is not None]
    if not pool:
        raise UsageError(f"the {split!r} split of {getattr(benchmark, 'name', 'the benchmark')} has no prompts "
                         "with reference answers")
    return random.Random(f"oracle-check:{seed}").sample(pool, min(n_groups, len(pool)))


def sample_groups(policy: Any, prompts: Sequence[Prompt], group_size: int, *, seed: int = 0,
                  max_new_tokens: int = 32, temperature: float = 1.0, batch: int = 16) -> list[Group]:
    """G sampled candidates per prompt (seeded), ``batch`` prompts per generate call."""
    import torch

    torch.manual_seed(seed)
    groups: list[Group] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch):
            chunk = list(prompts[start : start + batch])
            candidates = policy.generate(chunk, group_size, max_new_tokens=max_new_tokens, temperature=temperature)
            groups += [Group(p, rs) for p, rs in zip(chunk, candidates, strict=True)]
    return groups


def default_policy(benchmark: Any, *, seed: int = 0, path: str | None = None, progress: bool = False,
                   name: str | None = None, options: dict[str, Any] | None = None, registry: Any = None) -> Any:
    """The policy that samples the candidates: ``name`` (default: the default policy)
    with ``options``, from the checkpoint at ``path`` or else the policy's
    ``DefaultCheckpoint`` (for the default policy, the seed-0 SFT policy trained once into
    the cache by :func:`rlaif.train.sft.run_sft`). It must have the ``Sampler``
    capability (a narrative context also captions with it)."""
    from rlaif.core.config import DEFAULT_COMPONENTS
    from rlaif.core.protocols import Sampler, default_checkpoint, require_capability
    from rlaif.core.registry import load_plugins
    from rlaif.train.sft import DEFAULT_SFT_SEED

    registry = registry or load_plugins()
    name = name or DEFAULT_COMPONENTS["policy"]
    options = dict(options or {})
    if path is not None:
        options["path"] = path
    if not options.get("path"):
        found = default_checkpoint(registry.get("policy", name).resolve(), benchmark, seed=DEFAULT_SFT_SEED,
                                   progress=progress, name=name, role="rlaif oracle check")
        if found is not None:
            options["path"] = found
    # new_adapter (the default): a saved adapter is merged and a fresh zero one attached, so
    # the policy samples exactly as the checkpoint, and adapters_disabled() is the same
    # model (what judges and captioners use as "the SFT self").
    policy = registry.build("policy", name, options, benchmark=benchmark, seed=seed)
    require_capability(policy, Sampler, "rlaif oracle check (sampling candidates)")
    return policy


# --------------------------------------------------------------------------- wiring
def _own_context(oracle: Any) -> str:
    """What an oracle without a ``context`` option compares against, for the report."""
    if getattr(oracle, "needs_context", False):
        return "narrative"
    return "reference" if getattr(oracle, "needs_reference", False) else "none"


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> options; values are read as JSON where they parse (numbers,
    ``true``/``false``, ``null``, lists), else kept as strings."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option {item!r}: expected key=value")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        options[key.strip()] = value
    return options


def takes_context(factory: Callable[..., Any]) -> bool:
    """Whether an oracle factory has an explicit ``context`` option (llm-judge does)."""
    try:
        return "context" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def context_modes(factory: Callable[..., Any], name: str, context: str | None, options: dict[str, Any]
                  ) -> list[str | None]:
    """The context settings to check: both by default where the oracle has the option,
    the one asked for otherwise; ``[None]`` (the oracle's own setting) where it has none."""
    if context is not None and context not in (*CONTEXT_MODES, "both"):
        raise UsageError(f"--context must be narrative, none or both, got {context!r}")
    if not takes_context(factory):
        if context is not None:
            raise UsageError(f"oracle {name!r} has no context option; set its own options instead "
                             "(embedding-sim: --option target=narrative|reference)")
        return [None]
    if context is None:
        return [options["context"]] if "context" in options else list(CONTEXT_MODES)
    if "context" in options:
        raise UsageError("pass the context with --context or --option context=..., not both")
    return list(CONTEXT_MODES) if context == "both" else [context]


def run_oracle_check(
    oracle: str,
    options: dict[str, Any] | None = None,
    *,
    context: str | None = None,
    n_groups: int = 32,
    group_size: int = 4,
    split: str = "test",
    seed: int = 0,
    benchmark: Any = None,
    benchmark_name: str = "video-world",
    benchmark_options: dict[str, Any] | None = None,
    policy: Any = None,
    policy_path: str | None = None,
    policy_name: str | None = None,
    policy_options: dict[str, Any] | None = None,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    permute: bool = True,
    registry: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Check ``oracle`` (a registered name) against the ground truth; returns one JSON-able
    dict: the setup plus ``runs``, one :class:`OracleDiagnostics` per context setting."""
    from rlaif.core.registry import load_plugins

    if n_groups < 1 or group_size < 2:
        raise UsageError(f"need --groups >= 1 and --group-size >= 2, got {n_groups} and {group_size}")
    registry = registry or load_plugins()
    options = dict(options or {})
    factory = registry.get("oracle", oracle).resolve()
    modes = context_modes(factory, oracle, context, options)
    if benchmark is None:
        benchmark = registry.build("benchmark", benchmark_name, dict(benchmark_options or {}))
    if not getattr(benchmark, "has_ground_truth", False):
        raise UsageError(f"oracle check needs a benchmark with ground truth; "
                         f"{getattr(benchmark, 'name', benchmark_name)} has none")
    if policy is None:
        policy = default_policy(benchmark, seed=seed, path=policy_path, progress=progress, name=policy_name,
                                options=policy_options, registry=registry)
    started = time.perf_counter()
    prompts = check_prompts(benchmark, split, n_groups, seed)
    groups = sample_groups(policy, prompts, group_size, seed=seed, max_new_tokens=max_new_tokens,
                           temperature=temperature)
    sample_seconds = time.perf_counter() - started
    truth = registry.build("oracle", "ground-truth", {}, benchmark=benchmark)
    reference = list(truth.rank(groups))
    runs = []
    for mode in modes:
        chosen = dict(options) if mode is None else {**options, "context": mode}
        built = registry.build("oracle", oracle, chosen, benchmark=benchmark, policy=policy, store=None, seed=seed,
                               progress=progress)
        label = mode if mode is not None else _own_context(built)
        runs.append(diagnose(built, groups, reference, context=label, options=chosen, permute=permute).to_dict())
    return {
        "oracle": oracle,
        "benchmark": getattr(benchmark, "name", benchmark_name),
        "split": split,
        "groups": len(groups),
        "group_size": group_size,
        "seed": seed,
        "sample_seconds": round(sample_seconds, 3),
        "runs": runs,
    }
