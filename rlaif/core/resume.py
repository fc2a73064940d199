"""What a resumed run takes from its stored config, and what it must hear from the user.

``rlaif run --resume DIR`` continues the run that ``DIR``'s store describes, with the
config stored there. Two rules keep that honest:

* **The stored config is the run.** A flag or ``--config`` value that differs from it is
  an error naming the flag, except the few a resume may change (:func:`resume_config`):
  ``--steps`` to extend the run, and where the judge is reached and which variable holds
  its key (an endpoint moves; the judge behind it is the user's to vouch for). A value
  equal to the stored one is accepted: it changes nothing.
* **A run directory is not trusted.** Someone may hand you one. Stored values that send
  requests or secrets somewhere (endpoint URLs, the names of environment variables
  holding API keys) or that pick which files are loaded or written (paths, model
  directories, hub ids) would act on your behalf. They are used only when this
  invocation gives them again (a flag or ``--config``) or when the user passes
  ``--trust-stored-config``; otherwise the run stops with one line listing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlaif.core.config import RunConfig, config_from_dict, without_retired
from rlaif.core.errors import ConfigError

#: ``[run]`` keys a resume may change, and how.
EXTENDABLE_RUN_KEYS = ("steps",)
#: Option names of URLs; any other option whose value holds ``://`` counts too.
ENDPOINT_OPTIONS = frozenset({"url", "base_url", "endpoint", "api_base"})
#: Option names whose value is always a path that is read or written.
PATH_OPTIONS = frozenset({"path", "root", "value_init", "videos", "annotations", "sft_conversations", "preferences"})
PATH_SUFFIXES = ("_path", "_dir", "_root", "_file")
#: Options naming either a built-in ("world", "default") or a directory / hub id to load.
MODEL_OPTIONS = frozenset({"judge", "model"})

_MISSING = object()


def sensitive_kind(option: str, value: Any) -> str | None:
    """Why a stored component option needs the user's word on resume (``endpoint``,
    ``secret name`` or ``path``), or None when it is safe to reuse."""
    if isinstance(value, Mapping):  # e.g. video-qa's annotations = {sft = PATH, test = PATH}
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        kinds = [sensitive_kind(option, v) for v in value]
        return next((k for k in kinds if k is not None), None)
    if not isinstance(value, str) or not value:
        return None
    if option in ENDPOINT_OPTIONS or option.endswith("_url") or "://" in value:
        return "endpoint"
    if option.endswith("_env"):
        return "secret name"
    if option in PATH_OPTIONS or option.endswith(PATH_SUFFIXES):
        return "path"
    if option in MODEL_OPTIONS and ("/" in value or "\\" in value or value.startswith((".", "~"))):
        return "path"
    return None


def written_keys(data: Mapping[str, Any]) -> list[str]:
    """Dotted keys the user wrote (``run.lr``, ``oracle.name``, ``oracle.judge_url``)."""
    keys = []
    for section, table in data.items():
        if isinstance(table, str):
            keys.append(f"{section}.name")
        elif isinstance(table, Mapping):
            keys += [f"{section}.{key}" for key in table]
    return keys


def _value(config: RunConfig, dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    if section == "run":
        return getattr(config.run, key, _MISSING)
    choice = config.components.get(section)
    if choice is None:
        return _MISSING
    return choice.name if key == "name" else choice.options.get(key, _MISSING)


def resume_config(stored: Mapping[str, Any], user: Mapping[str, Any], *, labels: Mapping[str, str],
                  trust_stored: bool = False, source: str | None = None, user_source: str | None = None,
                  known_components: dict[str, list[str]] | None = None) -> RunConfig:
    """The config a resumed run uses: ``stored`` (the run's config as stored) with what
    the user gave on this invocation (``user``: the ``--config`` file and flags, merged
    as :func:`~rlaif.core.config.read_config_data` does) applied where a resume allows.

    ``labels`` maps a dotted key to how the user set it (``"--lr"``, ``"--config run.toml"``)
    for the error; ``source`` names the run, ``user_source`` the ``--config`` file. Raises
    one :class:`ConfigError` listing every change a resume may not make and every stored
    endpoint, secret name and path the user has not confirmed."""
    config = config_from_dict(dict(stored), source, known_components)
    user = without_retired(dict(user), user_source)
    # A section the user wrote without a name is about the stored component, not the default one.
    named = {section: ({"name": config.components[section].name, **table}
                       if isinstance(table, Mapping) and "name" not in table and section in config.components
                       else table) for section, table in user.items()}
    mine = config_from_dict(named, user_source, known_components)
    changes: list[str] = []
    problems: list[str] = []
    confirmed: set[str] = set()
    for dotted in written_keys(user):
        section, _, key = dotted.partition(".")
        label = labels.get(dotted, dotted)
        old, new = _value(config, dotted), _value(mine, dotted)
        if old is not _MISSING and old == new:
            confirmed.add(dotted)
        elif section == "run" and key in EXTENDABLE_RUN_KEYS:
            if new < old:
                problems.append(f"{label} {new} is below the {old} steps the run was started with; "
                                "on --resume, --steps extends a run")
            else:
                setattr(config.run, key, new)
        elif section != "run" and mine.components[section].name == config.components[section].name and (
                _may_supply(config, section, key, new)):
            config.components[section].options[key] = new
            confirmed.add(dotted)
        elif old is _MISSING:
            changes.append(f"{label} would set {dotted} = {new!r} where the stored run left the default")
        else:
            changes.append(f"{label} would change {dotted} from {old!r} to {new!r}")
    if changes:
        problems.append("a resumed run keeps its stored config: " + ", ".join(changes)
                        + " (--resume takes --steps to extend the run, --judge-url and --api-key-env; "
                          "start a new run to change the rest)")
    unconfirmed = [f"{kind}.{option} = {value!r} ({why})" for kind, choice in config.components.items()
                   for option, value in choice.options.items()
                   if (why := sensitive_kind(option, value)) is not None and f"{kind}.{option}" not in confirmed]
    if unconfirmed and not trust_stored:
        problems.append("the stored config names " + ", ".join(unconfirmed) + "; a run directory may come from "
                        "someone else, so give these again on this command (--judge-url, --api-key-env, --policy "
                        "or --config) or pass --trust-stored-config to use them")
    if problems:
        raise ConfigError(problems, source)
    return config


def _may_supply(config: RunConfig, kind: str, option: str, value: Any) -> bool:
    """Whether the user may give ``option`` a new value on resume: an endpoint the stored
    component already has, or the secret name of a component that has an endpoint.
    Neither may add an endpoint to a judge that had none (that would change the judge)."""
    options = config.components[kind].options
    has_endpoint = any(sensitive_kind(k, v) == "endpoint" for k, v in options.items())
    what = sensitive_kind(option, value)
    if what == "endpoint":
        return sensitive_kind(option, options.get(option)) == "endpoint"
    return what == "secret name" and has_endpoint
