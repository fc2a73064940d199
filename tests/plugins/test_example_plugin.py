"""Third-party plugins installed for real: the example package (examples/rlaif-oracle-example)
and two fixture packages (tests/fixtures: one that fails to import, one that reuses the
example's oracle name) are pip-installed once per session, each into its own ``--target``
directory, so they arrive with a real ``.dist-info`` exactly as a user's install would.

The CLI is run in a subprocess with those directories on ``PYTHONPATH``; registry
behaviour is checked in-process on a fresh ``Registry`` with them on ``sys.path``.
Everything runs offline (``pip --no-index --no-build-isolation``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rlaif.core.errors import ConfigError, DuplicateComponentError, PluginLoadError
from rlaif.core.protocols import Oracle
from rlaif.core.records import Group, Prompt, Rollout, VideoRef
from rlaif.core.registry import Registry

REPO = Path(__file__).resolve().parents[2]
#: key -> (source directory, top-level module); the distributions are rlaif-oracle-example,
#: rlaif-broken-plugin and rlaif-dup-plugin.
PACKAGES = {
    "example": (REPO / "examples" / "rlaif-oracle-example", "rlaif_oracle_example"),
    "broken": (REPO / "tests" / "fixtures" / "broken_plugin", "rlaif_broken_plugin"),
    "dup": (REPO / "tests" / "fixtures" / "dup_plugin", "rlaif_dup_plugin"),
}
# A real install from a local source tree, offline, with the setuptools already installed.
PIP_INSTALL = "install --no-deps --no-build-isolation --no-index --no-cache-dir --quiet --disable-pip-version-check".split()
# The console script as a user runs it (the same entry function if it is not installed).
_SCRIPT = Path(sys.executable).with_name("rlaif")
RLAIF = (
    [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from rlaif.cli.main import main; main()"]
)
KNOBS = ("RLAIF_LOAD_PLUGINS", "RLAIF_DISABLE_PLUGINS", "RLAIF_STRICT_PLUGINS", "RLAIF_DEBUG")


@pytest.fixture(scope="session")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """key -> a directory holding that package installed by pip (built once per session).

    Each source tree is copied first because setuptools writes ``build/`` and
    ``*.egg-info`` next to the sources; the three installs run in parallel."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in this environment")
    root = tmp_path_factory.mktemp("plugin-sites")
    jobs = {}
    for key, (source, _) in PACKAGES.items():
        copy = root / f"{key}-src"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        site = root / f"{key}-site"
        argv = [sys.executable, "-m", "pip", *PIP_INSTALL, "--target", str(site), str(copy)]
        jobs[key] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for key, job in jobs.items():
        output, _ = job.communicate(timeout=300)
        if job.returncode != 0:
            pytest.fail(f"pip install of {PACKAGES[key][0]} failed:\n{output}")
    return {key: root / f"{key}-site" for key in PACKAGES}


@pytest.fixture(autouse=True)
def no_plugin_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KNOBS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch, sites: dict[str, Path]) -> Iterator[Callable[..., None]]:
    """``install("example", ...)`` puts those packages on ``sys.path`` for one test."""

    def prepend(*keys: str) -> None:
        for key in keys:
            monkeypatch.syspath_prepend(str(sites[key]))  # also invalidates import caches

    yield prepend
    tops = {top for _, top in PACKAGES.values()}
    for name in [m for m in sys.modules if m.split(".")[0] in tops]:
        del sys.modules[name]


def rlaif(
    sites: dict[str, Path], keys: tuple[str, ...], *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter with the ``keys`` packages installed."""
    environ = {k: v for k, v in os.environ.items() if k not in KNOBS}
    paths = [str(sites[k]) for k in keys] + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    environ["PYTHONPATH"] = os.pathsep.join(paths)
    environ.update(env)
    return subprocess.run([*RLAIF, *args], capture_output=True, text=True, env=environ, timeout=120)


def listed(sites: dict[str, Path], *keys: str, **env: str) -> list[dict[str, Any]]:
    proc = rlaif(sites, keys, "plugins", "list", "--json", **env)
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def rows_named(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["name"] == name]


def make_group(question: str, answers: list[str], context: str | None = None) -> Group:
    prompt = Prompt("p0", VideoRef("v0", "v0.mp4"), question)
    return Group(prompt, [Rollout("p0", i, text) for i, text in enumerate(answers)], context=context)


# -- the example plugin ------------------------------------------------------------------
def test_example_is_listed_with_its_package_and_version(sites: dict[str, Path]) -> None:
    rows = listed(sites, "example")
    (row,) = rows_named(rows, "keyword-overlap")
    assert row == {
        "kind": "oracle",
        "name": "keyword-overlap",
        "plugin": "rlaif_oracle_example",
        "package": "rlaif-oracle-example",
        "version": "0.1.0",
        "description": row["description"],
        "error": None,
    }
    assert row["description"]
    assert any(r["package"] == "oracle-rlaif" for r in rows), "built-ins must still be listed"
    assert not [r for r in rows if r["error"] and r["package"] == "rlaif-oracle-example"]


def test_example_is_built_through_the_registry_and_ranks(install: Callable[..., None]) -> None:
    install("example")
    registry = Registry()
    registry.load_entry_points()
    spec = registry.get("oracle", "keyword-overlap")
    assert (spec.dist, spec.version, spec.plugin) == ("rlaif-oracle-example", "0.1.0", "rlaif_oracle_example")
    # The oracle's module is imported only when it is built.
    assert "rlaif_oracle_example.keyword_overlap" not in sys.modules

    oracle = registry.build("oracle", "keyword-overlap", {"context_weight": 2.0})
    assert isinstance(oracle, Oracle)
    assert (oracle.name, oracle.needs_context, oracle.needs_reference) == ("keyword-overlap", False, False)
    group = make_group(
        "What is the dog chasing in the park?",
        ["A cat.", "The dog is chasing a red ball.", "The dog runs.", "A dog."],
        context="A dog chases a red ball across a park.",
    )
    (ranking,) = oracle.rank([group])
    # shared with the question + 2 x shared with the narrative: 0+0, 2+2*3, 1+2*1, 1+2*1
    assert ranking.scores == [0.0, 8.0, 3.0, 3.0]
    assert ranking.order == [1, 2, 3, 0] and ranking.ties == [[2, 3]]
    assert ranking.oracle == "keyword-overlap" and ranking.prompt_id == "p0"

    with pytest.raises(ConfigError, match="unknown option 'weight'.*valid options: context_weight"):
        registry.build("oracle", "keyword-overlap", {"weight": 1.0})


def test_examples_own_tests_pass_when_installed(sites: dict[str, Path], tmp_path: Path) -> None:
    """The template third parties copy must itself pass against a real install (run from
    elsewhere, so the package is imported from the install, not the source tree)."""
    environ = {k: v for k, v in os.environ.items() if k not in KNOBS}
    environ["PYTHONPATH"] = str(sites["example"])
    tests = PACKAGES["example"][0] / "tests"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


# -- a plugin that fails to import -------------------------------------------------------
def test_broken_plugin_is_listed_with_its_error(sites: dict[str, Path]) -> None:
    rows = listed(sites, "example", "broken")
    (broken,) = [r for r in rows if r["plugin"] == "rlaif_broken_plugin"]
    assert broken["package"] == "rlaif-broken-plugin" and broken["version"] == "0.0.1"
    assert "failed to load: ImportError" in broken["error"] and "rlaif-missing-dependency" in broken["error"]
    assert rows_named(rows, "keyword-overlap"), "the other plugins still load"
    assert any(r["package"] == "oracle-rlaif" for r in rows)


def test_broken_plugin_table_exits_zero(sites: dict[str, Path]) -> None:
    proc = rlaif(sites, ("example", "broken"), "plugins", "list", COLUMNS="200")
    assert proc.returncode == 0, proc.stderr
    assert "rlaif_broken_plugin" in proc.stdout and "keyword-overlap" in proc.stdout


def test_strict_mode_fails_on_a_broken_plugin_with_one_line(sites: dict[str, Path]) -> None:
    proc = rlaif(sites, ("example", "broken"), "plugins", "list", "--json", RLAIF_STRICT_PLUGINS="1")
    assert proc.returncode != 0
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error:") and "rlaif_broken_plugin" in line and "ImportError" in line


def test_broken_plugin_in_process(install: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    install("broken")
    registry = Registry()
    registry.load_entry_points()
    (failure,) = [f for f in registry.failures() if f.dist == "rlaif-broken-plugin"]
    assert (failure.name, failure.version) == ("rlaif_broken_plugin", "0.0.1")
    assert failure.error and "ImportError" in failure.error
    assert registry.names("oracle"), "built-in oracles are still there"

    monkeypatch.setenv("RLAIF_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError) as info:
        Registry().load_entry_points()
    assert info.value.dist == "rlaif-broken-plugin" and isinstance(info.value.cause, ImportError)


# -- two packages, one name --------------------------------------------------------------
def test_duplicate_name_is_reported_naming_both_packages(sites: dict[str, Path]) -> None:
    rows = listed(sites, "example", "dup")
    (conflict,) = [r for r in rows_named(rows, "keyword-overlap") if r["error"]]
    assert conflict["kind"] == "oracle"
    assert "rlaif-oracle-example" in conflict["error"] and "rlaif-dup-plugin" in conflict["error"]


def test_duplicate_name_fails_in_strict_mode_with_one_line(sites: dict[str, Path]) -> None:
    proc = rlaif(sites, ("example", "dup"), "plugins", "list", RLAIF_STRICT_PLUGINS="1")
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert "keyword-overlap" in line and "rlaif-oracle-example" in line and "rlaif-dup-plugin" in line


def test_duplicate_name_get_raises_naming_both(
    install: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install("example", "dup")
    registry = Registry()
    registry.load_entry_points()
    with pytest.raises(DuplicateComponentError) as info:
        registry.get("oracle", "keyword-overlap")
    error = info.value
    assert {error.first, error.second} == {"rlaif-oracle-example", "rlaif-dup-plugin"}
    assert "rlaif-oracle-example" in str(error) and "rlaif-dup-plugin" in str(error)

    # The message's advice works: disable the second package and the name resolves.
    monkeypatch.setenv("RLAIF_DISABLE_PLUGINS", error.second)
    registry = Registry()
    registry.load_entry_points()
    assert registry.get("oracle", "keyword-overlap").dist == error.first
    assert not registry.conflicts()


# -- operational knobs -------------------------------------------------------------------
@pytest.mark.parametrize(
    "disabled", ["rlaif-oracle-example", "rlaif_oracle_example", "other, rlaif-oracle-example"]
)
def test_disable_plugins_removes_the_example(sites: dict[str, Path], disabled: str) -> None:
    rows = listed(sites, "example", RLAIF_DISABLE_PLUGINS=disabled)
    assert not rows_named(rows, "keyword-overlap")
    assert any(r["package"] == "oracle-rlaif" for r in rows)


def test_load_plugins_allow_list_by_package(sites: dict[str, Path]) -> None:
    rows = listed(sites, "example", "broken", RLAIF_LOAD_PLUGINS="rlaif-oracle-example")
    assert rows and {r["package"] for r in rows} == {"rlaif-oracle-example"}


def test_load_plugins_allow_list_by_plugin_name(sites: dict[str, Path]) -> None:
    rows = listed(sites, "example", RLAIF_LOAD_PLUGINS="builtin-oracles")
    assert {(r["kind"], r["package"]) for r in rows} == {("oracle", "oracle-rlaif")}
    assert not rows_named(rows, "keyword-overlap")
