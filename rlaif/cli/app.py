"""The typer application object and the error handling every command shares."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from rlaif import __version__

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="rlaif",
    help="Fine-tune video-language models with reinforcement learning from AI ranking feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def debug_enabled() -> bool:
    return os.environ.get("RLAIF_DEBUG", "") not in {"", "0"}


def fail(message: str, code: int = 1) -> None:
    """Print one red line and exit: the user-facing face of every error."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn domain errors into one red line with exit 2 (usage) or 1 (runtime);
    ``--debug`` (or RLAIF_DEBUG=1) re-raises so the traceback shows."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rlaif.core.errors import RlaifError

        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except RlaifError as exc:
            if debug_enabled():
                raise
            fail(str(exc), exc.exit_code)
        except Exception as exc:  # unexpected: still one line unless debugging
            if debug_enabled():
                raise
            fail(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        console.print(f"rlaif {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    if debug:
        os.environ["RLAIF_DEBUG"] = "1"


def run_app(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="rlaif")
