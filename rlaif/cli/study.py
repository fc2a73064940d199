"""``rlaif study STUDY.toml``: run a grid of runs and print one comparison table; the
logic lives in :mod:`rlaif.train.study`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from rlaif.cli.app import console, err_console, handle_errors

if TYPE_CHECKING:
    from rlaif.train.study import StudyReport

# typer needs real Optional[...] annotations at runtime on Python 3.10
# ruff: noqa: UP045


@handle_errors
def study_command(
    study_file: Path = typer.Argument(..., help="Study TOML: a base run config, arms, seeds, mode, baseline."),
    out: Optional[Path] = typer.Option(None, "--out", help="Study directory (default studies/<file name>)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells run side by side, each a process with "
                             "cores // N torch threads (default: one after another, in this process)."),
    list_cells: bool = typer.Option(False, "--list", help="Show the cells and how far each got; run nothing."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write bars.png and curves.png."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run every cell (arm x seed) not yet finished, resuming killed ones, then compare the
    arms: mean ± std over seeds, paired per-item difference against the baseline with a
    95% bootstrap interval, oracle calls, judge time and wall time."""
    from rlaif.cli.run import known_components
    from rlaif.core.errors import UsageError
    from rlaif.core.registry import load_plugins
    from rlaif.train.study import load_study, run_study, write_outputs

    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: give 1 or more")
    registry = load_plugins()
    study = load_study(study_file, known_components=known_components(), registry=registry)
    study_dir = out or Path("studies") / study_file.stem
    if list_cells:
        show_cells(study, study_dir, as_json)
        return

    def notify(line: str) -> None:
        err_console.print(line, highlight=False, markup=False, soft_wrap=True)

    report = run_study(study, study_dir, jobs=jobs, registry=registry, progress=progress and not as_json,
                       notify=notify)
    written = write_outputs(report, plots=plots, notify=notify)
    if as_json:
        print(json.dumps(report.to_json(), sort_keys=True, default=str))
        return
    print_report(report)
    err_console.print("wrote " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)


def show_cells(study: Any, study_dir: Path, as_json: bool) -> None:
    from rlaif.train.study import cell_progress

    rows = [{"cell": c.name, "arm": c.arm, "seed": c.seed, "kind": c.kind, "digest": c.digest[:12],
             "state": cell_progress(study_dir / c.name, c)} for c in study.cells]
    if as_json:
        print(json.dumps({"study": study.name, "dir": str(study_dir), "mode": study.mode,
                          "baseline": study.baseline, "cells": rows}, sort_keys=True))
        return
    from rich.table import Table

    table = Table(title=f"study {study.name} ({study.mode}) in {study_dir}")
    for name in ("cell", "arm", "seed", "kind", "state"):
        table.add_column(name)
    for row in rows:
        table.add_row(*(str(row[k]) for k in ("cell", "arm", "seed", "kind", "state")))
    console.print(table)


def print_report(report: StudyReport) -> None:
    """One row per arm. Cells fold rather than cut when the terminal is narrow: a digit
    lost to an ellipsis would change a number."""
    from rich.table import Table

    from rlaif.train.study import format_mean_std as _mean_std
    from rlaif.train.study import format_paired

    study = report.study
    first = study.metrics[0]
    seeds = len(study.seeds)
    caption = (f"Δ vs SFT: {first} gain over each cell's step-0 evaluation. vs {study.baseline}: mean per-item "
               f"difference in {study.paired_metric}, items paired within each seed, seeds pooled, 95% bootstrap "
               "interval; per seed: the same within each seed.")
    if study.mode == "replay":
        caption += " Replay arms' oracle calls and judge time are their source run's."
    table = Table(title=f"study {study.name}: {study.mode}, {seeds} seed{'s' if seeds > 1 else ''}, "
                        "mean ± std over seeds", caption=caption)
    table.add_column("arm", no_wrap=True)
    for name in (*study.metrics, "Δ vs SFT", f"vs {study.baseline} [95%]", "per seed", "oracle calls", "judge s",
                 "wall s"):
        table.add_column(name, justify="right", overflow="fold")
    for arm in report.arms:
        paired = arm.paired[0] if arm.paired else None
        versus = "-" if paired is None else format_paired(paired, sep="\n")
        per_seed = "\n".join(f"s{seed} {format_paired(d)}" for seed, d in sorted(arm.paired_per_seed.items())) or "-"
        table.add_row(arm.arm, *(_mean_std(arm.values(m)) for m in study.metrics),
                      _mean_std(arm.gains(first), signed=True), versus, per_seed,
                      _mean_std(arm.cost("oracle_calls"), 0), _mean_std(arm.cost("judge_s"), 1),
                      _mean_std(arm.cost("wall_s"), 0))
    console.print(table)
