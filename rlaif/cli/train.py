"""``rlaif sft`` and ``rlaif eval``: the supervised stage and held-out evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rlaif.cli.app import console, handle_errors

# ruff: noqa: UP045  (typer reads Optional[...] at runtime)


def build_benchmark(name: str, seed: int) -> object:
    from rlaif.core.registry import load_plugins

    return load_plugins().build("benchmark", name, {})


@handle_errors
def sft_command(
    out: Optional[Path] = typer.Option(None, "--out", help="Checkpoint dir (default: the cache's default SFT dir)."),
    benchmark: str = typer.Option("video-world", "--benchmark"),
    seed: int = typer.Option(0, "--seed"),
    curriculum: bool = typer.Option(True, "--curriculum/--no-curriculum", help="Easy (short answers) then hard."),
    lora_r: int = typer.Option(32, "--lora-r"),
    lora_alpha: int = typer.Option(32, "--lora-alpha"),
    epochs_per_stage: Optional[int] = typer.Option(None, "--epochs-per-stage", help="Default: the recipe's."),
    as_json: bool = typer.Option(False, "--json", help="Print the SFT metrics as one JSON line."),
) -> None:
    """VLM-RLAIF curriculum SFT (LoRA + projector) of the default tiny video LM."""
    from rlaif.core.errors import UsageError
    from rlaif.train.sft import default_sft_dir, run_sft

    if out is None and (not curriculum or epochs_per_stage is not None or (lora_r, lora_alpha) != (32, 32)):
        raise UsageError("--no-curriculum, --epochs-per-stage and --lora-r/--lora-alpha change the recipe: "
                         "pass --out DIR (the cache holds only the default recipe's SFT policy)")
    bench = build_benchmark(benchmark, seed)
    target = out or default_sft_dir(bench, seed=seed)
    extra = {} if epochs_per_stage is None else {"epochs_per_stage": epochs_per_stage}
    metrics = run_sft(target, benchmark=bench, seed=seed, curriculum=curriculum, lora_r=lora_r,
                      lora_alpha=lora_alpha, progress=not as_json, **extra)
    if as_json:
        print(json.dumps({"out": str(target), **metrics}, default=str))
    else:
        console.print(f"[green]SFT policy[/] -> {target}")


@handle_errors
def eval_command(
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy dir (default: the default SFT policy)."),
    benchmark: str = typer.Option("video-world", "--benchmark"),
    split: str = typer.Option("test", "--split"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate a seeded subset of this many items."),
    seed: int = typer.Option(0, "--seed"),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also score single-frame/random."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Accuracy per question type, long-answer score and baselines on a held-out split."""
    from rlaif.core.errors import UsageError
    from rlaif.core.registry import load_plugins
    from rlaif.train.evaluate import baseline_metrics, evaluate_policy
    from rlaif.train.sft import default_sft_dir, run_sft

    registry = load_plugins()
    bench = registry.build("benchmark", benchmark, {})
    if policy is None:
        policy = default_sft_dir(bench, seed=seed)
        run_sft(policy, benchmark=bench, seed=seed, progress=not as_json)
    elif not policy.exists():
        raise UsageError(f"--policy {policy}: no such directory; run `rlaif sft` or pass a saved policy dir")
    model = registry.build("policy", "tiny-video-lm", {"path": str(policy), "new_adapter": False},
                           benchmark=bench, seed=seed)
    results = {"policy": evaluate_policy(model, bench, split=split, limit=limit)}
    if baselines:
        results.update(baseline_metrics(bench, split))
    if as_json:
        print(json.dumps(results, sort_keys=True))
        return
    from rich.table import Table

    keys = sorted({k for m in results.values() for k in m if not k.startswith("n/")},
                  key=lambda k: (not k.startswith("acc/"), k))
    table = Table(title=f"{benchmark} / {split}")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    for key in keys:
        table.add_row(key, *(f"{m[key]:.3f}" if key in m else "-" for m in results.values()))
    console.print(table)
