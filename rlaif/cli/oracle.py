"""``rlaif oracle check``: diagnose an oracle against the ground truth before training
with it; the logic lives in :mod:`rlaif.train.oracle_check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from rlaif.cli.app import console, handle_errors
from rlaif.cli.options import component_option, config_option, set_option

# ruff: noqa: UP045  (typer reads Optional[...] at runtime)

oracle_app = typer.Typer(help="Diagnose oracles.", no_args_is_help=True)

COLUMNS = (
    ("context", "context", "{}"),
    ("top-1", "top1", "{:.3f}"),
    ("τ", "kendall_tau", "{:+.3f}"),
    ("fail", "failure_rate", "{:.1%}"),
    ("pos-bias", "position_bias", "{:.1%}"),
    ("perm-τ", "permutation_agreement", "{:+.3f}"),
    ("s/group", "latency_s", "{:.3f}"),
    ("used", "groups_used", "{}"),
)


def _cell(value: Any, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


@oracle_app.command("check")
@handle_errors
def check_command(
    oracle: Optional[str] = typer.Option(None, "--oracle", help="Oracle to check (see `rlaif plugins list`); "
                                         "= --set oracle.name=NAME, or --config's [oracle]."),
    config: Optional[Path] = config_option("Run TOML whose [oracle] and [benchmark] tables (name and options) "
                                           "are checked."),
    sets: Optional[list[str]] = set_option(),
    context: Optional[str] = typer.Option(
        None, "--context", help="narrative | none | both (default: both where the oracle has a context option; "
                                "--set oracle.context=X checks X only)."),
    groups: int = typer.Option(32, "--groups", help="Prompts (groups) to rank."),
    group_size: int = typer.Option(4, "--group-size", help="Candidates per prompt (G)."),
    split: str = typer.Option("test", "--split", help="Benchmark split to draw prompts from (test or rl)."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="Oracle option key=value (repeatable); "
                                               "= --set oracle.key=value."),
    benchmark: Optional[str] = component_option("benchmark", "The benchmark by name (= --set benchmark.name=NAME; "
                                                "default video-world)."),
    benchmark_option: Optional[list[str]] = typer.Option(
        None, "--benchmark-option", help="Benchmark option key=value (repeatable); = --set benchmark.key=value."),
    policy: Optional[Path] = typer.Option(
        None, "--policy", help="Saved policy dir that samples candidates (= --set policy.path=DIR; --set "
                               "policy.name=NAME picks another policy; default: the default SFT policy)."),
    seed: int = typer.Option(0, "--seed"),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens"),
    as_json: bool = typer.Option(False, "--json", help="Print the diagnostics as one JSON object."),
) -> None:
    """Top-1 accuracy, Kendall τ, failure rate, position bias and latency of an oracle
    against the ground-truth ranking of SFT-policy candidates."""
    from rlaif.cli.options import build_config, gather
    from rlaif.core.registry import load_plugins
    from rlaif.train.oracle_check import run_oracle_check

    registry = load_plugins()
    # --option and --benchmark-option are the older spelling of --set oracle.* / benchmark.*.
    sets = [*(f"oracle.{item}" for item in option or []), *(f"benchmark.{item}" for item in benchmark_option or []),
            *(sets or [])]
    flags = {"oracle.name": ("--oracle", oracle), "benchmark.name": ("--benchmark", benchmark),
             "policy.path": ("--policy", None if policy is None else str(policy))}
    given = gather(config, sets, flags, uses=("oracle", "benchmark", "policy"), command="rlaif oracle check")
    if "oracle" not in given.data:
        given.problems.append("name the oracle to check: --oracle NAME (or --set oracle.name=NAME, or [oracle] in "
                              "--config)")
        given.check()
    cfg = build_config(given.only("oracle", "benchmark", "policy"), registry, ("oracle", "benchmark"))
    chosen_policy = cfg.choice("policy")
    oracle = cfg.choice("oracle").name
    result = run_oracle_check(
        oracle, cfg.choice("oracle").options, context=context, n_groups=groups, group_size=group_size, split=split,
        seed=seed, benchmark_name=cfg.choice("benchmark").name, benchmark_options=cfg.choice("benchmark").options,
        policy_name=chosen_policy.name, policy_options=chosen_policy.options, max_new_tokens=max_new_tokens,
        registry=registry, progress=not as_json,
    )
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    from rich.table import Table

    table = Table(title=f"oracle {oracle} on {result['benchmark']}/{result['split']}: "
                        f"{result['groups']} groups of {result['group_size']}")
    for title, _, _ in COLUMNS:
        table.add_column(title, justify="left" if title == "context" else "right")
    for run in result["runs"]:
        table.add_row(*[_cell(run.get(key), fmt) for _, key, fmt in COLUMNS])
    console.print(table)
    for run in result["runs"]:
        if len(run.get("kendall_tau_by_type") or {}) > 1:
            console.print(f"τ by question type ({run['context']}): "
                          + ", ".join(f"{q} {t:+.3f}" for q, t in run["kendall_tau_by_type"].items()))
    tied = max((r["groups_all_tied"] for r in result["runs"]), default=0)
    if tied:
        console.print(f"{tied} group(s) all tied under the ground truth: left out of top-1 and τ")
