"""``rlaif sft`` and ``rlaif eval``: the supervised stage and held-out evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from rlaif.cli.app import console, handle_errors
from rlaif.cli.options import component_option, config_option, set_option

# ruff: noqa: UP045  (typer reads Optional[...] at runtime)


@handle_errors
def sft_command(
    out: Optional[Path] = typer.Option(None, "--out", help="Checkpoint dir (default, embedded recipe only: the "
                                       "cache's default SFT dir)."),
    policy: Optional[str] = typer.Option(None, "--policy", help="A policy name (hf-vlm) or a model dir / hub id "
                                         "(= --set policy.path=...): train it instead of the embedded default."),
    benchmark: Optional[str] = component_option("benchmark", "The benchmark by name (= --set benchmark.name=NAME; "
                                                "default: --config's [benchmark], else video-world)."),
    config: Optional[Path] = config_option("Run TOML whose [benchmark] and [policy] tables (name and options) are "
                                           "trained; [run] grad_accum and mixed_precision are the defaults."),
    sets: Optional[list[str]] = set_option(),
    seed: int = typer.Option(0, "--seed"),
    curriculum: bool = typer.Option(True, "--curriculum/--no-curriculum", help="Embedded recipe: easy (short "
                                    "answers) then hard."),
    lora_r: int = typer.Option(32, "--lora-r", help="Embedded recipe (a chosen policy: [policy] lora_r)."),
    lora_alpha: int = typer.Option(32, "--lora-alpha", help="Embedded recipe (a chosen policy: [policy] lora_alpha)."),
    epochs_per_stage: Optional[int] = typer.Option(None, "--epochs-per-stage", help="Embedded recipe; default: "
                                                   "the recipe's."),
    align_questions: bool = typer.Option(True, "--align-questions/--no-align-questions", help="Embedded recipe: "
                                         "ground on fresh videos' captions and short questions, or (--no-...) "
                                         "their captions only, so QA supervision is the sft split's alone."),
    split: Optional[str] = typer.Option(None, "--split", help="Chosen policy: the split trained on (default sft)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Chosen policy: passes over the split (default 1)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Chosen policy: examples per micro-batch "
                                             "(default 4)."),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Chosen policy: micro-batches per "
                                             "optimizer step (default: [run] grad_accum, 1)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Chosen policy: peak AdamW learning rate (default 2e-4)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Chosen policy: cosine | linear | constant | "
                                           "cosine_with_restarts | polynomial, after the warmup (default cosine)."),
    warmup: Optional[float] = typer.Option(None, "--warmup", help="Chosen policy: share of the steps warming up "
                                           "linearly (default 0.03)."),
    mixed_precision: Optional[str] = typer.Option(None, "--mixed-precision", help="Chosen policy: no | bf16 | "
                                                  "fp16 (default: [run] mixed_precision)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Chosen policy: stop after this many "
                                            "optimizer steps."),
    as_json: bool = typer.Option(False, "--json", help="Print the SFT metrics as one JSON line."),
) -> None:
    """Supervised fine-tuning. With a policy chosen (--policy, [policy] or --set policy.*):
    its adapter on the benchmark's answers (sft_examples), saved where `rlaif run` and
    `rlaif eval` load it as [policy] path. Without: VLM-RLAIF's curriculum SFT of the
    embedded tiny video LM on the embedded video world (cached)."""
    from rlaif.cli.options import build_config, gather, policy_flag
    from rlaif.core.errors import UsageError
    from rlaif.core.registry import load_plugins

    registry = load_plugins()
    flags = {"benchmark.name": ("--benchmark", benchmark), **policy_flag(policy, registry)}
    given = gather(config, sets, flags, uses=("run", "benchmark", "policy"), command="rlaif sft")
    chosen_policy = "policy" in given.data
    cfg = build_config(given.only("run", "benchmark", *(("policy",) if chosen_policy else ())), registry,
                       ("benchmark", "policy") if chosen_policy else ("benchmark",))
    choice = cfg.choice("benchmark")
    generic = {"--split": split, "--epochs": epochs, "--batch-size": batch_size, "--grad-accum": grad_accum,
               "--lr": lr, "--schedule": schedule, "--warmup": warmup, "--mixed-precision": mixed_precision,
               "--max-steps": max_steps}
    embedded = {"--no-curriculum": not curriculum, "--epochs-per-stage": epochs_per_stage is not None,
                "--no-align-questions": not align_questions,
                "--lora-r/--lora-alpha": (lora_r, lora_alpha) != (32, 32)}
    # every refusal before the benchmark is built (the embedded world builds videos)
    given_generic = [k for k, v in generic.items() if v is not None]
    if chosen_policy and any(embedded.values()):
        raise UsageError(f"{', '.join(k for k, v in embedded.items() if v)}: options of the embedded recipe; "
                         "a chosen policy takes [policy] lora_r/lora_alpha and --epochs")
    if chosen_policy and out is None:
        raise UsageError("a chosen policy's SFT needs --out DIR (its adapter is saved there)")
    if not chosen_policy and given_generic:
        raise UsageError(f"{', '.join(given_generic)}: options for a chosen policy's SFT; choose one with "
                         "--policy NAME_OR_DIR or --set policy.name=...")
    if not chosen_policy and out is None and any(embedded.values()):
        raise UsageError(f"{', '.join(k for k, v in embedded.items() if v)}: changes the recipe; "
                         "pass --out DIR (the cache holds only the default recipe's SFT policy)")
    bench = registry.build("benchmark", choice.name, choice.options)
    if chosen_policy:
        from rlaif.core.protocols import SupervisedLoss, require_capability
        from rlaif.train.sft import train_supervised

        chosen = cfg.choice("policy")
        model = registry.build("policy", chosen.name, dict(chosen.options), benchmark=bench, seed=seed)
        require_capability(model, SupervisedLoss, "rlaif sft")
        settings: dict[str, Any] = {k.lstrip("-").replace("-", "_"): v for k, v in generic.items() if v is not None}
        settings.setdefault("grad_accum", cfg.run.grad_accum)
        settings.setdefault("mixed_precision", cfg.run.mixed_precision)
        assert out is not None  # checked above
        target = out
        metrics = train_supervised(target, policy=model, benchmark=bench, seed=seed, progress=not as_json,
                                   **settings)
    else:
        from rlaif.train.sft import default_sft_dir, run_sft

        target = out or default_sft_dir(bench, seed=seed)
        extra: dict[str, Any] = {} if epochs_per_stage is None else {"epochs_per_stage": epochs_per_stage}
        metrics = run_sft(target, benchmark=bench, seed=seed, curriculum=curriculum, lora_r=lora_r,
                          lora_alpha=lora_alpha, align_questions=align_questions, progress=not as_json, **extra)
    if as_json:
        print(json.dumps({"out": str(target), **metrics}, default=str))
    else:
        console.print(f"[green]SFT policy[/] -> {target}")


@handle_errors
def eval_command(
    policy: Optional[str] = typer.Option(None, "--policy", help="A policy name (hf-vlm) or a saved policy dir / "
                                         "hub id (= --set policy.path=DIR; default: the default SFT policy)."),
    benchmark: Optional[str] = component_option("benchmark", "The benchmark by name (= --set benchmark.name=NAME; "
                                                "default: --config's [benchmark], else video-world)."),
    config: Optional[Path] = config_option("Run TOML whose [benchmark] and [policy] tables (name and options) "
                                           "are evaluated; [run] gives the defaults."),
    sets: Optional[list[str]] = set_option(),
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
    scorer: str = typer.Option("auto", "--scorer", help="auto: exact match, and the judge for free-text "
                               "(needs_judge) items | judge: the judge for every item | exact: no judge."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge for free-text answers: smollm2 | a local "
                                        "dir or hub id | openai (with --judge-url)."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="An OpenAI-compatible base URL "
                                            "(http://127.0.0.1:8000/v1) serving the judge."),
    judge_model: str = typer.Option("default", "--judge-model", help="The model name sent to --judge-url."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="The environment variable "
                                    "holding the judge endpoint's API key."),
    judge_temperature: float = typer.Option(0.0, "--judge-temperature", help="The judge's sampling "
                                            "temperature (0: greedy)."),
    rescore: int = typer.Option(0, "--rescore", help="Ask the judge N more times and report how much the "
                                "judge metrics move (mean, std, min-max across draws)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Accuracy per question type, pass@k / majority@k, long-answer score, judge-scored
    free-text answers and baselines on a held-out split; or, with --compare A B, B's
    paired gain over A."""
    if compare is not None:
        compare_evaluations(*compare, metric=metric, as_json=as_json)
        return
    from rlaif.cli.options import build_config, gather, policy_flag
    from rlaif.core.errors import UsageError
    from rlaif.core.protocols import DefaultCheckpoint, default_checkpoint
    from rlaif.core.registry import load_plugins
    from rlaif.train.evaluate import baseline_metrics, evaluate_items, write_items
    from rlaif.train.judge_eval import SCORERS, build_answer_judge, opened

    if scorer not in SCORERS:
        raise UsageError(f"--scorer {scorer!r}: choose one of {', '.join(SCORERS)}")
    if scorer == "judge" and judge is None and judge_url is None:
        raise UsageError("--scorer judge needs a judge: --judge-url URL or --judge MODEL")
    registry = load_plugins()
    flags = {"benchmark.name": ("--benchmark", benchmark), **policy_flag(policy, registry)}
    given = gather(config, sets, flags, uses=("run", "benchmark", "policy"), command="rlaif eval")
    cfg = build_config(given.only("run", "benchmark", "policy"), registry, ("benchmark", "policy"))
    benchmark = cfg.choice("benchmark").name
    bench = registry.build("benchmark", benchmark, dict(cfg.choice("benchmark").options))
    chosen = cfg.choice("policy")
    options = dict(chosen.options)
    factory = registry.get("policy", chosen.name).resolve()
    if not options.get("path"):  # the policy's embedded default (the SFT policy of this --seed)
        path = default_checkpoint(factory, bench, seed=seed, progress=not as_json, name=chosen.name,
                                  role="rlaif eval")
        if path is not None:
            options["path"] = path
    if isinstance(factory, DefaultCheckpoint) and options.get("path"):
        options.setdefault("new_adapter", False)  # its checkpoints are saved policies: evaluate them as saved
    model = registry.build("policy", chosen.name, options, benchmark=bench, seed=seed)
    defaults = cfg.run
    answer_judge = None
    if judge is not None or judge_url is not None:
        answer_judge = build_answer_judge(judge, judge_url, judge_model, api_key_env, temperature=judge_temperature)
    with opened(answer_judge):
        evaluation = evaluate_items(model, bench, split=split, limit=limit, seed=seed,
                                    k=defaults.group_size if k is None else k, samples=samples,
                                    temperature=defaults.temperature if temperature is None else temperature,
                                    judge=answer_judge, scorer=scorer, rescore=rescore)
    results: dict[str, dict[str, float]] = {"policy": evaluation.metrics}
    if baselines:
        results.update(baseline_metrics(bench, split))
    report: dict[str, object] = dict(results)
    if evaluation.judge_spread:
        report["rescore"] = evaluation.judge_spread
    if out is not None:
        write_items(out / "items.jsonl", evaluation.items)
        (out / "metrics.json").write_text(json.dumps(report, sort_keys=True, indent=1))
    if as_json:
        print(json.dumps(report, sort_keys=True))
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
    print_judge_counts(evaluation.metrics, evaluation.judge_spread)


def print_judge_counts(metrics: dict[str, float], spread: dict[str, dict[str, float]]) -> None:
    """The judge's counts under the table, and with --rescore the spread of its metrics."""
    counts = {name: int(metrics.get(f"n/{name}", 0)) for name in ("judged", "judge_failed", "unscored")}
    if any(counts.values()):
        line = f"judged {counts['judged']} items, judge_failed {counts['judge_failed']}"
        if counts["unscored"]:
            line += f", unscored {counts['unscored']} (free-text answers: give --judge-url URL or --judge MODEL)"
        console.print(line)
    if spread:
        from rich.table import Table

        table = Table(title=f"judge metrics over {int(max(s['draws'] for s in spread.values()))} draws")
        for name in ("metric", "mean", "std", "min", "max"):
            table.add_column(name, justify="left" if name == "metric" else "right")
        for key, s in spread.items():
            table.add_row(key, f"{s['mean']:.3f}", f"{s['std']:.3f}", f"{s['min']:.3f}", f"{s['max']:.3f}")
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
