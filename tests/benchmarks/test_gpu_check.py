"""The benchmark scripts' dry runs: the same code paths as on a GPU, on the CPU at a tiny
size, so that a change in the policy, the loop or TRL cannot silently break them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_reports_both_phases():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = {line.split("  ")[0]: line for line in done.stdout.splitlines() if line.strip()}
    for metric in ("rollout tokens/s", "update s/step", "MFU generation", "MFU update", "peak memory GiB"):
        assert metric in lines, done.stdout
    assert "ours" in done.stdout
    rollout = lines["rollout tokens/s"].split()[2:]  # one number per measured side
    assert rollout and all(float(x) > 0 for x in rollout)
