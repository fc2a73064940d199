"""``rlaif study``: study files and their cells, the summary on hand-computed numbers, and
tiny studies end to end (the table, SIGKILL then rerun, a changed cell refused, a replay
study in parallel processes, a failing cell). Everything real: PyAV videos, a small tiny
video LM saved as a checkpoint (no cached pre-training), LMDB."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rlaif.core.errors import ConfigError
from rlaif.train.plots import read_metrics
from rlaif.train.study import (
    CELL_FILE,
    load_study,
    prepare_cell,
    read_cell_state,
    summarize,
    write_cell_state,
)

REPO = Path(__file__).resolve().parents[2]
WORLD = {"n_sft": 4, "n_rl": 16, "n_test": 12, "min_frames": 16, "max_frames": 24, "progress": False}


def study_file(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


# --------------------------------------------------------------------------- study files
def test_axes_cross_the_arms_and_name_the_cells(tmp_path: Path) -> None:
    path = study_file(tmp_path / "s.toml", """
seeds = [0, 1]
baseline = "blind-grpo-kl_coef=0.0"
[base.oracle]
name = "llm-judge"
context = "narrative"
n_clips = 3
[[arms]]
name = "blind"
"oracle.context" = "none"
[[arms]]
name = "truth"
oracle = "ground-truth"
[axes]
loss = ["grpo-rank", "grpo"]
"loss.kl_coef" = [0.0, 0.04]
""")
    study = load_study(path)
    assert [a.name for a in study.arms] == [
        "blind-grpo-rank-kl_coef=0.0", "blind-grpo-rank-kl_coef=0.04", "blind-grpo-kl_coef=0.0",
        "blind-grpo-kl_coef=0.04", "truth-grpo-rank-kl_coef=0.0", "truth-grpo-rank-kl_coef=0.04",
        "truth-grpo-kl_coef=0.0", "truth-grpo-kl_coef=0.04"]
    cells = {c.name: c for c in study.cells}
    assert len(cells) == 16 and [c.seed for c in study.cells[:8]] == [0] * 8  # seed by seed
    blind = cells["blind-grpo-kl_coef=0.04-s1"].data
    assert blind["oracle"] == {"name": "llm-judge", "context": "none", "n_clips": 3}
    assert blind["loss"] == {"name": "grpo", "kl_coef": 0.04} and blind["run"]["seed"] == 1
    # A component whose name changes starts from its own defaults: no llm-judge options.
    assert cells["truth-grpo-rank-kl_coef=0.0-s0"].data["oracle"] == {"name": "ground-truth"}


def test_baseline_sft_and_explicit_arms_only(tmp_path: Path) -> None:
    path = study_file(tmp_path / "s.toml", 'baseline = "sft"\n[[arms]]\nname = "a"\n"run.lr" = 0.01\n'
                                           '[[arms]]\nname = "b"\nrun.lr = 0.02\n')
    study = load_study(path)
    assert study.baseline == "sft" and study.seeds == [0] and study.mode == "live"
    assert [c.data["run"] for c in study.cells] == [{"lr": 0.01, "seed": 0}, {"lr": 0.02, "seed": 0}]


def test_every_problem_of_a_study_file_is_reported_at_once(tmp_path: Path) -> None:
    from rlaif.cli.run import known_components

    path = study_file(tmp_path / "s.toml", """
mode = "replay"
seeds = [0, 0]
baseline = "nope"
colour = "red"
[axes]
"oracle.context" = ["none"]
"run.seed" = [1, 2]
"widget.size" = [1]
loss = []
""")
    with pytest.raises(ConfigError) as info:
        load_study(path, known_components=known_components())
    text = str(info.value)
    for needle in ("unknown key 'colour'", "seeds lists a seed twice", "baseline 'nope' is not an arm",
                   "not run.seed", "'widget.size'", "loss.name must be a non-empty list",
                   "varies only the loss", "sets oracle.context"):
        assert needle in text, (needle, text)
    assert len(text.splitlines()) == 1


def test_unknown_components_and_options_name_the_arm(tmp_path: Path) -> None:
    from rlaif.cli.run import known_components
    from rlaif.core.registry import load_plugins

    path = study_file(tmp_path / "s.toml", '[axes]\nloss = ["grpo-rank", "grop"]\n"loss.kl_coeff" = [0.1]\n')
    with pytest.raises(ConfigError) as info:
        load_study(path, known_components=known_components(), registry=load_plugins())
    text = str(info.value)
    assert "arm grop-kl_coeff=0.1: unknown loss 'grop'" in text
    assert "arm grpo-rank-kl_coeff=0.1: unknown option 'kl_coeff'" in text


def test_an_arm_carries_a_schedule(tmp_path: Path) -> None:
    """VerIPO against GRPO: an arm's ``schedule`` replaces the base's whole phase list,
    ``schedule = []`` removes it, and a bad phase is reported with the arm's name."""
    from rlaif.cli.run import known_components

    path = study_file(tmp_path / "s.toml", """
baseline = "grpo"
[[base.schedule]]
phase = "grpo"
steps = 5
[[base.schedule]]
phase = "dpo"
steps = 5
[[arms]]
name = "grpo"
schedule = []
[[arms]]
name = "veripo"
[[arms.schedule]]
phase = "grpo"
steps = 2
[[arms.schedule]]
phase = "dpo"
steps = 1
beta = 0.2
[[arms]]
name = "base"
""")
    study = load_study(path, known_components=known_components())
    data = {c.arm: c.data for c in study.cells}
    assert "schedule" not in data["grpo"]
    assert data["veripo"]["schedule"] == [{"phase": "grpo", "steps": 2}, {"phase": "dpo", "steps": 1, "beta": 0.2}]
    assert data["base"]["schedule"] == [{"phase": "grpo", "steps": 5}, {"phase": "dpo", "steps": 5}]
    assert len({c.digest for c in study.cells}) == 3

    bad = study_file(tmp_path / "bad.toml", """
[[arms]]
name = "a"
schedule = [{phase = "dpo", steps = 1}]
[[arms]]
name = "b"
schedule = "grpo"
[axes]
schedule = [[{phase = "grpo", steps = 1}]]
""")
    with pytest.raises(ConfigError) as info:
        load_study(bad, known_components=known_components())
    text = str(info.value)
    for needle in ("arm a: schedule must start with a grpo phase", "arm b: schedule must be a list",
                   "a schedule goes in an [[arms]] table"):
        assert needle in text, (needle, text)


@pytest.mark.parametrize(("name", "cells"), [("t1-oracles", 15), ("t2-context", 12), ("t3-losses-live", 21),
                                             ("t3-losses-replay", 24), ("t4-veripo", 6)])
def test_example_studies_parse_and_their_cells_resolve(name: str, cells: int) -> None:
    from rlaif.cli.run import known_components
    from rlaif.core.registry import load_plugins

    study = load_study(REPO / "examples" / "studies" / f"{name}.toml", known_components=known_components(),
                       registry=load_plugins())
    assert len(study.cells) == cells and study.seeds == [0, 1, 2]
    assert study.baseline in {"sft", *(a.name for a in study.arms)}
    if study.mode == "replay":
        assert [c.kind for c in study.cells[:2]] == ["source", "replay"]
        assert {c.source for c in study.cells if c.kind == "replay"} == {"source-s0", "source-s1", "source-s2"}


# --------------------------------------------------------------------------- the summary
def fake_cell(study_dir: Path, cell: Any, *, items: list[tuple[str, float]], sft: list[tuple[str, float]],
              rank_s: list[float], wall_s: float) -> None:
    """A finished cell written by hand: its state, metrics.csv and per-item evaluations."""
    from rlaif.train.evaluate import ItemResult, run_items_path, write_items

    cell_dir = prepare_cell(study_dir, cell)

    def results(pairs: list[tuple[str, float]]) -> list[ItemResult]:
        return [ItemResult(pid, "counting", "x", v, v >= 1.0) for pid, v in pairs]

    write_items(run_items_path(cell_dir, 0), results(sft))
    write_items(run_items_path(cell_dir, len(rank_s)), results(items))
    acc = sum(v for _, v in items) / len(items)
    rows = ["step,eval/acc/all,rank_s", f"0,{sum(v for _, v in sft) / len(sft)},"]
    rows += [f"{i},,{s}" for i, s in enumerate(rank_s, start=1)]
    rows[-1] = f"{len(rank_s)},{acc},{rank_s[-1]}"
    (cell_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    state = read_cell_state(cell_dir)
    assert state is not None
    state.update(finished=True, wall_s=wall_s, summary={"eval": {"acc/all": acc}})
    write_cell_state(cell_dir, state)


def test_summary_pairs_items_within_each_seed_hand_computed(tmp_path: Path) -> None:
    """Both seeds evaluate the same two items (p1, p2). Paired within seeds the four
    differences are 0, 1 (seed 0) and 0, 0 (seed 1): mean 0.25; a resample of four is
    k/4 with k ~ Binomial(4, 1/4), so its 2.5th percentile is 0 and its 97.5th 0.75
    (P(k <= 2) = 0.949, P(k <= 3) = 0.996). Pairing across seeds would differ."""
    path = study_file(tmp_path / "s.toml", 'seeds = [0, 1]\nbaseline = "a"\n[axes]\nloss = ["a", "b"]\n')
    study = load_study(path)
    out = tmp_path / "study"
    cells = {c.name: c for c in study.cells}
    fake_cell(out, cells["a-s0"], items=[("p1", 0.0), ("p2", 0.0)], sft=[("p1", 0.0), ("p2", 0.0)],
              rank_s=[0.5, 0.25], wall_s=10.0)
    fake_cell(out, cells["b-s0"], items=[("p1", 0.0), ("p2", 1.0)], sft=[("p1", 0.0), ("p2", 0.0)],
              rank_s=[1.0, 1.0], wall_s=20.0)
    fake_cell(out, cells["a-s1"], items=[("p1", 1.0), ("p2", 1.0)], sft=[("p1", 0.0), ("p2", 1.0)],
              rank_s=[0.5, 0.5], wall_s=12.0)
    fake_cell(out, cells["b-s1"], items=[("p1", 1.0), ("p2", 1.0)], sft=[("p1", 1.0), ("p2", 1.0)],
              rank_s=[2.0, 1.0], wall_s=30.0)
    report = summarize(study, out)
    a, b = report.arms
    assert a.paired == [] and b.paired[0].group == "all"
    row = b.paired[0]
    assert (row.n, row.diff, row.lo, row.hi) == (4, 0.25, 0.0, 0.75)
    assert (b.paired_per_seed[0].diff, b.paired_per_seed[0].lo, b.paired_per_seed[0].hi) == (0.5, 0.0, 1.0)
    assert (b.paired_per_seed[1].diff, b.paired_per_seed[1].lo, b.paired_per_seed[1].hi) == (0.0, 0.0, 0.0)
    arm = report.to_json()["arms"][1]
    assert arm["metrics"]["acc/all"]["mean"] == 0.75
    assert arm["metrics"]["acc/all"]["std"] == pytest.approx(0.5 ** 0.5 / 2)
    assert arm["gain_over_sft"]["acc/all"]["values"] == [0.5, 0.0]
    assert arm["oracle_calls"]["values"] == [2.0, 2.0] and arm["judge_s"]["values"] == [2.0, 3.0]
    assert arm["wall_s"]["mean"] == 25.0

    sft = summarize(load_study(study_file(tmp_path / "sft.toml", 'seeds = [0, 1]\nbaseline = "sft"\n'
                                                                  '[axes]\nloss = ["a", "b"]\n')), out)
    assert [arm.paired[0].diff for arm in sft.arms] == [0.25, 0.25]  # each cell against its own step 0


def test_summary_of_an_unfinished_study_is_refused(tmp_path: Path) -> None:
    from rlaif.core.errors import UsageError

    study = load_study(study_file(tmp_path / "s.toml", '[axes]\nloss = ["a", "b"]\n'))
    prepare_cell(tmp_path / "out", study.cells[0])
    with pytest.raises(UsageError, match="cell a-s0 has not finished"):
        summarize(study, tmp_path / "out")


def test_parallel_cells_share_the_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import rlaif.train.study as study_module

    commands: list[list[str]] = []
    monkeypatch.setattr(study_module, "cores", lambda: 8)

    class Done:
        returncode = 0

        def __init__(self, command: list[str], **kwargs: Any) -> None:
            commands.append(command)
            assert kwargs["env"]["OMP_NUM_THREADS"] == "2"

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(study_module.subprocess, "Popen", Done)
    study = load_study(study_file(tmp_path / "s.toml", '[axes]\nloss = ["a", "b", "c"]\n'))
    for cell in study.cells:
        prepare_cell(tmp_path / "out", cell)
    study_module._run_in_processes(tmp_path / "out", study.cells, 4, 0, 3, lambda line: None)
    assert [c[-3:] for c in commands] == [[str(tmp_path / "out" / n), "--threads", "2"] for n in ("a-s0", "b-s0", "c-s0")]
    assert commands[0][1:3] == ["-m", "rlaif.train.study"]


# --------------------------------------------------------------------------- tiny studies end to end
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A tiny world and a small tiny-video-lm saved as a policy checkpoint (seconds, no
    cached pre-training), and a base run config using them."""
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLAIF_CACHE", str(root / "cache"))
        from rlaif.plugins.benchmarks.video_world import VideoWorld
        from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
        from rlaif.plugins.policies.tiny_lm import (
            load_tiny_lm,
            pretrain_tiny_lm,
            tiny_lm_config,
            train_world_tokenizer,
        )
        from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM, world_texts

        world = VideoWorld(root=str(root / "world"), seed=0, **WORLD)
        texts = world_texts(world)
        tokenizer = train_world_tokenizer(texts, root / "base" / "tokenizer.json", vocab_size=512)
        config = tiny_lm_config(len(tokenizer), hidden_size=64, layers=2, heads=2, intermediate_size=128)
        pretrain_tiny_lm(texts, tokenizer, root / "base" / "lm", steps=30, seq_len=64, config=config)
        TinyVideoLM(TinyConvEncoder(feature_dim=32, width=8, n_frames=4), load_tiny_lm(root / "base" / "lm"),
                    tokenizer, frames=world.frames, n_frames=4, lora_r=8, lora_alpha=8).save(root / "policy")
        bench = "\n".join(f"{k} = {json.dumps(v)}" for k, v in WORLD.items())
        base = root / "base.toml"
        base.write_text(
            "[run]\nsteps = 3\nprompts_per_step = 4\ngroup_size = 3\nmax_new_tokens = 8\neval_items = 12\n"
            "checkpoint_every = 2\nlr = 0.01\n"
            f'[benchmark]\nname = "video-world"\nroot = "{root / "world"}"\n{bench}\n'
            f'[policy]\nname = "tiny-video-lm"\npath = "{root / "policy"}"\n'
            '[oracle]\nname = "ground-truth"\n[loss]\nname = "grpo-rank"\n')
        yield {"root": root, "cache": root / "cache", "base": base}


def two_arms(tiny: dict[str, Path], name: str, steps: int = 3) -> Path:
    """A 2-arm x 1-seed study whose [base.*] tables are the tiny run config with ``steps``."""
    base = tiny["base"].read_text().replace("steps = 3\n", f"steps = {steps}\n", 1)
    tables = "".join(f"[base.{line[1:]}\n" if line.startswith("[") else f"{line}\n" for line in base.splitlines())
    return study_file(tiny["root"] / f"{name}.toml", 'seeds = [0]\nbaseline = "grpo-rank"\npaired_metric = "score"\n'
                                                     f'[axes]\nloss = ["grpo-rank", "grpo"]\n{tables}')


def invoke(*args: str) -> Any:
    from rlaif.cli.app import get_console
    from rlaif.cli.main import app

    # A console made by an earlier test in this process keeps that test's width: start a
    # new one that reads COLUMNS, and leave none behind.
    get_console.cache_clear()
    try:
        return CliRunner().invoke(app, ["study", *args, "--no-progress"], env={"COLUMNS": "200"})
    finally:
        get_console.cache_clear()


@pytest.fixture(scope="module")
def finished(tiny: dict[str, Path]) -> tuple[Path, Path, Any]:
    """A 2-arm x 1-seed study run through the command (plots included)."""
    path, out = two_arms(tiny, "two"), tiny["root"] / "two"
    return path, out, invoke(str(path), "--out", str(out))


@pytest.mark.integration
def test_a_two_arm_study_runs_and_prints_the_table(finished: tuple[Path, Path, Any]) -> None:
    path, out, result = finished
    assert result.exit_code == 0, result.output
    for text in ("grpo-rank", "grpo", "vs grpo-rank", "acc/all", "per seed", "oracle calls", "grpo-rank-s0: running"):
        assert text in result.output, text
    assert re.search(r"s0 [+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", result.output)  # grpo's seed 0, paired
    for name in ("results.csv", "results.json", "results.md", "bars.png", "curves.png", "curves-wall.png",
                 "study.json"):
        assert (out / name).exists(), name
    for cell in ("grpo-rank-s0", "grpo-s0"):
        state = read_cell_state(out / cell)
        assert state is not None and state["finished"] and state["invocations"] == 1
        assert (out / cell / "eval" / "step-000003.jsonl").exists()
        marks = [state["step_wall_s"][str(step)] for step in (1, 2, 3)]  # when each step was done
        assert 0 < marks[0] < marks[1] < marks[2] <= state["wall_s"]
    results = json.loads((out / "results.json").read_text())
    assert results["cells"] == 2 and results["wall_s_total"] == pytest.approx(
        sum(a["wall_s"]["values"][0] for a in results["arms"]))
    curve = results["arms"][1]["curves"][0]  # the evaluations: the starting policy's, the last
    assert [(p["step"], p["wall_s"]) for p in curve] == [(0, 0.0), (3, read_cell_state(out / "grpo-s0")["wall_s"])]
    assert 0 <= curve[-1]["acc/all"] <= 1
    markdown = (out / "results.md").read_text().splitlines()  # the same numbers, as Markdown tables
    paired = results["arms"][1]["paired"]
    row = next(line for line in markdown if line.startswith("| grpo |"))
    assert f"{paired['diff']:+.3f} [{paired['lo']:+.3f}, {paired['hi']:+.3f}]" in row
    assert f"{results['arms'][1]['metrics']['acc/all']['mean']:.3f}" in row
    assert any(line.startswith("| arm | ") and "acc/all" in line for line in markdown[markdown.index(
        "Gain over SFT per metric, lowest to highest seed:"):])


@pytest.mark.integration
def test_the_study_pairs_exactly_as_compare_does(finished: tuple[Path, Path, Any]) -> None:
    from rlaif.train.compare import compare_items
    from rlaif.train.evaluate import items_file, read_items

    path, out, _ = finished
    before = (out / "grpo-s0" / CELL_FILE).stat().st_mtime_ns
    result = invoke(str(path), "--out", str(out), "--json", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "finished earlier, kept" in result.stderr
    assert (out / "grpo-s0" / CELL_FILE).stat().st_mtime_ns == before  # nothing redone
    report = json.loads(result.stdout.strip().splitlines()[-1])
    base, arm = report["arms"]
    assert base["paired"] is None and arm["arm"] == "grpo"
    expected = compare_items(read_items(items_file(out / "grpo-rank-s0")), read_items(items_file(out / "grpo-s0")),
                             metric="score")
    got = arm["paired"]
    assert (got["n"], got["diff"], got["lo"], got["hi"]) == (expected[0].n, expected[0].diff, expected[0].lo,
                                                             expected[0].hi)
    assert [g["group"] for g in got["groups"]] == [r.group for r in expected[1:]]
    assert arm["oracle_calls"]["values"] == [3.0] and arm["wall_s"]["mean"] > 0
    assert arm["judge_s"]["mean"] > 0


@pytest.mark.integration
def test_a_scheduled_arm_against_a_plain_one(tiny: dict[str, Path]) -> None:
    """T4 in miniature: VerIPO's loop (grpo 1 step, dpo 1 step) against GRPO alone, with an
    evaluation every 2 steps; both arms' curves carry wall seconds."""
    path = two_arms(tiny, "veripo", steps=4)
    text = path.read_text().replace('[axes]\nloss = ["grpo-rank", "grpo"]\n', "").replace(
        'baseline = "grpo-rank"', 'baseline = "grpo"').replace("eval_items = 12\n", "eval_items = 12\neval_every = 2\n")
    path.write_text(text + '[[arms]]\nname = "grpo"\n[[arms]]\nname = "veripo"\n'
                           'schedule = [{phase = "grpo", steps = 1}, {phase = "dpo", steps = 1}]\n')
    out = tiny["root"] / "veripo"
    result = invoke(str(path), "--out", str(out), "--json", "--no-plots")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [a["arm"] for a in report["arms"]] == ["grpo", "veripo"]
    phases = [r.get("phase") for r in read_metrics(out / "veripo-s0") if r["step"] > 0]
    assert phases == [0.0, 1.0, 0.0, 1.0]  # grpo, dpo, grpo, dpo
    for arm in report["arms"]:
        curve = arm["curves"][0]
        assert [p["step"] for p in curve] == [0, 2, 4]
        assert 0.0 == curve[0]["wall_s"] < curve[1]["wall_s"] < curve[2]["wall_s"] == arm["wall_s"]["values"][0]
    assert report["arms"][1]["oracle_calls"]["values"] == [2.0]  # dpo steps call no oracle


@pytest.mark.integration
def test_a_changed_cell_definition_is_refused(tiny: dict[str, Path], finished: tuple[Path, Path, Any]) -> None:
    _, out, _ = finished
    changed = two_arms(tiny, "changed", steps=4)
    before = {c: (out / c / CELL_FILE).stat().st_mtime_ns for c in ("grpo-rank-s0", "grpo-s0")}
    result = invoke(str(changed), "--out", str(out))
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1
    assert "cell grpo-rank-s0 was run with another definition (run.steps: 3 -> 4)" in line
    assert "1 more cells changed too (grpo-s0)" in line and "another --out" in line
    assert before == {c: (out / c / CELL_FILE).stat().st_mtime_ns for c in before}
    listing = invoke(str(changed), "--out", str(out), "--list", "--json")
    states = {c["cell"]: c["state"] for c in json.loads(listing.stdout)["cells"]}
    assert states == {"grpo-rank-s0": "changed (run.steps: 3 -> 4)", "grpo-s0": "changed (run.steps: 3 -> 4)"}


@pytest.mark.integration
def test_sigkill_in_the_middle_then_rerun_finishes_only_what_is_left(tiny: dict[str, Path]) -> None:
    from rlaif.core.errors import StoreError
    from rlaif.core.store import RunStore

    path = two_arms(tiny, "killed", steps=8)
    out = tiny["root"] / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # RLAIF_CACHE: the fixture's
    log = tiny["root"] / "killed.log"
    with log.open("wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "rlaif.cli.main", "study", str(path), "--out", str(out),
                                 "--no-progress", "--no-plots"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    second = out / "grpo-s0"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if (second / "store.lmdb" / "data.mdb").exists():
                with RunStore(second, readonly=True) as store:
                    if (store.last_committed_step("main") or 0) >= 2:
                        break
        except StoreError:
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the study finished before it could be killed: " + log.read_text()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_cell_state(out / "grpo-rank-s0")
    assert first is not None and first["finished"]
    killed = read_cell_state(second)
    assert killed is not None and not killed["finished"] and killed["invocations"] == 1
    first_mtime = (out / "grpo-rank-s0" / CELL_FILE).stat().st_mtime_ns
    policy_mtime = (out / "grpo-rank-s0" / "policy").stat().st_mtime_ns

    result = invoke(str(path), "--out", str(out), "--no-plots")
    assert result.exit_code == 0, result.output
    assert "grpo-rank-s0: finished earlier, kept" in result.output and "grpo-s0: resuming" in result.output
    assert (out / "grpo-rank-s0" / CELL_FILE).stat().st_mtime_ns == first_mtime
    assert (out / "grpo-rank-s0" / "policy").stat().st_mtime_ns == policy_mtime
    done = read_cell_state(second)
    assert done is not None and done["finished"] and done["invocations"] == 2
    with RunStore(second, readonly=True) as store:
        assert store.last_committed_step("main") == 8
    assert (second / "eval" / "step-000008.jsonl").exists()
    assert done["wall_s"] > 0


@pytest.mark.integration
def test_a_replay_study_in_parallel_processes(tiny: dict[str, Path]) -> None:
    path = study_file(tiny["root"] / "replay.toml", f'mode = "replay"\nbase = "{tiny["base"]}"\nseeds = [0]\n'
                                                    'baseline = "sft"\n[axes]\nloss = ["grpo-rank", "dpo"]\n')
    out = tiny["root"] / "replay"
    result = invoke(str(path), "--out", str(out), "--jobs", "2", "--json", "--no-plots")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [a["arm"] for a in report["arms"]] == ["grpo-rank", "dpo"]
    source = read_cell_state(out / "source-s0")
    assert source is not None and source["definition"]["kind"] == "source"
    for arm in report["arms"]:
        cell = out / f"{arm['arm']}-s0"
        summary = json.loads((cell / "summary.json").read_text())
        assert summary["steps"] == 3 and summary["oracle_calls"] == 0  # trained on the source's data
        assert arm["oracle_calls"]["values"] == [3.0]  # what that data cost
        assert (cell / "study.log").exists() and arm["paired"]["n"] == 12  # against the source's step 0

    # A stored run as the source: its config and seed, no source cell of the study's own.
    given = load_study(study_file(tiny["root"] / "given.toml", f'mode = "replay"\nsource = "{out / "source-s0"}"\n'
                                                               '[axes]\nloss = ["grpo"]\n'))
    assert [(c.name, c.kind, c.source) for c in given.cells] == [("grpo-s0", "replay", str(out / "source-s0"))]
    assert given.cells[0].data["benchmark"]["root"] == str(tiny["root"] / "world")


@pytest.mark.integration
def test_a_failing_cell_is_one_line_naming_it(tiny: dict[str, Path], tmp_path: Path) -> None:
    path = two_arms(tiny, "failing")
    path.write_text(path.read_text().replace(str(tiny["root"] / "policy"), str(tmp_path / "nothing")))
    for jobs in ("1", "2"):
        result = invoke(str(path), "--out", str(tmp_path / "out"), "--jobs", jobs, "--no-plots")
        assert result.exit_code == 2, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("error: cell grpo") and "is not a tiny-video-lm checkpoint" in line, line
        assert "rerunning the study continues" in line
