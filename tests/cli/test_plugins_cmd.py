"""``rlaif --help``, ``--version`` and ``rlaif plugins list``: output formats, the kind
filter and the one-line error for a bad kind. Installed third-party plugins are covered
in tests/plugins/test_example_plugin.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from rlaif import __version__
from rlaif.cli.main import app
from rlaif.core.protocols import KINDS
from rlaif.core.registry import load_plugins

ROW_KEYS = {"kind", "name", "package", "version", "description", "error"}


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("RLAIF_LOAD_PLUGINS", "RLAIF_DISABLE_PLUGINS", "RLAIF_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RLAIF_DEBUG", "0")  # `--debug` sets it; restored after each test
    load_plugins(refresh=True)
    yield
    load_plugins(refresh=True)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def list_json(*args: str) -> list[dict[str, Any]]:
    result = invoke("plugins", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_help_lists_the_commands() -> None:
    for flag in ("--help", "-h"):
        result = invoke(flag)
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())  # help is wrapped to the terminal width
        assert text.startswith("Usage: rlaif [OPTIONS] COMMAND")
        assert "reinforcement learning from AI ranking feedback" in text
        assert "plugins Inspect installed plugins." in text and "--version" in text


def test_no_arguments_shows_help() -> None:
    result = invoke()
    assert "Usage: rlaif" in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"rlaif {__version__}\n"


def test_plugins_list_json_rows() -> None:
    rows = list_json()
    assert rows, "the built-ins alone register components"
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert row["kind"] in KINDS or row["error"]
    builtin = [r for r in rows if r["package"] == "oracle-rlaif"]
    assert builtin and all(r["version"] == __version__ and r["error"] is None for r in builtin)
    kinds = [KINDS.index(r["kind"]) for r in rows if not r["error"]]
    assert kinds == sorted(kinds), "rows are grouped by kind"


def test_plugins_list_kind_filter() -> None:
    everything = list_json()
    oracles = list_json("--kind", "oracle")
    assert oracles, "a built-in oracle is registered"
    assert {r["kind"] for r in oracles} == {"oracle"}
    assert [r["name"] for r in oracles] == [r["name"] for r in everything if r["kind"] == "oracle"]
    assert len(oracles) < len(everything)


def test_plugins_list_table() -> None:
    result = invoke("plugins", "list")
    assert result.exit_code == 0
    assert "rlaif plugins" in result.stdout and "kind" in result.stdout


def test_unknown_kind_is_one_line_usage_error() -> None:
    result = invoke("plugins", "list", "--kind", "bogus")
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "unknown kind 'bogus'" in line
    assert "oracle" in line, "the message names the valid kinds"


def test_unknown_kind_is_red_in_a_terminal() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "RLAIF_DEBUG")}
    env.update(FORCE_COLOR="1", TERM="xterm-256color")
    argv = [
        sys.executable,
        "-c",
        "from rlaif.cli.main import main; main()",
        "plugins",
        "list",
        "--kind",
        "bogus",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "\x1b[1;31m" in line and "unknown kind" in line


def test_debug_shows_the_exception() -> None:
    from rlaif.core.errors import UsageError

    result = invoke("--debug", "plugins", "list", "--kind", "bogus")
    assert result.exit_code != 0
    assert isinstance(result.exception, UsageError)


def test_encoders_are_not_a_kind() -> None:
    """Encoders are plain modules a policy embeds, not components chosen per run."""
    assert "encoder" not in KINDS
    assert not any(row["kind"] == "encoder" for row in list_json())
    result = invoke("plugins", "list", "--kind", "encoder")
    assert result.exit_code != 0 and "unknown kind 'encoder'" in result.output
