"""A run's phase schedule: VerIPO's GRPO -> verifier -> DPO loop as ``[[schedule]]`` tables.

::

    [[schedule]]
    phase = "grpo"
    steps = 20
    [[schedule]]
    phase = "dpo"
    steps = 10
    beta = 0.1

The list is one *iteration*; it repeats until ``[run] steps`` are done, so a run of 90
steps with the schedule above is three iterations, and the last iteration is cut where
the run ends. Where a step falls is a formula of its number (:func:`phase_at`), never a
counter, so a resumed run knows its phase from the step it resumes at. A run without a
schedule is one long live phase, as before. What each phase does lives in
:mod:`rlaif.train.veripo`; this module only parses and places (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Phase kinds: ``grpo`` samples and asks the oracle (the run's live step); ``dpo``
#: trains on the verifier's pairs of the GRPO phase before it, with no sampling and no
#: oracle call.
PHASES = ("grpo", "dpo")

#: Options each phase accepts beyond ``phase`` and ``steps``, with their defaults.
PHASE_OPTIONS: dict[str, dict[str, Any]] = {
    "grpo": {},
    "dpo": {
        "beta": 0.1,  # DPO's inverse temperature (VerIPO: 0.1)
        "pairs_per_step": 0,  # pairs per DPO step; 0 = [run] prompts_per_step
        "drop_solved": 0.8,  # share of the GRPO phase's all-correct prompts dropped from the pool
        "correct_threshold": 1.0,  # a rollout is correct when its score, normalised to [0, 1], reaches this
        "repetition_ngram": 3,
        "repetition_threshold": 0.5,  # repeated share of n-grams above which an answer is repetitive
        "max_pairs_per_group": 4,
        "judge": "",  # consistency judge: "" (none), "smollm2", a model directory or hub id
        "judge_url": "",  # or an OpenAI-compatible endpoint (http://127.0.0.1:8000/v1)
        "judge_model": "default",
        "api_key_env": "OPENAI_API_KEY",
    },
}


@dataclass(frozen=True)
class Phase:
    kind: str
    steps: int
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, name: str) -> Any:
        return self.options.get(name, PHASE_OPTIONS[self.kind][name])

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.kind, "steps": self.steps, **self.options}


@dataclass(frozen=True)
class PhasePosition:
    """Where a step falls: its phase, the phase's index in the schedule, the run step
    that phase occurrence started at, the step's offset in it (0-based) and the
    iteration (0-based)."""

    phase: Phase
    index: int
    start: int
    offset: int
    iteration: int


def parse_schedule(raw: Any, problems: list[str]) -> list[Phase]:
    """``[[schedule]]`` tables as phases; every problem is appended to ``problems``."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        problems.append("schedule must be a list of tables ([[schedule]] with phase and steps)")
        return []
    phases = []
    for i, table in enumerate(raw):
        where = f"schedule[{i}]"
        kind, steps = table.get("phase"), table.get("steps")
        if kind not in PHASES:
            problems.append(f"{where}.phase must be one of {', '.join(PHASES)}, got {kind!r}")
            continue
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            problems.append(f"{where}.steps must be an integer >= 1, got {steps!r}")
            continue
        options = {k: v for k, v in table.items() if k not in ("phase", "steps")}
        known = PHASE_OPTIONS[kind]
        for key, value in options.items():
            if key not in known:
                problems.append(f"unknown key {where}.{key} for a {kind} phase; valid keys: "
                                f"{', '.join(['phase', 'steps', *known]) }")
                continue
            default = known[key]
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                options[key] = value = float(value)
            if type(value) is not type(default):
                problems.append(f"{where}.{key} must be {type(default).__name__}, got {value!r}")
        for key in ("drop_solved", "correct_threshold"):
            value = options.get(key)
            if isinstance(value, float) and not 0.0 <= value <= 1.0:
                problems.append(f"{where}.{key} must be between 0 and 1, got {value!r}")
        if isinstance(options.get("beta"), float) and not options["beta"] > 0:
            problems.append(f"{where}.beta must be > 0, got {options['beta']!r}")
        for key in ("pairs_per_step", "max_pairs_per_group", "repetition_ngram"):
            value = options.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value < (0 if key == "pairs_per_step" else 1):
                problems.append(f"{where}.{key} must be >= {0 if key == 'pairs_per_step' else 1}, got {value!r}")
        phases.append(Phase(kind, steps, options))
    if phases and phases[0].kind == "dpo":
        problems.append("schedule must start with a grpo phase: a dpo phase trains on the pairs of the grpo phase "
                        "before it")
    return phases


def phase_at(schedule: list[Phase], step: int) -> PhasePosition:
    """Where run step ``step`` (1-based) falls in ``schedule`` repeated."""
    cycle = sum(p.steps for p in schedule)
    iteration, within = divmod(step - 1, cycle)
    start = iteration * cycle + 1
    for index, phase in enumerate(schedule):
        if within < phase.steps:
            return PhasePosition(phase, index, start, within, iteration)
        within -= phase.steps
        start += phase.steps
    raise AssertionError("unreachable: within < cycle")
