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
    k: Optional[int] = typer.Option(None, "--k", help="pass@k and majority@k over k samples per short-answer "
                                    "item (default: a run's group size, 8); 0 skips sampling."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Samples per item for the pass@k "
                                          "estimator (default: k)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature "
                                                "(default: a run's, 1.0)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also score single-frame/random."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write DIR/items.jsonl (per-item answers and "
                                       "scores) and DIR/metrics.json."),
    compare: Optional[tuple[Path, Path]] = typer.Option(
        None, "--compare", help="Compare two evaluations item by item instead (runs, --out dirs or .jsonl files)."),
    metric: str = typer.Option("correct", "--metric", help="With --compare: correct (as acc/all) or score."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Accuracy per question type, pass@k / majority@k, long-answer score and baselines
    on a held-out split; or, with --compare A B, B's paired gain over A."""
    if compare is not None:
        compare_evaluations(*compare, metric=metric, as_json=as_json)
        return
    from rlaif.core.config import RunSettings
    from rlaif.core.errors import UsageError
    from rlaif.core.registry import load_plugins
    from rlaif.train.evaluate import baseline_metrics, evaluate_items, write_items
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
    defaults = RunSettings()
    evaluation = evaluate_items(model, bench, split=split, limit=limit, seed=seed,
                                k=defaults.group_size if k is None else k, samples=samples,
                                temperature=defaults.temperature if temperature is None else temperature)
    results = {"policy": evaluation.metrics}
    if baselines:
        results.update(baseline_metrics(bench, split))
    if out is not None:
        write_items(out / "items.jsonl", evaluation.items)
        (out / "metrics.json").write_text(json.dumps(results, sort_keys=True, indent=1))
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


def compare_evaluations(a: Path, b: Path, *, metric: str, as_json: bool) -> None:
    """``rlaif eval --compare A B``: B's paired difference over A, overall and per type."""
    from dataclasses import asdict

    from rlaif.train.compare import compare_items
    from rlaif.train.evaluate import items_file, read_items

    files = items_file(a), items_file(b)
    items_a, items_b = read_items(files[0]), read_items(files[1])
    rows = compare_items(items_a, items_b, metric=metric)
    if as_json:
        print(json.dumps({"a": str(files[0]), "b": str(files[1]), "metric": metric, "items_a": len(items_a),
                          "items_b": len(items_b), "rows": [asdict(r) for r in rows]}, sort_keys=True))
        return
    from rich.table import Table

    table = Table(title=f"B - A on {metric}, paired by item, 95% bootstrap interval",
                  caption=f"A: {files[0]}\nB: {files[1]}\n{rows[0].n} paired items "
                          f"(A has {len(items_a)}, B has {len(items_b)})")
    table.add_column("group")
    for name in ("items", "A", "B", "B - A", "95% interval"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(r.group, str(r.n), f"{r.mean_a:.3f}", f"{r.mean_b:.3f}", f"{r.diff:+.3f}",
                      f"[{r.lo:+.3f}, {r.hi:+.3f}]")
    console.print(table)
