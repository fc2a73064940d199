"""Run configuration: one TOML file plus CLI overrides.

The file has a ``[run]`` table of loop settings and one table per component kind naming
the component and its options::

    [run]
    steps = 40
    group_size = 4

    [oracle]
    name = "llm-judge"
    context = "narrative"

    [loss]
    name = "grpo-rank"
    kl_coef = 0.04

All problems (unknown keys, wrong types, unknown component names) are collected and
raised together as one :class:`~rlaif.core.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.core.errors import ConfigError
from rlaif.core.protocols import KINDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class RunSettings:
    """Loop settings shared by every method (the ``[run]`` table)."""

    seed: int = 0
    steps: int = 100
    prompts_per_step: int = 16
    group_size: int = 8
    max_new_tokens: int = 24
    temperature: float = 1.0
    lr: float = 1e-3
    inner_epochs: int = 1
    grad_accum: int = 1  # micro-batches per update (exact full-batch gradient, less activation memory)
    eval_every: int = 0  # 0 = only at the start and the end
    eval_items: int = 0  # 0 = the whole test split
    checkpoint_every: int = 25
    mixed_precision: str = "no"  # no | bf16 | fp16: autocast forwards, fp32 weights and optimizer


@dataclass
class ComponentChoice:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


DEFAULT_COMPONENTS: dict[str, str] = {
    "encoder": "tiny-conv",
    "policy": "tiny-video-lm",
    "oracle": "ground-truth",
    "loss": "grpo-rank",
    "benchmark": "video-world",
}


@dataclass
class RunConfig:
    run: RunSettings = field(default_factory=RunSettings)
    components: dict[str, ComponentChoice] = field(
        default_factory=lambda: {k: ComponentChoice(v) for k, v in DEFAULT_COMPONENTS.items()}
    )

    def choice(self, kind: str) -> ComponentChoice:
        return self.components[kind]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": dataclasses.asdict(self.run)}
        for kind, c in self.components.items():
            out[kind] = {"name": c.name, **c.options}
        return out


def _coerce(name: str, value: Any, default: Any, problems: list[str]) -> Any:
    want = type(default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is bool and not isinstance(value, bool):
        problems.append(f"run.{name} must be true or false, got {value!r}")
        return default
    if not isinstance(value, want) or isinstance(value, bool) != isinstance(default, bool):
        problems.append(f"run.{name} must be {want.__name__}, got {value!r}")
        return default
    if want in (int, float) and value < 0:
        problems.append(f"run.{name} must be >= 0, got {value!r}")
        return default
    return value


def config_from_dict(data: dict[str, Any], source: str | None = None,
                     known_components: dict[str, list[str]] | None = None) -> RunConfig:
    """Validate a loaded TOML mapping. ``known_components`` (kind -> names) enables the
    unknown-component check; pass the registry's names."""
    problems: list[str] = []
    config = RunConfig()
    valid_top = ["run", *KINDS]
    for key in data:
        if key not in valid_top:
            problems.append(f"unknown section {key!r}; valid sections: {', '.join(valid_top)}")
    run_data = data.get("run", {})
    if not isinstance(run_data, dict):
        problems.append("[run] must be a table")
        run_data = {}
    defaults = RunSettings()
    valid_run = [f.name for f in dataclasses.fields(RunSettings)]
    for key, value in run_data.items():
        if key not in valid_run:
            problems.append(f"unknown key run.{key!r}; valid keys: {', '.join(valid_run)}")
            continue
        setattr(config.run, key, _coerce(key, value, getattr(defaults, key), problems))
    for int_key in ("steps", "group_size", "prompts_per_step", "max_new_tokens", "grad_accum"):
        if int_key in run_data and getattr(config.run, int_key) < 1:
            problems.append(f"run.{int_key} must be >= 1, got {getattr(config.run, int_key)!r}")
    if config.run.mixed_precision not in {"no", "fp16", "bf16"}:
        problems.append(f"run.mixed_precision must be one of no, fp16, bf16, got {config.run.mixed_precision!r}")
    for kind in KINDS:
        section = data.get(kind)
        if section is None:
            continue
        if isinstance(section, str):
            section = {"name": section}
        if not isinstance(section, dict) or not isinstance(section.get("name", ""), str):
            problems.append(f"[{kind}] must be a table with a string 'name'")
            continue
        options = dict(section)
        name = options.pop("name", DEFAULT_COMPONENTS[kind])
        config.components[kind] = ComponentChoice(name, options)
    if known_components is not None:
        for kind, choice in config.components.items():
            names = known_components.get(kind, [])
            if choice.name not in names:
                problems.append(f"unknown {kind} {choice.name!r}; choose one of: {', '.join(sorted(names)) or 'none'}")
    if problems:
        raise ConfigError(problems, source)
    return config


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                known_components: dict[str, list[str]] | None = None) -> RunConfig:
    """Read ``path`` (TOML), apply ``overrides`` (``{"run.steps": 5, "oracle.name": ...}``
    or ``{"oracle": "llm-judge"}``) and validate everything at once."""
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config file not found; check the path or drop --config", source) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", source) from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        table = data.setdefault(section, {})
        if isinstance(table, str):
            table = data[section] = {"name": table}
        table[key or "name"] = value
    return config_from_dict(data, source, known_components)
