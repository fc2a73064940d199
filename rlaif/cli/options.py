"""One way, for every command, to choose components and set their options.

Each command that builds components takes ``--config FILE`` (a run TOML), the kinds it
uses by name (``--policy``, ``--oracle``, ``--loss``, ``--benchmark``) and any number of
``--set kind.option=value`` (a TOML value; a bare word is a string). Component-specific
flags (``--judge``, ``--judge-url``, ``--context``, ``--steps``...) are aliases: each
names one ``kind.option`` and goes through the same path. Precedence is defaults <
``--config`` < flags and ``--set``; a flag and a ``--set`` that give one key two values
is an error, as is setting a kind the command does not use. Every problem, here and in
the options' names and types (checked against the component's factory), is reported in
one line before anything is built.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rlaif.core.config import RunConfig
    from rlaif.core.registry import Registry

# ruff: noqa: UP045  (typer reads Optional[...] at runtime)

SET_HELP = ("Set a component or run option: KIND.OPTION=VALUE, VALUE a TOML literal (3, 0.5, true, "
            "'[1, 2]', '\"a b\"'; a bare word is a string). Repeatable; overrides --config.")


def set_option() -> Any:
    return typer.Option(None, "--set", metavar="KIND.OPTION=VALUE", help=SET_HELP)


def config_option(help: str = "Run TOML: a [run] table and one table per component kind "
                  "(name and options); flags and --set override it.") -> Any:
    return typer.Option(None, "--config", help=help)


def component_option(kind: str, help: str = "") -> Any:
    return typer.Option(None, f"--{kind}", help=help or f"The {kind} by name (see `rlaif plugins list`); "
                        f"= --set {kind}.name=NAME.")


@dataclass
class Given:
    """What one invocation says about its config, merged and not yet validated."""

    data: dict[str, Any]
    source: str | None
    #: dotted key -> how the user set it (``--judge``, ``--set oracle.judge``, ``--config run.toml``)
    labels: dict[str, str] = field(default_factory=dict)
    #: dotted keys given on the command line (flags and --set), not by the file
    command_line: set[str] = field(default_factory=set)
    #: what is wrong with the command line itself, reported with the config's problems
    problems: list[str] = field(default_factory=list)

    def only(self, *sections: str) -> Given:
        """This with only ``sections`` kept: a full run TOML may go to a command that
        reads one or two of its tables."""
        return Given({k: v for k, v in self.data.items() if k in sections}, self.source,
                     self.labels, self.command_line, self.problems)

    def check(self) -> None:
        from rlaif.core.errors import ConfigError

        if self.problems:
            raise ConfigError(self.problems)


def gather(config: Path | None, sets: Sequence[str] | None, flags: Mapping[str, tuple[str, Any]] | None = None,
           *, uses: Collection[str] | None = None, command: str = "this command") -> Given:
    """Merge ``--config`` (``config``), alias ``flags`` (dotted key -> (flag, value), None
    when not given) and ``--set`` items; ``uses`` lists the sections (``run`` and kinds) the
    command reads, so a flag or ``--set`` for another is refused instead of ignored."""
    from rlaif.core.config import apply_overrides, parse_sets, read_config_data
    from rlaif.core.errors import ConfigError

    problems: list[str] = []
    set_values: dict[str, Any] = {}
    for item in sets or []:  # one at a time, so one malformed item hides none of the others' problems
        try:
            set_values.update(parse_sets([item]))
        except ConfigError as exc:
            problems += exc.problems
    overrides: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for dotted, (flag, value) in (flags or {}).items():
        if value is None:
            continue
        overrides[dotted] = value
        labels[dotted] = flag
    for dotted, value in set_values.items():
        if dotted in overrides and overrides[dotted] != value:
            problems.append(f"{labels[dotted]} {overrides[dotted]!r} and --set {dotted}={value!r} disagree; give one")
            continue
        overrides[dotted] = value
        labels.setdefault(dotted, f"--set {dotted}")
    if uses is not None:
        for dotted in overrides:
            section = dotted.partition(".")[0]
            if section not in uses:
                problems.append(f"{labels[dotted]}: {command} does not use [{section}]; it reads "
                                f"{', '.join(f'[{u}]' for u in uses) or 'no config'}")
    data, source = read_config_data(config)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        table = data.get(section)
        old_name = table if isinstance(table, str) else table.get("name") if isinstance(table, dict) else None
        if key == "name" and old_name is not None and old_name != value:
            del data[section]  # the file's options were for the component it named, not this one
    apply_overrides(data, overrides)
    from rlaif.core.resume import written_keys

    file_labels = {} if config is None else {key: f"--config {config}" for key in written_keys(data)}
    return Given(data, source, {**file_labels, **labels}, set(overrides), problems)


def policy_flag(value: str | Path | None, registry: Registry) -> dict[str, tuple[str, Any]]:
    """``--policy VALUE``: a registered policy's name (``hf-vlm``) sets ``policy.name``;
    anything else is a checkpoint directory or hub id and sets ``policy.path``."""
    if value is None:
        return {}
    text = str(value)
    if text in registry.names("policy") and not Path(text).exists():
        return {"policy.name": ("--policy", text)}
    return {"policy.path": ("--policy", text)}


def build_config(given: Given, registry: Registry, kinds: Collection[str]) -> RunConfig:
    """``given`` validated: the ``[run]`` values, the component names, and each option of
    the ``kinds`` the command builds against its factory's signature (name and type),
    all reported together in one :class:`~rlaif.core.errors.ConfigError`."""
    from rlaif.core.config import config_from_dict
    from rlaif.core.errors import ConfigError
    from rlaif.core.protocols import KINDS

    known = {kind: registry.names(kind) for kind in KINDS}
    problems: list[str] = list(given.problems)
    try:
        config = config_from_dict(given.data, given.source, known)
    except ConfigError as exc:
        problems += exc.problems
        # still check the options of the components that were named right
        lenient = {k: v for k, v in given.data.items() if k in KINDS}
        try:
            config = config_from_dict(lenient)
        except ConfigError:
            raise ConfigError(problems, given.source) from None
    for kind in kinds:
        choice = config.choice(kind)
        if choice.name in known[kind]:
            choice.options, found = registry.checked_options(kind, choice.name, choice.options)
            problems += found
    if problems:
        raise ConfigError(problems, given.source)
    return config


def stored_component_options(run_dir: Path, config: Path | None, sets: Sequence[str] | None,
                             kinds: Collection[str], command: str) -> dict[str, dict[str, Any]]:
    """For a command that rebuilds a stored run's components (``train-rm``): the options
    ``--config`` and ``--set`` give for ``kinds``, checked over the stored ones against
    each factory. A section naming another component than the run used is refused."""
    from rlaif.core.config import config_from_dict
    from rlaif.core.errors import ConfigError, StoreError
    from rlaif.core.registry import load_plugins
    from rlaif.core.store import RunStore
    from rlaif.train.rl import RUN_ID

    given = gather(config, sets, uses=tuple(kinds), command=command)
    given.check()
    mine = {kind: table for kind, table in given.only(*kinds).data.items()}
    if not mine:
        return {}
    with RunStore(run_dir, readonly=True) as store:
        info = store.get_run(RUN_ID)
    if info is None:
        raise StoreError(f"{run_dir}: no run recorded in this store; check the path")
    stored = config_from_dict(info.config, source=str(run_dir))
    registry = load_plugins()
    problems: list[str] = []
    out: dict[str, dict[str, Any]] = {}
    for kind, table in mine.items():
        table = {"name": table} if isinstance(table, str) else dict(table)
        choice = stored.choice(kind)
        name = table.pop("name", choice.name)
        if name != choice.name:
            problems.append(f"{given.labels.get(f'{kind}.name', kind)}: {command} uses the run's {kind} "
                            f"{choice.name!r}, not {name!r}")
            continue
        problems += registry.problems(kind, name, {**choice.options, **table})
        out[kind] = table
    if problems:
        raise ConfigError(problems, given.source)
    return out
