"""``benchmarks/oracle_in_run.py``: a run's stored rankings against the ground truth of the
same stored candidates, per question type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.test_results import load_script


@pytest.mark.integration
def test_a_ground_truth_run_agrees_with_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    base = load_script("rm_pairs").tiny_setup(tmp_path / "tiny")
    run_dir = tmp_path / "run"
    env = {**os.environ, "RLAIF_CACHE": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-m", "rlaif.cli.main", "run", "--config", str(base), "--oracle", "ground-truth",
                    "--run-dir", str(run_dir), "--no-progress"], check=True, env=env, capture_output=True)

    script = load_script("oracle_in_run")
    table = script.oracle_in_run(run_dir)
    assert list(table)[-1] == "all" and table["all"]["groups"] > 0
    assert table["all"]["groups"] == sum(row["groups"] for key, row in table.items() if key != "all")
    for row in table.values():  # the oracle is the truth: it never pulls the policy off a right answer
        assert row["tau"] == pytest.approx(1.0) and row["top1"] == pytest.approx(1.0)
        assert row["pulls_off"] == 0.0 and 0.0 <= row["policy_top1"] <= 1.0

    assert script.main([str(run_dir), "--json", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text()) == table
    assert "| all |" in capsys.readouterr().out

    # the truth ranks by its own scores: a candidate is right exactly when it has its group's best score
    bins = script.score_calibration(run_dir)
    expected = [[0, 0] for _ in range(10)]
    for ranking, _, _ in script.judged_groups(run_dir):
        for score in ranking.scores:
            expected[min(9, int(score * 10))][0] += 1
            expected[min(9, int(score * 10))][1] += score == max(ranking.scores)
    assert sum(n for n, _ in expected) >= 2 * table["all"]["groups"]
    assert [b["candidates"] for b in bins] == [n for n, _ in expected]
    assert [b["right"] for b in bins if b["candidates"]] == [k / n for n, k in expected if n]
    assert script.main([str(run_dir), "--calibration"]) == 0
    assert "| share right |" in capsys.readouterr().out
    assert script.main([str(run_dir), "--oracle", "llm-judge"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "llm-judge" in err and len(err.splitlines()) == 1
