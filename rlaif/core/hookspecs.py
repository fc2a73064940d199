"""Hook specifications: one ``rlaif_register_<kind>s(register)`` hook per component kind.

A plugin implements any of them with :data:`rlaif.hookimpl` and calls ``register`` once
per component. Registering is cheap: a name, a target ``"module:attribute"`` that is
imported only when the component is built, and a one-line description.
"""

from __future__ import annotations

from typing import Protocol

import pluggy

from rlaif import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)


class Register(Protocol):
    def __call__(self, name: str, target: str, *, description: str = "") -> None:
        """:param name: CLI-facing name, e.g. ``"llm-judge"``.
        :param target: ``"package.module:Factory"``; called with the component's options.
        :param description: one line shown by ``rlaif plugins list``."""


@hookspec
def rlaif_register_policies(register: Register) -> None:
    """Register policies (video-language models that sample and score answers)."""


@hookspec
def rlaif_register_oracles(register: Register) -> None:
    """Register oracles (rank a group of candidate answers)."""


@hookspec
def rlaif_register_losses(register: Register) -> None:
    """Register losses (ranked groups -> scalar loss and metrics)."""


@hookspec
def rlaif_register_benchmarks(register: Register) -> None:
    """Register benchmarks (prompts with ground truth, frame loading and scoring)."""


#: kind -> hook name; the registry and the docs test iterate over this.
HOOK_FOR_KIND: dict[str, str] = {
    "policy": "rlaif_register_policies",
    "oracle": "rlaif_register_oracles",
    "loss": "rlaif_register_losses",
    "benchmark": "rlaif_register_benchmarks",
}
