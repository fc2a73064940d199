"""Recipes ask for capabilities, never a component's name (STYLE habit 15): a policy
without what a recipe needs is a one-line error naming the missing piece. Stand-in
policies are registered in a fresh registry, never in the process-wide one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlaif import hookimpl
from rlaif.core.config import ComponentChoice, RunConfig
from rlaif.core.errors import UsageError
from rlaif.core.registry import Registry


class Mute:
    """A policy that can neither sample nor expose hidden states."""

    name = "mute"
    hidden_size = 4

    def __init__(self, path: str | None = None, new_adapter: bool = True) -> None:
        self.path = path

    def trainable_parameters(self) -> list[Any]:
        return []


def build_mute(path: str, new_adapter: bool = True, benchmark: Any = None) -> Mute:
    """Needs a path: it has no default checkpoint."""
    return Mute(path, new_adapter)


def build_embedded(path: str | None = None, new_adapter: bool = True, benchmark: Any = None) -> Mute:
    return Mute(path, new_adapter)


build_embedded.default_checkpoint = lambda benchmark, *, seed=0, progress=False: f"/cache/sft-{seed}"  # type: ignore[attr-defined]


class StandIns:
    @hookimpl
    def rlaif_register_policies(self, register):  # type: ignore[no-untyped-def]
        register("mute", f"{__name__}:build_mute")
        register("embedded", f"{__name__}:build_embedded")


@pytest.fixture
def registry() -> Registry:
    import rlaif.plugins.oracles as builtin_oracles

    reg = Registry()
    reg.add_plugin(StandIns(), "stand-ins")
    reg.add_plugin(builtin_oracles, "builtin-oracles")
    return reg


def config_with(policy: str, **options: Any) -> RunConfig:
    config = RunConfig()
    config.components["policy"] = ComponentChoice(policy, dict(options))
    return config


def one_line(exc: pytest.ExceptionInfo[UsageError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_rl_start_uses_the_default_checkpoint_capability(registry: Registry) -> None:
    from rlaif.train.rl import default_policy_path

    assert default_policy_path(config_with("embedded"), object(), False, registry) == "/cache/sft-0"
    assert default_policy_path(config_with("embedded", path="mine"), object(), False, registry) is None
    assert default_policy_path(config_with("mute", path="mine"), object(), False, registry) is None
    with pytest.raises(UsageError) as info:
        default_policy_path(config_with("mute"), object(), False, registry)
    assert one_line(info).startswith("rlaif run needs a policy path or the DefaultCheckpoint capability; "
                                     "policy 'mute' lacks default_checkpoint")


def test_oracle_check_needs_a_policy_that_samples(registry: Registry) -> None:
    from rlaif.train.oracle_check import run_oracle_check

    class Truthful:
        name = "truthful"
        has_ground_truth = True

    with pytest.raises(UsageError) as info:
        run_oracle_check("ground-truth", benchmark=Truthful(), policy_name="mute", policy_options={"path": "x"},
                         registry=registry)
    assert one_line(info) == ("rlaif oracle check (sampling candidates) needs a component with the Sampler "
                              "capability; 'mute' lacks generate")
    with pytest.raises(UsageError) as info:  # no path, and no default checkpoint to fall back on
        run_oracle_check("ground-truth", benchmark=Truthful(), policy_name="mute", registry=registry)
    assert "policy 'mute' lacks default_checkpoint" in one_line(info)


def test_reward_model_backbone_is_built_by_name_and_checked(registry: Registry, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from rlaif.train.reward_model import RM_FORMAT, RewardModel

    (tmp_path / "policy").mkdir()
    save_file({"weight": torch.zeros(1, 4)}, str(tmp_path / "head.safetensors"))
    (tmp_path / "rm.json").write_text(json.dumps({"format": RM_FORMAT, "hidden_size": 4, "policy": "mute"}))
    with pytest.raises(UsageError) as info:
        RewardModel.load(tmp_path, benchmark=object(), registry=registry)
    assert one_line(info) == ("the reward model (rlaif train-rm) needs a component with the LastHiddenState "
                              "capability; 'mute' lacks answer_ids, last_hidden_states")


def test_eval_without_a_path_or_default_is_one_line(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import rlaif.core.registry as registry_module
    import rlaif.plugins.benchmarks as builtin_benchmarks
    import rlaif.plugins.losses as builtin_losses
    from rlaif.cli.main import app

    for module in (builtin_benchmarks, builtin_losses):
        registry.add_plugin(module, module.__name__)
    built: list[str] = []
    monkeypatch.setattr(registry_module, "_REGISTRY", registry)
    monkeypatch.setattr(Registry, "build", lambda self, kind, name, *a, **k: built.append(name) or object())
    result = CliRunner().invoke(app, ["eval", "--set", "policy.name=mute", "--k", "0", "--json"])
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert "rlaif eval needs a policy path or the DefaultCheckpoint capability; policy 'mute' lacks " \
           "default_checkpoint" in lines[0]
    assert "mute" not in built  # refused before the policy is built


def test_no_recipe_tests_a_policy_name() -> None:
    root = Path(__file__).resolve().parents[2] / "rlaif"
    hits = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1) if '"tiny-video-lm"' in line]
    assert hits and not [h for h in hits if h.startswith(("train/", "cli/"))], hits  # registration/defaults only
