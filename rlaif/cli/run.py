"""``rlaif run``, ``rlaif replay`` and ``rlaif plot``: wiring only; the loop itself lives
in :mod:`rlaif.train.rl`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from rlaif.cli.app import console, handle_errors
from rlaif.cli.options import component_option, config_option, set_option

# typer needs real Optional[...] annotations at runtime on Python 3.10
# ruff: noqa: UP045


def known_components() -> dict[str, list[str]]:
    from rlaif.core.protocols import KINDS
    from rlaif.core.registry import load_plugins

    registry = load_plugins()
    return {kind: registry.names(kind) for kind in KINDS}


@handle_errors
def run_command(
    oracle: Optional[str] = typer.Option(None, "--oracle", help="Oracle name (see `rlaif plugins list`); "
                                         "= --set oracle.name=NAME."),
    loss: Optional[str] = typer.Option(None, "--loss", help="grpo-rank | grpo | ppo | dpo | ...; = --set loss.name=NAME."),
    config: Optional[Path] = config_option(),
    policy: Optional[str] = typer.Option(None, "--policy", help="A policy name (hf-vlm) or a checkpoint dir / "
                                         "hub id (= --set policy.path=DIR; default: embedded SFT)."),
    benchmark: Optional[str] = component_option("benchmark"),
    sets: Optional[list[str]] = set_option(),
    steps: Optional[int] = typer.Option(None, "--steps", help="RL steps (= --set run.steps=N)."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="Candidates per prompt (G)."),
    prompts_per_step: Optional[int] = typer.Option(None, "--prompts-per-step", help="Prompts per step (B)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    judge: Optional[str] = typer.Option(
        None, "--judge", help="= --set oracle.judge=...: world (default) | smollm2 | self | openai | a local dir "
                              "or hub id."),
    judge_url: Optional[str] = typer.Option(
        None, "--judge-url", help="= --set oracle.judge_url=...: an OpenAI-compatible base URL "
                                  "(http://127.0.0.1:8000/v1)."),
    context: Optional[str] = typer.Option(None, "--context", help="= --set oracle.context=...: narrative | none | gold."),
    api_key_env: Optional[str] = typer.Option(
        None, "--api-key-env", help="= --set oracle.api_key_env=...: the variable holding the endpoint's API key."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Where to write (default runs/<time>-<oracle>-<loss>)."),
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue the run in this directory (with its stored config; --steps extends it)."),
    trust_stored_config: bool = typer.Option(
        False, "--trust-stored-config",
        help="With --resume: use the endpoints, API-key variable names and paths stored in the run directory."),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON summary line."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Sample, rank with an oracle, store and update: the RL loop."""
    from rlaif.cli.options import build_config, gather, policy_flag
    from rlaif.core.errors import RunInterrupted, UsageError
    from rlaif.core.registry import load_plugins
    from rlaif.train.rl import RUN_ID, run_rl

    registry = load_plugins()
    given = {"oracle": oracle, "loss": loss, "benchmark": benchmark, "steps": steps, "group_size": group_size,
             "prompts_per_step": prompts_per_step, "seed": seed, "lr": lr, "judge": judge, "judge_url": judge_url,
             "context": context, "api_key_env": api_key_env}
    flags = {key: (FLAG_OF[key], given[name]) for name, key in ALIASES.items()}
    flags.update(policy_flag(policy, registry))
    user = gather(config, sets, flags)
    if resume is not None:
        from rlaif.core.resume import resume_config
        from rlaif.core.store import RunStore

        if run_dir is not None and run_dir.resolve() != resume.resolve():
            raise UsageError(f"--run-dir {run_dir} differs from --resume {resume}; a resumed run writes where it "
                             "was started (drop --run-dir)")
        user.check()
        with RunStore(resume, readonly=True) as store:
            info = store.get_run(RUN_ID)
        if info is None:
            raise typer.BadParameter(f"{resume} holds no run to resume", param_hint="--resume")
        cfg = resume_config(info.config, user.data, labels=user.labels, trust_stored=trust_stored_config,
                            source=str(resume), user_source=user.source, known_components=known_components())
        target = resume
    else:
        if trust_stored_config:
            raise UsageError("--trust-stored-config goes with --resume (a new run stores what you give it)")
        cfg = build_config(user, registry, ("benchmark", "policy", "oracle", "loss"))
        target = run_dir or Path("runs") / (
            f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.choice('oracle').name}-{cfg.choice('loss').name}"
        )
    try:
        summary = run_rl(target, cfg, registry, resume=resume is not None, progress=progress and not as_json)
    except KeyboardInterrupt:
        # Each step is committed in one transaction, so the store holds whole steps only.
        raise RunInterrupted(f"interrupted; {target} holds every step committed so far, "
                             f"continue with rlaif run --resume {target}") from None
    if as_json:
        print(summary.to_json(), flush=True)
    else:
        console.print(f"[green]done[/] {summary.steps} steps in {summary.wall_seconds:.0f}s -> {summary.run_dir}; "
                      f"test accuracy {summary.sft_accuracy} (SFT) -> {summary.final_accuracy}; "
                      f"groups_failed {summary.groups_failed}")
    if summary.processes > 1:
        leave_distributed_run()


#: ``rlaif run``'s alias flags: parameter -> the config key it sets.
ALIASES = {
    "oracle": "oracle.name", "loss": "loss.name", "benchmark": "benchmark.name", "steps": "run.steps",
    "group_size": "run.group_size", "prompts_per_step": "run.prompts_per_step", "seed": "run.seed", "lr": "run.lr",
    "judge": "oracle.judge", "judge_url": "oracle.judge_url", "context": "oracle.context",
    "api_key_env": "oracle.api_key_env",
}

#: The flag that sets each overridable config key, for errors on --resume.
FLAG_OF = {
    "oracle.name": "--oracle", "loss.name": "--loss", "policy.path": "--policy", "policy.name": "--policy",
    "benchmark.name": "--benchmark", "run.steps": "--steps", "run.group_size": "--group-size",
    "run.prompts_per_step": "--prompts-per-step", "run.seed": "--seed", "run.lr": "--lr", "oracle.judge": "--judge",
    "oracle.judge_url": "--judge-url", "oracle.context": "--context", "oracle.api_key_env": "--api-key-env",
}


def leave_distributed_run() -> None:
    """Exit a finished data-parallel process without interpreter teardown. Everything is
    written, the store is closed and the process group is gone, yet gloo can still abort
    with "terminate called without an active exception" while Python clears its modules
    (pytorch/pytorch#65231); that would turn a complete run into a failed exit code."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@handle_errors
def replay_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `rlaif run`."),
    loss: Optional[str] = typer.Option(None, "--loss", help="Loss to train with on the stored data "
                                       "(= --set loss.name=NAME; or [loss] in --config)."),
    config: Optional[Path] = config_option("TOML whose [loss] table (name and options) is the loss to train "
                                           "with; the rest of the run comes from its stored config."),
    sets: Optional[list[str]] = set_option(),
    oracle: Optional[str] = typer.Option(None, "--oracle", help="Whose stored rankings to use (default: the run's)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output dir (default RUN_DIR/replays/<loss>)."),
    as_json: bool = typer.Option(False, "--json"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a fresh policy from stored rollouts and rankings (no oracle calls)."""
    from rlaif.cli.options import build_config, gather
    from rlaif.core.registry import load_plugins
    from rlaif.train.rl import replay_run

    registry = load_plugins()
    # The data, policy and benchmark are the run's; only the loss is chosen here.
    user = gather(config, sets, {"loss.name": ("--loss", loss)}, uses=("loss",), command="rlaif replay")
    table = user.data.get("loss")
    if not isinstance(table, str) and "name" not in (table or {}):
        user.problems.append("name the loss to replay with: --loss NAME (or --set loss.name=NAME, or [loss] in "
                             "--config)")
        user.check()
    choice = build_config(user.only("loss"), registry, ("loss",)).choice("loss")
    summary = replay_run(run_dir, choice.name, registry, loss_options=choice.options, oracle=oracle, out_dir=out,
                         progress=progress and not as_json)
    if as_json:
        print(summary.to_json())
    else:
        console.print(f"[green]replayed[/] {summary.steps} steps with {choice.name} -> {summary.run_dir}; "
                      f"test accuracy {summary.final_accuracy}")


@handle_errors
def plot_command(
    run_dir: Path = typer.Argument(..., help="A run (or replay) directory with metrics.csv."),
) -> None:
    """Write PNG curves of reward, KL, loss and accuracy next to metrics.csv."""
    from rlaif.train.plots import plot_metrics

    written = plot_metrics(run_dir)
    for path in written:
        console.print(str(path))
