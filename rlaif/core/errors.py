"""Domain exceptions. Each carries enough to print one clear line for a user; the CLI
turns them into a red message and an exit code (2 for usage, 1 for runtime)."""

from __future__ import annotations

from collections.abc import Iterable


class RlaifError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(RlaifError):
    """The user asked for something invalid (a bad option, file or value)."""

    exit_code = 2


class ConfigError(UsageError):
    """One or more problems in a run configuration, reported together."""

    def __init__(self, problems: str | Iterable[str], source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))


class UnknownComponentError(UsageError):
    def __init__(self, kind: str, name: str, available: Iterable[str]) -> None:
        self.kind, self.name, self.available = kind, name, sorted(available)
        choices = ", ".join(self.available) or "none installed"
        super().__init__(f"unknown {kind} {name!r}; choose one of: {choices} (see `rlaif plugins list`)")


class DuplicateComponentError(RlaifError):
    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind, self.name, self.first, self.second = kind, name, first, second
        super().__init__(
            f"{kind} {name!r} is registered by both {first!r} and {second!r}; "
            f"uninstall one or disable it with RLAIF_DISABLE_PLUGINS={second}"
        )


class PluginLoadError(RlaifError):
    def __init__(self, plugin: str, dist: str | None, version: str | None, cause: BaseException) -> None:
        self.plugin, self.dist, self.version, self.cause = plugin, dist, version, cause
        origin = f" from {dist} {version}" if dist else ""
        super().__init__(f"plugin {plugin!r}{origin} failed to load: {type(cause).__name__}: {cause}")


class StoreError(RlaifError):
    """The run store is missing, corrupt or used in a way that would lose data."""


class OracleError(RlaifError):
    """An oracle cannot rank (for example it needs ground truth the benchmark lacks)."""
