"""Shipped pre-built models: used only under their exact key, checked before use, never
in place of a build that differs (rlaif.core.cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif.core.cache import (
    MANIFEST,
    PREBUILT_DIR,
    cached_build,
    file_digest,
    read_manifest,
    ship,
    tree_digest,
)


def _entry(root: Path, name: str = "judge/abc123") -> Path:
    """A finished cache entry with weights, a marker and a resumable stage."""
    directory = root / name
    (directory / "lm").mkdir(parents=True)
    (directory / "lm" / "model.safetensors").write_bytes(b"weights" * 100)
    (directory / "stages" / "first").mkdir(parents=True)
    (directory / "stages" / "first" / "model.safetensors").write_bytes(b"old")
    (directory / "judge.json").write_text(json.dumps({"recipe": "x"}))
    return directory


@pytest.fixture()
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "prebuilt"
    ship({"test judge": (_entry(tmp_path / "built"), "judge.json")}, root, exclude=("stages",))
    monkeypatch.setenv("RLAIF_PREBUILT", str(root))
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    return root


def _cached(tmp_path: Path, name: str = "judge/abc123") -> tuple[Path, list[Path]]:
    builds: list[Path] = []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        (tmp / "judge.json").write_text("{}")

    return cached_build(tmp_path / "cache" / name, build, done="judge.json"), builds


def test_a_shipped_model_is_copied_into_the_cache_instead_of_built(shipped: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    target, builds = _cached(tmp_path)
    assert builds == []
    assert (target / "lm" / "model.safetensors").read_bytes() == b"weights" * 100
    assert not (target / "stages").exists()  # resumable stages are not shipped
    assert "using the shipped test judge" in capsys.readouterr().err
    assert not list((tmp_path / "cache" / "judge").glob(".fetch-*"))  # nothing half-copied left behind


def test_another_key_is_built_not_fetched(shipped: Path, tmp_path: Path) -> None:
    _, builds = _cached(tmp_path, "judge/another")
    assert len(builds) == 1


def test_prebuilt_off_builds_from_nothing(shipped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_PREBUILT", "off")
    _, builds = _cached(tmp_path)
    assert len(builds) == 1


def test_a_damaged_shipped_file_is_skipped_with_a_warning_and_built(shipped: Path, tmp_path: Path) -> None:
    (shipped / "judge/abc123/lm/model.safetensors").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match=r"damaged \(lm/model.safetensors"):
        target, builds = _cached(tmp_path)
    assert len(builds) == 1 and not (target / "lm").exists()


def test_a_model_is_named_by_its_weights_not_its_place(tmp_path: Path) -> None:
    a = _entry(tmp_path / "a")
    b = _entry(tmp_path / "b", "somewhere/else")
    assert tree_digest(a, exclude=("stages",)) == tree_digest(b, exclude=("stages",))
    (b / "stages" / "first" / "model.safetensors").write_bytes(b"other")
    assert tree_digest(a, exclude=("stages",)) == tree_digest(b, exclude=("stages",))
    (b / "lm" / "model.safetensors").write_bytes(b"trained further")
    assert tree_digest(a, exclude=("stages",)) != tree_digest(b, exclude=("stages",))


def test_the_shipped_set_matches_its_manifest() -> None:
    """Every shipped file is there with the bytes the manifest names (a checkout through
    LFS pointers or a truncated copy fails here, not in a user's run)."""
    manifest = read_manifest(PREBUILT_DIR)
    assert manifest["entries"], f"no shipped models in {PREBUILT_DIR / MANIFEST}"
    for name, entry in manifest["entries"].items():
        shipped = {p.relative_to(PREBUILT_DIR / name).as_posix() for p in (PREBUILT_DIR / name).rglob("*")
                   if p.is_file()}
        assert shipped == set(entry["files"]), name
        for rel, digest in entry["files"].items():
            assert file_digest(PREBUILT_DIR / name / rel) == digest, f"{name}/{rel}"
    assert manifest["torch_threads"] >= 1 and manifest["built_by"].startswith("python benchmarks/")
