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

    run_cli(tiny, "run", "--resume", str(killed), "--no-progress")
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
    # decoding), which Adam's normalised steps can grow to ~1e-5 over six steps. Each step
    # moves a weight by up to lr = 2e-3, so other data would differ by ~1e-3.
    for name in final:
        assert (final[name] - replayed[name]).abs().max() < 1e-4, name
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
        ('[loss]\nname = "grpo-rnak"\n', "unknown loss 'grpo-rnak'; choose one of: dpo, grpo, grpo-rank, ppo", []),
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
    for read in (lambda b: b.item_score(prompt, "red"), lambda b: b.narrative(prompt.video),
                 lambda b: b.prompts("rl")):
        with pytest.raises(OracleError, match="needs_reference"):
            read(peeking.benchmark)

    config.components["oracle"] = ComponentChoice("ground-truth", {})
    truth = build_oracle(load_plugins(), config, small_world)
    rollouts = [Rollout(prompt.prompt_id, 0, prompt.reference or ""), Rollout(prompt.prompt_id, 1, "no idea")]
    (ranking,) = truth.rank([Group(prompt, rollouts)])
    assert ranking.order == [0, 1] and ranking.scores == [1.0, 0.0]
