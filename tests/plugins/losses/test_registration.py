"""The losses plugin registers four targets without importing torch; each target builds."""

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


def test_four_losses_registered_with_descriptions():
    regs = registered()
    assert set(regs) == {"grpo-rank", "grpo", "ppo", "dpo"}
    assert regs["grpo-rank"][0] == "rlaif.plugins.losses.grpo_rank:GRPORankLoss"
    assert all(desc for _, desc in regs.values())


@pytest.mark.parametrize("name", ["grpo-rank", "grpo", "ppo", "dpo"])
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
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
