"""``rlaif store inspect|export|import`` on a real LMDB store."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rlaif.cli.main import app
from rlaif.core.records import Ranking, Rollout
from rlaif.core.store import RunStore

runner = CliRunner()


def make_run(run_dir: Path) -> None:
    with RunStore(run_dir) as store:
        for step in (1, 2):
            rollouts = [Rollout(f"p{g}", i, f"answer {g}{i}", [1, 2], [-0.1, -0.2]) for g in range(2) for i in range(3)]
            rankings = [Ranking.from_scores(f"p{g}", "ground-truth", [1.0, 0.0, 0.5]) for g in range(2)]
            store.commit_step("main", step, rollouts=rollouts, rankings=rankings)


def test_inspect_export_import_round_trip(tmp_path: Path) -> None:
    make_run(tmp_path / "run")
    result = runner.invoke(app, ["store", "inspect", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert "main" in json.dumps(stats) and "ground-truth" in json.dumps(stats)

    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["store", "export", str(tmp_path / "run"), "--to", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) >= 16  # 12 rollouts + 4 rankings (+ markers)

    result = runner.invoke(app, ["store", "import", str(tmp_path / "copy"), "--from", str(out)])
    assert result.exit_code == 0, result.output
    with RunStore(tmp_path / "copy", readonly=True) as copy:
        assert copy.last_committed_step("main") == 2
        assert [r.text for r in copy.iter_shard("rollouts", "main", 2)][:2] == ["answer 00", "answer 01"]


def test_inspect_missing_store_is_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["store", "inspect", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert "error:" in result.output and len(result.output.strip().splitlines()) == 1
