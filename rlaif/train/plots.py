"""PNG curves of a run's metrics (people would rather look than read a CSV)."""

from __future__ import annotations

import csv
from pathlib import Path

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


def plot_metrics(run_dir: str | Path) -> list[Path]:
    """One PNG per panel with any data, plus ``curves.png`` with all panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
