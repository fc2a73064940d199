"""``rlaif sft`` and ``rlaif eval`` argument checks that must fail with one line, before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlaif.cli.main import app


@pytest.mark.parametrize("args", [["--no-curriculum"], ["--epochs-per-stage", "2"], ["--lora-r", "8"],
                                  ["--no-align-questions"]])
def test_non_default_recipe_without_out_is_refused(args: list[str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["sft", *args])
    assert result.exit_code == 2
    assert "pass --out DIR" in result.output and len(result.output.strip().splitlines()) == 1
    assert args[0] in result.output  # names the option that changed the recipe
    assert not (tmp_path / "cache").exists()  # refused before building anything


def test_compare_without_items_or_overlap_is_one_line_error(tmp_path: Path) -> None:
    from rlaif.train.evaluate import ItemResult, run_items_path, write_items

    write_items(run_items_path(tmp_path / "a", 0), [ItemResult("p1", "counting", "two", 1.0, True)])
    write_items(tmp_path / "b" / "items.jsonl", [ItemResult("p2", "counting", "two", 1.0, True)])
    for args, message in ((["a", "empty"], "no per-item evaluation results"), (["a", "b"], "share no items")):
        result = CliRunner().invoke(app, ["eval", "--compare", *(str(tmp_path / a) for a in args)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_sft_and_eval_name_components_like_every_command() -> None:
    for command in (["sft"], ["eval"]):
        result = CliRunner().invoke(app, [*command, "--benchmark", "video-wrold"])
        assert result.exit_code == 2
        assert "unknown benchmark 'video-wrold'; choose one of:" in result.output.strip().splitlines()[-1]
