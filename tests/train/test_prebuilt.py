"""The shipped models are what the default run looks up (rlaif.train.prebuilt)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlaif.core.cache import PREBUILT_DIR, entry_name, read_manifest


@pytest.mark.integration
def test_the_shipped_models_are_what_the_default_run_looks_up(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """From an empty cache, every model of the default run comes from the shipped set,
    under the key today's code computes; after any change to a recipe, the world or the
    training data this fails until ``benchmarks/build_prebuilt.py`` rebuilds the set
    (a stale set would be ignored, and every new user would wait ~36 min for builds)."""
    from rlaif.plugins.encoders.tiny_conv import default_benchmark
    from rlaif.train.prebuilt import default_models

    torch.set_num_threads(1)
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RLAIF_PREBUILT", raising=False)
    models = default_models(default_benchmark(0), build=False)
    assert {entry_name(directory) for directory, _ in models.values()} == set(read_manifest(PREBUILT_DIR)["entries"])
    for directory, done in models.values():
        assert (directory / done).is_file()
