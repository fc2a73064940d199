"""Entry point of the ``rlaif`` console script: assembles the command groups.

Only typer, rich and the torch-free core are imported here; every command imports its
heavy dependencies inside its body so ``rlaif --help`` stays fast.
"""

from __future__ import annotations

from rlaif.cli.app import app, run_app
from rlaif.cli.oracle import oracle_app
from rlaif.cli.plugins import plugins_app
from rlaif.cli.reward import train_rm_command
from rlaif.cli.run import plot_command, replay_command, run_command
from rlaif.cli.store import store_app
from rlaif.cli.study import study_command
from rlaif.cli.train import eval_command, sft_command

app.add_typer(plugins_app, name="plugins")
app.add_typer(store_app, name="store")
app.command("sft")(sft_command)
app.command("eval")(eval_command)
app.command("run")(run_command)
app.command("replay")(replay_command)
app.command("plot")(plot_command)
app.add_typer(oracle_app, name="oracle")
app.command("train-rm")(train_rm_command)
app.command("study")(study_command)


def main() -> None:
    run_app()


if __name__ == "__main__":  # pragma: no cover
    main()
