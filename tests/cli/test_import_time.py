"""What the CLI imports, and whether every hook is documented and tested.

Listing plugins must not import torch, transformers or lmdb: each plugin registers
target strings, and command modules import heavy code inside the command. This is
checked in a fresh interpreter, since this test process has long imported torch.
The hook checks follow datasette: a hook without docs or without a test fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rlaif.core import hookspecs
from rlaif.core.hookspecs import HOOK_FOR_KIND

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "lmdb")

# Runs the command in-process, as the console script does, then reports what was imported.
SCRIPT = """
import contextlib, io, json, sys
from rlaif.cli.main import run_app
out = io.StringIO()
code = 0
with contextlib.redirect_stdout(out):
    try:
        run_app(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code or 0
print(json.dumps({"code": code, "output": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def run_cli(*args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLAIF_")}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, proc.stderr
    return report


def top_level(modules: list[str]) -> set[str]:
    return {m.partition(".")[0] for m in modules}


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["plugins", "list"], ["plugins", "list", "--json", "--kind", "oracle"]],
)
def test_cli_leaves_heavy_modules_unimported(argv: list[str]) -> None:
    report = run_cli(*argv)
    assert report["output"]
    loaded = top_level(report["modules"])
    assert "rlaif" in loaded
    assert not loaded & set(HEAVY), f"`rlaif {' '.join(argv)}` imported {sorted(loaded & set(HEAVY))}"


def test_plugins_list_does_not_import_pydantic() -> None:
    """typer would import pydantic (~60 ms) to coerce option values; run_app spares it."""
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, typer; print('pydantic' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.stdout.strip() == "True":
        pytest.skip("this typer imports pydantic on import")
    report = run_cli("plugins", "list", "--kind", "oracle")
    assert "pydantic" not in top_level(report["modules"])


# -- every hook documented and tested (datasette-style) ---------------------------------
def declared_hooks() -> set[str]:
    return {name for name, obj in vars(hookspecs).items() if hasattr(obj, "rlaif_spec")}


def test_every_hookspec_has_a_kind_and_a_docstring() -> None:
    assert declared_hooks() == set(HOOK_FOR_KIND.values())
    for hook in HOOK_FOR_KIND.values():
        doc = getattr(hookspecs, hook).__doc__
        assert doc and doc.strip(), f"hookspec {hook} has no docstring"


def test_every_hook_is_documented_in_contributing() -> None:
    text = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    for hook in HOOK_FOR_KIND.values():
        assert f"`{hook}(register)`" in text, f"{hook} is not documented in CONTRIBUTING.md"
    documented = set(re.findall(r"\brlaif_register_\w+", text))
    assert documented <= set(HOOK_FOR_KIND.values()), f"CONTRIBUTING.md names unknown hooks: {documented}"


@pytest.mark.parametrize("hook", sorted(HOOK_FOR_KIND.values()))
def test_every_hook_has_a_test(hook: str) -> None:
    tests = REPO / "tests"
    files = [
        p for p in tests.rglob("*.py") if p.name.startswith(("test_", "conftest")) and p != Path(__file__)
    ]
    pattern = re.compile(rf"\b{hook}\b")
    assert any(pattern.search(p.read_text(encoding="utf-8")) for p in files), (
        f"no test under tests/ uses {hook}"
    )
