"""``rlaif study``: registered, light to import, one-line errors, and ``--list`` (nothing
run). The studies themselves are run in tests/train/test_study.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlaif.cli.main import app

REPO = Path(__file__).resolve().parents[2]


def test_study_is_a_command_and_its_help_imports_no_torch() -> None:
    assert "study" in CliRunner().invoke(app, ["--help"]).output
    code = ("import sys\nfrom rlaif.cli.main import run_app\ntry:\n    run_app(['study', '--help'])\n"
            "except SystemExit:\n    pass\nprint(sorted({m.partition('.')[0] for m in sys.modules}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--jobs" in proc.stdout and "--list" in proc.stdout
    loaded = proc.stdout.strip().splitlines()[-1]
    for heavy in ("'torch'", "'transformers'", "'lmdb'", "'numpy'"):
        assert heavy not in loaded, heavy


@pytest.mark.parametrize(("body", "message"), [
    (None, "study file not found"),
    ("[axes]\nloss = 'grpo'\n", "axes: loss.name must be a non-empty list"),
    ('mode = "offline"\n', "mode must be one of live, replay"),
    ('[[arms]]\nname = "a/b"\n', "name must be a non-empty directory-safe string"),
    ('source = "nowhere"\n', 'source goes with mode = "replay"'),
])
def test_a_bad_study_file_is_one_line_error(tmp_path: Path, body: str | None, message: str) -> None:
    path = tmp_path / "study.toml"
    if body is not None:
        path.write_text(body)
    result = CliRunner().invoke(app, ["study", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_jobs_below_one_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["study", str(REPO / "examples/studies/t1-oracles.toml"), "--jobs", "0"])
    assert result.exit_code == 2 and "--jobs 0" in result.output


def test_list_shows_the_cells_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["study", str(REPO / "examples/studies/t3-losses-replay.toml"), "--out", str(out),
                                      "--list", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert listing["mode"] == "replay" and listing["baseline"] == "grpo-rank"
    cells = listing["cells"]
    assert len(cells) == 24 and {c["state"] for c in cells} == {"new"}
    assert [c["cell"] for c in cells[:3]] == ["source-s0", "grpo-rank-s0", "grpo-s0"]
    assert not out.exists()
