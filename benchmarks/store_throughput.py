"""Throughput of the LMDB run store against plain JSONL, for Rollout records.

Records are shaped like real ones (~2 KB as msgpack: a prompt id, ~300 characters of
text, 128 token ids and 128 float log-probs) and written in steps of ``--batch``. Both
sides build the record dict the same fast way, so the comparison is about storage:

* write: LMDB ``commit_step`` per step vs ``json.dumps`` lines appended per step, each
  with an fsync per step ("durable") and without ("no fsync");
* sequential read: every shard through ``iter_shard`` (Rollout objects) and
  ``iter_shard_raw`` (dicts) vs parsing every line;
* random read: records picked uniformly at random, by key. JSONL gets its fairest
  baseline, an in-memory index of line offsets built when reading starts (its build
  time is reported on its own row) and then seek + readline + parse per record. LMDB is
  measured per call (``get_rollout``: one read transaction each) and in minibatches
  (``get_rollouts``: one snapshot per 256 records).

The generated records are moved out of the garbage collector's reach (``gc.freeze``) so
that collections of benchmark scaffolding do not land on either side. Numbers are best
of ``--repeat`` runs.

Usage: ``python benchmarks/store_throughput.py [--records 20000] [--batch 512]``.
Targets from the store issue: >= 50k records/s written, >= 200k/s read, random reads
>= 5x JSONL.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlaif.core.records import Rollout
from rlaif.core.store import RunStore
from rlaif.core.store.codec import build_record, record_dict

GROUP = 8  # rollouts per prompt
MINIBATCH = 256  # random reads per get_rollouts call (one snapshot each)
RUN = "bench"


def make_rollouts(n: int, seed: int) -> list[Rollout]:
    rng = random.Random(seed)
    words = [
        "the",
        "person",
        "opens",
        "a",
        "drawer",
        "then",
        "walks",
        "to",
        "the",
        "kitchen",
        "video",
        "shows",
    ]
    out = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(60))[:300]
        out.append(
            Rollout(
                prompt_id=f"video-{i // GROUP:06d}/q{i // GROUP % 4}",
                index=i % GROUP,
                text=text,
                token_ids=[rng.randrange(152_000) for _ in range(128)],
                logprobs=[-rng.random() * 6.0 for _ in range(128)],
                policy_version=i // 4096,
            )
        )
    return out


def best(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(
    records: int, batch: int, n_random: int, repeat: int, workdir: Path
) -> list[tuple[str, float, float]]:
    rollouts = make_rollouts(records, seed=0)
    # The input data is scaffolding: keep its ~100k containers out of the cyclic GC,
    # which would otherwise charge full collections to whichever side allocates more.
    gc.collect()
    gc.freeze()
    steps = [rollouts[i : i + batch] for i in range(0, records, batch)]
    rng = random.Random(1)
    # (step, prompt_index, index) for LMDB and the line number for JSONL: both files
    # hold the records in the same order (shards are keyed by prompt, then position).
    picks = []
    for _ in range(n_random):
        line = rng.randrange(records)
        step, within = divmod(line, batch)
        picks.append((line, (step, within // GROUP, within % GROUP)))
    refs = [ref for _, ref in picks]
    lines = [line for line, _ in picks]

    lmdb_dir, jsonl_path = workdir / "store.lmdb", workdir / "rollouts.jsonl"

    def lmdb_write(sync: bool) -> Callable[[], None]:
        def write() -> None:
            shutil.rmtree(lmdb_dir, ignore_errors=True)
            with RunStore(lmdb_dir, sync=sync) as store:
                for step, shard in enumerate(steps):
                    store.commit_step(RUN, step, rollouts=shard)

        return write

    def jsonl_write(sync: bool) -> Callable[[], None]:
        def write() -> None:
            with open(jsonl_path, "w", encoding="utf-8") as fh:
                for shard in steps:
                    fh.write("".join(json.dumps(record_dict(r)) + "\n" for r in shard))
                    if sync:
                        fh.flush()
                        os.fsync(fh.fileno())

        return write

    rows: list[tuple[str, float, float]] = []
    rows.append(
        ("write, durable (fsync per step)", best(repeat, lmdb_write(True)), best(repeat, jsonl_write(True)))
    )
    rows.append(("write, no fsync", best(repeat, lmdb_write(False)), best(repeat, jsonl_write(False))))
    lmdb_write(True)()
    jsonl_write(True)()

    with RunStore(lmdb_dir, readonly=True) as store:
        n_steps = len(steps)

        def lmdb_seq() -> None:
            for step in range(n_steps):
                for _ in store.iter_shard("rollouts", RUN, step):
                    pass

        def lmdb_seq_raw() -> None:
            for step in range(n_steps):
                for _ in store.iter_shard_raw("rollouts", RUN, step):
                    pass

        def jsonl_seq() -> None:
            with open(jsonl_path, encoding="utf-8") as fh:
                for line in fh:
                    build_record(json.loads(line))

        def jsonl_seq_raw() -> None:
            with open(jsonl_path, encoding="utf-8") as fh:
                for line in fh:
                    json.loads(line)

        def lmdb_random_calls() -> None:
            for step, p, i in refs:
                store.get_rollout(RUN, step, p, i)

        def lmdb_random_batch() -> None:
            for start in range(0, len(refs), MINIBATCH):
                store.get_rollouts(RUN, refs[start : start + MINIBATCH])

        def offsets() -> list[int]:
            out, pos = [], 0
            with open(jsonl_path, "rb") as fh:
                for line in fh:
                    out.append(pos)
                    pos += len(line)
            return out

        index = offsets()

        def jsonl_random() -> None:
            with open(jsonl_path, "rb") as fh:
                for line in lines:
                    fh.seek(index[line])
                    build_record(json.loads(fh.readline()))

        assert store.get_rollouts(RUN, refs[:50]) == [rollouts[line] for line in lines[:50]]
        rows.append(("sequential read (Rollout objects)", best(repeat, lmdb_seq), best(repeat, jsonl_seq)))
        rows.append(("sequential read (dicts)", best(repeat, lmdb_seq_raw), best(repeat, jsonl_seq_raw)))
        t_random_jsonl = best(repeat, jsonl_random)
        rows.append(("random read, one call each", best(repeat, lmdb_random_calls), t_random_jsonl))
        rows.append(
            (f"random read, {MINIBATCH} per snapshot", best(repeat, lmdb_random_batch), t_random_jsonl)
        )
        t_index = best(repeat, offsets)
        lmdb_bytes, jsonl_bytes = (lmdb_dir / "data.mdb").stat().st_size, jsonl_path.stat().st_size
        used = store.stats()["used_bytes"]

    counts = {"random": n_random}
    table = []
    for name, t_lmdb, t_jsonl in rows:
        n = counts["random"] if name.startswith("random") else records
        table.append((name, n / t_lmdb, n / t_jsonl))
    table.append(("JSONL offset index build (records/s)", float("nan"), records / t_index))
    print_table(table, records, batch, n_random, used, lmdb_bytes, jsonl_bytes)
    return table


def print_table(
    table: list[tuple[str, float, float]],
    records: int,
    batch: int,
    n_random: int,
    used: int,
    lmdb_bytes: int,
    jsonl_bytes: int,
) -> None:
    title = (
        f"{records} Rollouts (~2 KB), {batch} per step, {n_random} random reads; "
        f"LMDB {used / 2**20:.1f} MiB used ({lmdb_bytes / 2**20:.1f} MiB file), JSONL {jsonl_bytes / 2**20:.1f} MiB"
    )

    def fmt(x: float) -> str:
        return "-" if x != x else f"{x:,.0f}"

    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        print(f"{'operation':40} {'LMDB rec/s':>14} {'JSONL rec/s':>14} {'LMDB/JSONL':>11}")
        for name, a, b in table:
            ratio = "-" if a != a else f"{a / b:.1f}x"
            print(f"{name:40} {fmt(a):>14} {fmt(b):>14} {ratio:>11}")
        return
    rich_table = Table(title=title)
    for column in ("operation", "LMDB rec/s", "JSONL rec/s", "LMDB / JSONL"):
        rich_table.add_column(column, justify="left" if column == "operation" else "right")
    for name, a, b in table:
        rich_table.add_row(name, fmt(a), fmt(b), "-" if a != a else f"{a / b:.1f}x")
    Console().print(rich_table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--random", type=int, default=5_000, help="random reads")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args.records, args.batch, args.random, args.repeat, args.dir)
        return
    with tempfile.TemporaryDirectory(prefix="rlaif-store-bench-") as tmp:
        run(args.records, args.batch, args.random, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
