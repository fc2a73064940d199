"""How a run's oracle ranked the candidates the policy actually sampled, per question type.

    python benchmarks/oracle_in_run.py RUN_DIR [--oracle NAME] [--json out.json]

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
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


def oracle_in_run(run_dir: Path, oracle: str | None = None, registry: Any = None) -> dict[str, dict[str, float]]:
    """Per question type (``all`` too): ``groups``, ``tau``, ``top1``, ``policy_top1``,
    ``pulls_off`` (see the module docstring)."""
    from rlaif.core.config import config_from_dict
    from rlaif.core.errors import StoreError, UsageError
    from rlaif.core.registry import load_plugins
    from rlaif.core.store import RunStore
    from rlaif.train.oracle_check import kendall_tau_b, top1_credit, top_block
    from rlaif.train.rl import RUN_ID, stored_step

    registry = registry or load_plugins()
    sums: dict[str, Counter[str]] = defaultdict(Counter)  # running sums per type
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
                best = set(top_block(reference))
                if ranking.failure is not None or len(best) == len(group.rollouts):
                    continue  # a failed ranking, or a group the truth cannot order
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


def render(table: dict[str, dict[str, float]]) -> str:
    lines = ["| type | groups | Kendall τ | oracle top-1 | policy's most frequent answer right | pulled off |",
             "|---|---|---|---|---|---|"]
    for key, row in table.items():
        lines.append(f"| {key} | {row['groups']} | {row['tau']:+.3f} | {row['top1']:.3f} | "
                     f"{row['policy_top1']:.3f} | {row['pulls_off']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a directory written by `rlaif run`")
    parser.add_argument("--oracle", help="whose stored rankings to read (default: the run's oracle)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    from rlaif.core.errors import RlaifError

    try:
        table = oracle_in_run(args.run_dir, args.oracle)
    except RlaifError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render(table))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
