"""The typer application object and the error handling every command shares.

Start-up time is part of the interface: ``rlaif --help`` should cost little more than
importing typer (``benchmarks/cli_startup.py`` checks it). So this module imports only
typer; rich consoles are made on first use (:func:`get_console`), help is plain text
(typer's rich help imports rich, markdown-it and pygments: ~60 ms), and :func:`run_app`
keeps typer from importing pydantic (~60 ms) to coerce values that need no coercion.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from rlaif import __version__

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="rlaif",
    help="Fine-tune video-language models with reinforcement learning from AI ranking feedback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@lru_cache(maxsize=2)
def get_console(stderr: bool = False) -> Console:
    """The shared rich console for stdout (or stderr); rich is imported on first use.
    The console looks ``sys.stdout`` up at print time, so test runners can swap it."""
    from rich.console import Console

    return Console(stderr=stderr)


class _LazyConsole:
    """Stands for :func:`get_console` so command modules can ``from rlaif.cli.app
    import console`` at import time without importing rich (~20 ms) before they print."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(get_console(self._stderr), name)


console: Console = _LazyConsole()  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]


def debug_enabled() -> bool:
    return os.environ.get("RLAIF_DEBUG", "") not in {"", "0"}


def fail(message: str, code: int = 1) -> None:
    """Print one red line and exit: the user-facing face of every error."""
    from rich.markup import escape  # a message may name a TOML table: "[oracle]" is text, not markup

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
        typer.echo(f"rlaif {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    if debug:
        os.environ["RLAIF_DEBUG"] = "1"


class _LazyCoercion:
    """Coerces one option value, importing typer's pydantic-based coercion only for
    values that need it. ``None`` (an option not given, ``--help`` included) and a
    ``str`` for a plain ``str`` option come back unchanged, exactly as typer would
    return them; anything else goes to typer's own coercion, built on first need."""

    def __init__(self) -> None:
        self.full: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        descriptor = param.type_descriptor
        plain_str = descriptor.annotation is str and descriptor.parameter_info.parser is None
        if not param.multiple and param.nargs == 1 and (value is None or (plain_str and isinstance(value, str))):
            return value
        if self.full is None:
            from typer._coercion import build_runtime_param

            self.full = build_runtime_param(descriptor)
        return self.full.coerce(value, param=param, ctx=ctx)


def _spare_pydantic() -> None:
    """typer (0.29) coerces every option value, even the ``None`` of an absent
    ``--help``, through a pydantic ``TypeAdapter`` built on first use, and importing
    pydantic costs ~60 ms, a third of ``rlaif plugins list``. Route values through
    :class:`_LazyCoercion` instead. This leans on typer internals, so it is applied by
    :func:`run_app` only (the console script's process) and skipped if they change."""
    try:
        from typer.core import _TyperParameter

        original = _TyperParameter.get_runtime_param
    except (ImportError, AttributeError):  # pragma: no cover - a future typer
        return
    if getattr(original, "spares_pydantic", False):
        return

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            self._runtime_param = _LazyCoercion()
        return self._runtime_param

    get_runtime_param.spares_pydantic = True  # type: ignore[attr-defined]
    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]


def run_app(argv: list[str] | None = None) -> None:
    _spare_pydantic()
    app(args=argv if argv is not None else sys.argv[1:], prog_name="rlaif")
