"""``rlaif train-rm``: train VLM-RLAIF's reward model on a run's stored rankings; the
recipe lives in :mod:`rlaif.train.reward_model`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rlaif.cli.app import console, handle_errors
from rlaif.cli.options import config_option, set_option, stored_component_options

# ruff: noqa: UP045  (typer reads Optional[...] at runtime)


@handle_errors
def train_rm_command(
    run_dir: Optional[Path] = typer.Argument(None, help="A run directory written by `rlaif run` (its store holds the "
                                             "rankings); omit it to learn the --config [benchmark]'s "
                                             "preference_pairs on its [policy] instead."),
    split: str = typer.Option("sft", "--split", help="Without RUN_DIR: the split whose preference pairs are learnt."),
    oracle: Optional[str] = typer.Option(None, "--oracle", help="Whose stored rankings to learn (default: the run's)."),
    config: Optional[Path] = config_option("TOML whose [benchmark] and [policy] options are set over the run's "
                                           "stored ones (same components; e.g. where the videos now are)."),
    sets: Optional[list[str]] = set_option(),
    pairs: str = typer.Option("all", "--pairs", help="all (every pair across tie blocks) | best-worst | scored (pairs whose oracle scores differ)."),
    lora_r: int = typer.Option(64, "--lora-r", help="Rank of the reward model's fresh LoRA (paper: 64)."),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", help="LoRA alpha (default: = r)."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate (paper: 2e-5 on a 7B model)."),
    epochs: int = typer.Option(1, "--epochs"),
    batch_size: int = typer.Option(16, "--batch-size", help="Preference pairs per step."),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of prompts held out for pairwise accuracy."),
    max_pairs: Optional[int] = typer.Option(None, "--max-pairs", help="Use a seeded sample of this many pairs."),
    train_pairs: Optional[int] = typer.Option(None, "--train-pairs", help="Train on this many of the training pairs "
                                              "(a seeded sample, nested as N grows); the held-out pairs stay the "
                                              "same: for preference-data scaling."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Default: the run's seed."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output dir (default RUN_DIR/reward_model)."),
    as_json: bool = typer.Option(False, "--json", help="Print rm.json's contents as one JSON line."),
) -> None:
    """Train a Bradley-Terry reward model (head + fresh LoRA on the SFT policy) from
    pairwise preferences in the run's rankings; report held-out pairwise accuracy."""
    from rlaif.train.reward_model import RM_DIRNAME, train_reward_model

    if run_dir is None:
        result = _train_on_benchmark(config, sets, split=split, pairs=pairs, lora_r=lora_r, lora_alpha=lora_alpha,
                                     lr=lr, epochs=epochs, batch_size=batch_size, holdout=holdout,
                                     max_pairs=max_pairs, train_pairs=train_pairs, seed=seed, out=out,
                                     as_json=as_json)
        if as_json:
            print(json.dumps(result, sort_keys=True, default=str))
        else:
            console.print(f"[green]reward model[/] -> {out}: {result['train_pairs']} training pairs from "
                          f"{result['source']}; held-out pairwise accuracy {result['heldout_accuracy']}")
        return
    options = stored_component_options(run_dir, config, sets, ("benchmark", "policy"), "rlaif train-rm")
    result = train_reward_model(run_dir, oracle=oracle, options=options, pairs=pairs, lora_r=lora_r, lora_alpha=lora_alpha, lr=lr,
                                epochs=epochs, batch_size=batch_size, holdout=holdout, max_pairs=max_pairs,
                                train_pairs=train_pairs, seed=seed, out_dir=out, progress=not as_json)
    if as_json:
        print(json.dumps(result, sort_keys=True, default=str))
        return
    target = out or run_dir / RM_DIRNAME
    held = result["heldout_accuracy"]
    console.print(f"[green]reward model[/] -> {target}: {result['train_pairs']} training pairs from "
                  f"{result['oracle']!r}; held-out pairwise accuracy "
                  f"{'n/a' if held is None else f'{held:.3f}'} on {result['heldout_pairs']} pairs")


def _train_on_benchmark(config: Optional[Path], sets: Optional[list[str]], *, split: str, out: Optional[Path],
                        seed: Optional[int], as_json: bool, lora_r: int, lora_alpha: Optional[int],
                        **fit: object) -> dict[str, object]:
    """``rlaif train-rm --config cfg.toml --out DIR``: the [benchmark]'s preference pairs on
    the [policy] (its SFT adapter merged, a fresh RM adapter on top)."""
    from rlaif.cli.options import build_config, gather
    from rlaif.core.errors import UsageError
    from rlaif.core.protocols import LastHiddenState, require_capability
    from rlaif.core.registry import load_plugins

    if out is None:
        raise UsageError("without RUN_DIR, train-rm needs --out DIR for the reward model")
    registry = load_plugins()
    given = gather(config, sets, uses=("run", "benchmark", "policy"), command="rlaif train-rm")
    if "policy" not in given.data:
        raise UsageError("without RUN_DIR, train-rm needs a policy: [policy] in --config or --set policy.name=...")
    cfg = build_config(given.only("run", "benchmark", "policy"), registry, ("benchmark", "policy"))
    bench_choice, policy_choice = cfg.choice("benchmark"), cfg.choice("policy")
    bench = registry.build("benchmark", bench_choice.name, dict(bench_choice.options))
    seed = cfg.run.seed if seed is None else seed
    options = {**policy_choice.options, "lora_r": lora_r, "lora_alpha": lora_alpha or lora_r, "new_adapter": True}
    policy = registry.build("policy", policy_choice.name, options, benchmark=bench, seed=seed)
    require_capability(policy, LastHiddenState, "the reward model (rlaif train-rm)")
    from rlaif.train.reward_model import train_reward_model

    return train_reward_model(None, policy=policy, benchmark=bench, preference_split=split, out_dir=out, seed=seed,
                              lora_r=lora_r, lora_alpha=lora_alpha, progress=not as_json,
                              benchmark_spec={"name": bench_choice.name, "options": dict(bench_choice.options)},
                              **fit)  # type: ignore[arg-type]
