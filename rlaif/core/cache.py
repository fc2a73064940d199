"""Where built models live (``$RLAIF_CACHE``), and the models the project ships pre-built.

Every model the embedded default needs (the SFT policy, the world judge, the caption-tuned
captioner, the judge adapted to its narratives) is built by project code on first use and
cached under ``<cache>/<kind>/<key>``, where ``key`` digests its recipe and training data.
Built from nothing they take about 36 min on two CPU cores. A new user should see the main
command work in minutes, as a Hugging Face user does after a hub download, so the project
ships those builds (``rlaif/prebuilt``, written by ``benchmarks/build_prebuilt.py``) under
the same ``<kind>/<key>`` names, with a manifest of file digests.

A shipped entry is used only where the current code would build exactly that entry: any
change to a recipe, the world or the training data changes the key, and the model is
built as before. Shipped files are checked against the manifest before they are copied
into the cache; a damaged one is skipped with a warning and the model is built instead.
``RLAIF_PREBUILT=off`` builds everything from nothing; ``RLAIF_PREBUILT=DIR`` reads
another shipped set. No torch here: the CLI imports this at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

#: The shipped set inside the installed package, and its manifest's file name.
PREBUILT_DIR = Path(__file__).resolve().parent.parent / "prebuilt"
MANIFEST = "manifest.json"
#: ``RLAIF_PREBUILT`` values that turn shipped models off.
OFF = ("0", "off", "no", "false", "none")


def cache_root() -> Path:
    """Where built artefacts are cached: ``$RLAIF_CACHE`` or ``~/.cache/rlaif``."""
    return Path(os.environ.get("RLAIF_CACHE") or Path.home() / ".cache" / "rlaif")


def prebuilt_root() -> Path | None:
    """The shipped set in use: ``$RLAIF_PREBUILT`` (a directory, or ``off``) or the package's."""
    value = os.environ.get("RLAIF_PREBUILT", "").strip()
    if value.lower() in OFF:
        return None
    return Path(value).expanduser() if value else PREBUILT_DIR


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the shipped set at ``root`` (empty where there is none)."""
    path = root / MANIFEST
    if not path.is_file():
        return {"entries": {}}
    return dict(json.loads(path.read_text()))


def entry_name(target: Path) -> str:
    """``<kind>/<key>``: a cache entry's name, the same in the cache and the shipped set."""
    return f"{target.parent.name}/{target.name}"


def fetch_prebuilt(target: Path, done: str) -> bool:
    """Copy the shipped model named like ``target`` into the cache, if there is one and its
    files match the manifest; True when ``target/done`` now exists. Copied into a temp
    dir beside ``target`` and renamed into place, like every cache build."""
    root = prebuilt_root()
    if root is None:
        return False
    name = entry_name(target)
    entry = read_manifest(root).get("entries", {}).get(name)
    if entry is None or done not in entry.get("files", {}):
        return False
    source = root / name
    for rel, digest in entry["files"].items():
        path = source / rel
        if not path.is_file() or file_digest(path) != digest:
            warnings.warn(f"shipped model {source} is damaged ({rel} does not match {root / MANIFEST}); "
                          "building it instead", stacklevel=2)
            return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        for rel in entry["files"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, tmp / rel)
        try:
            tmp.rename(target)
        except OSError:  # someone else put it there first
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"rlaif: using the shipped {entry.get('what', name)} ({name}; RLAIF_PREBUILT=off builds it)",
          file=sys.stderr)
    return (target / done).exists()


def cached_build(target: Path, build: Callable[[Path], Any], done: str = "model.safetensors") -> Path:
    """``target``, built by ``build(tmp_dir)`` unless ``target/done`` exists or ships
    pre-built (:func:`fetch_prebuilt`): in a temp dir renamed into place, so an interrupted
    or concurrent build never leaves a half-written cache entry (a concurrent builder's
    result is as good as ours)."""
    if (target / done).exists() or fetch_prebuilt(target, done):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # someone else finished first
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ship(entries: Mapping[str, tuple[Path, str]], root: Path, *, exclude: Iterable[str] = (),
         about: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the cache entries ``{what: (directory, done file)}`` into the shipped set at
    ``root`` (replacing it) with their manifest; top-level names in ``exclude`` (e.g.
    resumable training stages) are left out. Returns the manifest."""
    skip = set(exclude)
    if root.exists():
        shutil.rmtree(root)
    manifest: dict[str, Any] = {**(about or {}), "entries": {}}
    for what, (directory, done) in entries.items():
        name = entry_name(directory)
        files: dict[str, str] = {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            rel = path.relative_to(directory)
            if rel.parts[0] in skip:
                continue
            (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, root / name / rel)
            files[rel.as_posix()] = file_digest(path)
        if done not in files:
            raise ValueError(f"{directory} has no {done}: not a finished build")
        manifest["entries"][name] = {"what": what, "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def tree_digest(directory: Path, *, pattern: str = "*.safetensors", exclude: Iterable[str] = ()) -> str:
    """A digest of the files matching ``pattern`` under ``directory`` (relative names and
    bytes; top-level names in ``exclude`` left out): names a saved model by what it is,
    wherever it lies."""
    skip = set(exclude)
    digest = hashlib.sha256()
    for path in sorted(directory.rglob(pattern)):
        rel = path.relative_to(directory)
        if rel.parts[0] in skip:
            continue
        digest.update(f"{rel.as_posix()}\x1f{file_digest(path)}\x1e".encode())
    return digest.hexdigest()
