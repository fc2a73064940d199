"""Comparative studies (``rlaif study STUDY.toml``): a grid of ordinary runs, one table.

A study file names a base run config, the arms to compare, the seeds, a ``mode`` and a
``baseline``::

    mode = "live"               # live: every cell is a run; replay: losses on fixed data
    seeds = [0, 1, 2]
    baseline = "grpo-rank"      # an arm, or "sft": each cell's own starting policy
    base = "run.toml"           # or [base.run], [base.oracle]... tables

    [axes]                      # every combination is an arm
    loss = ["grpo-rank", "grpo"]
    "oracle.context" = ["none", "narrative"]

    [[arms]]                    # and/or arms spelled out (crossed with [axes])
    name = "self-judge"
    oracle = "llm-judge"
    "oracle.judge" = "self"

    [[arms]]                    # an arm may carry a run's [[schedule]] (VerIPO's loop)
    name = "veripo"
    schedule = [{phase = "grpo", steps = 20}, {phase = "dpo", steps = 10}]

Each (arm, seed) is a *cell*: an ordinary run directory under the study directory,
trained by :func:`~rlaif.train.rl.run_rl` (``live``) or by
:func:`~rlaif.train.rl.replay_run` from a stored run (``replay``: one source run per seed,
``source = RUN_DIR`` or the first arm run live, so every loss sees the same rollouts and
rankings). ``CELL/study-cell.json`` holds the cell's definition and its digest: a finished
cell is skipped, a killed one resumed (a run with resume semantics, a replay from the
start), and a cell whose definition changed since it ran is refused, never mixed in.

The summary gives per arm the mean ± std over seeds of the final evaluation, the gain over
the starting policy, the paired per-item difference against the baseline (items paired
within each seed, seeds pooled; :func:`~rlaif.train.compare.compare_items` and its
bootstrap interval), and what the arm cost: oracle calls, judge time and wall time. A
live cell also records the wall seconds at which each step finished, so every arm's
learning curve can be read against wall time as well as steps (``curves-wall.png``; the
curves are in ``results.json``).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rlaif.core.config import DEFAULT_COMPONENTS, RunSettings, config_from_dict
from rlaif.core.errors import ConfigError, RlaifError, UsageError
from rlaif.core.protocols import KINDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODES = ("live", "replay")
#: The baseline that pairs each cell with its own starting policy (its step-0 evaluation).
SFT = "sft"
STUDY_KEYS = ("name", "mode", "seeds", "baseline", "metrics", "paired_metric", "base", "source", "axes", "arms")
DEFAULT_METRICS = ("acc/all", "acc/short", "score/describe")
#: A cell's definition, digest and progress, in the cell's run directory.
CELL_FILE = "study-cell.json"
CELL_SCHEMA = "study-cell/1"
#: The study's cells and their digests, in the study directory (for people and tools).
MANIFEST = "study.json"
CELL_LOG = "study.log"  # a cell run in a subprocess (--jobs) writes its output here

#: ``(section, key, value)``: ``("oracle", "name", "llm-judge")``, ``("run", "lr", 1e-3)``;
#: ``("schedule", "", [phase tables])`` replaces the run's whole ``[[schedule]]`` (``[]``: none).
Override = tuple[str, str, Any]
SCHEDULE = "schedule"


def _override_key(section: str, key: str) -> str:
    """``oracle.judge``, or ``schedule`` for the one override without a key."""
    return f"{section}.{key}" if key else section


@dataclass(frozen=True)
class Arm:
    """One configuration compared in the study: the base config with ``overrides``."""

    name: str
    overrides: tuple[Override, ...]


@dataclass(frozen=True)
class Cell:
    """One run of the study. ``kind`` is ``live`` (an arm's run), ``source`` (the run a
    replay study replays) or ``replay``; ``source`` is the replayed run's directory,
    relative to the study directory for the study's own source cells."""

    name: str
    arm: str
    seed: int
    kind: str
    data: dict[str, Any]  # the run config as written (TOML tables), seed included
    source: str | None = None
    source_digest: str | None = None

    def definition(self) -> dict[str, Any]:
        """What the cell's result depends on; its digest decides whether a stored cell is this one."""
        if self.kind == "replay":
            return {"kind": self.kind, "source": self.source, "source_digest": self.source_digest,
                    "loss": self.data.get("loss", {})}
        return {"kind": self.kind, "config": self.data}

    @property
    def digest(self) -> str:
        return _digest(self.definition())


@dataclass
class Study:
    name: str
    file: Path
    mode: str
    seeds: list[int]
    baseline: str
    metrics: list[str]
    paired_metric: str
    arms: list[Arm]
    cells: list[Cell]  # in the order they run: a replay study's sources first

    def arm_cells(self, arm: str) -> list[Cell]:
        return [c for c in self.cells if c.arm == arm and c.kind != "source"]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "_"


# --------------------------------------------------------------------------- the study file
def load_study(path: str | Path, *, known_components: dict[str, list[str]] | None = None,
               registry: Any = None) -> Study:
    """Read and check a study file; every problem is reported in one :class:`ConfigError`.
    With ``registry`` each arm's component options are checked too (that imports the
    components), so a misspelt option fails before any cell runs."""
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("study file not found", source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source) from None
    problems = [f"unknown key {key!r}; a study file takes {', '.join(STUDY_KEYS)}"
                for key in data if key not in STUDY_KEYS]
    mode = data.get("mode", "live")
    if mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    paired_metric = data.get("paired_metric", "correct")
    if paired_metric not in ("correct", "score"):
        problems.append(f"paired_metric must be correct (as acc/all) or score, got {paired_metric!r}")
    metrics = data.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        problems.append(f"metrics must be a non-empty list of evaluation keys (acc/all, ...), got {metrics!r}")
        metrics = list(DEFAULT_METRICS)

    base = _base_data(data, path, problems)
    axes = _axes(data.get("axes", {}), problems)
    explicit = _explicit_arms(data.get("arms", []), problems)
    arms = _cross(explicit, axes, problems)

    stored_source = None
    if "source" in data:
        if mode != "replay":
            problems.append("source goes with mode = \"replay\" (a live study runs its own cells)")
        elif "base" in data:
            problems.append("a replay of a given source takes its config from the source; drop base")
        elif "seeds" in data:
            problems.append("a replay of a given source has the source's seed; drop seeds")
        else:
            stored_source = _stored_config(data["source"], problems)
            if stored_source is not None:
                base = stored_source
    seeds = _seeds(data, base, problems)
    if mode == "replay":
        for arm in arms:
            others = sorted({_override_key(s, k) for s, k, _ in arm.overrides if s != "loss"})
            if others:
                problems.append(f"arm {arm.name}: a replay study varies only the loss (the data is the source "
                                f"run's), and this arm sets {', '.join(others)}")
    names = [a.name for a in arms]
    baseline = data.get("baseline", names[0] if names else SFT)
    if baseline != SFT and baseline not in names:
        problems.append(f"baseline {baseline!r} is not an arm; choose one of {', '.join(names)} or {SFT!r} "
                        "(each cell against its own starting policy)")

    for arm in arms:  # seeds differ only in run.seed: one check per arm
        problems += _config_problems(with_seed(apply_overrides(base, arm.overrides), seeds[0]), f"arm {arm.name}",
                                     known_components, registry)
    # Seed by seed, so a study stopped half-way has every arm on its first seeds.
    cells = [Cell(f"{arm.name}-s{seed}", arm.name, seed, "live", with_seed(apply_overrides(base, arm.overrides), seed))
             for seed in seeds for arm in arms]
    if mode == "replay" and arms and not problems:
        cells = _replay_cells(arms, seeds, base, data.get("source"), stored_source)
    seen: set[str] = set()
    for cell in cells:
        if cell.name in seen:
            problems.append(f"two cells are named {cell.name!r}; give the arms distinct names")
        seen.add(cell.name)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source)
    return Study(name=str(data.get("name", path.stem)), file=path, mode=mode, seeds=seeds, baseline=baseline,
                 metrics=list(metrics), paired_metric=paired_metric, arms=arms, cells=cells)


def _base_data(data: Mapping[str, Any], path: Path, problems: list[str]) -> dict[str, Any]:
    """The base run config: ``[base]`` tables, or ``base = "run.toml"`` (relative to the study file)."""
    base = data.get("base", {})
    if isinstance(base, str):
        file = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        try:
            return dict(tomllib.loads(file.read_text(encoding="utf-8")))
        except FileNotFoundError:
            problems.append(f"base {base!r}: {file} not found (a path relative to the study file)")
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"base {base!r}: invalid TOML: {exc}")
        return {}
    if not isinstance(base, dict):
        problems.append("base must be a run TOML path or [base] tables ([base.run], [base.oracle], ...)")
        return {}
    return copy.deepcopy(dict(base))


def _stored_config(source: Any, problems: list[str]) -> dict[str, Any] | None:
    """The config a ``source`` run directory was started with."""
    from rlaif.core.store import RunStore, store_path
    from rlaif.train.rl import RUN_ID

    if not isinstance(source, str) or not (store_path(source) / "data.mdb").exists():
        problems.append(f"source {source!r} is not a run directory written by `rlaif run` "
                        "(a path relative to the current directory)")
        return None
    with RunStore(source, readonly=True) as store:
        info = store.get_run(RUN_ID)
    if info is None:
        problems.append(f"source {source!r} holds no run")
        return None
    return copy.deepcopy(dict(info.config))


def _overrides(table: Mapping[str, Any], where: str, problems: list[str]) -> list[Override]:
    """``{"loss": "grpo", "oracle.context": ..., "oracle": {"judge": ...}}`` as overrides.
    A key is a component kind (its name), ``KIND.option``, ``run.field`` or ``schedule``
    (the run's phase list, whole); a TOML table under a kind (unquoted ``oracle.context =
    ...``) is read the same way."""
    out: list[Override] = []
    for key, value in table.items():
        if key == SCHEDULE:  # its phases are checked with the arm's run config
            if isinstance(value, list):
                out.append((SCHEDULE, "", value))
            else:
                problems.append(f"{where}: schedule must be a list of phase tables ([[arms.schedule]] or "
                                "[{phase = ..., steps = ...}, ...]; [] for none)")
            continue
        section, _, option = key.partition(".")
        if isinstance(value, dict) and not option:
            pairs = [(inner, v) for inner, v in value.items()]
        else:
            pairs = [(option or "name", value)]
        for option_name, v in pairs:
            dotted = f"{section}.{option_name}"
            if section not in ("run", *KINDS):
                problems.append(f"{where}: {key!r} is not run.FIELD, a component kind ({', '.join(KINDS)}), "
                                "KIND.option or schedule")
            elif section == "run" and option_name == "seed":
                problems.append(f"{where}: set seeds with seeds = [...], not run.seed")
            elif section == "run" and option_name not in RunSettings.__dataclass_fields__:
                problems.append(f"{where}: unknown key {dotted!r}; [run] takes "
                                f"{', '.join(RunSettings.__dataclass_fields__)}")
            else:
                out.append((section, option_name, v))
    return out


def _axes(table: Any, problems: list[str]) -> list[tuple[str, str, list[Any]]]:
    if not isinstance(table, dict):
        problems.append("[axes] must be a table of KEY = [values]")
        return []
    axes = []
    for section, key, values in _overrides(table, "axes", problems):
        if section == SCHEDULE:
            problems.append("axes: a schedule goes in an [[arms]] table (one phase list per arm), not in [axes]")
        elif not isinstance(values, list) or not values:
            problems.append(f"axes: {section}.{key} must be a non-empty list of values, got {values!r}")
        elif len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            problems.append(f"axes: {section}.{key} lists a value twice")
        else:
            axes.append((section, key, values))
    return axes


def _explicit_arms(tables: Any, problems: list[str]) -> list[Arm]:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append("arms must be [[arms]] tables, each with a name")
        return []
    arms = []
    for i, table in enumerate(tables, start=1):
        name = table.get("name")
        if not isinstance(name, str) or not name or _slug(name) != name or name == SFT:
            problems.append(f"[[arms]] #{i}: name must be a non-empty directory-safe string other than "
                            f"{SFT!r} (letters, digits, . _ = + -), got {name!r}")
            continue
        rest = {k: v for k, v in table.items() if k != "name"}
        arms.append(Arm(name, tuple(_overrides(rest, f"arm {name}", problems))))
    return arms


def _label(section: str, key: str, value: Any) -> str:
    """An axis value's part of an arm name: the value for text, ``key=value`` for numbers."""
    if isinstance(value, str):
        return _slug(value)
    return _slug(f"{key}={json.dumps(value, sort_keys=True)}")


def _cross(explicit: list[Arm], axes: list[tuple[str, str, list[Any]]], problems: list[str]) -> list[Arm]:
    """Every explicit arm (or the base alone) crossed with every combination of the axes."""
    combos = list(itertools.product(*[[(s, k, v) for v in values] for s, k, values in axes]))
    arms = []
    for arm in explicit or [Arm("", ())]:
        for combo in combos:
            parts = ([arm.name] if arm.name else []) + [_label(*o) for o in combo]
            arms.append(Arm("-".join(parts) or "base", arm.overrides + tuple(combo)))
    names = [a.name for a in arms]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"two arms are named {name!r}; name them with [[arms]] name = ...")
    return arms


def _seeds(data: Mapping[str, Any], base: Mapping[str, Any], problems: list[str]) -> list[int]:
    default = base.get("run", {}).get("seed", 0) if isinstance(base.get("run"), dict) else 0
    seeds = data.get("seeds", [default])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        problems.append(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
        return [0]
    if len(set(seeds)) != len(seeds):
        problems.append("seeds lists a seed twice")
    return list(seeds)


def apply_overrides(base: Mapping[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """``base`` (run TOML tables) with ``overrides`` applied. A component whose name
    changes starts from the new component's defaults: the base's options belong to the
    component they were written for (an llm-judge ``context`` means nothing to another
    oracle)."""
    data = copy.deepcopy(dict(base))
    overrides = list(overrides)
    for section, key, value in overrides:
        if key != "name" or section == "run":
            continue
        table = data.get(section)
        current = table if isinstance(table, str) else (table or {}).get("name", DEFAULT_COMPONENTS.get(section))
        if current != value:
            data[section] = {"name": value}
    for section, key, value in overrides:
        if section == SCHEDULE:
            if value:
                data[SCHEDULE] = copy.deepcopy(value)
            else:
                data.pop(SCHEDULE, None)
            continue
        table = data.get(section)
        if isinstance(table, str):
            table = {"name": table}
        table = dict(table or {})
        table[key] = value
        data[section] = table
    return data


def with_seed(data: dict[str, Any], seed: int) -> dict[str, Any]:
    run = data.get("run")
    data["run"] = {**(run if isinstance(run, dict) else {}), "seed": seed}
    return data


def _config_problems(data: dict[str, Any], where: str, known_components: dict[str, list[str]] | None,
                     registry: Any) -> list[str]:
    try:
        config = config_from_dict(data, None, known_components)
    except ConfigError as exc:
        return [f"{where}: {p}" for p in exc.problems]
    problems = []
    if registry is not None:
        for kind in ("benchmark", "policy", "oracle", "loss"):
            choice = config.choice(kind)
            try:
                registry.check(kind, choice.name, choice.options)
            except ConfigError as exc:
                problems += [f"{where}: {p}" for p in exc.problems]
            except RlaifError as exc:
                problems.append(f"{where}: {exc}")
    return problems


def _replay_cells(arms: list[Arm], seeds: list[int], base: dict[str, Any], source: str | None,
                  stored: dict[str, Any] | None) -> list[Cell]:
    """One source per seed (``source`` itself, or the first arm run live), then every arm
    replayed from it."""
    cells: list[Cell] = []
    for seed in seeds:
        if stored is not None:
            src_dir, src_digest, src_data = str(Path(source or "").resolve()), _digest(stored), stored
        else:
            src_data = with_seed(apply_overrides(base, arms[0].overrides), seed)
            src = Cell(f"source-s{seed}", arms[0].name, seed, "source", src_data)
            cells.append(src)
            src_dir, src_digest = src.name, src.digest
        for arm in arms:
            data = apply_overrides(src_data, arm.overrides)
            cells.append(Cell(f"{arm.name}-s{seed}", arm.name, seed, "replay", data, src_dir, src_digest))
    return cells


# --------------------------------------------------------------------------- cells on disk
def read_cell_state(cell_dir: Path) -> dict[str, Any] | None:
    path = cell_dir / CELL_FILE
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def write_cell_state(cell_dir: Path, state: Mapping[str, Any]) -> None:
    tmp = cell_dir / (CELL_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True, default=str))
    os.replace(tmp, cell_dir / CELL_FILE)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, inner in value.items():
        out.update(_flat(inner, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _changes(old: Any, new: Any, limit: int = 4) -> str:
    """``run.steps: 3 -> 4, ...``: how two cell definitions differ, for the refusal."""
    a, b = ({k.removeprefix("config."): v for k, v in _flat(d).items()} for d in (old, new))
    diffs = [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
             for k in sorted(set(a) | set(b)) if a.get(k, "(unset)") != b.get(k, "(unset)")]
    more = f", and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more


def check_cells(study: Study, study_dir: Path) -> None:
    """Refuse, in one :class:`UsageError`, cells whose stored definition differs from the
    study's (the study file changed since they ran) and directories the study did not make."""
    changed, foreign = [], []
    for cell in study.cells:
        cell_dir = study_dir / cell.name
        state = read_cell_state(cell_dir)
        if state is None:
            if cell_dir.is_dir() and any(p.name != ".lock" for p in cell_dir.iterdir()):
                foreign.append(str(cell_dir))
        elif state.get("digest") != cell.digest:
            changed.append((cell, _changes(state.get("definition", {}), cell.definition())))
    problems = []
    if changed:
        cell, diff = changed[0]
        others = f"; {len(changed) - 1} more cells changed too ({', '.join(c.name for c, _ in changed[1:4])}" \
                 f"{', ...' if len(changed) > 4 else ''})" if len(changed) > 1 else ""
        problems.append(f"cell {cell.name} was run with another definition ({diff}){others}; a study never mixes "
                        f"cells of two definitions: give it another --out, or delete {study_dir / cell.name} to "
                        "run that cell again")
    if foreign:
        problems.append(f"{', '.join(foreign)} holds files this study did not write; choose another --out")
    if problems:
        raise UsageError("; ".join(problems))


def prepare_cell(study_dir: Path, cell: Cell) -> Path:
    """Create the cell's directory with its definition (once; progress is kept after)."""
    cell_dir = study_dir / cell.name
    cell_dir.mkdir(parents=True, exist_ok=True)
    if read_cell_state(cell_dir) is None:
        write_cell_state(cell_dir, {"schema": CELL_SCHEMA, "name": cell.name, "arm": cell.arm, "seed": cell.seed,
                                    "digest": cell.digest, "definition": cell.definition(), "data": cell.data,
                                    "wall_s": 0.0, "invocations": 0, "finished": False, "summary": None})
    return cell_dir


def cell_progress(cell_dir: Path, cell: Cell) -> str:
    """``new``, ``started``, ``partial (step N)``, ``finished`` or ``changed (...)`` (run
    with another definition; the study refuses it): for ``rlaif study --list``."""
    state = read_cell_state(cell_dir)
    if state is None:
        return "new"
    if state.get("digest") != cell.digest:
        return f"changed ({_changes(state.get('definition', {}), cell.definition(), limit=2)})"
    if state.get("finished"):
        return "finished"
    from rlaif.train.rl import RUN_ID
    from rlaif.train.run_dir import last_committed_step

    step = last_committed_step(cell_dir, RUN_ID)
    return f"partial (step {step})" if step is not None else "started"


def _holds_run(cell_dir: Path) -> bool:
    """Whether ``cell_dir`` holds a run to resume (what ``run_rl`` refuses to start over)."""
    from rlaif.train.rl import RUN_ID, latest_checkpoint
    from rlaif.train.run_dir import last_committed_step

    return last_committed_step(cell_dir, RUN_ID) is not None or latest_checkpoint(cell_dir) is not None


def run_cell(cell_dir: str | Path, registry: Any = None, *, progress: bool = False) -> dict[str, Any]:
    """Run (or resume, or skip when finished) the prepared cell in ``cell_dir``; return
    its state. The state keeps the wall time of every invocation up to its last step, so
    a killed and resumed cell reports what it cost in all, and (live cells) the wall time
    at which each step finished, ``step_wall_s``: a step done again after a resume is
    marked when it was done again, so the marks count the work a kill lost too."""
    from rlaif.core.registry import load_plugins

    cell_dir = Path(cell_dir)
    state = read_cell_state(cell_dir)
    if state is None:
        raise UsageError(f"{cell_dir} holds no {CELL_FILE}; cells are prepared by `rlaif study`")
    if state["finished"]:
        return state
    registry = registry or load_plugins()
    definition = state["definition"]
    replay = definition["kind"] == "replay"
    prior = 0.0 if replay else float(state["wall_s"])  # a replay starts over: its killed time bought nothing
    state["invocations"] += 1
    write_cell_state(cell_dir, state)
    started = time.perf_counter()

    def tick(step: int) -> None:
        state["wall_s"] = prior + time.perf_counter() - started
        if step:
            state.setdefault("step_wall_s", {})[str(step)] = round(state["wall_s"], 3)
        write_cell_state(cell_dir, state)

    if replay:
        summary = _replay_cell(cell_dir, definition, registry, progress)
    else:
        summary = _live_cell(cell_dir, state["data"], registry, progress, tick)
    tick(0)
    state.update(finished=True, summary=summary)
    write_cell_state(cell_dir, state)
    return state


def _live_cell(cell_dir: Path, data: dict[str, Any], registry: Any, progress: bool,
               on_step: Callable[[int], None]) -> dict[str, Any]:
    from rlaif.train.rl import run_rl

    config = config_from_dict(data, str(cell_dir))
    resume = _holds_run(cell_dir)
    if resume:
        # The cell's own config, given explicitly: the resume checks see every stored value
        # (paths and endpoints included) confirmed by the study that started the run.
        from rlaif.core.resume import resume_config
        from rlaif.core.store import RunStore
        from rlaif.train.rl import RUN_ID

        with RunStore(cell_dir, readonly=True) as store:
            info = store.get_run(RUN_ID)
        if info is not None:
            config = resume_config(info.config, data, labels={}, source=str(cell_dir),
                                   user_source=str(cell_dir / CELL_FILE))
    summary = run_rl(cell_dir, config, registry, resume=resume, progress=progress, on_step=on_step)
    return dict(asdict(summary))


#: What a replay writes into its directory; a killed replay's are removed before it starts again.
REPLAY_OUTPUTS = ("metrics.csv", "metrics.tmp", "eval", "policy", "trainable.safetensors", "summary.json")


def _replay_cell(cell_dir: Path, definition: Mapping[str, Any], registry: Any, progress: bool) -> dict[str, Any]:
    import shutil

    from rlaif.train.rl import replay_run

    for name in REPLAY_OUTPUTS:
        path = cell_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    source = _source_dir(cell_dir, definition["source"])
    loss = dict(definition["loss"])
    name = loss.pop("name", DEFAULT_COMPONENTS["loss"])
    summary = replay_run(source, name, registry, loss_options=loss, out_dir=cell_dir, progress=progress)
    return dict(asdict(summary))


def _source_dir(cell_dir: Path, source: str) -> Path:
    path = Path(source)
    return path if path.is_absolute() else cell_dir.parent / path


# --------------------------------------------------------------------------- running a study
def run_study(study: Study, study_dir: str | Path, *, jobs: int = 1, registry: Any = None, progress: bool = False,
              notify: Callable[[str], None] | None = None) -> StudyReport:
    """Run every cell not yet finished (sources first), then summarise. ``jobs > 1`` runs
    cells side by side, each in its own process with ``cores // jobs`` torch threads."""
    from rlaif.core.errors import RunDirInUseError
    from rlaif.train.run_dir import lock_run_dir

    study_dir = Path(study_dir)
    say = notify or (lambda line: print(line, file=sys.stderr, flush=True))
    study_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = lock_run_dir(study_dir)
    except RunDirInUseError as exc:
        raise UsageError(f"{study_dir} is in use by process {exc.holder}, another `rlaif study` on this study; "
                         "wait for it to end") from None
    try:
        check_cells(study, study_dir)
        write_manifest(study, study_dir)
        total = len(study.cells)
        done = 0
        for phase in ([c for c in study.cells if c.kind == "source"], [c for c in study.cells if c.kind != "source"]):
            pending = []
            for cell in phase:
                prepare_cell(study_dir, cell)
                state = read_cell_state(study_dir / cell.name) or {}
                if state.get("finished"):
                    done += 1
                    say(f"[{done}/{total}] {cell.name}: finished earlier, kept")
                else:
                    pending.append(cell)
            if jobs <= 1:
                for cell in pending:
                    what = "resuming" if (read_cell_state(study_dir / cell.name) or {}).get("invocations") else "running"
                    say(f"[{done + 1}/{total}] {cell.name}: {what} ({cell.kind})")
                    state = _run_here(study_dir, cell, registry, progress)
                    done += 1
                    say(f"[{done}/{total}] {cell.name}: done in {state['wall_s']:.0f} s")
            else:
                done = _run_in_processes(study_dir, pending, jobs, done, total, say)
    finally:
        lock.release()
    return summarize(study, study_dir)


def _run_here(study_dir: Path, cell: Cell, registry: Any, progress: bool) -> dict[str, Any]:
    """:func:`run_cell` in this process, its errors naming the cell and how to go on."""
    from rlaif.core.errors import RunInterrupted

    then = "finished cells are kept, and rerunning the study continues"
    try:
        return run_cell(study_dir / cell.name, registry, progress=progress)
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted in cell {cell.name}; {then}") from None
    except RlaifError as exc:
        error = RlaifError(f"cell {cell.name}: {exc}; {then}")
        error.exit_code = exc.exit_code
        raise error from exc


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cell_command(cell_dir: Path, threads: int) -> list[str]:
    """The process that runs one cell for ``--jobs``: this module's :func:`main`."""
    return [sys.executable, "-m", "rlaif.train.study", str(cell_dir), "--threads", str(threads)]


def _run_in_processes(study_dir: Path, cells: Sequence[Cell], jobs: int, done: int, total: int,
                      say: Callable[[str], None]) -> int:
    """Up to ``jobs`` cells at a time, each a subprocess writing ``CELL/study.log``. The
    first failure stops new starts; the running cells finish, then it is raised."""
    threads = max(1, cores() // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    queue = list(cells)
    running: dict[subprocess.Popen[bytes], tuple[Cell, Any]] = {}
    failed: tuple[Cell, int] | None = None
    try:
        while queue or running:
            while queue and len(running) < jobs and failed is None:
                cell = queue.pop(0)
                log = (study_dir / cell.name / CELL_LOG).open("ab")
                say(f"[{done + 1 + len(running)}/{total}] {cell.name}: started ({cell.kind}, {threads} threads, "
                    f"log {study_dir / cell.name / CELL_LOG})")
                proc = subprocess.Popen(cell_command(study_dir / cell.name, threads), stdout=log,
                                        stderr=subprocess.STDOUT, env=env)
                running[proc] = (cell, log)
            if failed is not None and not running:
                break
            time.sleep(0.1)
            for proc in [p for p in running if p.poll() is not None]:
                cell, log = running.pop(proc)
                log.close()
                if proc.returncode == 0:
                    done += 1
                    state = read_cell_state(study_dir / cell.name) or {}
                    say(f"[{done}/{total}] {cell.name}: done in {float(state.get('wall_s', 0)):.0f} s")
                elif failed is None:
                    failed = (cell, proc.returncode)
    finally:
        for proc, (_, log) in running.items():  # an exception here (Ctrl-C): leave no orphan
            proc.kill()
            proc.wait()
            log.close()
    if failed is not None:
        cell, code = failed
        path = study_dir / cell.name / CELL_LOG
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip().removeprefix("error: ") if lines else "(no output)"
        error = RlaifError(f"cell {cell.name} failed (exit {code}): {last} (full log: {path}); "
                           "finished cells are kept, and rerunning the study continues")
        error.exit_code = code if code > 0 else 1  # a signal (negative) is a runtime failure
        raise error
    return done


def write_manifest(study: Study, study_dir: Path) -> Path:
    manifest = {
        "schema": "study/1", "name": study.name, "file": str(study.file), "mode": study.mode, "seeds": study.seeds,
        "baseline": study.baseline, "metrics": study.metrics, "paired_metric": study.paired_metric,
        "arms": {a.name: {_override_key(s, k): v for s, k, v in a.overrides} for a in study.arms},
        "cells": {c.name: {"arm": c.arm, "seed": c.seed, "kind": c.kind, "digest": c.digest} for c in study.cells},
    }
    path = study_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
    return path


# --------------------------------------------------------------------------- the summary
@dataclass
class CellResult:
    """What one finished cell measured. A replay's ``oracle_calls``, ``judge_s`` and
    ``sample_s`` are its source run's: what the data it trained on cost."""

    name: str
    arm: str
    seed: int
    eval: dict[str, float]
    sft_eval: dict[str, float]
    oracle_calls: int
    judge_s: float
    sample_s: float
    wall_s: float
    items: Path
    sft_items: Path | None
    curve: list[dict[str, float]] = field(default_factory=list)  # metrics.csv rows; ``wall_s`` where known

    def evaluations(self, metrics: Sequence[str]) -> list[dict[str, float]]:
        """The learning curve at the evaluated steps: ``step``, ``wall_s`` (where the cell
        recorded it) and each of ``metrics`` the evaluation has."""
        keys = [f"eval/{m}" for m in metrics]
        return [{"step": r["step"], **({"wall_s": r["wall_s"]} if "wall_s" in r else {}),
                 **{k.removeprefix("eval/"): r[k] for k in keys if k in r}}
                for r in self.curve if any(k in r for k in keys)]


def run_costs(run_dir: Path) -> tuple[int, float, float, dict[str, float]]:
    """``(oracle calls, judge s, sampling s, step-0 evaluation)`` from a run's metrics.csv:
    one oracle call per live step (as :class:`~rlaif.train.rl.RunSummary` counts them),
    the steps a resume replayed keep the times they logged live."""
    from rlaif.train.plots import read_metrics

    rows = read_metrics(run_dir)
    calls = sum(1 for r in rows if "rank_s" in r)
    first = next((r for r in rows if r["step"] == 0), {})
    sft = {k.removeprefix("eval/"): v for k, v in first.items() if k.startswith("eval/")}
    return calls, sum(r.get("rank_s", 0.0) for r in rows), sum(r.get("sample_s", 0.0) for r in rows), sft


def cell_result(study_dir: Path, cell: Cell) -> CellResult:
    from rlaif.train.evaluate import items_file, run_items_path
    from rlaif.train.plots import read_metrics

    cell_dir = study_dir / cell.name
    state = read_cell_state(cell_dir)
    if state is None or not state.get("finished"):
        raise UsageError(f"cell {cell.name} has not finished; run the study to finish it")
    origin = _source_dir(cell_dir, cell.source) if cell.kind == "replay" and cell.source else cell_dir
    calls, judge_s, sample_s, sft_eval = run_costs(origin)
    sft_items = run_items_path(origin, 0)
    return CellResult(cell.name, cell.arm, cell.seed, eval=dict(state["summary"]["eval"]), sft_eval=sft_eval,
                      oracle_calls=calls, judge_s=judge_s, sample_s=sample_s, wall_s=float(state["wall_s"]),
                      items=items_file(cell_dir), sft_items=sft_items if sft_items.exists() else None,
                      curve=_with_wall(read_metrics(cell_dir), state))


def _with_wall(rows: list[dict[str, float]], state: Mapping[str, Any]) -> list[dict[str, float]]:
    """``rows`` with ``wall_s``: seconds since the cell started when the step was done, its
    evaluation included. Step 0 (the starting policy) is the origin; the last step is the
    cell's whole wall time, since its evaluation runs after the last mark."""
    marks = {int(step): float(seconds) for step, seconds in (state.get("step_wall_s") or {}).items()}
    if not marks:
        return rows
    marks[0] = 0.0
    marks[max(marks)] = float(state["wall_s"])
    return [{**r, "wall_s": marks[int(r["step"])]} if int(r["step"]) in marks else r for r in rows]


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclass
class ArmSummary:
    arm: str
    cells: list[CellResult]
    paired: list[Any] = field(default_factory=list)  # PairedDifference rows, seeds pooled: "all" first
    paired_per_seed: dict[int, Any] = field(default_factory=dict)  # seed -> its "all" PairedDifference

    def values(self, metric: str) -> list[float]:
        return [c.eval[metric] for c in self.cells if metric in c.eval]

    def gains(self, metric: str) -> list[float]:
        return [c.eval[metric] - c.sft_eval[metric] for c in self.cells if metric in c.eval and metric in c.sft_eval]

    def cost(self, name: str) -> list[float]:
        return [float(getattr(c, name)) for c in self.cells]

    def to_json(self, metrics: Sequence[str]) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, Any]:
            mean, std = mean_std(values)
            return {"mean": mean, "std": std, "values": values}

        paired = self.paired[0] if self.paired else None
        return {
            "arm": self.arm, "seeds": [c.seed for c in self.cells], "cells": [c.name for c in self.cells],
            "curves": [c.evaluations(metrics) for c in self.cells],
            "metrics": {m: stats(self.values(m)) for m in metrics},
            "gain_over_sft": {m: stats(self.gains(m)) for m in metrics},
            "paired": None if paired is None else {
                **asdict(paired), "groups": [asdict(r) for r in self.paired[1:]],
                "per_seed": {str(s): asdict(r) for s, r in self.paired_per_seed.items()}},
            **{name: stats(self.cost(name)) for name in ("oracle_calls", "judge_s", "sample_s", "wall_s")},
        }


@dataclass
class StudyReport:
    study: Study
    study_dir: Path
    arms: list[ArmSummary]

    @property
    def all_metrics(self) -> list[str]:
        """The study's metrics, then every other evaluation key the cells have (counts left out)."""
        seen = list(self.study.metrics)
        for arm in self.arms:
            for cell in arm.cells:
                seen += [k for k in cell.eval if k not in seen and not k.startswith("n/")]
        return seen

    def total_wall_s(self) -> float:
        """Every cell's wall time, a replay study's source runs included: what the table cost."""
        return sum(float((read_cell_state(self.study_dir / c.name) or {}).get("wall_s", 0.0))
                   for c in self.study.cells)

    def to_json(self) -> dict[str, Any]:
        s = self.study
        return {"study": s.name, "file": str(s.file), "dir": str(self.study_dir), "mode": s.mode, "seeds": s.seeds,
                "baseline": s.baseline, "paired_metric": s.paired_metric, "metrics": s.metrics,
                "cells": len(s.cells), "wall_s_total": self.total_wall_s(),
                "arms": [a.to_json(self.all_metrics) for a in self.arms]}


def _within_seed(items: Sequence[Any], seed: int) -> list[Any]:
    """Items keyed by (seed, item), so pooled seeds pair only within a seed."""
    return [replace(i, prompt_id=f"s{seed}/{i.prompt_id}") for i in items]


def summarize(study: Study, study_dir: str | Path, *, n_boot: int = 10000) -> StudyReport:
    """Every arm's results; each arm paired with the baseline item by item (per seed, and
    with seeds pooled) through :func:`~rlaif.train.compare.compare_items`."""
    from rlaif.train.compare import compare_items
    from rlaif.train.evaluate import read_items

    study_dir = Path(study_dir)
    arms = [ArmSummary(arm.name, [cell_result(study_dir, c) for c in study.arm_cells(arm.name)])
            for arm in study.arms]
    by_name = {a.arm: a for a in arms}

    def baseline_items(cell: CellResult) -> Path | None:
        if study.baseline == SFT:
            return cell.sft_items
        match = [c for c in by_name[study.baseline].cells if c.seed == cell.seed]
        return match[0].items if match else None

    for arm in arms:
        if arm.arm == study.baseline:
            continue
        pooled_a: list[Any] = []
        pooled_b: list[Any] = []
        for cell in arm.cells:
            base = baseline_items(cell)
            if base is None:
                raise UsageError(f"cell {cell.name} has no baseline evaluation to pair with ({study.baseline}: "
                                 "no step-0 evaluation in its run)")
            a, b = read_items(base), read_items(cell.items)
            arm.paired_per_seed[cell.seed] = compare_items(a, b, metric=study.paired_metric, n=n_boot)[0]
            pooled_a += _within_seed(a, cell.seed)
            pooled_b += _within_seed(b, cell.seed)
        if pooled_a:
            arm.paired = compare_items(pooled_a, pooled_b, metric=study.paired_metric, n=n_boot)
    return StudyReport(study, study_dir, arms)


# --------------------------------------------------------------------------- outputs
def write_csv(report: StudyReport, path: Path) -> Path:
    """One row per arm: every metric's mean and std, the gain over SFT, the paired
    difference against the baseline and the costs."""
    metrics = report.all_metrics
    rows = []
    for arm in report.arms:
        row: dict[str, Any] = {"arm": arm.arm, "seeds": len(arm.cells)}
        for m in metrics:
            row[f"{m} mean"], row[f"{m} std"] = mean_std(arm.values(m))
            row[f"gain {m} mean"], row[f"gain {m} std"] = mean_std(arm.gains(m))
        paired = arm.paired[0] if arm.paired else None
        row.update({"paired diff": getattr(paired, "diff", None), "paired lo": getattr(paired, "lo", None),
                    "paired hi": getattr(paired, "hi", None), "paired items": getattr(paired, "n", None)})
        for name in ("oracle_calls", "judge_s", "sample_s", "wall_s"):
            row[f"{name} mean"], row[f"{name} std"] = mean_std(arm.cost(name))
        rows.append(row)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["arm"])
        writer.writeheader()
        writer.writerows([{k: "" if v is None else round(v, 6) if isinstance(v, float) else v
                           for k, v in r.items()} for r in rows])
    return path


def format_mean_std(values: Sequence[float], digits: int = 3, signed: bool = False) -> str:
    """``mean ± std`` of ``values`` as the study tables print it ("-" for none, the mean
    alone for one value)."""
    mean, std = mean_std(values)
    if mean is None:
        return "-"
    text = f"{mean:{'+' if signed else ''}.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def format_paired(row: Any, sep: str = " ") -> str:
    """A paired difference and its interval, ``+0.036 [+0.022, +0.050]``, as the study
    tables print it (``sep`` between the two: a newline where a terminal cell folds)."""
    return f"{row.diff:+.3f}{sep}[{row.lo:+.3f}, {row.hi:+.3f}]"


def write_markdown(report: StudyReport, path: Path) -> Path:
    """The report as Markdown tables, to paste into a README or a paper: one row per arm
    (the terminal table's columns: each metric's mean ± std, the first metric's gain over
    SFT, the paired difference against the baseline with seeds pooled and per seed, costs);
    each metric's gain over SFT, lowest to highest seed; and the pooled paired difference
    per question type."""
    study = report.study
    first, metrics = study.metrics[0], report.all_metrics
    cell = format_mean_std

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        low, high = min(values), max(values)
        return f"{low:+.3f}" if math.isclose(low, high) else f"{low:+.3f} to {high:+.3f}"

    head = ["arm", *study.metrics, f"Δ {first} vs SFT", f"vs {study.baseline}, seeds pooled [95%]",
            "per seed [95%]", "oracle calls", "judge s", "wall s"]
    lines = [f"Study `{study.name}` ({study.mode}, seeds {', '.join(map(str, study.seeds))}); mean ± std over "
             f"seeds; paired: mean per-item difference in {study.paired_metric} against {study.baseline}, 95% "
             "bootstrap interval.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in report.arms:
        paired = format_paired(arm.paired[0]) if arm.paired else "-"
        per_seed = "; ".join(f"s{seed} {format_paired(d)}" for seed, d in sorted(arm.paired_per_seed.items()))
        lines.append("| " + " | ".join([
            arm.arm, *(cell(arm.values(m)) for m in study.metrics), cell(arm.gains(first), signed=True), paired,
            per_seed or "-", cell(arm.cost("oracle_calls"), digits=0), cell(arm.cost("judge_s"), digits=0),
            cell(arm.cost("wall_s"), digits=0)]) + " |")
    lines += ["", "Gain over SFT per metric, lowest to highest seed:", "",
              "| arm | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += ["| " + " | ".join([arm.arm, *(spread(arm.gains(m)) for m in metrics)]) + " |" for arm in report.arms]
    groups = list(dict.fromkeys(row.group for arm in report.arms for row in arm.paired[1:]))
    if groups:
        lines += ["", f"Paired difference against {study.baseline} per question type, seeds pooled [95%]:", "",
                  "| arm | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
        for arm in report.arms:
            by_group = {row.group: row for row in arm.paired[1:]}
            lines.append("| " + " | ".join([arm.arm, *(format_paired(by_group[g]) if g in by_group else "-"
                                                       for g in groups)]) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_outputs(report: StudyReport, *, plots: bool = True, notify: Callable[[str], None] | None = None
                  ) -> list[Path]:
    """``results.json``, ``results.csv``, ``results.md`` and, with matplotlib,
    ``bars.png``, ``curves.png`` and (where the cells recorded their wall time)
    ``curves-wall.png`` in the study directory."""
    say = notify or (lambda line: print(line, file=sys.stderr, flush=True))
    out = report.study_dir
    (out / "results.json").write_text(json.dumps(report.to_json(), indent=1, sort_keys=True, default=str))
    written = [out / "results.json", write_csv(report, out / "results.csv"), write_markdown(report, out / "results.md")]
    if not plots:
        return written
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        say("note: matplotlib is not installed; plots skipped")
        return written
    from rlaif.train.plots import plot_study_bars, plot_study_curves

    metric = report.study.metrics[0]
    bars = []
    for arm in report.arms:
        mean, std = mean_std(arm.values(metric))
        paired = arm.paired[0] if arm.paired else None
        bars.append({"arm": arm.arm, "mean": mean, "std": std, "diff": getattr(paired, "diff", None),
                     "lo": getattr(paired, "lo", None), "hi": getattr(paired, "hi", None)})
    written.append(plot_study_bars(out / "bars.png", bars, metric=metric, baseline=report.study.baseline,
                                   paired_metric=report.study.paired_metric))
    curves = {arm.arm: [c.curve for c in arm.cells] for arm in report.arms}
    for name, x in (("curves.png", "step"), ("curves-wall.png", "wall_s")):
        path = plot_study_curves(out / name, curves, x=x)
        if path is not None:
            written.append(path)
    return written


# --------------------------------------------------------------------------- one cell, one process
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rlaif.train.study CELL_DIR [--threads N]``: run one prepared cell (what
    ``rlaif study --jobs N`` starts for each cell)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rlaif.train.study", description=main.__doc__)
    parser.add_argument("cell_dir", type=Path)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        run_cell(args.cell_dir)
    except RlaifError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
