"""Registry behaviour with throw-away plugins registered by hand (entry-point discovery
of real installed packages is covered in tests/plugins/test_example_plugin.py)."""

from __future__ import annotations

import pytest

from rlaif import hookimpl
from rlaif.core.errors import ConfigError, DuplicateComponentError, PluginLoadError, UnknownComponentError
from rlaif.core.registry import Registry, load_plugins


class Scorer:
    def __init__(self, bonus: float = 0.0) -> None:
        self.bonus = bonus


class OraclePlugin:
    @hookimpl
    def rlaif_register_oracles(self, register):  # type: ignore[no-untyped-def]
        register("scorer", f"{__name__}:Scorer", description="test oracle")


class SameNamePlugin:
    @hookimpl
    def rlaif_register_oracles(self, register):  # type: ignore[no-untyped-def]
        register("scorer", f"{__name__}:Scorer", description="again")


class MisspeltHook:
    @hookimpl
    def rlaif_register_oracle(self, register):  # type: ignore[no-untyped-def]  # missing "s"
        register("x", "a:b")


class RaisingPlugin:
    @hookimpl
    def rlaif_register_losses(self, register):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")


def test_builtins_are_discovered_through_entry_points() -> None:
    registry = load_plugins(refresh=True)
    plugins = {p.name: p for p in registry.plugins()}
    assert "builtin-oracles" in plugins
    assert plugins["builtin-oracles"].dist == "oracle-rlaif"
    assert not registry.failures()


def test_register_build_and_unknown_names() -> None:
    registry = Registry()
    registry.add_plugin(OraclePlugin(), "test-oracle")
    try:
        spec = registry.get("oracle", "scorer")
        assert spec.plugin == "test-oracle" and spec.description == "test oracle"
        built = registry.build("oracle", "scorer", {"bonus": 2.0})
        assert isinstance(built, Scorer) and built.bonus == 2.0
        with pytest.raises(UnknownComponentError, match="choose one of: scorer"):
            registry.get("oracle", "scorr")
        with pytest.raises(ConfigError, match="unknown option 'bonuss'.*valid options: bonus"):
            registry.build("oracle", "scorer", {"bonuss": 1})
    finally:
        registry.remove_plugin("test-oracle")
    assert registry.names("oracle") == []


def test_duplicate_names_are_reported_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry()
    registry.add_plugin(OraclePlugin(), "first", dist="pkg-one")
    registry.add_plugin(SameNamePlugin(), "second", dist="pkg-two")
    with pytest.raises(DuplicateComponentError) as info:
        registry.get("oracle", "scorer")
    assert "pkg-one" in str(info.value) and "pkg-two" in str(info.value)
    assert len(registry.conflicts()) == 1
    monkeypatch.setenv("RLAIF_STRICT_PLUGINS", "1")
    registry._collected = False
    with pytest.raises(DuplicateComponentError):
        registry.components()


def test_misspelt_hook_fails_loudly_but_not_fatally() -> None:
    registry = Registry()
    registry.add_plugin(MisspeltHook(), "typo")
    (info,) = registry.failures()
    assert info.name == "typo" and "rlaif_register_oracle" in (info.error or "")


def test_raising_hook_is_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry()
    registry.add_plugin(RaisingPlugin(), "raiser")
    registry.add_plugin(OraclePlugin(), "good")
    assert registry.names("oracle") == ["scorer"]
    assert [f.name for f in registry.failures()] == ["raiser"]
    monkeypatch.setenv("RLAIF_STRICT_PLUGINS", "1")
    strict = Registry()
    strict.add_plugin(RaisingPlugin(), "raiser")
    with pytest.raises(PluginLoadError, match="boom"):
        strict.components()


def test_unresolvable_target_is_a_plugin_load_error() -> None:
    class Bad:
        @hookimpl
        def rlaif_register_oracles(self, register):  # type: ignore[no-untyped-def]
            register("ghost", "no_such_module_xyz:Thing")

    registry = Registry()
    registry.add_plugin(Bad(), "bad")
    assert registry.names("oracle") == ["ghost"]  # listing never imports the target
    with pytest.raises(PluginLoadError, match="no_such_module_xyz"):
        registry.build("oracle", "ghost")
