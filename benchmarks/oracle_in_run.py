"""How a run's oracle ranked the candidates the policy actually sampled, per question type.

    python benchmarks/oracle_in_run.py RUN_DIR [--oracle NAME] [--json out.json]
    python benchmarks/oracle_in_run.py RUN_DIR --calibration

``rlaif oracle check`` measures an oracle on fresh SFT candidates. This reads what the
oracle did *inside* a run: every stored ranking, against the ``ground-truth`` oracle's
ranking of the same stored candidates (the run's benchmark, rebuilt from the stored
config). Per question type, over the groups with both better and worse candidates:

* ``tau``: mean Kendall tau-b against the ground truth;
* ``top1``: how often the oracle's best block is among the truly best;
* ``policy_top1``: the same for the group's most frequent answer (what the policy already
  says most often);
* ``pulls_off``: the share of groups where the policy's most frequent answer is among the
  truly best but the oracle's best block is not. These are the groups where a rank-based
  loss pushes the policy off an answer it had right.

Why: an oracle with a positive tau on average can still lower accuracy in RL. The
per-type table shows where it does.

``--calibration``: for a judge whose scores are P(correct), per score bin, the share of
the candidates that were right (over the same groups): whether its confidence means
what it says.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def judged_groups(run_dir: Path, oracle: str | None = None, registry: Any = None) -> Iterator[tuple[Any, Any, Any]]:
    """``(ranking, group, reference)`` for every stored group the oracle ranked and the
    ground truth can order (both better and worse candidates), failed rankings left out."""
    from rlaif.core.config import config_from_dict
    from rlaif.core.errors import StoreError, UsageError
    from rlaif.core.registry import load_plugins
    from rlaif.core.store import RunStore
    from rlaif.train.oracle_check import top_block
    from rlaif.train.rl import RUN_ID, stored_step

    registry = registry or load_plugins()
    with RunStore(run_dir, readonly=True) as store:
        info = store.get_run(RUN_ID)
        if info is None:
            raise StoreError(f"{run_dir}: no run recorded in this store; check the path")
        config = config_from_dict(info.config, source=str(run_dir))
        name = oracle or config.choice("oracle").name
        benchmark = registry.build("benchmark", config.choice("benchmark").name, config.choice("benchmark").options)
        if not getattr(benchmark, "has_ground_truth", False):
            raise UsageError(f"{run_dir}: its benchmark has no ground truth to compare the oracle with")
        truth = registry.build("oracle", "ground-truth", {}, benchmark=benchmark)
        steps = store.steps(RUN_ID, kind="rankings", oracle=name)
        if not steps:
            raise UsageError(f"{run_dir}: no rankings by oracle {name!r} stored; pass --oracle")
        for step in steps:
            data = stored_step(store, step, name, run_id=RUN_ID)  # the groups as the run ranked them
            for ranking, group, reference in zip(data.rankings, data.groups, truth.rank(data.groups), strict=True):
                if ranking.failure is None and len(top_block(reference)) < len(group.rollouts):
                    yield ranking, group, reference


def oracle_in_run(run_dir: Path, oracle: str | None = None, registry: Any = None) -> dict[str, dict[str, float]]:
    """Per question type (``all`` too): ``groups``, ``tau``, ``top1``, ``policy_top1``,
    ``pulls_off`` (see the module docstring)."""
    from rlaif.train.oracle_check import kendall_tau_b, top1_credit, top_block

    sums: dict[str, Counter[str]] = defaultdict(Counter)  # running sums per type
    for ranking, group, reference in judged_groups(run_dir, oracle, registry):
        best = set(top_block(reference))
        texts = [r.text.strip() for r in group.rollouts]
        common = Counter(texts).most_common(1)[0][0]
        policy_right = any(texts[i] == common for i in best)
        oracle_right = bool(set(top_block(ranking)) & best)
        values = {"groups": 1, "tau": kendall_tau_b(ranking.positions(), reference.positions()),
                  "top1": top1_credit(ranking, reference), "policy_top1": float(policy_right),
                  "pulls_off": float(policy_right and not oracle_right)}
        for key in (group.prompt.qtype or "other", "all"):
            sums[key].update(values)
    return {key: {"groups": row["groups"], **{k: row[k] / row["groups"] for k in
                                              ("tau", "top1", "policy_top1", "pulls_off")}}
            for key, row in sorted(sums.items(), key=lambda kv: (kv[0] == "all", kv[0]))}


def score_calibration(run_dir: Path, oracle: str | None = None, registry: Any = None, bins: int = 10
                      ) -> list[dict[str, float]]:
    """For an oracle whose scores are probabilities (P(correct) in [0, 1]): per score bin,
    how many candidates fell in it and what share of them were among their group's truly
    best. A calibrated judge's share matches its bin."""
    from rlaif.core.errors import UsageError
    from rlaif.train.oracle_check import top_block

    counts, right = [0] * bins, [0] * bins
    for ranking, _, reference in judged_groups(run_dir, oracle, registry):
        scores = ranking.scores or []
        outside = [s for s in scores if not 0.0 <= s <= 1.0]
        if outside:
            raise UsageError(f"{run_dir}: the oracle's scores are not probabilities in [0, 1] (got {outside[0]})")
        best = set(top_block(reference))
        for i, s in enumerate(scores):
            k = min(bins - 1, int(s * bins))
            counts[k] += 1
            right[k] += i in best
    return [{"low": k / bins, "high": (k + 1) / bins, "candidates": counts[k],
             "right": right[k] / counts[k] if counts[k] else float("nan")} for k in range(bins)]


def render(table: dict[str, dict[str, float]]) -> str:
    lines = ["| type | groups | Kendall τ | oracle top-1 | policy's most frequent answer right | pulled off |",
             "|---|---|---|---|---|---|"]
    for key, row in table.items():
        lines.append(f"| {key} | {row['groups']} | {row['tau']:+.3f} | {row['top1']:.3f} | "
                     f"{row['policy_top1']:.3f} | {row['pulls_off']:.3f} |")
    return "\n".join(lines)


def render_calibration(rows: list[dict[str, float]]) -> str:
    used = [r for r in rows if r["candidates"]]
    return "\n".join([
        "| score | " + " | ".join(f"{r['low']:.1f}-{r['high']:.1f}" for r in used) + " |",
        "|---|" + "---|" * len(used),
        "| candidates | " + " | ".join(str(r["candidates"]) for r in used) + " |",
        "| share right | " + " | ".join(f"{r['right']:.2f}" for r in used) + " |",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a directory written by `rlaif run`")
    parser.add_argument("--oracle", help="whose stored rankings to read (default: the run's oracle)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--calibration", action="store_true",
                        help="instead: per P(correct) bin, the share of candidates that were right")
    args = parser.parse_args(argv)
    from rlaif.core.errors import RlaifError

    try:
        result: Any = (score_calibration(args.run_dir, args.oracle) if args.calibration
                       else oracle_in_run(args.run_dir, args.oracle))
    except RlaifError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_calibration(result) if args.calibration else render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
