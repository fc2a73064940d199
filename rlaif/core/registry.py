"""The plugin registry: a typed facade over pluggy so no other code touches ``pm.hook``.

Every component, built-in or third-party, arrives through the ``oracle_rlaif.plugins``
entry-point group. Entry points are loaded one by one so that one broken plugin is
reported (``rlaif plugins list`` shows its error) instead of breaking the tool; set
``RLAIF_STRICT_PLUGINS=1`` to make that fatal (for CI). ``RLAIF_LOAD_PLUGINS`` is an
allow-list and ``RLAIF_DISABLE_PLUGINS`` a deny-list of plugin or distribution names,
both comma-separated. Registering is cheap: targets are imported only in :meth:`build`.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from rlaif import ENTRY_POINT_GROUP, PROJECT
from rlaif.core import hookspecs
from rlaif.core.errors import (
    ConfigError,
    DuplicateComponentError,
    PluginLoadError,
    UnknownComponentError,
    UsageError,
)
from rlaif.core.option_types import option_problems
from rlaif.core.protocols import KINDS


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component: enough to list it and, on demand, to build it."""

    kind: str
    name: str
    target: str
    description: str
    plugin: str
    dist: str | None = None
    version: str | None = None

    def resolve(self) -> Callable[..., Any]:
        """Import the target (this is where torch & co. get imported, never earlier)."""
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
        except Exception as exc:
            raise PluginLoadError(self.plugin, self.dist, self.version, exc) from exc
        return obj  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PluginInfo:
    """A plugin (one entry point or one object registered by hand) and its load status."""

    name: str
    dist: str | None
    version: str | None
    error: str | None = None


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {item.strip() for item in raw.split(",") if item.strip()}


def strict_plugins() -> bool:
    return os.environ.get("RLAIF_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager with the hook specifications and no plugins (tests use one each)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


class Registry:
    """Components by kind and name, collected from plugins' ``rlaif_register_*`` hooks."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm or get_plugin_manager()
        self._plugins: dict[str, PluginInfo] = {}
        self._components: dict[tuple[str, str], ComponentSpec] = {}
        self._conflicts: dict[tuple[str, str], DuplicateComponentError] = {}
        self._collected = False

    # -- loading ---------------------------------------------------------------------
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load each entry point of ``group`` on its own so one failure stays isolated."""
        allow, deny = _env_list("RLAIF_LOAD_PLUGINS"), _env_list("RLAIF_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            if ep.name in seen or ep.name in self._plugins:
                continue  # the same distribution visible twice on sys.path
            seen.add(ep.name)
            if allow is not None and ep.name not in allow and dist not in allow:
                continue
            if ep.name in deny or dist in deny:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(PluginLoadError(ep.name, dist, version, exc))
                continue
            self.add_plugin(plugin, ep.name, dist=dist, version=version)

    def add_plugin(self, plugin: object, name: str, *, dist: str | None = None, version: str | None = None) -> None:
        """Register a plugin object (module or instance); tests use this for throw-away
        plugins and :meth:`remove_plugin` to take them out again."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(PluginLoadError(name, dist, version, exc))
            return
        self._plugins[name] = PluginInfo(name, dist, version)
        self._collected = False

    def remove_plugin(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self._plugins.pop(name, None)
        self._collected = False

    def _fail(self, error: PluginLoadError) -> None:
        if strict_plugins():
            raise error
        self._plugins[error.plugin] = PluginInfo(error.plugin, error.dist, error.version, str(error))

    # -- collecting ------------------------------------------------------------------
    def _collect(self) -> None:
        if self._collected:
            return
        self._components.clear()
        self._conflicts.clear()
        for kind in KINDS:
            hook = getattr(self.pm.hook, hookspecs.HOOK_FOR_KIND[kind])
            # Call each implementation ourselves so every component knows its plugin
            # and one plugin's exception does not hide the others' components.
            for impl in reversed(hook.get_hookimpls()):
                info = self._plugins.get(impl.plugin_name) or PluginInfo(impl.plugin_name, None, None)
                try:
                    impl.function(register=self._register_fn(kind, info))
                except DuplicateComponentError:
                    raise
                except Exception as exc:
                    self._fail(PluginLoadError(info.name, info.dist, info.version, exc))
        self._collected = True

    def _register_fn(self, kind: str, info: PluginInfo) -> Callable[..., None]:
        def register(name: str, target: str, *, description: str = "") -> None:
            if not isinstance(name, str) or not name or ":" not in target:
                raise ValueError(f"register({name!r}, {target!r}): target must look like 'module:Factory'")
            spec = ComponentSpec(kind, name, target, description, info.name, info.dist, info.version)
            key = (kind, name)
            if key in self._components:
                first = self._components[key]
                error = DuplicateComponentError(kind, name, first.dist or first.plugin, info.dist or info.name)
                if strict_plugins():
                    raise error
                self._conflicts[key] = error
                return
            self._components[key] = spec

        return register

    # -- queries ---------------------------------------------------------------------
    def plugins(self) -> list[PluginInfo]:
        self._collect()
        return sorted(self._plugins.values(), key=lambda p: p.name)

    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins() if p.error]

    def conflicts(self) -> list[DuplicateComponentError]:
        self._collect()
        return list(self._conflicts.values())

    def components(self, kind: str | None = None) -> list[ComponentSpec]:
        self._collect()
        if kind is not None and kind not in KINDS:
            raise UsageError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
        specs = [s for s in self._components.values() if kind is None or s.kind == kind]
        return sorted(specs, key=lambda s: (KINDS.index(s.kind), s.name))

    def names(self, kind: str) -> list[str]:
        return [s.name for s in self.components(kind)]

    def get(self, kind: str, name: str) -> ComponentSpec:
        self._collect()
        if (kind, name) in self._conflicts:
            raise self._conflicts[(kind, name)]
        try:
            return self._components[(kind, name)]
        except KeyError:
            raise UnknownComponentError(kind, name, self.names(kind)) from None

    def check(self, kind: str, name: str, options: dict[str, Any] | None = None) -> None:
        """Raise the errors :meth:`build` would raise for these options, without building:
        lets a command reject a misspelt option before it creates or trains anything."""
        check_options(f"{kind} {name!r}", self.get(kind, name).resolve(), dict(options or {}))

    def problems(self, kind: str, name: str, options: dict[str, Any] | None = None) -> list[str]:
        """What :meth:`check` would raise, as messages, so a command can collect the
        problems of every component it builds into one error."""
        return self.checked_options(kind, name, options)[1]

    def checked_options(self, kind: str, name: str, options: dict[str, Any] | None = None
                        ) -> tuple[dict[str, Any], list[str]]:
        """``options`` coerced to the factory's types, and every problem found."""
        try:
            spec = self.get(kind, name)
        except (UnknownComponentError, DuplicateComponentError) as exc:
            return dict(options or {}), [str(exc)]
        return option_problems(f"{kind} {name!r}", spec.resolve(), dict(options or {}))

    def build(self, kind: str, name: str, options: dict[str, Any] | None = None, **extra: Any) -> Any:
        """Import and call the component's factory with its options.

        ``options`` come from the user (config file or CLI) and are checked against the
        factory's signature, so a misspelt option is a one-line error naming the valid
        ones. ``extra`` are wiring arguments the loop offers (``benchmark=``,
        ``policy=``, ``store=``); each is passed only if the factory accepts it."""
        spec = self.get(kind, name)
        factory = spec.resolve()
        options = check_options(f"{kind} {name!r}", factory, dict(options or {}))
        wiring = {k: v for k, v in extra.items() if k not in options and accepts_keyword(factory, k)}
        return factory(**options, **wiring)


def accepts_keyword(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_options(what: str, factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """Raise :class:`ConfigError` listing every unknown option of ``factory`` (with the
    closest valid name) and every value of the wrong type (against the factory's
    annotations, :mod:`rlaif.core.option_types`); return the options coerced (an integer
    where a float is wanted becomes a float)."""
    coerced, problems = option_problems(what, factory, options)
    if problems:
        raise ConfigError(problems)
    return coerced


_REGISTRY: Registry | None = None


def load_plugins(*, refresh: bool = False) -> Registry:
    """The process-wide registry, loading entry points on first use (idempotent)."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        registry = Registry()
        registry.load_entry_points()
        _REGISTRY = registry
    return _REGISTRY


def iter_component_rows(registry: Registry, kind: str | None = None) -> Iterable[dict[str, Any]]:
    """Rows for ``rlaif plugins list``: components, then failed plugins and conflicts."""
    for spec in registry.components(kind):
        yield {
            "kind": spec.kind,
            "name": spec.name,
            "plugin": spec.plugin,
            "package": spec.dist,
            "version": spec.version,
            "description": spec.description,
            "error": None,
        }
    if kind is None:
        for info in registry.failures():
            yield {"kind": None, "name": None, "plugin": info.name, "package": info.dist,
                   "version": info.version, "description": "", "error": info.error}
    for conflict in registry.conflicts():
        if kind is None or conflict.kind == kind:
            yield {"kind": conflict.kind, "name": conflict.name, "plugin": conflict.second,
                   "package": conflict.second, "version": None, "description": "", "error": str(conflict)}
