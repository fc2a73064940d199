"""``benchmarks/rm_pairs.py --tiny``: T5 end to end at a tiny size (a source run, two reward
models on 2 and 4 pairs, a PPO cell against each, the larger one as a ranker for
grpo-rank), then its table in RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.test_results import load_script


@pytest.mark.integration
def test_rm_pairs_tiny_then_its_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "studies" / "t5-rm-pairs"
    assert load_script("rm_pairs").main(["--tiny", "--out", str(out)]) == 0

    stored = json.loads((out / "reward_models.json").read_text())
    rms = stored["reward_models"]
    assert stored["source"]["run_dir"] == str((out / "source").resolve()) and stored["source"]["wall_s"] > 0
    assert sorted(rms) == ["pairs-2", "pairs-4", "ranker-4"]
    assert rms["ranker-4"] == {**rms["pairs-4"], "used_as": "ranker"}  # the same reward model
    assert [rms[a]["train_pairs"] for a in ("pairs-2", "pairs-4")] == [2, 4]
    assert rms["pairs-2"]["heldout_pairs"] == rms["pairs-4"]["heldout_pairs"] > 0  # one held-out set
    assert rms["pairs-2"]["run_dir"] == str((out / "source").resolve())
    results = json.loads((out / "results.json").read_text())
    assert results["study"] == "t5-rm-pairs" and results["baseline"] == "sft"
    assert results["cells"] == 3 and [a["arm"] for a in results["arms"]] == ["pairs-2", "pairs-4", "ranker-4"]
    cell = json.loads((out / "pairs-4-s0" / "study-cell.json").read_text())["data"]
    assert cell["oracle"] == {"name": "reward-model", "path": str((out / "rm-4").resolve())}
    assert cell["loss"] == {"name": "ppo", "value_init": str((out / "rm-4").resolve())}
    ranker = json.loads((out / "ranker-4-s0" / "study-cell.json").read_text())["data"]
    assert ranker["oracle"] == cell["oracle"] and ranker["loss"] == {"name": "grpo-rank"}

    text = load_script("results").render(tmp_path / "studies")
    section = text.split("## T5")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| `pairs-4`"))
    gain = results["arms"][1]["gain_over_sft"]["acc/all"]["mean"]
    assert f"| 4 | {rms['pairs-4']['heldout_accuracy']:.3f} |" in row and f"{gain:+.3f}" in row

    # A second run keeps everything it finished.
    before = (out / "rm-4" / "rm.json").stat().st_mtime_ns
    assert load_script("rm_pairs").main(["--tiny", "--out", str(out)]) == 0
    assert (out / "rm-4" / "rm.json").stat().st_mtime_ns == before
