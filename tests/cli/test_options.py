"""One CLI for choosing and configuring components: ``--set kind.option=value``,
``--config FILE`` and the alias flags, parsed and merged once (:mod:`rlaif.cli.options`),
and options checked by name and type against the component's factory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rlaif.cli.main import app
from rlaif.cli.options import build_config, gather
from rlaif.core.config import parse_sets, parse_value
from rlaif.core.errors import ConfigError
from rlaif.core.option_types import option_problems
from rlaif.core.registry import load_plugins

try:  # the commands run here stop before any model is built; keep a shared machine calm anyway
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

COMMANDS = [["run"], ["sft"], ["eval"], ["oracle", "check"], ["train-rm"], ["replay"]]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def one_error_line(result: Any) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


# -- parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3", 3), ("-2", -2), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("false", False),
        ('"a b"', "a b"), ("'x=y'", "x=y"), ("[1, 2]", [1, 2]), ('["a", "b"]', ["a", "b"]),
        ('{test = "t.json"}', {"test": "t.json"}),
        ("self", "self"), ("/data/msvd", "/data/msvd"), ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("attribute,counting", "attribute,counting"), ("", ""),
    ],
)
def test_set_values_are_toml_literals_and_bare_words_are_strings(raw: str, expected: Any) -> None:
    value = parse_value(raw)
    assert value == expected and type(value) is type(expected)


def test_set_items_become_dotted_keys_and_the_last_one_wins() -> None:
    assert parse_sets(["oracle.judge=self", "run.steps=5", "run.steps=6", "benchmark.annotations.test=t.json"]) == {
        "oracle.judge": "self", "run.steps": 6, "benchmark.annotations.test": "t.json"}


def test_bad_set_items_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        parse_sets(["novalue", "steps=3", "run.steps=[1,", 'oracle.judge="open', "encoders.x=1"])
    message = str(info.value)
    assert "\n" not in message and len(info.value.problems) == 5
    assert "--set 'novalue': expected kind.option=value" in message
    assert "--set 'steps=3': expected kind.option=value" in message
    assert "--set 'run.steps=[1,': not a TOML value" in message
    assert "--set 'encoders.x=1': unknown section 'encoders'" in message


def test_bad_syntax_on_the_command_line_is_one_line_exit_2(tmp_path: Path) -> None:
    result = invoke("run", "--set", "run.steps=[1,", "--set", "loss", "--run-dir", str(tmp_path / "r"))
    line = one_error_line(result)
    assert result.exit_code == 2
    assert "--set 'run.steps=[1,': not a TOML value" in line and "--set 'loss'" in line
    assert not (tmp_path / "r").exists()


# -- merging ---------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_precedence_defaults_then_config_then_set_and_flags(tmp_path: Path) -> None:
    registry = load_plugins()
    path = write(tmp_path, '[run]\nsteps = 7\nlr = 0.5\n[loss]\nname = "grpo"\nkl_coef = 0.1\nclip_eps = 0.3\n')
    given = gather(path, ["run.lr=0.25", "loss.kl_coef=0"], {"run.steps": ("--steps", 9), "run.seed": ("--seed", None)})
    config = build_config(given, registry, ("loss",))
    assert config.run.steps == 9 and config.run.lr == 0.25 and config.run.seed == 0  # flag, --set, default
    assert config.choice("loss").name == "grpo"
    assert config.choice("loss").options == {"kl_coef": 0.0, "clip_eps": 0.3}
    assert isinstance(config.choice("loss").options["kl_coef"], float)  # 0 coerced where a float is wanted
    assert given.labels["run.steps"] == "--steps" and given.labels["loss.kl_coef"] == "--set loss.kl_coef"
    assert given.labels["loss.clip_eps"] == f"--config {path}"


def test_renaming_a_component_drops_the_files_options_for_the_old_one(tmp_path: Path) -> None:
    path = write(tmp_path, '[oracle]\nname = "llm-judge"\njudge = "self"\n')
    given = gather(path, [], {"oracle.name": ("--oracle", "ground-truth")})
    assert given.data["oracle"] == {"name": "ground-truth"}


def test_alias_flags_and_set_give_the_same_config() -> None:
    registry = load_plugins()
    flags = {"oracle.name": ("--oracle", "llm-judge"), "oracle.judge": ("--judge", "self"),
             "oracle.judge_url": ("--judge-url", None), "oracle.context": ("--context", "none"),
             "run.steps": ("--steps", 3)}
    by_flags = build_config(gather(None, [], flags), registry, ("oracle",))
    by_set = build_config(gather(None, ["oracle.name=llm-judge", "oracle.judge=self", "oracle.context=none",
                                        "run.steps=3"]), registry, ("oracle",))
    assert by_flags.to_dict() == by_set.to_dict()
    assert by_set.choice("oracle").options == {"judge": "self", "context": "none"}


def test_a_flag_and_a_set_that_disagree_are_refused() -> None:
    given = gather(None, ["oracle.judge=world"], {"oracle.judge": ("--judge", "self")})
    assert given.problems == ["--judge 'self' and --set oracle.judge='world' disagree; give one"]
    same = gather(None, ["oracle.judge=self"], {"oracle.judge": ("--judge", "self")})
    assert same.problems == []


def test_setting_a_kind_the_command_does_not_use_is_refused() -> None:
    result = invoke("sft", "--set", "oracle.judge=self")
    assert result.exit_code == 2
    assert "--set oracle.judge: rlaif sft does not use [oracle]; it reads [run], [benchmark], [policy]" in one_error_line(result)


# -- checking against the factory --------------------------------------------------------
def test_unknown_option_names_the_closest_valid_one() -> None:
    registry = load_plugins()
    problems = registry.problems("loss", "grpo", {"kl_coeff": 0.1})
    assert problems == ["unknown option 'kl_coeff' for loss 'grpo' (did you mean 'kl_coef'?); valid options: "
                        "clip_eps, kl_coef, entropy_coef"]


@pytest.mark.parametrize(
    ("kind", "name", "options", "message"),
    [
        ("loss", "grpo", {"kl_coef": "high"}, "option 'kl_coef' of loss 'grpo' must be a number, got 'high'"),
        ("loss", "ppo", {"whiten": "yes"}, "option 'whiten' of loss 'ppo' must be true or false, got 'yes'"),
        ("oracle", "llm-judge", {"permutations": 2.5}, "option 'permutations' of oracle 'llm-judge' must be an "
         "integer, got 2.5"),
        ("oracle", "llm-judge", {"retries": True}, "must be an integer, got True"),
        ("oracle", "llm-judge", {"judge_url": 8000}, "must be a string, got 8000"),
        ("policy", "hf-vlm", {"path": "x", "lora_targets": "q_proj"}, "must be a list of a string, got 'q_proj'"),
        ("benchmark", "video-world", {"qtypes": [1, 2]}, "option 'qtypes' of benchmark 'video-world' must be"),
    ],
)
def test_wrong_types_are_named(kind: str, name: str, options: dict[str, Any], message: str) -> None:
    problems = load_plugins().problems(kind, name, options)
    assert len(problems) == 1 and message in problems[0], problems


def test_right_types_pass_and_are_coerced() -> None:
    registry = load_plugins()
    assert registry.problems("oracle", "llm-judge", {"judge_url": None, "pointwise": None, "timeout": 5}) == []
    assert registry.problems("benchmark", "video-world", {"qtypes": ["counting"], "fps": 4}) == []
    assert registry.problems("benchmark", "video-world", {"qtypes": "counting,temporal"}) == []
    assert registry.problems("policy", "hf-vlm", {"path": "x", "lora_targets": ["q_proj"]}) == []

    def factory(rate: float = 1.0, pair: tuple[int, int] = (1, 2), anything: Any = None) -> None: ...

    coerced, problems = option_problems("loss 'x'", factory, {"rate": 2, "pair": [3, 4], "anything": {"a": 1}})
    assert problems == [] and coerced == {"rate": 2.0, "pair": (3, 4), "anything": {"a": 1}}
    assert option_problems("loss 'x'", factory, {"pair": [1]})[1] == [
        "option 'pair' of loss 'x' must be a list of an integer, got [1]"]


def test_every_problem_of_a_command_line_is_one_line_exit_2(tmp_path: Path) -> None:
    result = invoke("run", "--loss", "grpo", "--set", "loss.kl_coeff=1", "--set", "oracle.judge=self",
                    "--set", "run.steps=x", "--set", "benchmark.n_sft=two", "--run-dir", str(tmp_path / "r"))
    line = one_error_line(result)
    assert result.exit_code == 2
    for part in ("run.steps must be int, got 'x'", "unknown option 'judge' for oracle 'ground-truth'",
                 "unknown option 'kl_coeff' for loss 'grpo' (did you mean 'kl_coef'?)",
                 "option 'n_sft' of benchmark 'video-world' must be an integer, got 'two'"):
        assert part in line, line
    assert not (tmp_path / "r").exists()


def test_config_error_is_a_usage_error_exit_2() -> None:
    assert ConfigError("x").exit_code == 2


# -- every command -----------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_takes_set_and_config(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "--set" in result.output and "--config" in result.output and "KIND.OPTION=VALUE" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--set", "loss.betta=1"], "unknown option 'betta' for loss 'grpo-rank'"),
        (["sft", "--set", "benchmark.sise=3"], "unknown option 'sise' for benchmark 'video-world' (did you mean 'size'?)"),
        (["eval", "--set", "policy.lora_r=big"], "option 'lora_r' of policy 'tiny-video-lm' must be an integer"),
        (["oracle", "check", "--oracle", "llm-judge", "--set", "oracle.permutations=2.5"],
         "option 'permutations' of oracle 'llm-judge' must be an integer, got 2.5"),
        (["oracle", "check", "--oracle", "llm-judge", "--option", "mdoe=score"], "unknown option 'mdoe'"),
        (["oracle", "check"], "name the oracle to check: --oracle NAME"),
        (["replay", "RUN", "--loss", "dpo", "--set", "loss.beta=-1"], "loss.beta must be > 0"),
        (["replay", "RUN", "--set", "loss.name=dpo", "--set", "loss.pairs=1"], "option 'pairs' of loss 'dpo' must be"),
        (["replay", "RUN", "--set", "oracle.judge=self", "--loss", "dpo"], "rlaif replay does not use [oracle]"),
        (["replay", "RUN"], "name the loss to replay with"),
        (["train-rm", "RUN", "--set", "loss.kl_coef=1"], "rlaif train-rm does not use [loss]"),
    ],
)
def test_every_command_checks_its_options_before_building(args: list[str], message: str, tmp_path: Path) -> None:
    args = [str(tmp_path / "missing-run") if a == "RUN" else a for a in args]
    result = invoke(*args)
    assert result.exit_code == 2 and message in one_error_line(result), result.output


def test_config_file_reaches_sft_and_eval(tmp_path: Path) -> None:
    path = write(tmp_path, '[benchmark]\nname = "video-world"\nn_sftt = 3\n[oracle]\nname = "llm-judge"\n')
    for command in (["sft"], ["eval"]):
        result = invoke(*command, "--config", str(path))
        assert result.exit_code == 2
        line = one_error_line(result)
        assert line.startswith(f"error: {path}: ") and "unknown option 'n_sftt'" in line


# -- resume ----------------------------------------------------------------------------
@pytest.fixture
def stored_run(tmp_path: Path) -> Path:
    from rlaif.core.config import RunConfig
    from rlaif.core.records import RunInfo
    from rlaif.core.store import RunStore, store_path

    config = RunConfig()
    config.components["loss"].options["kl_coef"] = 0.04
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunStore(store_path(run_dir)) as store:
        store.put_run(RunInfo("main", config.to_dict(), 0, time.time(), "test"))
    return run_dir


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--set", "run.lr=5"], "--set run.lr would change run.lr from 0.001 to 5.0"),
        (["--set", "loss.kl_coef=0.5"], "--set loss.kl_coef would change loss.kl_coef from 0.04 to 0.5"),
        (["--set", "oracle.name=llm-judge"], "--set oracle.name would change oracle.name"),
        (["--lr", "5"], "--lr would change run.lr"),
        (["--set", "run.steps=0"], "run.steps must be >= 1"),
    ],
)
def test_resume_refuses_a_set_change_naming_it(stored_run: Path, args: list[str], flag: str) -> None:
    result = invoke("run", "--resume", str(stored_run), *args)
    assert result.exit_code == 2 and flag in one_error_line(result), result.output


def test_resume_set_equal_to_the_stored_value_is_accepted() -> None:
    from rlaif.core.config import RunConfig
    from rlaif.core.resume import resume_config

    stored = RunConfig()
    stored.components["loss"].options["kl_coef"] = 0.04
    user = gather(None, ["loss.kl_coef=0.04", "run.steps=200"])
    config = resume_config(stored.to_dict(), user.data, labels=user.labels)
    assert config.run.steps == 200 and config.choice("loss").options == {"kl_coef": 0.04}
