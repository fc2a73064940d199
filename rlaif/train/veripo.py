"""VerIPO's loop inside ``rlaif run``: GRPO phases, the verifier, DPO phases (methods.md §3).

A run with a ``[[schedule]]`` (:mod:`rlaif.core.schedule`) walks its phases in step
order; the schedule repeats until ``[run] steps``. :func:`rlaif.train.rl.run_rl` asks
this module three things per step and otherwise runs its usual recipe:

* **grpo** steps are the run's live step (G rollouts per prompt at the run temperature,
  the run's oracle), trained with the run's loss when it is of the GRPO family
  (:data:`GRPO_FAMILY`), else with ``grpo`` (one notice says so). Prompts are drawn from
  the pool left after earlier drops (:meth:`VeripoLoop.pool`).
* At the first step of a **dpo** phase the verifier (:mod:`rlaif.train.verifier`) reads
  the stored rollouts and rankings of the GRPO phase just before it and builds pairs; a
  seeded ``drop_solved`` share of that phase's all-correct prompts leaves the pool. Pairs,
  counts and dropped prompt ids are committed as a ``pairs`` shard keyed by the DPO
  phase's first step, in one transaction.
* Every **dpo** step trains the existing ``dpo`` loss (``beta``, reference log-probs from
  the reference policy: the adapter disabled) on a batch of those pairs, with no sampling
  and no oracle call, and commits a bare step marker so resume knows it is done.

Resume: the phase of a step is a formula of its number; pairs and drops are re-read
from the store, never rebuilt once stored (a judge need not answer twice alike); the
DPO batch of a step is a seeded function of (seed, phase start, offset). So a run killed
anywhere, mid-DPO-phase included, resumes to the records and weights of an uninterrupted
one. Single process only (the pairs come from the main process's store).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from rlaif.core.errors import StoreError, UsageError
from rlaif.core.records import Group, PreferencePair, Prompt, Ranking, Rollout
from rlaif.core.schedule import PhasePosition, phase_at
from rlaif.train.verifier import StepGroup, VerifierSettings, build_consistency_judge, build_pairs

#: Losses VerIPO's GRPO phase may use as configured: group-relative clipped objectives.
GRPO_FAMILY = frozenset({"grpo", "grpo-rank", "gopo", "corpo"})
#: The oracle name the pair groups' rankings carry (chosen first).
VERIFIER = "verifier"
PHASE_CODES = {"grpo": 0.0, "dpo": 1.0}


def drop_count(solved: int, share: float) -> int:
    """How many of ``solved`` prompts a ``share`` drop removes: rounded down."""
    return int(solved * share + 1e-9)


def drop_solved(solved: Sequence[str], share: float, seed: int, phase_start: int) -> list[str]:
    """The prompts dropped: a seeded sample of :func:`drop_count` of ``solved``, sorted."""
    rng = random.Random(f"{seed}:drop:{phase_start}")
    return sorted(rng.sample(sorted(solved), drop_count(len(solved), share)))


class VeripoLoop:
    """The schedule's per-step decisions, over the run's store."""

    def __init__(self, config: Any, registry: Any, comp: Any, store: Any, reader: Any, *,
                 processes: int = 1, run_id: str = "main", notify: Callable[[str], None] | None = None) -> None:
        if processes > 1:
            raise UsageError("a [[schedule]] run (VerIPO) runs in one process; launch it without torchrun/accelerate")
        self.config, self.store, self.reader, self.run_id = config, store, reader, run_id
        self.schedule = config.schedule
        self.oracle_name = comp.oracle.name
        loss_name = config.choice("loss").name
        if loss_name in GRPO_FAMILY:
            self.grpo_loss = comp.loss
        else:
            self.grpo_loss = registry.build("loss", "grpo", {})
            (notify or _notice)(f"loss {loss_name} is not of the GRPO family ({', '.join(sorted(GRPO_FAMILY))}); "
                                "the schedule's grpo phases train with grpo")
        self.dpo_losses = {i: registry.build("loss", "dpo", {"beta": p.option("beta")})
                           for i, p in enumerate(self.schedule) if p.kind == "dpo"}
        self._pairs: dict[int, list[PreferencePair]] = {}
        self._rollouts: dict[int, dict[tuple[str, int], Rollout]] = {}
        self.verifier_counts: dict[str, float] = {}

    # ------------------------------------------------------------------ placing a step
    def at(self, step: int) -> PhasePosition:
        return phase_at(self.schedule, step)

    def is_dpo(self, step: int) -> bool:
        return self.at(step).phase.kind == "dpo"

    def components(self, step: int, comp: Any) -> Any:
        """``comp`` with the loss this step trains with."""
        pos = self.at(step)
        loss = self.dpo_losses[pos.index] if pos.phase.kind == "dpo" else self.grpo_loss
        return replace(comp, loss=loss)

    def step_metrics(self, step: int, seconds: float) -> dict[str, float]:
        pos = self.at(step)
        return {"phase": PHASE_CODES[pos.phase.kind], "iteration": float(pos.iteration), "step_s": seconds}

    # ------------------------------------------------------------------ the prompt pool
    def dropped(self, before: int) -> set[str]:
        """Prompt ids dropped by the pair shards of phases starting before step ``before``."""
        out: set[str] = set()
        for start in self.reader.steps(self.run_id, kind="pairs"):
            if start < before:
                out.update((self.reader.pairs_summary(self.run_id, start) or {}).get("dropped", []))
        return out

    def pool(self, step: int, prompts: Sequence[Prompt]) -> list[Prompt]:
        gone = self.dropped(step)
        return [p for p in prompts if p.prompt_id not in gone]

    # ------------------------------------------------------------------ the verifier
    def source_steps(self, start: int) -> list[int]:
        """Steps of the GRPO phase(s) right before the DPO phase starting at ``start``."""
        steps, s = [], start - 1
        while s >= 1 and self.at(s).phase.kind == "grpo":
            steps.append(s)
            s -= 1
        return sorted(steps)

    def phase_pairs(self, pos: PhasePosition, prompts_by_id: dict[str, Prompt]) -> list[PreferencePair]:
        """The pairs of the DPO phase at ``pos``: read from the store, or built by the
        verifier and committed (with the drop) when this phase has none stored yet."""
        if pos.start in self._pairs:
            return self._pairs[pos.start]
        summary = self.reader.pairs_summary(self.run_id, pos.start)
        if summary is None:
            if self.store is None:
                raise StoreError(f"no verifier pairs stored for the DPO phase at step {pos.start}")
            from rlaif.train.rl import stored_step

            phase = pos.phase
            entries = [StepGroup(s, g, r) for s in self.source_steps(pos.start)
                       for data in [stored_step(self.reader, s, self.oracle_name, prompts_by_id, run_id=self.run_id)]
                       for g, r in zip(data.groups, data.rankings, strict=True)]
            settings = VerifierSettings(correct_threshold=phase.option("correct_threshold"),
                                        repetition_ngram=phase.option("repetition_ngram"),
                                        repetition_threshold=phase.option("repetition_threshold"),
                                        max_pairs_per_group=phase.option("max_pairs_per_group"))
            judge = build_consistency_judge({k: phase.option(k) for k in
                                             ("judge", "judge_url", "judge_model", "api_key_env")}, self.store)
            result = build_pairs(entries, settings, judge)
            dropped = drop_solved(result.solved, phase.option("drop_solved"), self.config.run.seed, pos.start)
            summary = {**result.counts, "solved": len(result.solved), "dropped": dropped}
            self.store.put_pairs(self.run_id, pos.start, result.pairs, summary=summary)
            summary = self.reader.pairs_summary(self.run_id, pos.start) or summary
        self.verifier_counts = {f"verifier/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))}
        self.verifier_counts["verifier/dropped"] = float(len(summary.get("dropped", [])))
        self._pairs = {pos.start: list(self.reader.iter_shard("pairs", self.run_id, pos.start))}
        return self._pairs[pos.start]

    # ------------------------------------------------------------------ a DPO step
    def dpo_step(self, step: int, prompts_by_id: dict[str, Prompt], *, commit: bool) -> tuple[Any, dict[str, float]]:
        """This DPO step's batch of pairs as a ``StepData`` of two-rollout groups, chosen
        first; no sampling, no oracle. ``commit`` writes the step's bare commit marker."""
        from rlaif.train.rl import StepData

        pos = self.at(step)
        pairs = self.phase_pairs(pos, prompts_by_id)
        extra = dict(self.verifier_counts) if pos.offset == 0 else {}
        per_step = pos.phase.option("pairs_per_step") or self.config.run.prompts_per_step
        order = list(range(len(pairs)))
        random.Random(f"{self.config.run.seed}:pairs:{pos.start}").shuffle(order)
        batch = [pairs[order[(pos.offset * per_step + j) % len(order)]] for j in range(min(per_step, len(order)))]
        ids = {p.prompt_id for p in batch}
        stored = self.reader.get_prompts(self.run_id, sorted(ids)) if ids else {}
        groups, rankings = [], []
        for pair in batch:
            prompt = stored.get(pair.prompt_id) or prompts_by_id.get(pair.prompt_id)
            if prompt is None:
                raise StoreError(f"prompt {pair.prompt_id!r} of a verifier pair is not in the store")
            chosen = self._rollout(pair.chosen_step, pair.prompt_id, pair.chosen_index)
            rejected = self._rollout(pair.rejected_step, pair.prompt_id, pair.rejected_index)
            groups.append(Group(prompt, [chosen, rejected]))
            rankings.append(Ranking(pair.prompt_id, VERIFIER, order=[0, 1]))
        if commit and self.store is not None:
            self.store.commit_step(self.run_id, step)
        return StepData(step, groups, rankings), extra

    def _rollout(self, step: int, prompt_id: str, index: int) -> Rollout:
        if step not in self._rollouts:
            self._rollouts[step] = {(r.prompt_id, r.index): r
                                    for r in self.reader.iter_shard("rollouts", self.run_id, step)}
        found = self._rollouts[step].get((prompt_id, index))
        if found is None:
            raise StoreError(f"rollout {index} of prompt {prompt_id!r} at step {step} (a verifier pair's) is not stored")
        return found


def phase_seconds(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Wall seconds per phase kind, summed over logged steps (``phase``, ``step_s``)."""
    names = {code: name for name, code in PHASE_CODES.items()}
    out: dict[str, float] = {}
    for row in rows:
        if "phase" in row and "step_s" in row:
            name = names.get(float(row["phase"]), str(row["phase"]))
            out[name] = round(out.get(name, 0.0) + float(row["step_s"]), 6)
    return out


def _notice(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)
