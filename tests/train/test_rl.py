"""The RL loop end to end on a tiny world: resume after SIGKILL, replay, data-parallel
processes, KL at step 0, and config errors. Everything real: PyAV videos, the tiny
video LM, LMDB, torchrun with gloo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rlaif import hookimpl

pytestmark = pytest.mark.integration

WORLD = {"n_sft": 24, "n_rl": 24, "n_test": 12, "min_frames": 16, "max_frames": 24, "progress": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny world, its pre-trained base and a short SFT, built once for this module."""
    root = tmp_path_factory.mktemp("rl")
    cache = root / "cache"
    os.environ["RLAIF_CACHE"] = str(cache)
    from rlaif.plugins.benchmarks.video_world import VideoWorld
    from rlaif.train.sft import run_sft

    world = VideoWorld(root=str(root / "world"), seed=0, **WORLD)
    run_sft(root / "sft", benchmark=world, seed=0, max_steps=6, progress=False)
    config = root / "run.toml"
    bench = "\n".join(f"{k} = {json.dumps(v)}" for k, v in WORLD.items())
    config.write_text(
        "[run]\nsteps = 6\nprompts_per_step = 4\ngroup_size = 3\nmax_new_tokens = 8\neval_items = 8\n"
        "checkpoint_every = 2\nlr = 0.002\n"
        f'[benchmark]\nname = "video-world"\nroot = "{root / "world"}"\n{bench}\n'
        f'[policy]\nname = "tiny-video-lm"\npath = "{root / "sft"}"\n'
        '[oracle]\nname = "ground-truth"\n[loss]\nname = "grpo-rank"\n'
    )
    return {"root": root, "cache": cache, "config": config}


def rlaif_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from rlaif.cli.main import main; main()", *args]


def run_cli(tiny: dict[str, Path], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RLAIF_CACHE": str(tiny["cache"]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(rlaif_cmd(*args), capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def stored(run_dir: Path) -> tuple[list[dict], list[dict], int | None]:
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        steps = store.steps("main", kind="committed")
        rollouts = [r.to_dict() for s in steps for r in store.iter_shard("rollouts", "main", s)]
        rankings = [r.to_dict() for s in steps for r in store.iter_shard("rankings", "main", s, oracle="ground-truth")]
        return rollouts, rankings, store.last_committed_step("main")


def trainable(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_run_kill_resume_matches_uninterrupted_run_and_replay(tiny: dict[str, Path]) -> None:
    root = tiny["root"]
    full = root / "full"
    summary = json.loads(run_cli(tiny, "run", "--config", str(tiny["config"]), "--run-dir", str(full),
                                 "--json").stdout.strip().splitlines()[-1])
    assert summary["steps"] == 6 and summary["oracle_calls"] == 6
    assert summary["sft_accuracy"] is not None and summary["final_accuracy"] is not None
    rollouts, rankings, last = stored(full)
    assert last == 6 and len(rollouts) == 6 * 4 * 3 and len(rankings) == 6 * 4

    # KL to the reference is exactly zero at the first update (fresh adapter = reference).
    import csv

    rows = {int(float(r["step"])): r for r in csv.DictReader((full / "metrics.csv").open())}
    assert float(rows[1]["kl"]) == 0.0
    assert "eval/acc/all" in rows[0] and "eval/acc/all" in rows[6]

    # Kill a second run with SIGKILL once step 3 is committed (somewhere in steps 4-6:
    # after a checkpoint or between one and the next).
    killed = root / "killed"
    env = {**os.environ, "RLAIF_CACHE": str(tiny["cache"]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(rlaif_cmd("run", "--config", str(tiny["config"]), "--run-dir", str(killed),
                                      "--no-progress"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    from rlaif.core.errors import StoreError
    from rlaif.core.store import RunStore

    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        try:
            with RunStore(killed, readonly=True) as store:
                if (store.last_committed_step("main") or 0) >= 3:
                    break
        except StoreError:
            pass  # not created yet (the writer is still starting)
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, _, last_killed = stored(killed)
    assert last_killed is not None and 3 <= last_killed <= 6

    run_cli(tiny, "run", "--resume", str(killed), "--config", str(tiny["config"]), "--no-progress")
    rollouts2, rankings2, last2 = stored(killed)
    assert last2 == 6
    assert rollouts2 == rollouts  # no rollout stored twice or lost, identical samples
    assert rankings2 == rankings

    # Replay the stored data with the same loss: a fresh policy ends where the run ended.
    out = root / "replay"
    replay = json.loads(run_cli(tiny, "replay", str(full), "--loss", "grpo-rank", "--out", str(out),
                                "--json").stdout.strip().splitlines()[-1])
    assert replay["oracle_calls"] == 0 and replay["steps"] == 6
    final = trainable(full / "checkpoints" / "step-000006" / "trainable.safetensors")
    replayed = trainable(out / "trainable.safetensors")
    assert final.keys() == replayed.keys()
    # Replay recomputes the old log-probs under the policy it trains (on-policy); they equal
    # the sampled ones up to float rounding (one batched forward against token-by-token
    # decoding), which Adam's normalised steps can grow over six steps: measured up to
    # 1.0e-4 on one weight (a clean-clone CI run on a busy machine). Each step moves a weight
    # by up to lr = 2e-3, so other data would differ by ~1e-3.
    for name in final:
        assert (final[name] - replayed[name]).abs().max() < 3e-4, name
    # ... and the source store is untouched by the replay.
    assert stored(full)[0] == rollouts

    # Another loss on the same stored data also runs without an oracle.
    other = json.loads(run_cli(tiny, "replay", str(full), "--loss", "dpo", "--json").stdout.strip().splitlines()[-1])
    assert other["loss"] == "dpo" and other["oracle_calls"] == 0

    plot = run_cli(tiny, "plot", str(full))
    assert (full / "curves.png").stat().st_size > 1000, plot.stdout


def test_policy_version_counts_optimizer_steps(tiny: dict[str, Path]) -> None:
    """Rollouts sampled at step s carry the optimizer steps taken before it: (s - 1) *
    inner_epochs."""
    config = tiny["root"] / "versions.toml"
    config.write_text(tiny["config"].read_text().replace("steps = 6\n", "steps = 3\ninner_epochs = 2\n", 1))
    run_dir = tiny["root"] / "versions"
    run_cli(tiny, "run", "--config", str(config), "--run-dir", str(run_dir), "--no-progress")
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        versions = {s: {r.policy_version for r in store.iter_shard("rollouts", "main", s)} for s in (1, 2, 3)}
    assert versions == {1: {0}, 2: {2}, 3: {4}}


def free_port() -> int:
    """A port nothing listens on now (a fixed one may still be held by an earlier run)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text``, whole lines or several written back to back."""
    decoder, found, i = json.JSONDecoder(), [], text.find("{")
    while i != -1:
        obj, end = decoder.raw_decode(text, i)
        found.append(obj)
        i = text.find("{", end)
    return found


def test_two_process_data_parallel(tiny: dict[str, Path]) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun ships with torch"
    run_dir = tiny["root"] / "ddp"
    env = {**os.environ, "RLAIF_CACHE": str(tiny["cache"]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "rlaif.cli.main", "run",
         "--config", str(tiny["config"]), "--run-dir", str(run_dir), "--steps", "2", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[:4000]}"
    summaries = json_objects(proc.stdout)  # two ranks share stdout: one line may hold both
    assert summaries and all(s["processes"] == 2 for s in summaries)
    checksums = summaries[0]["param_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    rollouts, rankings, last = stored(run_dir)
    assert last == 2
    assert len(rollouts) == 2 * 4 * 3  # both ranks' groups, written once by the one writer
    assert len({(r["prompt_id"], r["index"]) for r in rollouts[:12]}) == 12


@pytest.mark.parametrize(
    ("toml", "message", "args"),
    [
        ("[run]\nsteps = 0\n", "run.steps must be >= 1", []),
        ("[run]\ngroup_sise = 4\n", "unknown key run.'group_sise'", []),
        ('[loss]\nname = "grpo-rnak"\n', "unknown loss 'grpo-rnak'; choose one of: corpo, dpo, gopo, grpo, grpo-rank, plackett-luce, ppo", []),
        # a component option is checked before any directory, store or SFT model is made
        ('[loss]\nname = "grpo"\nkl_coeff = 0.1\n', "unknown option 'kl_coeff' for loss 'grpo'", []),
        ("[run]\n", "unknown option 'judge' for oracle 'ground-truth'", ["--oracle", "ground-truth", "--judge", "self"]),
    ],
)
def test_bad_config_is_one_line_error(tmp_path: Path, toml: str, message: str, args: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    proc = subprocess.run(rlaif_cmd("run", "--config", str(path), "--run-dir", str(tmp_path / "r"), *args),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("loss", ["grpo", "ppo", "dpo"])
def test_every_loss_runs_end_to_end(tiny: dict[str, Path], loss: str) -> None:
    run_dir = tiny["root"] / f"loss-{loss}"
    proc = run_cli(tiny, "run", "--config", str(tiny["config"]), "--run-dir", str(run_dir), "--loss", loss,
                   "--steps", "2", "--json")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["loss"] == loss and summary["steps"] == 2 and summary["final_accuracy"] is not None
    import csv

    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("loss")]
    assert len(rows) == 2 and all(r["loss"] not in ("", "nan") for r in rows)
    # Per-item results of every evaluation beside the run (eval_items = 8), for `rlaif eval --compare`.
    assert sorted(p.name for p in (run_dir / "eval").glob("*.jsonl")) == ["step-000000.jsonl", "step-000002.jsonl"]
    assert len((run_dir / "eval" / "step-000002.jsonl").read_text().splitlines()) == 8
    if loss == "ppo":  # the value head exists before the optimizer, so it trains from its zero init
        from safetensors.torch import load_file

        head = load_file(str(run_dir / "policy" / "value_head.safetensors"))
        assert any(float(t.abs().sum()) > 0 for t in head.values()), head


# --------------------------------------------------------------------------- ground truth only where declared
class PeekingOracle:
    """A throw-away oracle that keeps whatever benchmark it is handed and declares no
    need for ground truth."""

    name = "peeking"
    needs_context = False
    needs_reference = False

    def __init__(self, benchmark: object = None) -> None:
        self.benchmark = benchmark


class PeekingPlugin:
    @hookimpl
    def rlaif_register_oracles(self, register):  # type: ignore[no-untyped-def]
        register("peeking", f"{__name__}:PeekingOracle", description="test oracle")


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> object:
    from rlaif.plugins.benchmarks.video_world import VideoWorld

    return VideoWorld(root=str(tmp_path_factory.mktemp("world")), seed=0, n_sft=1, n_rl=2, n_test=0, progress=False)


def test_rankings_carry_the_score_range_their_oracle_declares() -> None:
    from rlaif.core.records import Ranking
    from rlaif.plugins.oracles.ground_truth import GroundTruthOracle
    from rlaif.train.rl import with_score_range

    scored = Ranking.from_scores("p", "ground-truth", [1.0, 0.0])
    assert with_score_range(scored, GroundTruthOracle).score_range == [0.0, 1.0]
    assert with_score_range(scored, PeekingOracle()).score_range is None  # declares none: an order only
    assert with_score_range(Ranking("p", "o", order=[1, 0]), GroundTruthOracle).score_range is None


def test_visible_prompt_hides_every_gold_field(small_world: object) -> None:
    from rlaif.core.records import PUBLIC_META_KEYS
    from rlaif.plugins.oracles.ground_truth import GroundTruthOracle
    from rlaif.train.rl import visible_prompt

    for prompt in small_world.prompts("rl"):  # type: ignore[attr-defined]
        shown = visible_prompt(prompt, PeekingOracle())
        assert shown.reference is None and set(shown.meta) <= PUBLIC_META_KEYS
        text = json.dumps(shown.to_dict())
        for caption in prompt.meta["clip_captions"]:
            assert caption not in text
        assert prompt.meta["gold_narrative"] not in text and "answer_words" not in text
        assert visible_prompt(prompt, GroundTruthOracle(small_world)) == prompt


def test_only_oracles_declaring_needs_reference_read_the_benchmark(small_world: object) -> None:
    from rlaif.core.config import ComponentChoice, RunConfig
    from rlaif.core.errors import OracleError
    from rlaif.core.records import Group, Rollout
    from rlaif.core.registry import Registry, load_plugins
    from rlaif.train.rl import build_oracle

    prompt = small_world.prompts("rl")[0]  # type: ignore[attr-defined]
    registry = Registry()
    registry.add_plugin(PeekingPlugin(), "peeking-test")
    config = RunConfig()
    config.components["oracle"] = ComponentChoice("peeking", {})
    peeking = build_oracle(registry, config, small_world)
    assert peeking.benchmark is not small_world
    assert len(peeking.benchmark.frames(prompt.video, 4)) == 4  # frames are for everyone
    # ... and a judge's training material: examples from no rl/test item, and a vocabulary
    assert peeking.benchmark.judge_focus_answers == small_world.judge_focus_answers  # type: ignore[attr-defined]
    assert callable(peeking.benchmark.judge_training_examples)
    for read in (lambda b: b.item_score(prompt, "red"), lambda b: b.narrative(prompt.video),
                 lambda b: b.prompts("rl")):
        with pytest.raises(OracleError, match="needs_reference"):
            read(peeking.benchmark)

    config.components["oracle"] = ComponentChoice("ground-truth", {})
    truth = build_oracle(load_plugins(), config, small_world)
    rollouts = [Rollout(prompt.prompt_id, 0, prompt.reference or ""), Rollout(prompt.prompt_id, 1, "no idea")]
    (ranking,) = truth.rank([Group(prompt, rollouts)])
    assert ranking.order == [0, 1] and ranking.scores == [1.0, 0.0]


# --------------------------------------------------------------------------- the run directory across kills
def variant(tiny: dict[str, Path], name: str, **run: int) -> Path:
    """The tiny run config with some ``[run]`` settings changed."""
    kept = [line for line in tiny["config"].read_text().splitlines(keepends=True) if line.split(" = ")[0] not in run]
    text = "".join(kept).replace("[run]\n", "[run]\n" + "".join(f"{k} = {v}\n" for k, v in run.items()), 1)
    path = tiny["root"] / f"{name}.toml"
    path.write_text(text)
    return path


def run_cli_killed(tiny: dict[str, Path], preamble: str, *args: str) -> None:
    """``rlaif ARGS`` in a process that ``preamble`` (Python, run first) makes SIGKILL
    itself at one exact point: a kill where a timer could not place it."""
    code = "import os, signal\n" + preamble + "\nfrom rlaif.cli.main import main; main()"
    env = {**os.environ, "RLAIF_CACHE": str(tiny["cache"]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def resume(tiny: dict[str, Path], run_dir: Path, config: Path | str, *args: str,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """``rlaif run --resume RUN_DIR`` giving the run's config again (a resume uses stored
    paths only when the command names them)."""
    return run_cli(tiny, "run", "--resume", str(run_dir), "--config", str(config), *args, check=check)


def stored_metrics(run_dir: Path) -> dict[int, dict[str, Any]]:
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        return dict(store.iter_metrics("main"))


@pytest.fixture(scope="module")
def finished(tiny: dict[str, Path]) -> tuple[Path, Path]:
    """A finished 4-step run and its config: checkpoints at steps 2 and 4, evaluations at
    0, 2 and 4. Tests copy it before changing it."""
    run_dir, config = tiny["root"] / "finished", variant(tiny, "finished", steps=4, eval_every=2)
    run_cli(tiny, "run", "--config", str(config), "--run-dir", str(run_dir), "--no-progress")
    return run_dir, config


def test_a_second_writer_is_refused_while_readers_keep_working(tiny: dict[str, Path]) -> None:
    run_dir = tiny["root"] / "live"
    config = variant(tiny, "live", steps=500, checkpoint_every=500)
    env = {**os.environ, "RLAIF_CACHE": str(tiny["cache"]), "OMP_NUM_THREADS": "1"}
    live = subprocess.Popen(rlaif_cmd("run", "--config", str(config), "--run-dir", str(run_dir), "--no-progress"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from rlaif.core.errors import StoreError
        from rlaif.core.store import RunStore

        deadline = time.time() + 400
        while time.time() < deadline and live.poll() is None:
            try:
                with RunStore(run_dir, readonly=True) as store:
                    if store.last_committed_step("main"):
                        break
            except StoreError:
                pass  # not created yet
            time.sleep(0.1)
        assert live.poll() is None, "the run ended before the test could run beside it"

        # A second writer, resuming or not, stops at once with one line naming the holder.
        for args in (["--resume", str(run_dir), "--config", str(config)],
                     ["--config", str(config), "--run-dir", str(run_dir)]):
            second = run_cli(tiny, "run", *args, "--no-progress", check=False)
            lines = second.stderr.strip().splitlines()
            assert second.returncode != 0 and len(lines) == 1, second.stderr[-3000:]
            assert f"in use by process {live.pid}" in lines[0], lines[0]

        # Readers do not take the lock.
        inspected = run_cli(tiny, "store", "inspect", str(run_dir), "--json")
        assert json.loads(inspected.stdout)
        exported = tiny["root"] / "live.jsonl"
        run_cli(tiny, "store", "export", str(run_dir), "--to", str(exported))
        assert exported.stat().st_size > 0
        assert live.poll() is None, "the run must still be live for the checks above to mean anything"
    finally:
        live.kill()
        live.wait()

    # SIGKILL released it: the kernel drops a dead process's flock.
    from rlaif.train.run_dir import lock_run_dir

    lock_run_dir(run_dir).release()


def test_a_run_that_failed_before_its_first_step_leaves_the_directory_reusable(tiny: dict[str, Path]) -> None:
    run_dir = tiny["root"] / "failed-start"
    not_a_policy = tiny["root"] / "not-a-policy"
    not_a_policy.mkdir()
    failed = run_cli(tiny, "run", "--config", str(tiny["config"]), "--run-dir", str(run_dir), "--policy",
                     str(not_a_policy), "--no-progress", check=False)
    assert failed.returncode != 0
    assert stored(run_dir)[2] is None  # the store and its config exist, no step was committed

    summary = json.loads(run_cli(tiny, "run", "--config", str(tiny["config"]), "--run-dir", str(run_dir),
                                 "--steps", "1", "--json").stdout.strip().splitlines()[-1])
    assert summary["steps"] == 1 and summary["sft_accuracy"] is not None
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        config = store.get_run("main").config  # type: ignore[union-attr]
    assert config["run"]["steps"] == 1 and config["policy"]["path"] != str(not_a_policy)
    assert stored(run_dir)[2] == 1


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tiny: dict[str, Path],
                                                                    finished: tuple[Path, Path]) -> None:
    run_dir, (source, config) = tiny["root"] / "damaged", finished
    shutil.copytree(source, run_dir)
    latest = run_dir / "checkpoints" / "step-000004"
    # Cloned: safetensors maps the file, and the file is about to be cut.
    original = {k: v.clone() for k, v in trainable(latest / "trainable.safetensors").items()}
    for name in ("trainable.safetensors", "optimizer.pt"):
        damaged = latest / name
        damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a cut write
        proc = resume(tiny, run_dir, config, "--no-progress")
        notes = [line for line in proc.stderr.splitlines() if "damaged checkpoint" in line]
        assert len(notes) == 1 and "step-000004" in notes[0] and "from step-000002" in notes[0], proc.stderr
        # Steps 3 and 4 were replayed from the store and step 4 saved again, whole.
        again = trainable(latest / "trainable.safetensors")
        for key in original:
            assert (again[key] - original[key]).abs().max() < 1e-6, key
    from rlaif.train.rl import read_checkpoint

    assert read_checkpoint(latest).step == 4  # its manifest matches every file
    assert stored(run_dir)[:2] == stored(source)[:2]


def test_resume_never_rewrites_the_metrics_of_committed_steps(tiny: dict[str, Path],
                                                              finished: tuple[Path, Path]) -> None:
    run_dir, (source, config) = tiny["root"] / "replayed", finished
    shutil.copytree(source, run_dir)
    before = stored_metrics(run_dir)
    assert set(before) == {0, 1, 2, 3, 4} and "eval/acc/all" in before[2] and "sample_s" in before[3]
    csv_before = (run_dir / "metrics.csv").read_text()
    # Killed after step 4 was committed and logged, before its checkpoint: 3 and 4 replay.
    shutil.rmtree(run_dir / "checkpoints" / "step-000004")
    resume(tiny, run_dir, config, "--no-progress")
    assert stored_metrics(run_dir) == before
    resume(tiny, run_dir, config, "--no-progress")  # a finished run
    after = stored_metrics(run_dir)
    assert after == before
    assert all(isinstance(v, (int, float)) for row in after.values() for v in row.values()), after
    assert (run_dir / "metrics.csv").read_text() == csv_before


def test_resume_computes_what_a_kill_left_missing(tiny: dict[str, Path]) -> None:
    config = variant(tiny, "missing", steps=2)
    # Killed before the step-0 evaluation: nothing committed, no SFT accuracy.
    run_dir = tiny["root"] / "no-sft-eval"
    run_cli_killed(tiny, "import rlaif.train.rl as rl\n"
                         "rl.evaluate = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)",
                   "run", "--config", str(config), "--run-dir", str(run_dir), "--no-progress")
    summary = json.loads(resume(tiny, run_dir, config, "--json").stdout.strip().splitlines()[-1])
    assert summary["sft_accuracy"] is not None and summary["final_accuracy"] is not None
    assert "eval/acc/all" in stored_metrics(run_dir)[0]
    assert (run_dir / "eval" / "step-000000.jsonl").exists()

    # Killed between step 1's commit and its metrics: the replay logs them (no timings: none were measured).
    run_dir = tiny["root"] / "no-step-metrics"
    run_cli_killed(tiny, "import rlaif.train.rl as rl\nlog = rl.MetricsLog.log\n"
                         "def dying(self, step, metrics):\n"
                         "    if step == 1:\n        os.kill(os.getpid(), signal.SIGKILL)\n"
                         "    log(self, step, metrics)\n"
                         "rl.MetricsLog.log = dying",
                   "run", "--config", str(config), "--run-dir", str(run_dir), "--no-progress")
    assert stored(run_dir)[2] == 1 and 1 not in stored_metrics(run_dir)
    resume(tiny, run_dir, config, "--no-progress")
    metrics = stored_metrics(run_dir)
    assert "loss" in metrics[1] and "sample_s" not in metrics[1] and "sample_s" in metrics[2]


def test_a_kill_while_saving_the_policy_leaves_no_partial_policy(tiny: dict[str, Path]) -> None:
    run_dir, config = tiny["root"] / "killed-saving", variant(tiny, "saving", steps=2)
    run_cli_killed(tiny, "from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM\n"
                         "TinyVideoLM._save_base_lm = lambda self, d: os.kill(os.getpid(), signal.SIGKILL)",
                   "run", "--config", str(config), "--run-dir", str(run_dir), "--no-progress")
    # The adapter and projector were written before the kill, into a temp dir, not policy/.
    assert not (run_dir / "policy").exists(), sorted(p.name for p in (run_dir / "policy").rglob("*"))
    resume(tiny, run_dir, config, "--no-progress")
    assert (run_dir / "policy" / "policy.json").exists() and (run_dir / "policy" / "lm").is_dir()
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]  # stale temp dirs cleaned on start


# --------------------------------------------------------------------------- config values checked up front
def test_every_meaningless_value_is_one_error_before_anything_is_created(tmp_path: Path) -> None:
    """``lr = -1`` written as an integer, ``temperature = 0``, ``inner_epochs = 0``,
    ``checkpoint_every = 0`` and a negative ``kl_coef``: one line naming each, exit 2,
    and no run directory, store or model made."""
    path = tmp_path / "bad.toml"
    path.write_text("[run]\nlr = -1\ntemperature = 0\ninner_epochs = 0\ncheckpoint_every = 0\n"
                    f'[policy]\nname = "tiny-video-lm"\npath = "{tmp_path / "no-policy"}"\n'
                    '[loss]\nname = "grpo"\nkl_coef = -0.5\n')
    env = {**os.environ, "RLAIF_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(rlaif_cmd("run", "--config", str(path), "--run-dir", str(tmp_path / "r"), "--no-progress"),
                          capture_output=True, text=True, timeout=300, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    for field in ("run.lr must be > 0, got -1.0", "run.temperature must be > 0", "run.inner_epochs must be >= 1",
                  "run.checkpoint_every must be >= 1", "loss.kl_coef must be >= 0"):
        assert field in lines[0], lines[0]
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- a judge that fails
class CannedJudge:
    """A real OpenAI-compatible endpoint on 127.0.0.1 (http.server in a thread). The
    first path segment picks what it does: ``/ok/v1`` answers every listwise request with
    label log-probs (A best), ``/fail500/v1`` HTTP 500, ``/garbage/v1`` a body that is not
    JSON, ``/hang/v1`` nothing until the test ends. Keeps each request's path and its
    Authorization header."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.seen: list[tuple[str, str | None]] = []
        self.release = threading.Event()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                behaviour = self.path.strip("/").split("/")[0]
                judge.seen.append((behaviour, self.headers.get("Authorization")))
                if behaviour == "hang":
                    judge.release.wait(300)
                    return
                if behaviour == "fail500":
                    self._send(500, b'{"error": "overloaded"}')
                elif behaviour == "garbage":
                    self._send(200, b"<html>this is { not json")
                else:
                    top = [{"token": label, "logprob": -float(i)} for i, label in enumerate("ABCDEFGH")]
                    choice = {"index": 0, "message": {"role": "assistant", "content": "A"}, "finish_reason": "stop",
                              "logprobs": {"content": [{"token": "A", "logprob": 0.0, "top_logprobs": top}]}}
                    self._send(200, json.dumps({"object": "chat.completion", "choices": [choice]}).encode())

            def _send(self, code: int, payload: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{behaviour}/v1"

    def headers(self, behaviour: str) -> list[str | None]:
        return [auth for path, auth in self.seen if path == behaviour]


@pytest.fixture
def canned_judge() -> Any:
    judge = CannedJudge()
    judge.thread.start()
    try:
        yield judge
    finally:
        judge.release.set()
        judge.httpd.shutdown()
        judge.httpd.server_close()


def judge_config(tiny: dict[str, Path], name: str, steps: int = 1, **oracle: Any) -> Path:
    """The tiny run config judged by ``llm-judge`` without narratives; the endpoint is
    given on the command line."""
    options = "".join(f"{k} = {json.dumps(v)}\n" for k, v in oracle.items())
    text = tiny["config"].read_text().replace("steps = 6\n", f"steps = {steps}\n", 1)
    text = text.replace('[oracle]\nname = "ground-truth"\n', f'[oracle]\nname = "llm-judge"\ncontext = "none"\n{options}')
    path = tiny["root"] / f"{name}.toml"
    path.write_text(text)
    return path


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [("refused", "Connection refused"), ("fail500", "HTTP 500"), ("garbage", "malformed response"),
     ("hang", "step_timeout (3 s)")],
)
def test_a_judge_that_never_answers_stops_the_run(tiny: dict[str, Path], canned_judge: CannedJudge,
                                                  behaviour: str, why: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1" if behaviour == "refused" else canned_judge.url(behaviour)
    run_dir = tiny["root"] / f"judge-{behaviour}"
    bound = {"step_timeout": 3} if behaviour == "hang" else {}  # the others fail fast by themselves
    config = judge_config(tiny, f"judge-{behaviour}", steps=3, retries=1, **bound)
    proc = run_cli(tiny, "run", "--config", str(config), "--run-dir", str(run_dir), "--judge-url", url,
                   "--no-progress", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = error_line(proc)
    assert proc.stderr.strip().splitlines() == [line], proc.stderr  # one line, no warning or traceback around it
    assert "oracle llm-judge at " + url in line and "4 of 4 groups at step 1" in line, line
    assert why in line and f"--resume {run_dir}" in line, line
    assert "done" not in proc.stdout
    assert stored(run_dir)[2] is None  # nothing stored for the failed step: --resume judges it again
    assert not list((run_dir / "checkpoints").glob("step-*"))


def test_oracle_failure_watch_counts_steps_and_a_window() -> None:
    from rlaif.core.errors import OracleError
    from rlaif.core.records import Ranking
    from rlaif.train.rl import OracleFailureWatch, StepData

    def step(n: int, failed: int, groups: int = 4) -> StepData:
        rankings = [Ranking(f"p{i}", "o", failure="boom" if i < failed else None, order=[] if i < failed else [0, 1])
                    for i in range(groups)]
        return StepData(n, [], rankings)

    watch = OracleFailureWatch(max_share=0.5, window=3)
    for n, failed in ((1, 1), (2, 2), (3, 3)):  # 1/4, 3/8, 6/12: never more than half
        watch.check(step(n, failed), object(), Path("r"))
    with pytest.raises(OracleError, match=r"2 of 4 groups at step 4 \(7 of 12 over the last 3 steps"):
        watch.check(step(4, 2), object(), Path("r"))  # steps 2-4: 7/12
    assert watch.total_failed == 8

    lenient = OracleFailureWatch(max_share=0.9, window=5)
    lenient.check(step(1, 0), object(), Path("r"))
    with pytest.raises(OracleError, match="4 of 4 groups at step 2"):  # a step with no ranking at all
        lenient.check(step(2, 4), object(), Path("r"))
    never = OracleFailureWatch(max_share=1.0, window=1)
    never.check(step(1, 4), object(), Path("r"))
    assert never.total_failed == 4


def test_resume_judges_the_failed_step_again_with_the_users_endpoint_and_key(
        tiny: dict[str, Path], canned_judge: CannedJudge, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_TEST_STORED_KEY", "stored-secret")
    monkeypatch.setenv("RLAIF_TEST_USER_KEY", "user-key")
    run_dir = tiny["root"] / "judge-resume"
    config = str(judge_config(tiny, "judge-resume", steps=1))
    failed = run_cli(tiny, "run", "--config", config, "--run-dir", str(run_dir), "--judge-url",
                     canned_judge.url("fail500"), "--api-key-env", "RLAIF_TEST_STORED_KEY", "--no-progress",
                     check=False)
    assert failed.returncode == 1 and "HTTP 500" in error_line(failed)
    assert stored(run_dir)[2] is None

    # The stored endpoint and key variable were flags, not in the file: --config confirms
    # the paths only, and the run stops before sending anything.
    sent = len(canned_judge.seen)
    for extra in ([], ["--judge-url", canned_judge.url("ok")]):
        refused = run_cli(tiny, "run", "--resume", str(run_dir), "--config", config, *extra, check=False)
        line = error_line(refused)
        assert refused.returncode == 2 and "oracle.api_key_env = 'RLAIF_TEST_STORED_KEY' (secret name)" in line, line
        assert ("oracle.judge_url" in line) == (not extra), line
        assert "--trust-stored-config" in line
    assert len(canned_judge.seen) == sent

    # Flags that would change the stored run are named, not ignored.
    for flag, value in (("--lr", "5"), ("--oracle", "ground-truth"), ("--group-size", "4"), ("--seed", "3")):
        changed = run_cli(tiny, "run", "--resume", str(run_dir), "--trust-stored-config", flag, value, check=False)
        assert changed.returncode == 2 and flag in error_line(changed), changed.stderr[-3000:]
    assert len(canned_judge.seen) == sent

    # The judge fixed: step 1 is judged again, --steps 2 extends the run, and the key sent
    # is the one in the variable named on this command.
    proc = run_cli(tiny, "run", "--resume", str(run_dir), "--config", config, "--judge-url", canned_judge.url("ok"),
                   "--api-key-env", "RLAIF_TEST_USER_KEY", "--steps", "2", "--json")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["oracle_calls"] == 2 and summary["groups_failed"] == 0
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        assert store.steps("main", kind="rankings", oracle="llm-judge") == [1, 2]
        assert store.get_run("main").config["run"]["steps"] == 2  # type: ignore[union-attr]  # the next resume runs to 2
    assert canned_judge.headers("ok") and set(canned_judge.headers("ok")) == {"Bearer user-key"}
    assert all("stored-secret" not in (auth or "") for path, auth in canned_judge.seen if path != "fail500")


def test_ctrl_c_stops_a_run_waiting_on_a_hanging_judge(tiny: dict[str, Path], canned_judge: CannedJudge) -> None:
    """Default timeouts (30 s per attempt, 3 attempts): Ctrl-C must not wait for them."""
    run_dir = tiny["root"] / "judge-ctrl-c"
    config = judge_config(tiny, "judge-ctrl-c", steps=2)
    env = {**os.environ, "RLAIF_CACHE": str(tiny["cache"]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        rlaif_cmd("run", "--config", str(config), "--run-dir", str(run_dir), "--judge-url", canned_judge.url("hang"),
                  "--no-progress"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell may start background jobs with SIGINT ignored; Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and not canned_judge.headers("hang"):
            time.sleep(0.1)
        assert proc.poll() is None and canned_judge.headers("hang"), "the run never asked the judge"
        time.sleep(1.0)  # well inside the request, and its 30 s timeout
        proc.send_signal(signal.SIGINT)
        started = time.time()
        try:
            _, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("Ctrl-C did not stop the run within 20 s")
        assert time.time() - started < 20
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "interrupted" in stderr and f"--resume {run_dir}" in stderr, stderr[-3000:]
    from rlaif.core.store import RunStore

    with RunStore(run_dir, readonly=True) as store:  # opens cleanly, holds the run and no partial step
        assert store.get_run("main") is not None
        assert store.last_committed_step("main") is None
        assert store.steps("main", kind="rollouts") == store.steps("main", kind="rankings") == []
