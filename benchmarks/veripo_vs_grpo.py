"""Accuracy against wall time: VerIPO's GRPO/DPO loop against GRPO alone, on the embedded world.

VerIPO (methods.md §3) claims the loop reaches GRPO's accuracy in less wall time, because
a DPO step (no sampling, no oracle call, two rollouts per pair) is cheaper than a GRPO
step. This script runs, from one SFT policy and with one seed:

* ``veripo``: ``[[schedule]]`` grpo ``--grpo-steps`` then dpo ``--dpo-steps``, repeated
  over ``--steps`` (the run's loss: ``grpo``);
* ``grpo``: ``--steps`` GRPO steps;

both evaluating every ``--eval-every`` steps, and prints one row per evaluation (step,
wall seconds since the run began, held-out accuracy), then each run's accuracy at the
wall time the VerIPO run took in all (the last evaluation at or before it), i.e. the two
at equal wall time, and the VerIPO run's seconds per phase.

Usage: ``python benchmarks/veripo_vs_grpo.py [--steps 60 --grpo-steps 20 --dpo-steps 10]``;
``--tiny`` is a seconds-long check that the script works, not a measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def run(name: str, root: Path, data: dict[str, Any]) -> dict[str, Any]:
    from rlaif.core.config import config_from_dict
    from rlaif.core.registry import load_plugins
    from rlaif.train.rl import run_rl

    marks: dict[int, float] = {}
    started = time.perf_counter()
    summary = run_rl(root / name, config_from_dict(data), load_plugins(), progress=False,
                     on_step=lambda step: marks.__setitem__(step, time.perf_counter() - started))
    rows = {int(float(r["step"])): r for r in csv.DictReader((root / name / "metrics.csv").open())}
    marks[0] = 0.0
    curve = [(step, marks.get(step, summary.wall_seconds), float(row["eval/acc/all"]))
             for step, row in sorted(rows.items()) if row.get("eval/acc/all")]
    return {"name": name, "curve": curve, "wall": summary.wall_seconds, "phases": summary.phase_seconds}


def at_wall(curve: list[tuple[int, float, float]], wall: float) -> float:
    """Accuracy of the last evaluation done by ``wall`` seconds."""
    done = [acc for _, seconds, acc in curve if seconds <= wall + 1e-9]
    return done[-1] if done else curve[0][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--grpo-steps", type=int, default=20)
    parser.add_argument("--dpo-steps", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a quick check that the script runs")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="veripo-vs-grpo-"))
    run_settings: dict[str, Any] = {
        "steps": args.steps, "prompts_per_step": args.prompts_per_step, "group_size": args.group_size,
        "temperature": 1.0, "eval_every": args.eval_every, "checkpoint_every": args.steps, "seed": args.seed,
    }
    data: dict[str, Any] = {"oracle": {"name": "ground-truth"}, "loss": {"name": "grpo"}}
    schedule = [{"phase": "grpo", "steps": args.grpo_steps}, {"phase": "dpo", "steps": args.dpo_steps}]
    if args.tiny:
        os.environ.setdefault("RLAIF_CACHE", str(root / "cache"))
        from rlaif.plugins.benchmarks.video_world import VideoWorld
        from rlaif.train.sft import run_sft

        world = {"n_sft": 16, "n_rl": 16, "n_test": 8, "min_frames": 16, "max_frames": 24, "progress": False}
        benchmark = VideoWorld(root=str(root / "world"), seed=0, **world)
        run_sft(root / "sft", benchmark=benchmark, seed=0, max_steps=2, progress=False)
        data["benchmark"] = {"name": "video-world", "root": str(root / "world"), **world}
        data["policy"] = {"name": "tiny-video-lm", "path": str(root / "sft")}
        run_settings.update(steps=4, prompts_per_step=3, group_size=3, max_new_tokens=8, eval_every=2,
                            eval_items=4, checkpoint_every=4)
        schedule = [{"phase": "grpo", "steps": 1}, {"phase": "dpo", "steps": 1}]
    results = [run("veripo", root, {**data, "run": run_settings, "schedule": schedule}),
               run("grpo", root, {**data, "run": run_settings})]
    budget = results[0]["wall"]
    for result in results:
        print(f"# {result['name']}: {result['wall']:.1f} s in all" +
              (f", per phase {json.dumps(result['phases'])}" if result["phases"] else ""))
        print("step  wall_s  acc")
        for step, seconds, acc in result["curve"]:
            print(f"{step:4d}  {seconds:6.1f}  {acc:.3f}")
    print(f"# at equal wall time ({budget:.1f} s, the VerIPO run's): " +
          ", ".join(f"{r['name']} {at_wall(r['curve'], budget):.3f}" for r in results))
    print(f"# run directories: {root}")


if __name__ == "__main__":
    main()
