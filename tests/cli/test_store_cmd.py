"""``rlaif store inspect|export|import`` on a real LMDB store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from rlaif.cli.main import app
from rlaif.core.records import Ranking, Rollout, RunInfo
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


def test_export_of_a_run_holds_each_rollouts_prompt(tmp_path: Path) -> None:
    """The loop commits a step's prompts with its rollouts, so an export says what each
    rollout answered (question, video) without the benchmark."""
    from rlaif.core.records import Group, Prompt, VideoRef
    from rlaif.train.rl import StepData, commit_sampled_step

    prompts = [Prompt(f"p{g}", VideoRef(f"v{g}", f"/videos/v{g}.mp4", 16, 8.0), f"what moves in clip {g}?",
                      reference="the circle", meta={"split": "rl"}) for g in range(2)]
    groups = [Group(p, [Rollout(p.prompt_id, i, f"answer {i}", [1], [-0.5]) for i in range(3)]) for p in prompts]
    rankings = [Ranking.from_scores(p.prompt_id, "ground-truth", [1.0, 0.0, 0.5]) for p in prompts]
    with RunStore(tmp_path / "run") as store:
        commit_sampled_step(store, StepData(1, groups, rankings), "ground-truth")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["store", "export", str(tmp_path / "run"), "--to", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    exported = {e["value"]["prompt_id"]: e["value"] for e in lines if e["db"] == "prompts"}
    rollouts = [e["value"] for e in lines if e["db"] == "rollouts"]
    assert len(rollouts) == 6
    for rollout in rollouts:
        prompt = exported[rollout["prompt_id"]]
        assert Prompt.from_dict(prompt) == prompts[int(rollout["prompt_id"][1:])]
        assert prompt["question"].startswith("what moves") and prompt["video"]["path"].startswith("/videos/")


def rlaif(*args: str) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a child process, so a signal shows as one."""
    env = {**os.environ, "RLAIF_DEBUG": "0", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "rlaif.cli.main", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_truncated_store_is_a_one_line_error_not_a_signal(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunStore(run_dir / "store.lmdb") as store:
        store.put_run(RunInfo(run_id="main", config={"run": {"steps": 2}}))
        for step in range(12):
            rollouts = [
                Rollout(f"p{g}", i, "an answer " * 40, [1] * 64, [-0.1] * 64) for g in range(4) for i in range(4)
            ]
            store.commit_step("main", step, rollouts=rollouts)
    data = run_dir / "store.lmdb" / "data.mdb"
    os.truncate(data, 3 * 4096)  # the meta pages survive; the pages they point to do not
    for args in (
        ["store", "inspect", str(run_dir)],
        ["store", "export", str(run_dir), "--to", str(tmp_path / "out.jsonl")],
        ["store", "verify", str(run_dir)],
        ["run", "--resume", str(run_dir)],
    ):
        out = rlaif(*args)
        assert out.returncode > 0, f"{args[:2]} died with signal {-out.returncode}"
        lines = (out.stdout + out.stderr).strip().splitlines()
        assert len(lines) == 1, (args, lines)
        assert lines[0].startswith("error: ") and str(data) in lines[0] and "truncated" in lines[0], lines[0]
        assert "backup" in lines[0] and "rlaif store export" in lines[0]


def test_verify_lists_every_damaged_record_and_exits_nonzero(tmp_path: Path) -> None:
    make_run(tmp_path / "run")
    result = runner.invoke(app, ["store", "verify", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ") and "checksum" in result.output

    data = tmp_path / "run" / "data.mdb"  # make_run puts the store right in run/
    raw = data.read_bytes()
    # Every copy of two rollouts' texts ("answer 01", "answer 12" in both steps): 4 records.
    for old, new in ((b"answer 01", b"answer 0!"), (b"answer 12", b"answer 1?")):
        assert old in raw
        raw = raw.replace(old, new)
    data.write_bytes(raw)
    result = runner.invoke(app, ["store", "verify", str(tmp_path / "run")])
    assert result.exit_code == 1
    damaged = [line for line in result.output.splitlines() if line.startswith("damaged: ")]
    assert len(damaged) == 4 and all("checksum mismatch" in line for line in damaged)
    for step in (1, 2):
        assert any(f"step={step} prompt_index=0 index=1" in line for line in damaged)
        assert any(f"step={step} prompt_index=1 index=2" in line for line in damaged)
    assert "error: 4 problem(s)" in result.output

    result = runner.invoke(app, ["store", "verify", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert not report["ok"] and len(report["damaged"]) == 4 and report["records"] > 16

    # export refuses to copy a damaged record, in one line naming it
    result = runner.invoke(app, ["store", "export", str(tmp_path / "run"), "--to", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "damaged record" in result.output and "prompt_index=0 index=1" in result.output
