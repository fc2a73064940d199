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


class DamagedStoreError(StoreError):
    """A store file is damaged (truncated, bad header): opening it would map pages the
    file does not hold, which kills the process with SIGBUS instead of an error."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(
            f"{path} {problem}; restore the store from a backup, or `rlaif store import` an "
            "`rlaif store export` of a good copy"
        )


class DamagedRecordError(StoreError):
    """One stored record fails its checksum or does not decode to what its key says."""

    def __init__(self, path: str, db: str, where: str, problem: str) -> None:
        self.path, self.db, self.where, self.problem = path, db, where, problem
        super().__init__(
            f"damaged record in {path}: {db} {where}: {problem} (`rlaif store verify {path}` lists every "
            "damaged record)"
        )


class VideoFileError(RlaifError):
    """A video file is missing or cannot be decoded (a user's own file: nothing to rebuild)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"cannot read the video {path}: {problem}")


class RunInterrupted(RlaifError):
    """The user stopped a run (Ctrl-C); what it stored is whole and ``--resume`` continues."""

    exit_code = 130


class RunDirInUseError(StoreError):
    """Another process writes this run directory (it holds ``RUN_DIR/.lock``)."""

    def __init__(self, run_dir: str, holder: str) -> None:
        self.run_dir, self.holder = run_dir, holder
        super().__init__(f"{run_dir} is in use by process {holder}, which is writing it; wait for that "
                         f"run to end (or stop it) before writing {run_dir} again")


class CheckpointError(StoreError):
    """A checkpoint is incomplete or damaged: a file is missing, unreadable or differs
    from the hash its manifest recorded."""


class VideoItemError(VideoFileError):
    """A benchmark item's video is missing or does not decode: the line names the item
    (so the user can find it in their annotations) and the file that was tried."""

    def __init__(self, item: str, path: str, problem: str) -> None:
        self.item, self.path, self.problem = item, path, problem
        RlaifError.__init__(self, f"item {item}: cannot read the video {path}: {problem}")


class AnnotationError(UsageError):
    """An annotation file the user brought is malformed: the line names the file, the item
    (its index, and its id when it has one) and the field."""

    def __init__(self, path: str, item: str | int | None, field: str | None, problem: str) -> None:
        self.path, self.item, self.field, self.problem = path, item, field, problem
        where = [str(path)]
        if item is not None:
            where.append(f"item {item}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(": ".join([*where, " ".join(problem.split())]))
