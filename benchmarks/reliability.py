"""Reliability of ``rlaif run`` and the store, measured end to end with the real CLI.

Three parts, each a row per case in one table:

1. **Random SIGKILLs with resume.** A tiny run (36 steps, 4 prompts x G = 4, the tiny
   video world and short SFT the tests use, the ``ground-truth`` oracle) is killed at
   random moments and resumed (``--resume DIR --config RUN.toml``; a directory the kill
   left with no run in it is started again with the same command), several kills per run,
   across several runs. Each finished run is compared record by record, through the
   store's API, with an uninterrupted run of the same config: rollouts and rankings lost,
   duplicated or differing, stored metrics (keys and values, timings aside), duplicated
   rows in ``metrics.csv`` and the final weights (within ``--weight-tol``).
2. **Damaged inputs.** A truncated ``data.mdb``, flipped bytes in a record, a NaN
   log-prob, damaged and missing world mp4s, a user's unreadable video, a truncated latest
   checkpoint, meaningless config values, a second writer on a live run, a resume that
   changes a flag, and a handed-over run directory with a stored ``api_key_env``: each
   with its expected exit code and one-line message.
3. **Judge failures** against a real HTTP server on 127.0.0.1: a refused port, HTTP 500,
   a body that is not JSON, a judge that hangs (``step_timeout = 3``), and Ctrl-C while
   it hangs.

Each row shows the expected outcome, the observed exit code, the first line of stderr and
whether stderr was one line, and pass/fail; the script exits 1 if any row fails.

Usage: ``python benchmarks/reliability.py [--kills 20] [--quick] [--json] [--workdir DIR]``.
Child processes run with ``OMP_NUM_THREADS=1``. The tiny world and SFT policy are built
once into ``--workdir`` (a temp dir by default) and reused when it already holds them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RUN = "main"
STEPS = 36
WORLD = {"n_sft": 24, "n_rl": 24, "n_test": 12, "min_frames": 16, "max_frames": 24, "progress": False}
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RLAIF_DEBUG": "0", "COLUMNS": "200"}


@dataclass
class Row:
    part: str
    case: str
    expected: str
    rc: int | None = None
    first_line: str = ""
    one_line: bool | None = None
    passed: bool = False
    note: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- child processes
class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cache = work / "cache"
        self.env = {**os.environ, "RLAIF_CACHE": str(self.cache), **CHILD_ENV}

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rlaif.cli.main", *args]

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, env=self.env, timeout=timeout)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.cmd(*args), env=self.env, text=True, **kw)


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def observe(row: Row, proc: subprocess.CompletedProcess[str] | None, rc: int | None = None,
            stderr: str | None = None) -> list[str]:
    """Fill the row's exit code, first stderr line and one-line flag; return stderr's lines."""
    lines = stderr_lines(proc.stderr if proc is not None else (stderr or ""))
    if proc is not None and not lines and proc.returncode != 0:
        lines = stderr_lines(proc.stdout)  # some commands print their error on stdout
    row.rc = proc.returncode if proc is not None else rc
    row.first_line = lines[0] if lines else ""
    row.one_line = len(lines) == 1
    return lines


def one_line_error(row: Row, proc: subprocess.CompletedProcess[str], codes: tuple[int, ...], *needles: str) -> None:
    lines = observe(row, proc)
    missing = [n for n in needles if n not in row.first_line]
    row.passed = proc.returncode in codes and row.one_line is True and row.first_line.startswith("error:") and not missing
    if missing:
        row.note = "missing: " + ", ".join(repr(n) for n in missing)
    elif len(lines) > 1:
        row.note = f"{len(lines)} stderr lines; last: {lines[-1][:120]}"


# --------------------------------------------------------------------------- the tiny world and configs
def setup(work: Path) -> dict[str, Path]:
    """The tests' tiny world, a 6-step SFT and the 36-step run config (built once)."""
    cache, world_root, sft = work / "cache", work / "world", work / "sft"
    os.environ["RLAIF_CACHE"] = str(cache)
    done = work / "setup.done"
    if not done.exists():
        from rlaif.plugins.benchmarks.video_world import VideoWorld
        from rlaif.train.sft import run_sft

        world = VideoWorld(root=str(world_root), seed=0, **WORLD)
        run_sft(sft, benchmark=world, seed=0, max_steps=6, progress=False)
        done.write_text("ok\n")
    config = work / "run.toml"
    config.write_text(run_toml(world_root, sft, steps=STEPS, checkpoint_every=6))
    return {"world": world_root, "sft": sft, "config": config}


def run_toml(world_root: Path, sft: Path, oracle: str = '[oracle]\nname = "ground-truth"\n', **run: Any) -> str:
    settings = {"steps": STEPS, "prompts_per_step": 4, "group_size": 4, "max_new_tokens": 8, "eval_items": 8,
                "checkpoint_every": 6, "lr": 0.002, **run}
    bench = "\n".join(f"{k} = {json.dumps(v)}" for k, v in WORLD.items())
    return ("[run]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
            + f'[benchmark]\nname = "video-world"\nroot = "{world_root}"\n{bench}\n'
            + f'[policy]\nname = "tiny-video-lm"\npath = "{sft}"\n' + oracle + '[loss]\nname = "grpo-rank"\n')


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- reading a run back
def is_timing(key: str) -> bool:
    return key.endswith("_s") or key.endswith("_per_s") or "seconds" in key or key.startswith("time")


def read_run(run_dir: Path) -> dict[str, Any]:
    """Everything a run stored, keyed so two runs compare record by record."""
    from rlaif.core.store import RunStore

    out: dict[str, Any] = {"rollouts": {}, "rankings": {}, "metrics": {}, "ident": []}
    with RunStore(run_dir, readonly=True) as store:
        out["last"] = store.last_committed_step(RUN)
        out["committed"] = store.steps(RUN, kind="committed")
        for step in out["committed"]:
            for i, r in enumerate(store.iter_shard("rollouts", RUN, step)):
                d = r.to_dict()
                out["rollouts"][(step, i)] = d
                out["ident"].append(("rollout", step, d["prompt_id"], d["index"]))
            for oracle in store.oracles(RUN):
                for i, k in enumerate(store.iter_shard("rankings", RUN, step, oracle=oracle)):
                    d = k.to_dict()
                    out["rankings"][(step, oracle, i)] = d
                    out["ident"].append(("ranking", step, oracle, d["prompt_id"]))
        out["metrics"] = dict(store.iter_metrics(RUN))
        out["verify_ok"] = store.verify().ok
    csv = run_dir / "metrics.csv"
    steps = []
    if csv.exists():
        import csv as csvmod

        steps = [r.get("step") for r in csvmod.DictReader(csv.open())]
    out["csv_dup_rows"] = len(steps) - len(set(steps))
    return out


def final_weights(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / f"step-{STEPS:06d}" / "trainable.safetensors"))


def compare(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    numbers: dict[str, Any] = {"records": 0, "lost": 0, "duplicated": 0, "differing": 0, "metric_keys": 0,
                               "metric_values": 0}
    for kind in ("rollouts", "rankings"):
        a, b = ref[kind], got[kind]
        numbers["records"] += len(a)
        numbers["lost"] += len(a.keys() - b.keys())
        numbers["duplicated"] += len(b.keys() - a.keys())
        numbers["differing"] += sum(1 for k in a.keys() & b.keys() if a[k] != b[k])
    numbers["duplicated"] += len(got["ident"]) - len(set(got["ident"])) + got["csv_dup_rows"]
    for step in ref["metrics"].keys() | got["metrics"].keys():
        a = {k: v for k, v in ref["metrics"].get(step, {}).items() if not is_timing(k)}
        b = {k: v for k, v in got["metrics"].get(step, {}).items() if not is_timing(k)}
        numbers["metric_keys"] += len(a.keys() ^ b.keys())
        for k in a.keys() & b.keys():
            x, y = a[k], b[k]
            same = (x == y) or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
            numbers["metric_values"] += 0 if same else 1
    return numbers


# --------------------------------------------------------------------------- part 1: SIGKILL and resume
def wait_for(proc: subprocess.Popen[str], seconds: float) -> bool:
    """Sleep up to ``seconds``; True if the process is still running after them."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        return True


def has_run(run_dir: Path) -> bool:
    from rlaif.core.errors import RlaifError
    from rlaif.core.store import RunStore

    if not (run_dir / "store.lmdb").exists():
        return False
    try:
        with RunStore(run_dir, readonly=True) as store:
            return store.get_run(RUN) is not None
    except RlaifError:
        return False


def last_step(run_dir: Path) -> int | None:
    from rlaif.core.errors import RlaifError
    from rlaif.core.store import RunStore

    try:
        with RunStore(run_dir, readonly=True) as store:
            return store.last_committed_step(RUN)
    except RlaifError:
        return None


def kills(bench: Bench, paths: dict[str, Path], n_kills: int, seed: int, weight_tol: float,
          log: Any) -> tuple[list[Row], dict[str, Any]]:
    rng = random.Random(seed)
    config = paths["config"]
    ref_dir = bench.work / "kill-ref"
    shutil.rmtree(ref_dir, ignore_errors=True)
    started = time.time()
    proc = bench.run("run", "--config", str(config), "--run-dir", str(ref_dir), "--no-progress")
    ref_wall = time.time() - started
    rows: list[Row] = []
    if proc.returncode != 0:
        row = Row("kill", "uninterrupted reference run", "exit 0")
        observe(row, proc)
        return [row], {"kills": 0}
    ref = read_run(ref_dir)
    ref_weights = final_weights(ref_dir)
    log(f"reference run: {ref_wall:.0f} s for {STEPS} steps")
    # Kill times: a quarter of the kills land while a process starts (imports, policy,
    # step-0 evaluation when missing; its length is learned as segments run), the rest
    # at a random point after a random step's commit. Time per step from the reference.
    startup = min(ref_wall * 0.5, 20.0)
    per_step = (ref_wall - startup) / STEPS

    totals = {"kills": 0, "runs": 0, "records": 0, "lost": 0, "duplicated": 0, "differing": 0, "metric_keys": 0,
              "metric_values": 0, "max_weight_diff": 0.0, "resumes_failed": 0, "killed_at": []}
    left, run_no = n_kills, 0
    per_run = max(1, min(5, n_kills))
    while left > 0 and run_no < n_kills + 3:
        run_no += 1
        run_dir = bench.work / f"kill-{run_no}"
        shutil.rmtree(run_dir, ignore_errors=True)
        planned, killed_here, segments, problems = min(per_run, left), [], 0, []
        finished = False
        while not finished:
            segments += 1
            resuming = has_run(run_dir)
            args = (["run", "--resume", str(run_dir), "--config", str(config), "--no-progress"] if resuming
                    else ["run", "--config", str(config), "--run-dir", str(run_dir), "--no-progress"])
            before = last_step(run_dir) if resuming else None
            p = bench.popen(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if len(killed_here) < planned and (before or 0) < STEPS - 1:
                launched = time.time()
                if rng.random() < 0.25:  # while starting: imports, policy load, step-0 evaluation
                    alive = wait_for(p, rng.uniform(0.3, startup))
                else:  # inside a step: once a random later step is committed, up to 1.5 steps more
                    target = rng.randint((before or 0) + 1, STEPS - 1)
                    while p.poll() is None and (last_step(run_dir) or 0) < target:
                        time.sleep(0.05)
                    startup = 0.5 * startup + 0.5 * max(1.0, time.time() - launched
                                                        - per_step * (target - (before or 0)))
                    alive = wait_for(p, rng.uniform(0.0, 1.5 * per_step))
                if alive:
                    p.send_signal(signal.SIGKILL)
                    p.communicate()
                    after = last_step(run_dir)
                    killed_here.append((round(time.time() - launched, 1), before, after))
                    continue
            _, err = p.communicate(timeout=1800)
            if p.returncode != 0:
                problems.append(f"segment {segments} exit {p.returncode}: {(stderr_lines(err) or [''])[0][:160]}")
                totals["resumes_failed"] += 1
                if segments > planned + 3:
                    break
                continue
            finished = True
        left -= len(killed_here)
        totals["kills"] += len(killed_here)
        totals["runs"] += 1
        totals["killed_at"].extend(killed_here)
        row = Row("kill", f"run {run_no}: {len(killed_here)} SIGKILLs, resumed",
                  "0 lost / duplicated / differing; weights equal")
        row.rc = 0 if finished else 1
        if finished:
            got = read_run(run_dir)
            numbers = compare(ref, got)
            weights = final_weights(run_dir)
            diff = max(float((weights[k] - ref_weights[k]).abs().max()) for k in ref_weights) \
                if weights.keys() == ref_weights.keys() else math.inf
            numbers["max_weight_diff"] = diff
            numbers["verify_ok"] = got["verify_ok"]
            for key in ("records", "lost", "duplicated", "differing", "metric_keys", "metric_values"):
                totals[key] += numbers[key]
            totals["max_weight_diff"] = max(totals["max_weight_diff"], diff)
            row.numbers = {**numbers, "killed_at": killed_here}
            row.passed = (not problems and got["verify_ok"] and diff <= weight_tol
                          and all(numbers[k] == 0 for k in ("lost", "duplicated", "differing", "metric_keys",
                                                            "metric_values")))
            row.first_line = (f"{numbers['records']} records: lost {numbers['lost']}, dup {numbers['duplicated']}, "
                              f"diff {numbers['differing']}; metrics keys/values {numbers['metric_keys']}/"
                              f"{numbers['metric_values']}; max |dw| {diff:.1e}")
        row.one_line = None
        row.note = "; ".join(problems + ["killed at steps (before->after): "
                                         + ", ".join(f"{b}->{a}" for _, b, a in killed_here)])
        rows.append(row)
        log(f"{row.case}: {'pass' if row.passed else 'FAIL'} {row.first_line} {row.note}")
    totals["ref_wall_s"] = round(ref_wall, 1)
    return rows, totals


# --------------------------------------------------------------------------- part 2: damaged inputs
def copy_run(src: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    return dest


def flip_record(run_dir: Path, step: int, prompt_index: int, index: int) -> int:
    """Flip one byte in the middle of every copy of one rollout's stored value in data.mdb."""
    import lmdb

    from rlaif.core.store import keys as K

    path = run_dir / "store.lmdb"
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16)
    with env.begin() as txn:
        raw = bytes(txn.get(K.rollout_key(RUN, step, prompt_index, index), db=env.open_db(b"rollouts", txn=txn)))
    env.close()
    data = bytearray((path / "data.mdb").read_bytes())
    found, at = 0, data.find(raw)
    while at != -1:
        data[at + len(raw) // 2] ^= 0x20
        found += 1
        at = data.find(raw, at + len(raw))
    (path / "data.mdb").write_bytes(bytes(data))
    return found


def put_nan_logprob(run_dir: Path, step: int, prompt_index: int, index: int) -> None:
    """A rollout with a NaN log-prob that got in anyway (an older rlaif, a hand-made import)."""
    from rlaif.core.store import RunStore
    from rlaif.core.store import keys as K
    from rlaif.core.store.codec import encode_record, seal

    with RunStore(run_dir) as store:
        old = store.get_rollout(RUN, step, prompt_index, index)
        assert old is not None
        bad = replace(old, logprobs=[math.nan, *old.logprobs[1:]])
        key = K.rollout_key(RUN, step, prompt_index, index)
        value = seal(key, encode_record(bad))
        store._write(lambda txn: txn.put(key, value, db=store._db("rollouts")))


class CannedJudge:
    """An OpenAI-compatible endpoint on 127.0.0.1 whose first path segment picks what it
    does: ``ok`` (label log-probs, A best), ``fail500``, ``garbage`` (not JSON), ``hang``."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.release = threading.Event()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                behaviour = self.path.strip("/").split("/")[0]
                judge.seen.append(behaviour)
                if behaviour == "hang":
                    judge.release.wait(600)
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
        self.thread.start()

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{behaviour}/v1"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def judge_toml(paths: dict[str, Path], steps: int, **oracle: Any) -> str:
    options = "".join(f"{k} = {json.dumps(v)}\n" for k, v in oracle.items())
    return run_toml(paths["world"], paths["sft"], oracle=f'[oracle]\nname = "llm-judge"\ncontext = "none"\n{options}',
                    steps=steps)


def damaged(bench: Bench, paths: dict[str, Path], judge: CannedJudge, log: Any) -> list[Row]:
    work, rows = bench.work, []
    fin_config = write(work / "fin.toml", run_toml(paths["world"], paths["sft"], steps=4, checkpoint_every=2,
                                                   eval_every=2))
    fin = work / "fin"
    if not (fin / "checkpoints" / "step-000004" / "manifest.json").exists():
        shutil.rmtree(fin, ignore_errors=True)
        proc = bench.run("run", "--config", str(fin_config), "--run-dir", str(fin), "--no-progress")
        if proc.returncode != 0:
            row = Row("damage", "finished 4-step run to damage", "exit 0")
            observe(row, proc)
            return [row]

    def add(row: Row) -> None:
        rows.append(row)
        log(f"{row.case}: {'pass' if row.passed else 'FAIL'} rc={row.rc} {row.first_line[:140]} {row.note}")

    # Truncated data.mdb: every reader and resume stop with one line.
    cut = copy_run(fin, work / "d-truncated")
    data = cut / "store.lmdb" / "data.mdb"
    os.truncate(data, 3 * 4096)
    for name, args in (("inspect", ["store", "inspect", str(cut)]),
                       ("export", ["store", "export", str(cut), "--to", str(work / "d-truncated.jsonl")]),
                       ("verify", ["store", "verify", str(cut)]),
                       ("resume", ["run", "--resume", str(cut), "--config", str(fin_config), "--no-progress"])):
        row = Row("damage", f"truncated data.mdb: {name}", "exit 1, one line: error ... truncated ... backup")
        one_line_error(row, bench.run(*args), (1,), "truncated", str(data))
        add(row)

    # Flipped bytes in one rollout of step 4, whose checkpoint is gone: resume must replay it.
    flipped = copy_run(fin, work / "d-flipped")
    shutil.rmtree(flipped / "checkpoints" / "step-000004")
    copies = flip_record(flipped, 4, 0, 1)
    at = "step=4 prompt_index=0 index=1"
    row = Row("damage", "flipped bytes: verify", "exit 1, 'damaged: ... step=4 prompt_index=0 index=1' listed")
    proc = bench.run("store", "verify", str(flipped))
    observe(row, proc)
    listed = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("damaged: ")]
    row.first_line = listed[0] if listed else row.first_line
    row.passed = proc.returncode == 1 and len(listed) == 1 and at in listed[0]
    row.note = f"{copies} copy(ies) of the value flipped; {len(listed)} damaged line(s)"
    add(row)
    for name, args, codes in (
            ("resume", ["run", "--resume", str(flipped), "--config", str(fin_config), "--no-progress"], (1,)),
            ("export", ["store", "export", str(flipped), "--to", str(work / "d-flipped.jsonl")], (1,))):
        row = Row("damage", f"flipped bytes: {name}", f"exit 1, one line naming {at}")
        one_line_error(row, bench.run(*args), codes, at)
        add(row)
    row = Row("damage", "flipped bytes: inspect", "one-line error, or exit 0 (inspect reads keys, not values)")
    proc = bench.run("store", "inspect", str(flipped))
    lines = observe(row, proc)
    row.passed = proc.returncode == 0 or (proc.returncode == 1 and row.one_line is True)
    row.note = "exit 0: counts keys; `store verify` is what reads every value" if proc.returncode == 0 else ""
    if proc.returncode == 0:
        row.first_line, row.one_line = (stderr_lines(proc.stdout) or [""])[0], None
    del lines
    add(row)

    # A NaN log-prob stored anyway.
    nan = copy_run(fin, work / "d-nan")
    shutil.rmtree(nan / "checkpoints" / "step-000004")
    put_nan_logprob(nan, 4, 0, 1)
    row = Row("damage", "NaN log-prob: verify", "exit 1, 'damaged: ... log-prob 0 is nan' listed")
    proc = bench.run("store", "verify", str(nan))
    observe(row, proc)
    listed = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("damaged: ")]
    row.first_line = listed[0] if listed else row.first_line
    row.passed = proc.returncode == 1 and len(listed) == 1 and "log-prob 0 is nan" in listed[0] and at in listed[0]
    add(row)
    row = Row("damage", "NaN log-prob: resume", "exit 1, one line: log-prob 0 is nan")
    one_line_error(row, bench.run("run", "--resume", str(nan), "--config", str(fin_config), "--no-progress"), (1,),
                   "log-prob 0 is nan")
    add(row)

    # World mp4s: one garbage, one deleted, both read by step 1: re-rendered, same frames.
    rows_world = world_videos(bench, paths, log)
    for row in rows_world:
        add(row)

    # A user's unreadable video (video-qa benchmark).
    videos = work / "user-videos"
    shutil.rmtree(videos, ignore_errors=True)
    videos.mkdir()
    (videos / "mine.mp4").write_bytes(random.Random(1).randbytes(20000))
    ann = write(work / "user-qa.jsonl", json.dumps({"id": "q1", "video": "mine", "question": "what moves?",
                                                    "answer": "a circle", "split": "test"}) + "\n")
    qa = write(work / "user-qa.toml", f'[benchmark]\nname = "video-qa"\nvideos = "{videos}"\nannotations = "{ann}"\n'
                                      f'[policy]\nname = "tiny-video-lm"\npath = "{paths["sft"]}"\n')
    row = Row("damage", "user's unreadable video: eval", "exit 1, one line naming the file")
    one_line_error(row, bench.run("eval", "--config", str(qa), "--no-baselines"), (1,), str(videos / "mine.mp4"))
    add(row)

    # A truncated latest checkpoint: a note naming it, the previous one used, exit 0.
    ck = copy_run(fin, work / "d-checkpoint")
    target = ck / "checkpoints" / "step-000004" / "trainable.safetensors"
    from safetensors.torch import load_file

    original = {k: v.clone() for k, v in load_file(str(target)).items()}
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    row = Row("damage", "truncated latest checkpoint: resume", "exit 0, one note: damaged checkpoint step-000004 "
                                                               "... from step-000002; weights equal")
    proc = bench.run("run", "--resume", str(ck), "--config", str(fin_config), "--no-progress")
    lines = observe(row, proc)
    notes = [line for line in lines if "damaged checkpoint" in line]
    again = load_file(str(target)) if proc.returncode == 0 else {}
    diff = max((float((again[k] - original[k]).abs().max()) for k in original), default=math.inf) \
        if again.keys() == original.keys() else math.inf
    row.passed = (proc.returncode == 0 and len(notes) == 1 and "step-000004" in notes[0]
                  and "from step-000002" in notes[0] and diff < 1e-6)
    row.first_line = notes[0] if notes else row.first_line
    row.note = f"max |dw| {diff:.1e}; {len(lines)} stderr line(s)"
    add(row)

    # Meaningless config values: exit 2, one line, no run directory.
    for name, setting in (("lr = -1 (integer)", {"lr": -1}), ("temperature = 0", {"temperature": 0}),
                          ("checkpoint_every = 0", {"checkpoint_every": 0}), ("inner_epochs = 0", {"inner_epochs": 0})):
        key = next(iter(setting))
        bad = write(work / f"bad-{key}.toml", run_toml(paths["world"], paths["sft"], **setting))
        target_dir = work / f"bad-{key}-run"
        shutil.rmtree(target_dir, ignore_errors=True)
        row = Row("damage", f"config {name}", f"exit 2, one line naming run.{key}, no run dir")
        one_line_error(row, bench.run("run", "--config", str(bad), "--run-dir", str(target_dir), "--no-progress"),
                       (2,), f"run.{key}")
        if target_dir.exists():
            row.passed, row.note = False, "run dir created"
        add(row)

    # A second writer on a live run.
    for row in second_writer(bench, paths):
        add(row)

    # Resume with a changed flag.
    for flag, value in (("--lr", "5"), ("--seed", "3")):
        changed = copy_run(fin, work / "d-changed")
        row = Row("damage", f"resume with changed {flag}", f"exit 2, one line naming {flag}")
        one_line_error(row, bench.run("run", "--resume", str(changed), "--config", str(fin_config), flag, value,
                                      "--no-progress"), (2,), flag)
        add(row)

    # A handed-over run directory with a stored api_key_env: refused without confirmation.
    handed = work / "d-handed"
    shutil.rmtree(handed, ignore_errors=True)
    cfg = write(work / "handed.toml", judge_toml(paths, steps=1, retries=1))
    first = bench.run("run", "--config", str(cfg), "--run-dir", str(handed), "--judge-url", judge.url("fail500"),
                      "--api-key-env", "RLAIF_BENCH_STORED_KEY", "--no-progress")
    row = Row("damage", "handed-over dir, stored api_key_env: resume",
              "exit 2, one line naming oracle.api_key_env and --trust-stored-config")
    if first.returncode != 1 or not has_run(handed):
        observe(row, first)
        row.note = "could not make the handed-over run (expected the judge's HTTP 500 to stop it)"
    else:
        sent = len(judge.seen)
        one_line_error(row, bench.run("run", "--resume", str(handed), "--config", str(cfg), "--judge-url",
                                      judge.url("ok")), (2,), "api_key_env", "--trust-stored-config")
        if len(judge.seen) != sent:
            row.passed, row.note = False, "a request reached the judge"
    add(row)
    return rows


def world_videos(bench: Bench, paths: dict[str, Path], log: Any) -> list[Row]:
    """Damage two world mp4s that step 1 reads (one garbage, one deleted) in a copy of the
    world; a 1-step run re-renders them: exit 0, byte-identical files, the same rollouts
    as an undamaged 1-step run."""
    from rlaif.core.store import RunStore

    work = bench.work
    copy = work / "world-damaged"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(paths["world"], copy)
    ref_dir = work / "kill-ref" if (work / "kill-ref" / "store.lmdb").exists() else work / "fin"
    with RunStore(ref_dir, readonly=True) as store:
        rollouts = list(store.iter_shard("rollouts", RUN, 1))
        prompts = store.get_prompts(RUN, [r.prompt_id for r in rollouts])
    used = sorted({Path(p.video.path).resolve() for p in prompts.values()})
    picked = [copy / p.relative_to(paths["world"].resolve()) for p in used[:2]]
    originals = [p.read_bytes() for p in picked]
    picked[0].write_bytes(random.Random(2).randbytes(len(originals[0])))
    picked[1].unlink()
    config = write(work / "world-damaged.toml", run_toml(copy, paths["sft"], steps=1))
    run_dir = work / "d-world"
    shutil.rmtree(run_dir, ignore_errors=True)
    row = Row("damage", "world mp4 garbage + missing: run", "exit 0, re-rendered byte-identical, same rollouts")
    proc = bench.run("run", "--config", str(config), "--run-dir", str(run_dir), "--no-progress")
    observe(row, proc)
    if proc.returncode == 0:
        same_files = [p.exists() and p.read_bytes() == b for p, b in zip(picked, originals, strict=True)]
        with RunStore(run_dir, readonly=True) as store:
            again = list(store.iter_shard("rollouts", RUN, 1))
        # A run over the original world with the same config draws the same prompts and samples.
        same_rollouts = [r.to_dict() for r in again] == [r.to_dict() for r in rollouts]
        row.passed = all(same_files) and same_rollouts
        row.note = f"files identical: {same_files}; step-1 rollouts equal the undamaged run's: {same_rollouts}"
        row.first_line = row.first_line or "(no stderr)"
        row.one_line = None
    return [row]


def second_writer(bench: Bench, paths: dict[str, Path]) -> list[Row]:
    work = bench.work
    live_dir = work / "d-live"
    shutil.rmtree(live_dir, ignore_errors=True)
    config = write(work / "live.toml", run_toml(paths["world"], paths["sft"], steps=500, checkpoint_every=500))
    live = bench.popen("run", "--config", str(config), "--run-dir", str(live_dir), "--no-progress",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        deadline = time.time() + 600
        while time.time() < deadline and live.poll() is None and not last_step(live_dir):
            time.sleep(0.2)
        for name, args in (("--resume", ["--resume", str(live_dir), "--config", str(config)]),
                           ("new run, same --run-dir", ["--config", str(config), "--run-dir", str(live_dir)])):
            row = Row("damage", f"second writer on a live run: {name}", "non-zero, one line naming the PID")
            if live.poll() is not None:
                row.note = "the live run ended before the check"
            else:
                one_line_error(row, bench.run("run", *args, "--no-progress"), (1, 2), f"process {live.pid}")
                if live.poll() is not None:
                    row.passed, row.note = False, "the live run died"
            rows.append(row)
    finally:
        live.kill()
        live.wait()
    return rows


# --------------------------------------------------------------------------- part 3: a failing judge
def judge_failures(bench: Bench, paths: dict[str, Path], judge: CannedJudge, log: Any) -> list[Row]:
    work, rows = bench.work, []
    for behaviour, why in (("refused", "Connection refused"), ("fail500", "HTTP 500"),
                           ("garbage", "malformed response"), ("hang", "step_timeout (3 s)")):
        url = f"http://127.0.0.1:{free_port()}/v1" if behaviour == "refused" else judge.url(behaviour)
        bound = {"step_timeout": 3} if behaviour == "hang" else {}
        config = write(work / f"judge-{behaviour}.toml", judge_toml(paths, steps=3, retries=1, **bound))
        run_dir = work / f"j-{behaviour}"
        shutil.rmtree(run_dir, ignore_errors=True)
        row = Row("judge", f"judge {behaviour}", f"exit 1, one line: oracle llm-judge at URL ... {why}; nothing stored")
        started = time.time()
        proc = bench.run("run", "--config", str(config), "--run-dir", str(run_dir), "--judge-url", url,
                         "--no-progress")
        one_line_error(row, proc, (1,), f"oracle llm-judge at {url}", why)
        stored = last_step(run_dir) if (run_dir / "store.lmdb").exists() else None
        if stored is not None:
            row.passed, row.note = False, f"step {stored} committed"
        row.numbers = {"wall_s": round(time.time() - started, 1)}
        rows.append(row)
        log(f"{row.case}: {'pass' if row.passed else 'FAIL'} rc={row.rc} {row.first_line[:140]} {row.note}")
    rows.append(ctrl_c(bench, paths, judge))
    log(f"{rows[-1].case}: {'pass' if rows[-1].passed else 'FAIL'} rc={rows[-1].rc} {rows[-1].note}")
    return rows


def ctrl_c(bench: Bench, paths: dict[str, Path], judge: CannedJudge) -> Row:
    """Default timeouts (30 s per attempt, 3 attempts): Ctrl-C must not wait for them."""
    from rlaif.core.store import RunStore

    config = write(bench.work / "judge-ctrl-c.toml", judge_toml(paths, steps=2))
    run_dir = bench.work / "j-ctrl-c"
    shutil.rmtree(run_dir, ignore_errors=True)
    row = Row("judge", "Ctrl-C while the judge hangs", "non-zero within 10 s, 'interrupted', store consistent")
    before = judge.seen.count("hang")
    proc = bench.popen("run", "--config", str(config), "--run-dir", str(run_dir), "--judge-url", judge.url("hang"),
                       "--no-progress", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and judge.seen.count("hang") == before:
            time.sleep(0.1)
        if proc.poll() is not None:
            _, err = proc.communicate()
            observe(row, None, proc.returncode, err)
            row.note = "the run ended before asking the judge"
            return row
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        sent = time.time()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            row.note = "still running 60 s after SIGINT"
            return row
        took = time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = observe(row, None, proc.returncode, err)
    with RunStore(run_dir, readonly=True) as store:
        consistent = (store.get_run(RUN) is not None and store.last_committed_step(RUN) is None
                      and store.steps(RUN, kind="rollouts") == store.steps(RUN, kind="rankings") == []
                      and store.verify().ok)
    row.passed = proc.returncode != 0 and took < 10 and "interrupted" in err and consistent and row.one_line is True
    row.numbers = {"exit_s": round(took, 2)}
    row.note = f"exited {took:.1f} s after SIGINT; store consistent: {consistent}; {len(lines)} stderr line(s)"
    return row


# --------------------------------------------------------------------------- report
def print_table(rows: list[Row], summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=220)
    table = Table(title="rlaif reliability", show_lines=False)
    for col in ("part", "case", "expected", "exit", "first line of stderr / result", "1 line", "result"):
        table.add_column(col, overflow="fold")
    for r in rows:
        one = "-" if r.one_line is None else ("yes" if r.one_line else "no")
        first = r.first_line[:150] + (f"  [{r.note}]" if r.note else "")
        table.add_row(r.part, escape(r.case), escape(r.expected), "-" if r.rc is None else str(r.rc), escape(first), one,
                      "[green]pass[/green]" if r.passed else "[red]FAIL[/red]")
    console.print(table)
    k = summary["kill"]
    console.print(
        f"kills {k.get('kills', 0)} over {k.get('runs', 0)} runs: {k.get('records', 0)} records compared, "
        f"lost {k.get('lost', 0)}, duplicated {k.get('duplicated', 0)}, differing {k.get('differing', 0)}, "
        f"metric keys/values differing {k.get('metric_keys', 0)}/{k.get('metric_values', 0)}, "
        f"max |dw| {k.get('max_weight_diff', 0):.1e}; damaged cases {summary['damage_passed']}/"
        f"{summary['damage_total']}; judge modes {summary['judge_passed']}/{summary['judge_total']}; "
        f"wall {summary['wall_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="Random SIGKILLs in part 1 (default 20).")
    parser.add_argument("--quick", action="store_true", help="5 kills.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep and reuse the world, SFT and runs here.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill times.")
    parser.add_argument("--weight-tol", type=float, default=1e-6, help="Largest final-weight difference allowed.")
    parser.add_argument("--parts", default="kill,damage,judge", help="Comma-separated subset of kill,damage,judge.")
    args = parser.parse_args()
    n_kills = 5 if args.quick else args.kills
    parts = set(args.parts.split(","))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.time()
    temp = None
    if args.workdir is None:
        temp = tempfile.TemporaryDirectory(prefix="rlaif-reliability-")
        work = Path(temp.name)
    else:
        work = args.workdir.resolve()
        work.mkdir(parents=True, exist_ok=True)
    judge = CannedJudge()
    rows: list[Row] = []
    kill_totals: dict[str, Any] = {}
    try:
        paths = setup(work)
        log(f"tiny world and SFT ready in {time.time() - started:.0f} s ({work})")
        bench = Bench(work)
        if "kill" in parts:
            kill_rows, kill_totals = kills(bench, paths, n_kills, args.seed, args.weight_tol, log)
            rows += kill_rows
        if "damage" in parts:
            rows += damaged(bench, paths, judge, log)
        if "judge" in parts:
            rows += judge_failures(bench, paths, judge, log)
    finally:
        judge.close()
        if temp is not None:
            temp.cleanup()
    summary = {
        "kill": kill_totals,
        "damage_passed": sum(r.passed for r in rows if r.part == "damage"),
        "damage_total": sum(1 for r in rows if r.part == "damage"),
        "judge_passed": sum(r.passed for r in rows if r.part == "judge"),
        "judge_total": sum(1 for r in rows if r.part == "judge"),
        "wall_s": time.time() - started,
    }
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "summary": summary}, default=str))
    else:
        print_table(rows, summary)
    sys.exit(0 if rows and all(r.passed for r in rows) else 1)


if __name__ == "__main__":
    main()
