"""Cold-start wall time of the ``rlaif`` CLI against two floors.

A CLI that imports every plugin at start-up (simonw/llm's weak spot) makes ``--help``
take seconds; ours must stay close to the cost of importing typer itself. Each command
runs in a fresh interpreter ``--runs`` times (after ``--warmup`` untimed rounds that fill
the OS file cache), interleaved with the others, and we report the median as a ratio to
``python -c pass`` (the interpreter) and to ``python -c "import typer"`` (the floor any
typer CLI pays). On a busy machine, compare ratios rather than milliseconds.

Targets: ``rlaif --help`` <= 2x and ``rlaif plugins list`` <= 3x the typer floor.
Run ``python benchmarks/cli_startup.py`` (``--check`` exits 1 when a target is missed);
profile a miss with ``python -X importtime -c "import sys; from rlaif.cli.main import
main; sys.argv[:] = ['rlaif', 'plugins', 'list']; main()" 2> imports.txt``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: label -> (ratio to the typer floor it must stay under, or None for a floor)
TARGETS: dict[str, float | None] = {
    "python -c pass": None,
    'python -c "import typer"': None,
    "rlaif --help": 2.0,
    "rlaif plugins list": 3.0,
}


def rlaif_command() -> list[str]:
    """The console script next to this interpreter, as users run it; else the same
    entry function through ``-c`` (for a checkout that is not installed)."""
    script = Path(sys.executable).with_name("rlaif")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from rlaif.cli.main import main; main()"]


def commands() -> dict[str, list[str]]:
    rlaif = rlaif_command()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import typer"': [sys.executable, "-c", "import typer"],
        "rlaif --help": [*rlaif, "--help"],
        "rlaif plugins list": [*rlaif, "plugins", "list"],
    }


def wall_times(cmds: dict[str, list[str]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per run of each command. Runs are interleaved (one of each command per
    round) so that load from other processes skews every command alike, not one."""
    # Plain output and a fixed width: the CLI's cost, not the terminal's, is measured.
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
    times: dict[str, list[float]] = {label: [] for label in cmds}
    for i in range(warmup + runs):
        for label, argv in cmds.items():
            start = time.perf_counter()
            proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode().strip()}")
            if i >= warmup:
                times[label].append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)

    times = wall_times(commands(), args.runs, args.warmup)
    medians = {label: statistics.median(t) for label, t in times.items()}
    spreads = {label: (min(t), max(t)) for label, t in times.items()}

    python, floor = medians["python -c pass"], medians['python -c "import typer"']
    print(f"cold start, median of {args.runs} runs ({sys.executable}, Python {sys.version.split()[0]})")
    header = f"{'command':<26} {'median ms':>9} {'min-max ms':>13} {'x python':>8} {'x typer':>8} {'target':>7}  ok"
    print(header)
    print("-" * len(header))
    missed = []
    for label, target in TARGETS.items():
        med, (lo, hi) = medians[label], spreads[label]
        ratio = med / floor
        ok = "" if target is None else ("yes" if ratio <= target else "NO")
        if ok == "NO":
            missed.append(label)
        target_s = "-" if target is None else f"<={target:g}x"
        print(
            f"{label:<26} {med * 1e3:>9.1f} {f'{lo * 1e3:.0f}-{hi * 1e3:.0f}':>13} "
            f"{med / python:>8.2f} {ratio:>8.2f} {target_s:>7}  {ok}"
        )
    if missed:
        print(f"missed: {', '.join(missed)}")
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
