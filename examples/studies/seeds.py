"""Seed studies behind the numbers in the issue notes: mean ± std over seeds of held-out
accuracy, through the real ``rlaif`` commands (one subprocess per run, so each run is
exactly what a user would get).

    python examples/studies/seeds.py sft --seeds 0 1 2 --out studies/sft
        curriculum vs no-curriculum SFT (``rlaif sft [--no-curriculum]`` + ``rlaif eval``)
    python examples/studies/seeds.py rl --losses grpo-rank grpo ppo dpo --seeds 0 1 2 \
        --oracle ground-truth --config run.toml --out studies/rl [--option context=none]
        RL from the default SFT policy (``rlaif run``), accuracy before and after, with
        every seed's paired per-item difference (final vs SFT, same test items) and its
        95% bootstrap interval, as ``rlaif eval --compare`` prints it

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


def rl_study(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    table: dict[str, dict[str, list[float]]] = {}
    for loss in args.losses:
        for seed in args.seeds:
            run_dir = args.out / f"{args.oracle}-{loss}-s{seed}"
            cmd = ["run", "--oracle", args.oracle, "--loss", loss, "--seed", str(seed), "--run-dir", str(run_dir / "run"),
                   "--no-progress"]
            if args.config:
                cmd += ["--config", str(args.config)]
            if args.context:
                cmd += ["--context", args.context]
            result = cached(run_dir / "result.json", lambda cmd=cmd: rlaif(*cmd))
            diff = paired_gain(run_dir / "run")
            row = table.setdefault(loss, {})
            for key in METRICS:
                row.setdefault(key, []).append(result["eval"][key])
                row.setdefault("Δ" + key, []).append(result["eval"][key] - result["sft_eval"][key])
            row.setdefault("sft acc/all", []).append(result["sft_eval"]["acc/all"])
            row.setdefault("wall_s", []).append(result["wall_seconds"])
            row.setdefault("oracle_calls", []).append(result["oracle_calls"])
            row.setdefault("paired", []).append(diff)  # type: ignore[arg-type]
            print(f"{loss} seed {seed}: acc/all {result['sft_eval']['acc/all']:.3f} -> {result['eval']['acc/all']:.3f}"
                  f"  paired Δ {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]", file=sys.stderr)
    return table


def paired_gain(run_dir: Path) -> list[float]:
    """``[Δ, lo, hi]``: the run's final evaluation against its step-0 (SFT) one, paired by
    item (``correct``, what acc/all counts), with the 95% bootstrap interval."""
    from rlaif.train.compare import compare_items
    from rlaif.train.evaluate import read_items

    files = sorted((run_dir / "eval").glob("step-*.jsonl"))
    first, last = read_items(files[0]), read_items(files[-1])
    row = compare_items(first, last)[0]
    return [row.diff, row.lo, row.hi]


def print_table(table: dict[str, dict[str, list[float]]], columns: list[str]) -> None:
    print("| | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in table.items():
        cells = [mean_std(row.get(c, [])) for c in columns]
        if "paired" in row:
            cells.append("; ".join(f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in row["paired"]))  # type: ignore[misc]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=("sft", "rl"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("studies"))
    parser.add_argument("--losses", nargs="+", default=["grpo-rank"])
    parser.add_argument("--oracle", default="ground-truth")
    parser.add_argument("--config", type=Path, default=None, help="run TOML passed to every `rlaif run`")
    parser.add_argument("--context", default=None, help="llm-judge context passed to `rlaif run --context`")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.study == "sft":
        table = sft_study(args)
        columns = ["acc/all", "acc/short", "acc/attribute", "acc/counting", "acc/direction", "acc/temporal",
                   "score/describe", "wall_s"]
    else:
        table = rl_study(args)
        columns = ["sft acc/all", "acc/all", "Δacc/all", "Δacc/short", "Δscore/describe", "oracle_calls", "wall_s"]
        print("(last column: each seed's paired Δ acc/all [95% bootstrap interval])")
    (args.out / "results.json").write_text(json.dumps(table, indent=2, sort_keys=True))
    print_table(table, columns)


if __name__ == "__main__":
    main()
