from __future__ import annotations

from pathlib import Path

import pytest

from rlaif.core.config import load_config
from rlaif.core.errors import ConfigError

KNOWN = {
    "encoder": ["tiny-conv"],
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
        ("[run]\nlr = -1.0\n", "run.lr must be >= 0"),
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
