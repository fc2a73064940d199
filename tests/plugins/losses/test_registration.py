"""The losses plugin registers its targets without importing torch; each target builds and
is found through the installed entry point, as `rlaif plugins list` and `rlaif run --loss` find it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rlaif.core.protocols import Loss
from rlaif.plugins import losses


def registered() -> dict[str, tuple[str, str]]:
    seen: dict[str, tuple[str, str]] = {}

    def register(name: str, target: str, *, description: str = "") -> None:
        assert name not in seen
        seen[name] = (target, description)

    losses.rlaif_register_losses(register)
    return seen


NAMES = ["grpo-rank", "grpo", "ppo", "dpo", "gopo", "plackett-luce", "corpo"]


def test_losses_registered_with_descriptions():
    regs = registered()
    assert set(regs) == set(NAMES)
    assert regs["grpo-rank"][0] == "rlaif.plugins.losses.grpo_rank:GRPORankLoss"
    assert regs["gopo"][0] == "rlaif.plugins.losses.gopo:GOPOLoss"
    assert regs["plackett-luce"][0] == "rlaif.plugins.losses.plackett_luce:PlackettLuceLoss"
    assert regs["corpo"][0] == "rlaif.plugins.losses.corpo:CoRPOLoss"
    assert all(desc for _, desc in regs.values())


@pytest.mark.parametrize("name", ["gopo", "plackett-luce", "corpo"])
def test_new_losses_found_through_the_entry_point_and_built_with_options(name):
    from rlaif.core.registry import load_plugins

    registry = load_plugins(refresh=True)
    assert name in registry.names("loss")
    spec = registry.get("loss", name)
    assert spec.plugin == "builtin-losses" and spec.description
    options = {"gopo": {"kl_coef": 0.0}, "plackett-luce": {"beta": 0.5}, "corpo": {"threshold": 0.7}}[name]
    loss = registry.build("loss", name, options)
    assert isinstance(loss, Loss) and loss.name == name


@pytest.mark.parametrize("name", NAMES)
def test_targets_build_losses(name):
    import importlib

    module, _, attr = registered()[name][0].partition(":")
    loss = getattr(importlib.import_module(module), attr)()
    assert isinstance(loss, Loss)
    assert loss.name == name
    assert isinstance(loss.needs, frozenset) and "logprobs" in loss.needs


def test_registering_and_rank_maths_do_not_import_torch():
    code = (
        "import sys\n"
        "import rlaif.plugins.losses as m, rlaif.plugins.losses.advantages as a\n"
        "m.rlaif_register_losses(lambda *args, **kw: None)\n"
        "a.rank_advantages([0, 1, 2])\n"
        "a.gopo_advantages([0, 1, 2]); a.corpo_advantages([0.0, 1.0], 0.5)\n"
        "a.rank_mismatch([0, 1], [0.0, 1.0])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
