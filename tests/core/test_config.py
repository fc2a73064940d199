from __future__ import annotations

from pathlib import Path

import pytest

from rlaif.core.config import load_config
from rlaif.core.errors import ConfigError

KNOWN = {
    "policy": ["tiny-video-lm"],
    "oracle": ["ground-truth", "llm-judge"],
    "loss": ["grpo-rank", "dpo"],
    "benchmark": ["video-world"],
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[run]\nsteps = 7\nlr = 1\n[loss]\nname = "dpo"\nbeta = 0.2\n')
    config = load_config(path, {"oracle": "llm-judge", "run.group_size": 6}, KNOWN)
    assert config.run.steps == 7 and config.run.lr == 1.0 and config.run.group_size == 6
    assert config.choice("loss").name == "dpo" and config.choice("loss").options == {"beta": 0.2}
    assert config.choice("oracle").name == "llm-judge"
    assert config.to_dict()["loss"] == {"name": "dpo", "beta": 0.2}


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, '[run]\nstepz = 3\ngroup_size = "four"\n[oracle]\nname = "llm-jduge"\n[extra]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, known_components=KNOWN)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "unknown key run.'stepz'" in message and "valid keys: seed, steps" in message
    assert "run.group_size must be int" in message
    assert "unknown oracle 'llm-jduge'; choose one of: ground-truth, llm-judge" in message
    assert "unknown section 'extra'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[run]\nsteps = 0\n", "run.steps must be >= 1"),
        ("[run]\nlr = -1.0\n", "run.lr must be > 0"),
        ("[run]\nmixed_precision = 'fp8'\n", "run.mixed_precision must be one of"),
        ("[run\n", "invalid TOML"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text), known_components=KNOWN)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an integer where a float is wanted is coerced first, then range-checked
        ("[run]\nlr = -1\n", "run.lr must be > 0, got -1.0"),
        ("[run]\nlr = 0\n", "run.lr must be > 0, got 0.0"),
        ("[run]\ntemperature = 0\n", "run.temperature must be > 0, got 0.0"),
        ("[run]\ninner_epochs = 0\n", "run.inner_epochs must be >= 1, got 0"),
        ("[run]\ncheckpoint_every = 0\n", "run.checkpoint_every must be >= 1, got 0"),
        ("[run]\ngroup_size = 1\n", "run.group_size must be >= 2, got 1"),
        ("[run]\neval_every = -1\n", "run.eval_every must be >= 0, got -1"),
        ("[run]\nmax_failed_share = 1.5\n", "run.max_failed_share must be between 0 and 1, got 1.5"),
        ("[run]\nfailure_window = 0\n", "run.failure_window must be >= 1, got 0"),
        ("[run]\nlr = nan\n", "run.lr must be > 0, got nan"),
        ('[loss]\nname = "grpo-rank"\nkl_coef = -0.1\n', "loss.kl_coef must be >= 0, got -0.1"),
        ('[loss]\nname = "dpo"\nbeta = 0\n', "loss.beta must be > 0, got 0"),
        ('[loss]\nname = "grpo-rank"\nclip_eps = "wide"\n', "loss.clip_eps must be a number, got 'wide'"),
    ],
)
def test_values_that_make_a_run_meaningless_are_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), known_components=KNOWN)
    assert expected in str(info.value)


def test_every_bad_value_is_listed_in_one_error(tmp_path: Path) -> None:
    text = "[run]\nlr = -1\ntemperature = 0\ninner_epochs = 0\ncheckpoint_every = 0\nsteps = 0\n" \
           '[loss]\nname = "grpo-rank"\nkl_coef = -1\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), known_components=KNOWN)
    message = str(info.value)
    for field in ("run.lr", "run.temperature", "run.inner_epochs", "run.checkpoint_every", "run.steps",
                  "loss.kl_coef"):
        assert f"{field} must be" in message, field
    assert "\n" not in message


def test_cli_overrides_are_checked_like_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run.lr must be > 0, got -1.0"):
        load_config(None, {"run.lr": -1}, KNOWN)


def test_a_config_built_in_code_is_checked_too() -> None:
    from rlaif.core.config import RunConfig, check_config

    config = RunConfig()
    config.run.inner_epochs = 0
    config.run.temperature = 0.0
    with pytest.raises(ConfigError, match="run.temperature must be > 0.*run.inner_epochs must be >= 1"):
        check_config(config)


def test_an_old_run_config_with_an_encoder_table_still_loads(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs stored before encoders stopped being a kind carry ``[encoder] name = "tiny-conv"``."""
    from rlaif.core.config import RunConfig, config_from_dict

    stored = {**RunConfig().to_dict(), "encoder": {"name": "tiny-conv", "n_frames": 8}}
    config = config_from_dict(stored, "runs/old", KNOWN)
    assert "encoder" not in config.components and "encoder" not in config.to_dict()
    assert config.choice("policy").name == "tiny-video-lm"
    note = capsys.readouterr().err.strip().splitlines()
    assert note == ["note: runs/old: [encoder] is ignored; the policy brings its own encoder "
                    "(tiny-video-lm: tiny-conv, saved in its checkpoint)"]


def test_set_encoder_is_an_unknown_section() -> None:
    from rlaif.core.config import parse_sets

    with pytest.raises(ConfigError, match="unknown section 'encoder'"):
        parse_sets(["encoder.name=clip"])
