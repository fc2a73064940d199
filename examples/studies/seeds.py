"""The SFT seed study behind the numbers in the issue notes: curriculum vs no-curriculum
SFT, mean ± std over seeds of held-out accuracy, through the real ``rlaif`` commands (one
subprocess per run, so each run is exactly what a user would get).

    python examples/studies/seeds.py --seeds 0 1 2 --out studies/sft
        ``rlaif sft [--no-curriculum]`` + ``rlaif eval`` per seed

RL studies (oracles, judge context, losses, live or replayed) are ``rlaif study
examples/studies/*.toml``: resumable, paired against a baseline, one table.

A run whose result file already exists is skipped, so an interrupted study resumes.
Results land in ``OUT/results.json`` and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

METRICS = ("acc/all", "acc/short", "acc/attribute", "acc/counting", "acc/direction", "acc/temporal",
           "score/describe")


def rlaif(*args: str) -> dict[str, Any]:
    """Run ``rlaif ARGS --json`` and return its last stdout line as JSON."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlaif.cli.main", *args, "--json"], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"rlaif {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["_wall_s"] = time.perf_counter() - started
    return dict(out)


def cached(path: Path, make: Any) -> dict[str, Any]:
    if path.exists():
        return dict(json.loads(path.read_text()))
    result = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, sort_keys=True))
    return dict(result)


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def sft_study(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    table: dict[str, dict[str, list[float]]] = {}
    for variant, flag in (("curriculum", "--curriculum"), ("no-curriculum", "--no-curriculum")):
        for seed in args.seeds:
            run_dir = args.out / f"{variant}-s{seed}"

            def make(run_dir: Path = run_dir, flag: str = flag, seed: int = seed) -> dict[str, Any]:
                sft = rlaif("sft", "--out", str(run_dir / "policy"), "--seed", str(seed), flag)
                ev = rlaif("eval", "--policy", str(run_dir / "policy"), "--no-baselines")
                return {"sft": sft, "eval": ev["policy"], "wall_s": sft["_wall_s"] + ev["_wall_s"]}

            result = cached(run_dir / "result.json", make)
            row = table.setdefault(variant, {})
            for key in METRICS:
                row.setdefault(key, []).append(result["eval"][key])
            row.setdefault("wall_s", []).append(result["wall_s"])
            print(f"{variant} seed {seed}: acc/all {result['eval']['acc/all']:.3f}", file=sys.stderr)
    return table


def print_table(table: dict[str, dict[str, list[float]]], columns: list[str]) -> None:
    print("| | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(mean_std(row.get(c, [])) for c in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("studies/sft"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table = sft_study(args)
    (args.out / "results.json").write_text(json.dumps(table, indent=2, sort_keys=True))
    print_table(table, [*METRICS, "wall_s"])


if __name__ == "__main__":
    main()
