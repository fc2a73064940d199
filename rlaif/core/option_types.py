"""Checking a component's options against its factory's signature, name and type.

A component's options come from TOML or ``--set kind.option=value``, so they arrive as
TOML values: str, int, float, bool, lists and tables. The factory's parameters and their
annotations say what it takes; this module compares the two before anything is built
and returns every problem as one message each (an unknown name with the closest valid
one, a wrong type with the type wanted). It also coerces the one conversion TOML cannot
express for the user: an integer where a float is wanted (``--set loss.kl_coef=1``).

Annotations it cannot read (a forward reference that does not resolve, a class of the
plugin's own) are not checked: a plugin's factory stays the judge of those.
"""

from __future__ import annotations

import collections.abc
import inspect
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

#: Wiring arguments the loop passes itself (``Registry.build(..., benchmark=...)``);
#: never options a user sets.
WIRING = frozenset({"benchmark", "policy", "store", "progress"})


def did_you_mean(name: str, choices: list[str]) -> str:
    """``" (did you mean 'kl_coef'?)"`` for the closest of ``choices``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _signature_target(factory: Callable[..., Any]) -> Callable[..., Any]:
    return factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]


def type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """The factory's resolved annotations; ``{}`` where they do not resolve."""
    try:
        return typing.get_type_hints(_signature_target(factory))
    except Exception:  # a name only a type checker sees: leave those options unchecked
        return {}


def type_name(hint: Any) -> str:
    if hint is type(None):
        return "none"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin is not None:
        if issubclass(origin, Mapping):
            return "a table"
        if issubclass(origin, (list, tuple, collections.abc.Sequence)):
            args = [a for a in typing.get_args(hint) if a is not Ellipsis]
            return f"a list of {type_name(args[0])}" if args else "a list"
    if hint in (str, os.PathLike) or (inspect.isclass(hint) and issubclass(hint, os.PathLike)):
        return "a string"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    return getattr(hint, "__name__", str(hint))


def coerce(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` wants it; ``TypeError`` when it does not fit. Hints this
    cannot check (a plugin's own class) accept anything."""
    if hint is Any or hint is inspect.Parameter.empty:
        return value
    if hint is type(None):
        if value is None:
            return value
        raise TypeError
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        # Exact types first, so 1 stays an int under ``int | float`` and "x" a str under ``str | list``.
        for arg in args:
            try:
                return coerce(value, arg)
            except TypeError:
                continue
        raise TypeError
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise TypeError
    if origin is not None and inspect.isclass(origin):
        args = typing.get_args(hint)
        if issubclass(origin, Mapping):
            if not isinstance(value, Mapping):
                raise TypeError
            if len(args) == 2:
                return {coerce(k, args[0]): coerce(v, args[1]) for k, v in value.items()}
            return dict(value)
        if issubclass(origin, (str, bytes)):
            pass
        elif issubclass(origin, (list, tuple, set, frozenset, collections.abc.Sequence)):
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
                raise TypeError
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(args) != len(value):
                    raise TypeError
                return tuple(coerce(v, a) for v, a in zip(value, args, strict=True))
            item = args[0] if args else Any
            items = [coerce(v, item) for v in value]
            return tuple(items) if origin is tuple else items
        return value  # another generic (Callable[...]): not something a user sets from TOML
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    # Code calls factories too: a numpy integer is an int, a Path a str.
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return value
        raise TypeError
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if hint is str:
        if isinstance(value, (str, os.PathLike)):
            return value
        raise TypeError
    if inspect.isclass(hint) and issubclass(hint, os.PathLike):
        if isinstance(value, (str, os.PathLike)):
            return value
        raise TypeError
    return value  # a class of the plugin's own: its factory checks it


def option_problems(what: str, factory: Callable[..., Any], options: Mapping[str, Any]
                    ) -> tuple[dict[str, Any], list[str]]:
    """``options`` checked against ``factory``'s signature: the coerced options and one
    message per unknown name (with a suggestion) or wrongly typed value."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return dict(options), []
    out = dict(options)
    problems: list[str] = []
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "self"]
    if not open_ended:
        shown = [n for n in valid if n not in WIRING]
        for name in sorted(set(options) - set(valid)):
            problems.append(f"unknown option {name!r} for {what}{did_you_mean(name, shown)}; "
                            f"valid options: {', '.join(shown) or 'none'}")
    hints = type_hints(factory)
    for name, value in options.items():
        if name not in params or name not in hints:
            continue
        try:
            out[name] = coerce(value, hints[name])
        except TypeError:
            problems.append(f"option {name!r} of {what} must be {type_name(hints[name])}, got {value!r}")
    return out, problems
