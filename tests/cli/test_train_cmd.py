"""``rlaif sft`` argument checks that must fail before anything is built or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlaif.cli.main import app


@pytest.mark.parametrize("args", [["--no-curriculum"], ["--epochs-per-stage", "2"], ["--lora-r", "8"]])
def test_non_default_recipe_without_out_is_refused(args: list[str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["sft", *args])
    assert result.exit_code == 2
    assert "pass --out DIR" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()  # refused before building anything
