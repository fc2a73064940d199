"""The LMDB run store: record round trips, step atomicity across a SIGKILL, map growth,
a reader process racing a writer, export/import, and what the store refuses to do.

Every test uses a real LMDB environment under ``tmp_path``; processes are started with
``subprocess`` (or a forked child where fork itself is under test).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import msgpack
import pytest

from rlaif.core.errors import StoreError, UsageError
from rlaif.core.records import Prompt, Ranking, Rollout, RunInfo, VideoRef
from rlaif.core.store import RunStore, store_path
from rlaif.core.store import keys as K
from rlaif.core.store.codec import decode_arrays, encode_arrays
from rlaif.core.store.store import DATABASES

RUN = "run-1"
G = 4  # rollouts per prompt


def make_rollouts(seed: int, n_prompts: int = 3, group: int = G) -> list[Rollout]:
    rng = random.Random(seed)
    return [
        Rollout(
            prompt_id=f"p{seed}-{p}",
            index=i,
            text=" ".join(rng.choice(["a", "person", "walks", "in"]) for _ in range(rng.randrange(1, 20))),
            token_ids=[rng.randrange(50_000) for _ in range(rng.randrange(1, 16))],
            logprobs=[-rng.random() * 5 for _ in range(8)],
            policy_version=seed,
            finished=rng.random() > 0.2,
        )
        for p in range(n_prompts)
        for i in range(group)
    ]


def make_rankings(seed: int, oracle: str, n_prompts: int = 3, group: int = G) -> list[Ranking]:
    rng = random.Random(seed * 7919 + len(oracle))
    out = []
    for p in range(n_prompts):
        scores = [float(rng.randrange(3)) for _ in range(group)]
        out.append(Ranking.from_scores(f"p{seed}-{p}", oracle, scores, rationale=f"because {p}", raw="{...}"))
    out.append(Ranking(prompt_id="failed", oracle=oracle, raw="I cannot rank these", failure="unparseable"))
    return out


def dump(store: RunStore) -> dict[tuple[str, bytes], bytes]:
    """Every (database, key) -> value byte string in the store."""
    out = {}
    with store._reading() as txn:
        for name in DATABASES:
            for key, value in txn.cursor(db=store._db(name)):
                out[(name, key)] = value
    return out


@pytest.fixture
def store(tmp_path: Path):
    with RunStore(store_path(tmp_path)) as s:
        yield s


# ---------------------------------------------------------------------- round trips


def test_every_record_type_round_trips(store: RunStore) -> None:
    info = RunInfo(
        run_id=RUN, config={"oracle": {"name": "llm-judge", "temps": [0.1, 0.7]}}, seed=3, created=1.5
    )
    prompts = [
        Prompt(
            prompt_id="p0-0",
            video=VideoRef(video_id="v0", path="/data/v0.mp4", n_frames=64, fps=29.97),
            question="What happens after the person opens the drawer?",
            reference="They take out a spoon.",
            qtype="open",
            meta={"split": "rl", "tags": ["kitchen"]},
        ),
        Prompt(prompt_id="p0-1", video=VideoRef(video_id="v1", path="v1.mp4"), question="Q?"),
    ]
    rollouts, rankings = make_rollouts(0), make_rankings(0, "llm-judge")
    store.put_run(info)
    store.put_prompts(RUN, prompts)
    store.commit_step(RUN, 0, rollouts=rollouts, rankings={"llm-judge": rankings}, metrics={"loss": 0.25})

    assert store.get_run(RUN) == info
    assert store.get_prompt(RUN, "p0-0") == prompts[0]
    assert isinstance(getattr(store.get_prompt(RUN, "p0-0"), "video", None), VideoRef)
    assert list(store.iter_prompts(RUN)) == prompts
    assert list(store.iter_shard("rollouts", RUN, 0)) == rollouts
    assert list(store.iter_shard("rankings", RUN, 0, "llm-judge")) == rankings
    assert [r["schema"] for r in store.iter_shard_raw("rankings", RUN, 0, "llm-judge")] == ["ranking/1"] * 4
    assert store.get_rollout(RUN, 0, 1, 2) == rollouts[1 * G + 2]
    assert store.get_rollouts(RUN, [(0, 2, 3), (0, 0, 0)]) == [rollouts[2 * G + 3], rollouts[0]]
    assert store.get_ranking(RUN, 0, "llm-judge", 3) == rankings[3]
    assert store.get_rollout(RUN, 0, 9, 0) is None
    assert store.get_metrics(RUN, 0) == {"loss": 0.25}
    assert store.get_run("nope") is None


def test_rollouts_read_back_grouped_by_prompt(store: RunStore) -> None:
    a, b = make_rollouts(1, n_prompts=1), make_rollouts(2, n_prompts=1)
    interleaved = [r for pair in zip(a, b, strict=True) for r in pair]
    store.put_rollouts(RUN, 0, interleaved)
    assert list(store.iter_shard("rollouts", RUN, 0)) == a + b


def test_keys_sort_in_step_order_and_prefixes_do_not_leak(store: RunStore) -> None:
    for step in (256, 0, 70_000, 1, 255):
        store.commit_step(RUN, step, rollouts=make_rollouts(step % 5, n_prompts=1))
    # Neighbouring names must not bleed into each other's prefix scans.
    store.commit_step(RUN + "0", 1, rollouts=make_rollouts(9, n_prompts=2))
    store.put_rankings(RUN, 1, "judge", make_rankings(1, "judge", n_prompts=1))
    store.put_rankings(RUN, 1, "judge2", make_rankings(2, "judge2", n_prompts=2))

    assert store.steps(RUN, "committed") == [0, 1, 255, 256, 70_000]
    assert store.steps(RUN) == [0, 1, 255, 256, 70_000]
    assert store.last_committed_step(RUN) == 70_000
    assert store.last_committed_step(RUN + "0") == 1
    assert store.last_committed_step("run") is None
    assert len(list(store.iter_shard("rollouts", RUN, 1))) == G
    assert len(list(store.iter_shard("rankings", RUN, 1, "judge"))) == 2
    assert store.oracles(RUN) == ["judge", "judge2"]
    assert store.steps(RUN, "rankings") == [1]
    assert store.runs() == [RUN, RUN + "0"]
    assert K.rollout_key(RUN, 255, 0, 0) < K.rollout_key(RUN, 256, 0, 0)
    with pytest.raises(UsageError):
        K.run_prefix("bad\0name")


def test_missing_shard_names_the_committed_steps(store: RunStore) -> None:
    store.commit_step(RUN, 0, rollouts=make_rollouts(0))
    with pytest.raises(StoreError, match=r"step 3 .*committed steps: 0"):
        list(store.iter_shard("rollouts", RUN, 3))
    with pytest.raises(UsageError):
        store.iter_shard("rankings", RUN, 0)


# ---------------------------------------------------------------------- refusing to lose data


def test_duplicate_shard_is_refused_and_original_kept(store: RunStore) -> None:
    rollouts, rankings = make_rollouts(0), make_rankings(0, "judge")
    store.commit_step(RUN, 0, rollouts=rollouts, rankings={"judge": rankings})
    before = dump(store)
    with pytest.raises(StoreError, match="already stored"):
        store.commit_step(RUN, 0, rollouts=make_rollouts(5))
    with pytest.raises(StoreError, match="already stored"):
        store.put_rollouts(RUN, 0, make_rollouts(5))
    with pytest.raises(StoreError, match="already stored"):
        store.put_rankings(RUN, 0, "judge", make_rankings(5, "judge"))
    assert dump(store) == before

    store.put_rankings(RUN, 0, "judge", make_rankings(5, "judge"), overwrite=True)
    assert list(store.iter_shard("rankings", RUN, 0, "judge")) == make_rankings(5, "judge")
    assert list(store.iter_shard("rollouts", RUN, 0)) == rollouts

    # Replacing a whole step, rollouts together with their only rankings, is allowed.
    store.commit_step(RUN, 0, rollouts=make_rollouts(6), rankings=make_rankings(6, "judge"), overwrite=True)
    assert list(store.iter_shard("rollouts", RUN, 0)) == make_rollouts(6)
    assert list(store.iter_shard("rankings", RUN, 0, "judge")) == make_rankings(6, "judge")


def test_failed_commit_writes_nothing(store: RunStore) -> None:
    store.put_rankings(RUN, 1, "judge", make_rankings(1, "judge"))
    before = dump(store)
    with pytest.raises(StoreError):  # the ranking shard clashes: the rollouts must not land either
        store.commit_step(RUN, 1, rollouts=make_rollouts(1), rankings={"judge": make_rankings(1, "judge")})
    assert dump(store) == before
    assert store.last_committed_step(RUN) is None


def test_rerank_stored_rollouts_with_another_oracle(store: RunStore) -> None:
    store.commit_step(RUN, 0, rollouts=make_rollouts(0), rankings=make_rankings(0, "llm-judge"))
    rollout_bytes = {k: v for k, v in dump(store).items() if k[0] == "rollouts"}
    store.put_rankings(RUN, 0, "verifier", make_rankings(0, "verifier"))
    assert {k: v for k, v in dump(store).items() if k[0] == "rollouts"} == rollout_bytes
    assert store.oracles(RUN) == ["llm-judge", "verifier"]
    assert list(store.iter_shard("rankings", RUN, 0, "verifier")) == make_rankings(0, "verifier")
    assert list(store.iter_shard("rankings", RUN, 0, "llm-judge")) == make_rankings(0, "llm-judge")


def test_replacing_ranked_rollouts_needs_their_rankings_gone(store: RunStore) -> None:
    store.commit_step(RUN, 0, rollouts=make_rollouts(0), rankings={"judge": make_rankings(0, "judge")})
    with pytest.raises(StoreError, match="orphan"):
        store.put_rollouts(RUN, 0, make_rollouts(1), overwrite=True)
    with pytest.raises(StoreError, match="ranked by judge"):
        store.delete_shard("rollouts", RUN, 0)
    assert store.delete_shard("rankings", RUN, 0, "judge") == 4
    store.put_rollouts(RUN, 0, make_rollouts(1), overwrite=True)
    assert list(store.iter_shard("rollouts", RUN, 0)) == make_rollouts(1)
    assert store.oracles(RUN) == []


def test_metrics_merge_and_refuse_conflicts(store: RunStore) -> None:
    store.commit_step(RUN, 0, rollouts=make_rollouts(0), metrics={"loss": 1.0, "nan": math.nan})
    store.put_metrics(RUN, 0, {"eval/acc": 0.5, "loss": 1.0, "nan": math.nan})  # same values: fine
    with pytest.raises(StoreError, match="loss"):
        store.put_metrics(RUN, 0, {"loss": 2.0})
    store.put_metrics(RUN, 2, {"loss": 0.5})
    store.put_metrics(RUN, 0, {"loss": 3.0}, overwrite=True)
    got = list(store.iter_metrics(RUN))
    assert [step for step, _ in got] == [0, 2]
    assert got[0][1]["loss"] == 3.0 and got[0][1]["eval/acc"] == 0.5 and math.isnan(got[0][1]["nan"])
    assert store.steps(RUN, "metrics") == [0, 2]


def test_run_info_and_prompts_are_not_silently_replaced(store: RunStore) -> None:
    info = RunInfo(run_id=RUN, seed=1)
    store.put_run(info)
    store.put_run(info)  # identical: no-op
    with pytest.raises(StoreError):
        store.put_run(RunInfo(run_id=RUN, seed=2))
    prompt = Prompt(prompt_id="q", video=VideoRef("v", "v.mp4"), question="?")
    assert store.put_prompts(RUN, [prompt]) == 1
    assert store.put_prompts(RUN, [prompt]) == 0
    with pytest.raises(StoreError):
        store.put_prompts(RUN, [Prompt(prompt_id="q", video=VideoRef("v", "v.mp4"), question="!")])


def test_commit_step_stores_its_prompts_in_the_same_transaction(store: RunStore) -> None:
    prompts = [Prompt(prompt_id=f"p0-{p}", video=VideoRef(f"v{p}", f"/data/v{p}.mp4", 24, 8.0),
                      question=f"What colour is shape {p}?", reference="red", meta={"split": "rl"})
               for p in range(3)]
    rollouts = make_rollouts(0)
    store.commit_step(RUN, 1, prompts=prompts, rollouts=rollouts, rankings=make_rankings(0, "gt"))
    assert store.get_prompts(RUN, [r.prompt_id for r in rollouts]) == {p.prompt_id: p for p in prompts}
    assert store.get_prompts(RUN, ["never-asked"]) == {}
    # Drawn again at a later step: stored once, and the step still commits.
    store.commit_step(RUN, 2, prompts=prompts[:1], rollouts=make_rollouts(0, n_prompts=1))
    assert list(store.iter_prompts(RUN)) == prompts
    # A prompt that changed under the same id refuses the whole step: no rollouts, no marker.
    changed = Prompt(prompt_id="p0-0", video=prompts[0].video, question="Something else?")
    before = dump(store)
    with pytest.raises(StoreError, match="p0-0"):
        store.commit_step(RUN, 3, prompts=[changed], rollouts=make_rollouts(0, n_prompts=1))
    assert dump(store) == before and store.last_committed_step(RUN) == 2


def test_narrative_cache(store: RunStore) -> None:
    assert store.get_narrative("v0|8 clips|captioner") is None
    store.put_narrative("v0|8 clips|captioner", "A person walks in.", {"n_clips": 8})
    assert store.get_narrative("v0|8 clips|captioner") == "A person walks in."
    assert store.get_narrative_entry("v0|8 clips|captioner") == ("A person walks in.", {"n_clips": 8})
    long_key = "v" * 1000
    store.put_narrative(long_key, "long")
    assert store.get_narrative(long_key) == "long"


# ---------------------------------------------------------------------- bytes on disk


def test_map_grows_when_full(tmp_path: Path) -> None:
    with RunStore(tmp_path / "s", map_size=64 << 10) as store:
        for step in range(6):
            rollouts = make_rollouts(step, n_prompts=16)
            rollouts = [
                Rollout(r.prompt_id, r.index, r.text * 40, r.token_ids * 8, r.logprobs) for r in rollouts
            ]
            store.commit_step(RUN, step, rollouts=rollouts)  # ~200 KB per step
        assert store.stats()["map_size"] > 64 << 10
        assert store.steps(RUN) == list(range(6))
        assert len(list(store.iter_shard("rollouts", RUN, 5))) == 16 * G


def test_values_are_msgpack_never_pickle(store: RunStore) -> None:
    store.put_run(RunInfo(run_id=RUN, config={"a": [1, 2]}))
    store.put_prompts(RUN, [Prompt(prompt_id="q", video=VideoRef("v", "v.mp4"), question="?")])
    store.commit_step(RUN, 0, rollouts=make_rollouts(0), rankings=make_rankings(0, "j"), metrics={"x": 1})
    store.put_narrative("k", "text")
    entries = dump(store)
    assert len(entries) > 20
    for (_, key), raw in entries.items():
        # A reader outside rlaif: 0xc1, a big-endian crc32 of key + msgpack, the msgpack.
        assert raw[0] == 0xC1 and int.from_bytes(raw[1:5], "big") == zlib.crc32(raw[5:], zlib.crc32(key))
        assert not raw[5:].startswith(b"\x80")  # pickle protocol 2+ header
        data = msgpack.unpackb(raw[5:], raw=False, strict_map_key=False)
        assert isinstance(data, dict) and "schema" in data


def test_export_import_reproduces_every_byte(tmp_path: Path) -> None:
    with RunStore(tmp_path / "a") as a:
        a.put_run(RunInfo(run_id=RUN, config={"lr": 1e-6, "nested": {"k": [1, 2.5, None]}}, seed=7))
        a.put_prompts(RUN, [Prompt(prompt_id="q", video=VideoRef("v", "v.mp4", 10, 2.0), question="é?")])
        for step in range(3):
            a.commit_step(RUN, step, rollouts=make_rollouts(step), rankings=make_rankings(step, "j"))
        a.put_rankings(RUN, 1, "other", make_rankings(1, "other"))
        # Values strict JSON cannot carry exactly: bytes, NaN, integer map keys, infinity.
        a.put_metrics(RUN, 0, {"loss": 0.1, "nan": math.nan, "blob": encode_arrays({"w": _arange(4)})})
        a.put_metrics(RUN, 1, {"hist": {1: 2, 3: 4}})
        a.put_metrics(RUN, 2, {"inf": math.inf})
        a.put_narrative("v|4", "Someone cooks.", {"clips": 4})
        a.export(tmp_path / "dump.jsonl")
        original = dump(a)
    lines = (tmp_path / "dump.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(original)
    entries = [json.loads(line) for line in lines]
    first = next(e for e in entries if e["db"] == "rollouts")
    assert first["value"]["schema"] == "rollout/1" and first["at"]["step"] == 0
    assert [e["db"] for e in entries if "raw" in e] == ["metrics"] * 3  # bytes + NaN, int keys, infinity

    with RunStore(tmp_path / "b") as b:
        assert b.import_jsonl(tmp_path / "dump.jsonl") == len(original)
        assert dump(b) == original
        assert list(b.iter_shard("rankings", RUN, 1, "other")) == make_rankings(1, "other")
        with pytest.raises(StoreError, match="empty store"):
            b.import_jsonl(tmp_path / "dump.jsonl")


def _arange(n: int):
    import numpy as np

    return np.arange(n, dtype=np.float32)


def test_arrays_as_safetensors_bytes() -> None:
    import numpy as np

    arrays: dict[str, np.ndarray] = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1, 2], dtype=np.int64),
    }
    back = decode_arrays(encode_arrays(arrays))
    assert set(back) == {"a", "b"} and all(np.array_equal(back[k], arrays[k]) for k in arrays)


def test_stats(store: RunStore) -> None:
    store.put_run(RunInfo(run_id=RUN))
    store.commit_step(RUN, 0, rollouts=make_rollouts(0), rankings=make_rankings(0, "j"), metrics={"l": 1})
    store.commit_step(RUN, 1, rollouts=make_rollouts(1))
    stats = store.stats()
    run = stats["runs"][RUN]
    assert run["committed_steps"] == 2 and run["last_committed_step"] == 1
    assert run["rollouts"] == 2 * 3 * G and run["rankings"] == {"j": {"shards": 1, "rankings": 4}}
    assert run["oracles"] == ["j"] and run["info"] and run["metric_steps"] == 1
    assert stats["size_bytes"] > 0 and 0 < stats["used_bytes"] <= stats["size_bytes"]


# ---------------------------------------------------------------------- opening, processes


def test_opening_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no rlaif store at .*run `rlaif run` first"):
        RunStore(tmp_path / "missing", readonly=True)
    (tmp_path / "rundir").mkdir()
    (tmp_path / "rundir" / "config.toml").write_text("x = 1\n")
    with pytest.raises(StoreError, match="holds no rlaif store"):
        RunStore(tmp_path / "rundir")
    with RunStore(store_path(tmp_path / "rundir")) as store:
        store.commit_step(RUN, 0, rollouts=make_rollouts(0))
    with RunStore(tmp_path / "rundir", readonly=True) as ro:  # a run directory works too
        assert ro.path == store_path(tmp_path / "rundir")
        assert ro.steps(RUN) == [0]
        with pytest.raises(StoreError, match="read-only"):
            ro.put_metrics(RUN, 0, {"x": 1})
    with pytest.raises(StoreError, match="closed"):
        ro.steps(RUN)


def test_one_environment_per_process(tmp_path: Path) -> None:
    with RunStore(tmp_path / "s") as writer, RunStore(tmp_path / "s", readonly=True) as reader:
        writer.commit_step(RUN, 0, rollouts=make_rollouts(0))
        assert reader.steps(RUN) == [0]
        with pytest.raises(StoreError, match="read-only"):
            reader.commit_step(RUN, 1)
    with RunStore(tmp_path / "s", readonly=True) as reader:
        with pytest.raises(StoreError, match="already open read-only"):
            RunStore(tmp_path / "s")


def _child_uses_parent_store(store: RunStore, queue) -> None:
    try:
        store.steps(RUN)
        queue.put("no error")
    except StoreError as exc:
        queue.put(f"StoreError: {exc}")


def _child_opens_own_store(path: str, queue) -> None:
    with RunStore(path) as store:
        store.put_metrics(RUN, 5, {"from": "child"})
    queue.put("ok")


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_handles_do_not_cross_fork(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    store = RunStore(tmp_path / "s")
    store.commit_step(RUN, 0, rollouts=make_rollouts(0))
    child = ctx.Process(target=_child_uses_parent_store, args=(store, queue))
    child.start()
    child.join(20)
    assert "cannot cross fork" in queue.get(timeout=5)
    assert store.steps(RUN) == [0]  # the parent's handle is untouched
    store.close()

    child = ctx.Process(target=_child_opens_own_store, args=(str(tmp_path / "s"), queue))
    child.start()
    child.join(20)
    assert queue.get(timeout=5) == "ok"
    with RunStore(tmp_path / "s", readonly=True) as reader:
        assert reader.get_metrics(RUN, 5) == {"from": "child"}


WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from test_store import make_rollouts, make_rankings, RUN
    from rlaif.core.store import RunStore

    path, steps, pause_at, map_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = RunStore(path, map_size=map_size)

    def pause():
        open(path + ".paused", "w").close()
        time.sleep(60)

    for step in range(steps):
        if step == pause_at:
            store._before_commit = pause
        store.commit_step(RUN, step, rollouts=make_rollouts(step, n_prompts=8),
                          rankings={{"judge": make_rankings(step, "judge", n_prompts=8)}},
                          metrics={{"step": step}})
        time.sleep(0.02)
    store.close()
    """
).format(tests=str(Path(__file__).parent))


def _writer(path: Path, steps: int, pause_at: int = -1, map_size: int = 8 << 20) -> subprocess.Popen:
    args = [sys.executable, "-c", WRITER, str(path), str(steps), str(pause_at), str(map_size)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_mid_step_leaves_last_committed_step_intact(tmp_path: Path) -> None:
    path = tmp_path / "s"
    writer = _writer(path, steps=10, pause_at=4)
    deadline = time.monotonic() + 30
    while not Path(str(path) + ".paused").exists():
        assert writer.poll() is None, writer.communicate()[1].decode()
        assert time.monotonic() < deadline, "writer never reached the paused step"
        time.sleep(0.02)
    os.kill(writer.pid, signal.SIGKILL)  # inside the write transaction of step 4
    writer.wait(10)

    with RunStore(path, readonly=True) as reader:
        assert reader.last_committed_step(RUN) == 3
        assert reader.steps(RUN, "committed") == [0, 1, 2, 3]
        assert reader.steps(RUN) == [0, 1, 2, 3] and reader.steps(RUN, "rankings") == [0, 1, 2, 3]
        assert reader.steps(RUN, "metrics") == [0, 1, 2, 3]
        assert list(reader.iter_shard("rollouts", RUN, 3)) == make_rollouts(3, n_prompts=8)
        assert list(reader.iter_shard("rankings", RUN, 3, "judge")) == make_rankings(3, "judge", n_prompts=8)
        with pytest.raises(StoreError):
            list(reader.iter_shard("rollouts", RUN, 4))
        assert reader.get_rollout(RUN, 4, 0, 0) is None
        assert not [key for (db, key) in dump(reader) if K.step_prefix(RUN, 4) in key]

    with RunStore(path) as store:  # a new writer takes over the dead one's lock
        store.commit_step(RUN, 4, rollouts=make_rollouts(4, n_prompts=8))
        assert store.last_committed_step(RUN) == 4


def test_reader_process_sees_only_whole_steps(tmp_path: Path) -> None:
    path, steps = tmp_path / "s", 25
    RunStore(path, map_size=64 << 10).close()
    writer = _writer(path, steps=steps, map_size=64 << 10)  # the map grows under the reader
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    with RunStore(path, readonly=True, map_size=64 << 10) as reader:
        while True:
            done = writer.poll() is not None
            committed = reader.steps(RUN, "committed")
            seen.add(len(committed))
            assert committed == list(range(len(committed)))
            for step in committed:
                rollouts = list(reader.iter_shard("rollouts", RUN, step))
                assert len(rollouts) == 8 * G and all(r.policy_version == step for r in rollouts)
                assert len(list(reader.iter_shard("rankings", RUN, step, "judge"))) == 9
                assert reader.get_metrics(RUN, step) == {"step": step}
            if done:
                break
            assert time.monotonic() < deadline
        assert writer.returncode == 0, writer.communicate()[1].decode()
        assert reader.last_committed_step(RUN) == steps - 1
    assert len(seen) > 2  # the reader really overlapped the writer


def test_import_of_core_does_not_load_lmdb() -> None:
    code = "import sys, rlaif.core, rlaif.core.store, rlaif.core.records; print(sorted({'lmdb', 'torch', 'msgpack'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- damage


def rewrite_file(path: Path, old: bytes, new: bytes) -> None:
    """Replace every copy of ``old`` in a closed store's data file (stale page copies
    included, so the live one is surely hit), keeping the file's length."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) >= 1, "the bytes to damage are not in the file"
    path.write_bytes(data.replace(old, new))


def open_in_child(path: Path) -> subprocess.CompletedProcess[str]:
    """Open a store read-only and read it in a child process, which a SIGBUS can kill
    without taking pytest with it; prints the error's class and message."""
    code = textwrap.dedent(
        """
        import sys
        from rlaif.core.store import RunStore
        try:
            with RunStore(sys.argv[1], readonly=True) as store:
                print("read", store.stats()["entries"]["rollouts"], store.verify().ok)
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("keep", [100, 5000, 3 * 4096, "half"])
def test_truncated_data_file_is_an_error_before_lmdb_maps_it(tmp_path: Path, keep: int | str) -> None:
    with RunStore(tmp_path / "s") as store:
        for step in range(12):  # ~50 pages, so most cuts leave the meta pages whole
            store.commit_step(RUN, step, rollouts=make_rollouts(step, n_prompts=8))
    data = tmp_path / "s" / "data.mdb"
    os.truncate(data, data.stat().st_size // 2 if keep == "half" else keep)
    out = open_in_child(tmp_path / "s")
    assert out.returncode == 0, f"the child died (signal {-out.returncode}): {out.stderr[-500:]}"
    assert out.stdout.startswith("DamagedStoreError ") and str(data) in out.stdout
    assert "truncated" in out.stdout and "backup" in out.stdout and len(out.stdout.strip().splitlines()) == 1


def test_whole_data_file_passes_the_size_check(tmp_path: Path) -> None:
    with RunStore(tmp_path / "s") as store:
        store.commit_step(RUN, 0, rollouts=make_rollouts(0))
    assert open_in_child(tmp_path / "s").stdout.split() == ["read", str(3 * G), "True"]


def _damaged_store(tmp_path: Path) -> Path:
    path = tmp_path / "s"
    with RunStore(path) as store:
        store.put_run(RunInfo(run_id=RUN, config={"oracle": "judge"}))
        for step in range(2):
            rollouts = [
                Rollout(f"p{g}", i, f"caf\u00e9 {step}{g}{i}", [1, 2], [-0.5, -1.0 - step - g / 10 - i / 100])
                for g in range(2)
                for i in range(G)
            ]
            rankings = [Ranking.from_scores(f"p{g}", "judge", [3.0, 2.0, 1.0, 0.0]) for g in range(2)]
            store.commit_step(RUN, step, rollouts=rollouts, rankings=rankings, metrics={"loss": 0.5})
    return path


@pytest.mark.parametrize(
    "damage",
    [
        # A log-prob altered into another float: the value still decodes (old stores read -1.5).
        ("logprob", struct.pack(">d", -1.12), struct.pack(">d", -1.5), ("rollouts", 0, 1, 2)),
        # Invalid UTF-8 in a text (old stores: UnicodeDecodeError).
        ("text", "caf\u00e9 011".encode(), b"caf\xc3\x28 011", ("rollouts", 0, 1, 1)),
    ],
    ids=lambda d: d[0],
)
def test_flipped_value_bytes_are_a_damaged_record_naming_its_key(tmp_path: Path, damage: tuple) -> None:
    from rlaif.core.errors import DamagedRecordError

    _, old, new, (db, step, prompt_index, index) = damage
    path = _damaged_store(tmp_path)
    rewrite_file(path / "data.mdb", old, new)
    with RunStore(path, readonly=True) as store:
        with pytest.raises(DamagedRecordError) as caught:
            store.get_rollout(RUN, step, prompt_index, index)
        message = str(caught.value)
        assert "checksum mismatch" in message and "\n" not in message
        assert f"run={RUN!r} step={step} prompt_index={prompt_index} index={index}" in message
        with pytest.raises(DamagedRecordError):
            list(store.iter_shard("rollouts", RUN, step))
        assert store.get_rollout(RUN, step, 0, 0) is not None  # the rest reads as before
        assert list(store.iter_shard("rollouts", RUN, 1 - step))
        report = store.verify()
        assert not report.ok and report.checksums and report.records == 30  # every record was read
        assert [(d.db, d.at) for d in report.damaged] == [
            (db, {"run": RUN, "step": step, "prompt_index": prompt_index, "index": index})
        ]


def test_flipped_key_bytes_fail_the_checksum_where_inspect_saw_a_healthy_store(tmp_path: Path) -> None:
    from rlaif.core.errors import DamagedRecordError

    path = _damaged_store(tmp_path)
    # The oracle name inside every rankings key and rankings marker key: the records move.
    rewrite_file(path / "data.mdb", b"judge\x00", b"judgE\x00")
    with RunStore(path, readonly=True) as store:
        with pytest.raises(DamagedRecordError, match="commits run='run-1' kind='rankings' oracle='judgE'"):
            store.stats()
        damaged = store.verify().damaged
    assert {(d.db, d.at.get("oracle")) for d in damaged} == {("rankings", "judgE"), ("commits", "judgE")}
    assert len(damaged) == 2 * 2 + 2  # 2 rankings per step, 2 markers


def test_non_finite_logprobs_are_refused_at_commit_and_damaged_on_read(store: RunStore) -> None:
    from rlaif.core.errors import DamagedRecordError
    from rlaif.core.store.codec import encode_record, seal

    for bad in (math.nan, math.inf, -math.inf):
        rollouts = [Rollout("p", 0, "ok", [1, 2], [-0.1, -0.2]), Rollout("p", 1, "bad", [1, 2], [-0.1, bad])]
        with pytest.raises(StoreError, match=r"rollout 1 of prompt 'p' .* log-prob 1 = -?(nan|inf)"):
            store.commit_step(RUN, 0, rollouts=rollouts)
        assert store.last_committed_step(RUN) is None and not store.steps(RUN)
    # One that got in anyway (an older rlaif, a hand-made import): damaged on read.
    key = K.rollout_key(RUN, 0, 0, 0)
    value = seal(key, encode_record(Rollout("p", 0, "nan", [1], [math.nan])))
    store._write(lambda txn: txn.put(key, value, db=store._db("rollouts")))
    with pytest.raises(DamagedRecordError, match="log-prob 0 is nan, not a finite number"):
        store.get_rollout(RUN, 0, 0, 0)
    assert [d.problem for d in store.verify().damaged][0] == "log-prob 0 is nan, not a finite number"


def _as_store_1(path: Path) -> None:
    """Rewrite a store as rlaif wrote it before checksums: bare msgpack, ``store/1``."""
    import lmdb

    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        for name in DATABASES:
            db = env.open_db(name.encode(), txn=txn)
            for key, raw in list(txn.cursor(db=db)):
                data = msgpack.unpackb(raw[5:], raw=False, strict_map_key=False)
                if name == "meta":
                    data["schema"] = "store/1"
                txn.put(key, msgpack.packb(data, use_bin_type=True), db=db)
    env.close()


def test_store_1_reads_refuses_writes_and_migrates_by_export_import(tmp_path: Path) -> None:
    with RunStore(tmp_path / "old") as old:
        old.put_run(RunInfo(run_id=RUN, seed=3))
        old.commit_step(RUN, 0, rollouts=make_rollouts(0), rankings=make_rankings(0, "j"), metrics={"x": 1.5})
    _as_store_1(tmp_path / "old")
    with RunStore(tmp_path / "old", readonly=True) as old:
        assert list(old.iter_shard("rollouts", RUN, 0)) == make_rollouts(0) and old.get_run(RUN).seed == 3
        report = old.verify()
        assert report.ok and not report.checksums and old.stats()["format"] == "store/1"
        old.export(tmp_path / "old.jsonl")
    with pytest.raises(StoreError, match=r"store/1 store.*`rlaif store export .*`rlaif store import"):
        RunStore(tmp_path / "old")
    with RunStore(tmp_path / "new") as new:
        new.import_jsonl(tmp_path / "old.jsonl")
        assert list(new.iter_shard("rankings", RUN, 0, "j")) == make_rankings(0, "j")
        assert new.get_metrics(RUN, 0) == {"x": 1.5}
        report = new.verify()
        assert report.ok and report.checksums and new.stats()["format"] == "store/2"
        new.commit_step(RUN, 1, rollouts=make_rollouts(1))  # a store/2 store takes writes
    with RunStore(tmp_path / "new", readonly=True) as again:
        assert again.stats()["format"] == "store/2" and again.steps(RUN) == [0, 1]
