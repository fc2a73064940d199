"""``benchmarks/results.py``: RESULTS.md from stored studies. The studies are finished
cells written by hand (``fake_cell`` of tests/train/test_study.py), summarised by the
study code, so every number the markdown shows can be checked against results.json."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rlaif.train.study import (
    load_study,
    read_cell_state,
    summarize,
    write_cell_state,
    write_manifest,
    write_outputs,
)
from tests.train.test_study import fake_cell, study_file

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fake_study(tmp_path: Path, name: str, walls: dict[str, dict[int, float]] | None = None) -> Path:
    """A 2-arm x 2-seed study named ``name``, finished and summarised under
    ``tmp_path/studies/name``; ``walls`` (cell -> step -> wall s) are the cells' step marks."""
    path = study_file(tmp_path / f"{name}.toml", f'name = "{name}"\nseeds = [0, 1]\nbaseline = "a"\n'
                                                 '[axes]\nloss = ["a", "b"]\n')
    study = load_study(path)
    out = tmp_path / "studies" / name
    cells = {c.name: c for c in study.cells}
    sft = [("p1", 0.0), ("p2", 0.0), ("p3", 1.0)]
    fake_cell(out, cells["a-s0"], items=[("p1", 0.0), ("p2", 1.0), ("p3", 1.0)], sft=sft, rank_s=[1.0, 1.0],
              wall_s=10.0)
    fake_cell(out, cells["b-s0"], items=[("p1", 1.0), ("p2", 1.0), ("p3", 1.0)], sft=sft, rank_s=[1.0, 1.0],
              wall_s=6.0)
    fake_cell(out, cells["a-s1"], items=[("p1", 0.0), ("p2", 0.0), ("p3", 1.0)], sft=sft, rank_s=[1.0, 1.0],
              wall_s=12.0)
    fake_cell(out, cells["b-s1"], items=[("p1", 1.0), ("p2", 0.0), ("p3", 1.0)], sft=sft, rank_s=[1.0, 1.0],
              wall_s=8.0)
    for cell, marks in (walls or {}).items():
        state = read_cell_state(out / cell)
        assert state is not None
        state["step_wall_s"] = {str(step): seconds for step, seconds in marks.items()}
        write_cell_state(out / cell, state)
    write_manifest(study, out)
    write_outputs(summarize(study, out, n_boot=200), plots=bool(walls))
    return out


def test_results_md_from_stored_studies(tmp_path: Path) -> None:
    live = fake_study(tmp_path, "t3-losses-live")
    veripo = fake_study(tmp_path, "t4-veripo", walls={c: {1: 1.0, 2: 2.0} for c in ("a-s0", "b-s0", "a-s1", "b-s1")})
    (tmp_path / "studies" / "t2-context").mkdir()  # started, never summarised
    (live / "notes.md").write_text("Read this: b beats a.\n")
    rows = [{"judge": "world", "context": c, "kendall_tau": tau, "top1": 0.5, "position_bias": 0.0, "groups_used": 91}
            for c, tau in (("none", 0.16), ("gold", 0.495))]
    (live / "oracle_table.json").write_text(json.dumps({"rows": rows, "caption_score": 0.7514}))
    out = tmp_path / "RESULTS.md"
    assert load_script("results").main(["--studies", str(tmp_path / "studies"), "--out", str(out)]) == 0
    text = out.read_text()

    results = json.loads((live / "results.json").read_text())
    assert results["cells"] == 4 and results["wall_s_total"] == 36.0
    a, b = results["arms"]
    section = text.split("## T3 live")[1].split("\n## ")[0]
    assert f"rlaif study examples/studies/t3-losses-live.toml --out {tmp_path / 'studies'}/t3-losses-live" in section
    assert "36 s of cell wall time over 4 cells" in section and "**Claim tested.** Oracle-RLAIF" in section
    rows = {line.split(" | ")[0]: line for line in section.splitlines() if line.startswith("| `")}
    assert set(rows) == {"| `a`", "| `b`"}
    mean, std = b["metrics"]["acc/all"]["mean"], b["metrics"]["acc/all"]["std"]
    assert f"{mean:.3f} ± {std:.3f}" in rows["| `b`"]  # 0.833 ± 0.236
    gains = b["gain_over_sft"]["acc/all"]["values"]
    assert ", ".join(f"{g:+.3f}" for g in gains) in rows["| `b`"]  # every seed's gain over SFT
    paired = b["paired"]
    assert f"{paired['diff']:+.3f} [{paired['lo']:+.3f}, {paired['hi']:+.3f}]" in rows["| `b`"]
    assert f"{paired['per_seed']['0']['diff']:+.3f}, {paired['per_seed']['1']['diff']:+.3f}" in rows["| `b`"]
    assert a["paired"] is None and "| - |" in rows["| `a`"]
    assert "Read this: b beats a." in section
    assert "| world | gold | +0.495 | 0.500 | 0.000 | 91 |" in section and "0.75 / 5" in section
    assert f"--json {tmp_path / 'studies'}/t3-losses-live/oracle_table.json" in section

    t4 = text.split("## T4")[1].split("\n## ")[0]
    assert "Accuracy against wall time" in t4
    curve = json.loads((veripo / "results.json").read_text())["arms"][1]["curves"][0]
    assert curve == [{"step": 0.0, "wall_s": 0.0, "acc/all": 1 / 3}, {"step": 2.0, "wall_s": 6.0, "acc/all": 1.0}]
    assert "| `b` | 2 | 7 | 0.833 ± 0.236 |" in t4  # wall: the cells' 6 s and 8 s
    # By 7 s: a's cells (10 s, 12 s) have only their step 0 (1/3); b's seed 0 (6 s) its end
    # (1.0), its seed 1 (8 s) only step 0.
    assert "At equal wall time (7 s, the fastest arm's whole run): `a` 0.333 ± 0.000, `b` 0.667 ± 0.471." in t4
    assert (veripo / "curves-wall.png").exists()

    tail = text.split("## Not run yet")[1]
    lines = {line.split(",")[0]: line for line in tail.splitlines() if line.startswith("- ")}
    assert set(lines) == {"- T1", "- T2", "- T3 replay", "- T5"}
    assert all("not run yet" in line for line in lines.values())
    assert "started: rerun its command" in lines["- T2"]
    assert "python benchmarks/rm_pairs.py --out" in tail


def test_a_missing_studies_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_script("results").main(["--studies", str(tmp_path / "none"), "--out", str(tmp_path / "R.md")]) == 2
    assert "is not a directory of studies" in capsys.readouterr().err
