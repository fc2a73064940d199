"""The run directory's lock and atomic policy save, without a run (the end-to-end checks
are in test_rl.py): a real flock held by a real second process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlaif.core.errors import RunDirInUseError
from rlaif.train.run_dir import clean_stale_temps, lock_run_dir, releases_run_dir, save_policy

HOLD = ("import sys, time; from pathlib import Path; from rlaif.train.run_dir import lock_run_dir; "
        "lock_run_dir(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)")


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirInUseError, match=f"in use by process {holder.pid}"):
            lock_run_dir(tmp_path)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the flock
        holder.wait()
    lock = lock_run_dir(tmp_path)
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(RunDirInUseError, match="this one"):
        lock_run_dir(tmp_path)
    lock.release()
    lock_run_dir(tmp_path).release()


def test_a_run_that_raises_releases_its_lock(tmp_path: Path) -> None:
    @releases_run_dir
    def failing_run(run_dir: Path) -> None:
        lock_run_dir(run_dir)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError) as caught:  # the traceback keeps the frame alive
        failing_run(tmp_path)
    assert caught.value
    lock_run_dir(tmp_path).release()


class FilePolicy:
    def __init__(self, text: str, fail: bool = False) -> None:
        self.text, self.fail = text, fail

    def save(self, directory: str) -> None:
        (Path(directory) / "adapter").mkdir(parents=True)
        (Path(directory) / "adapter" / "weights").write_text(self.text)
        if self.fail:
            raise KeyboardInterrupt  # stands for a kill between two files
        (Path(directory) / "policy.json").write_text(self.text)


def test_save_policy_leaves_the_old_policy_or_the_new_one(tmp_path: Path) -> None:
    save_policy(FilePolicy("old"), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        save_policy(FilePolicy("new", fail=True), tmp_path)
    assert (tmp_path / "policy" / "policy.json").read_text() == "old"
    assert (tmp_path / "policy" / "adapter" / "weights").read_text() == "old"
    clean_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
    save_policy(FilePolicy("new"), tmp_path)
    assert (tmp_path / "policy" / "policy.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
