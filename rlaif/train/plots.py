"""PNG curves of a run's metrics, and a study's bars and curves per arm (people would
rather look than read a CSV)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlaif.core.errors import UsageError

PANELS: list[tuple[str, list[str]]] = [
    ("reward", ["reward_mean", "reward_best"]),
    ("kl", ["kl"]),
    ("loss", ["loss"]),
    ("accuracy", ["eval/acc/all", "eval/acc/short", "eval/score/describe"]),
]


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        raise UsageError(f"{path} not found; pass a directory written by `rlaif run` or `rlaif replay`")
    rows = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            rows.append({k: float(v) for k, v in row.items() if v not in (None, "")})
    return sorted(rows, key=lambda r: r["step"])


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(run_dir: str | Path) -> list[Path]:
    """One PNG per panel with any data, plus ``curves.png`` with all panels."""
    plt = pyplot()
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    panels = [(title, [k for k in keys if any(k in r for r in rows)]) for title, keys in PANELS]
    panels = [(t, ks) for t, ks in panels if ks]
    if not panels:
        raise UsageError(f"{run_dir / 'metrics.csv'} has no reward, KL, loss or accuracy columns to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    written = []
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 20 else None,
                    markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    written.append(out)
    return written


def plot_study_bars(path: Path, bars: Sequence[Mapping[str, Any]], *, metric: str, baseline: str,
                    paired_metric: str) -> Path:
    """Two panels, one bar per arm: ``metric``'s mean with ± one std over seeds, and the
    paired difference against ``baseline`` with its 95% bootstrap interval. ``bars`` holds
    ``arm``, ``mean``, ``std``, ``diff``, ``lo`` and ``hi`` (None where absent)."""
    plt = pyplot()
    names = [str(b["arm"]) for b in bars]
    x = list(range(len(bars)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(6.0, 1.3 * len(bars) + 3), 3.4))
    left.bar(x, [b["mean"] or 0.0 for b in bars], yerr=[b["std"] or 0.0 for b in bars], capsize=4, color="#4c72b0")
    left.set_title(f"{metric}, mean ± std over seeds", fontsize=9)
    diffs = [b["diff"] if b["diff"] is not None else 0.0 for b in bars]
    errors = [[d - (b["lo"] if b["lo"] is not None else d) for d, b in zip(diffs, bars, strict=True)],
              [(b["hi"] if b["hi"] is not None else d) - d for d, b in zip(diffs, bars, strict=True)]]
    right.bar(x, diffs, yerr=errors, capsize=4, color="#dd8452")
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_title(f"{paired_metric}: arm - {baseline}, paired, 95% interval", fontsize=9)
    for ax in (left, right):
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


STUDY_PANELS = ("reward_mean", "loss", "kl", "eval/acc/all")


def plot_study_curves(path: Path, runs: Mapping[str, Sequence[Sequence[Mapping[str, float]]]],
                      x: str = "step") -> Path | None:
    """Learning curves per arm (``runs``: arm -> each seed's ``metrics.csv`` rows): the
    mean over seeds at the steps every seed logged, shaded from min to max, against
    ``x``: ``step``, or ``wall_s`` (the rows' wall seconds, averaged over seeds at each
    step). None when no panel has data."""
    panels = [key for key in STUDY_PANELS
              if any(key in r and x in r for seeds in runs.values() for rows in seeds for r in rows)]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        for arm, seeds in runs.items():
            by_seed = [{int(r["step"]): r for r in rows if key in r and x in r} for rows in seeds]
            steps = sorted(set.intersection(*(set(s) for s in by_seed))) if by_seed else []
            if not steps:
                continue
            xs = [sum(s[step][x] for s in by_seed) / len(by_seed) for step in steps]
            values = [[s[step][key] for s in by_seed] for step in steps]
            (line,) = ax.plot(xs, [sum(v) / len(v) for v in values], label=arm,
                              marker="o" if len(steps) < 20 else None, markersize=3)
            if len(by_seed) > 1:
                ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], alpha=0.2,
                                color=line.get_color())
        ax.set_title(key)
        ax.set_xlabel("step" if x == "step" else f"{x} (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
