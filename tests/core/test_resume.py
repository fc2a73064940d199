"""What ``--resume`` takes from a stored config: the documented changes (``--steps`` to
extend, an endpoint and the API-key variable of a judge that has an endpoint), one error
naming every other flag that would change the run, and stored endpoints, secret names and
paths used only when the user gives them again or trusts the run directory."""

from __future__ import annotations

from typing import Any

import pytest

from rlaif.core.config import RunConfig
from rlaif.core.errors import ConfigError
from rlaif.core.resume import resume_config, sensitive_kind


def stored_run(**oracle: Any) -> dict[str, Any]:
    config = RunConfig()
    config.run.steps = 10
    data = config.to_dict()
    data["oracle"] = {"name": "llm-judge", "context": "none", **oracle}
    return data


def error_of(stored: dict[str, Any], user: dict[str, Any], labels: dict[str, str] | None = None,
             **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        resume_config(stored, user, labels=labels or {}, source="runs/r", **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith("runs/r: ")
    return message


def test_nothing_given_resumes_the_stored_config() -> None:
    config = resume_config(stored_run(), {}, labels={})
    assert config.run.steps == 10 and config.choice("oracle").options == {"context": "none"}


def test_steps_extends_a_run_and_may_not_shorten_it() -> None:
    assert resume_config(stored_run(), {"run": {"steps": 25}}, labels={}).run.steps == 25
    message = error_of(stored_run(), {"run": {"steps": 4}}, {"run.steps": "--steps"})
    assert "--steps 4 is below the 10 steps" in message


def test_every_flag_that_would_change_the_run_is_named() -> None:
    user = {"run": {"lr": 5.0, "seed": 0}, "oracle": {"name": "ground-truth"}, "loss": {"kl_coef": 0.5}}
    message = error_of(stored_run(), user, {"run.lr": "--lr", "oracle.name": "--oracle"})
    assert "--lr would change run.lr from 0.001 to 5.0" in message
    assert "--oracle would change oracle.name from 'llm-judge' to 'ground-truth'" in message
    assert "loss.kl_coef = 0.5 where the stored run left the default" in message
    assert "run.seed" not in message  # equal to the stored value: no change


def test_values_equal_to_the_stored_ones_are_accepted() -> None:
    # Written as an integer in TOML, coerced like the stored float.
    config = resume_config(stored_run(), {"run": {"lr": 0.001, "group_size": 8}, "oracle": {"context": "none"}},
                           labels={})
    assert config.run.lr == 0.001


@pytest.mark.parametrize(
    ("option", "value", "kind"),
    [
        ("judge_url", "http://127.0.0.1:8000/v1", "endpoint"),
        ("base_url", "https://example.org", "endpoint"),
        ("server", "http://10.0.0.1/v1", "endpoint"),  # any option holding a URL
        ("api_key_env", "AWS_SECRET_ACCESS_KEY", "secret name"),
        ("path", "runs/gt", "path"),
        ("root", "/tmp/world", "path"),
        ("value_init", "runs/gt", "path"),
        ("judge", "/models/evil", "path"),
        ("judge", "org/model", "path"),  # a hub id: which model is loaded
        ("judge", "world", None),
        ("model", "default", None),
        ("context", "narrative", None),
        ("template", "Question: {question} A/B", None),
    ],
)
def test_which_stored_values_need_the_users_word(option: str, value: str, kind: str | None) -> None:
    assert sensitive_kind(option, value) == kind


def test_stored_endpoints_secret_names_and_paths_need_confirmation() -> None:
    stored = stored_run(judge_url="http://evil.example/v1", api_key_env="AWS_SECRET_ACCESS_KEY")
    stored["policy"] = {"name": "tiny-video-lm", "path": "/shared/sft"}
    message = error_of(stored, {})
    assert "oracle.judge_url = 'http://evil.example/v1' (endpoint)" in message
    assert "oracle.api_key_env = 'AWS_SECRET_ACCESS_KEY' (secret name)" in message
    assert "policy.path = '/shared/sft' (path)" in message
    assert "--trust-stored-config" in message

    # Given again on this command (an endpoint may move, the key variable is the user's)...
    user = {"oracle": {"judge_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_KEY"},
            "policy": {"path": "/shared/sft"}}
    config = resume_config(stored, user, labels={})
    assert config.choice("oracle").options["judge_url"] == "http://127.0.0.1:9/v1"
    assert config.choice("oracle").options["api_key_env"] == "MY_KEY"
    # ... or trusted explicitly.
    trusted = resume_config(stored, {}, labels={}, trust_stored=True)
    assert trusted.choice("oracle").options["api_key_env"] == "AWS_SECRET_ACCESS_KEY"

    # Confirming the endpoint alone leaves the stored secret name unconfirmed.
    message = error_of(stored, {"oracle": {"judge_url": "http://127.0.0.1:9/v1"}, "policy": {"path": "/shared/sft"}})
    assert "oracle.api_key_env" in message and "judge_url" not in message.split("the stored config names")[1]


def test_a_path_may_be_confirmed_but_not_changed() -> None:
    stored = stored_run()
    stored["policy"] = {"name": "tiny-video-lm", "path": "/shared/sft"}
    message = error_of(stored, {"policy": {"path": "/other/sft"}}, {"policy.path": "--policy"})
    assert "--policy would change policy.path from '/shared/sft' to '/other/sft'" in message


def test_an_endpoint_cannot_be_added_to_a_judge_that_had_none() -> None:
    message = error_of(stored_run(), {"oracle": {"judge_url": "http://127.0.0.1:9/v1", "api_key_env": "K"}},
                       {"oracle.judge_url": "--judge-url", "oracle.api_key_env": "--api-key-env"})
    assert "--judge-url would set oracle.judge_url" in message and "--api-key-env would set" in message


def test_an_old_run_with_an_encoder_table_resumes(capsys: pytest.CaptureFixture[str]) -> None:
    """The ``[encoder]`` every earlier run stored, and one in a user's old ``--config``, are ignored."""
    stored = {**stored_run(), "encoder": {"name": "tiny-conv"}}
    config = resume_config(stored, {"encoder": {"name": "tiny-conv"}, "run": {"steps": 12}}, labels={})
    assert config.run.steps == 12 and "encoder" not in config.components
    assert capsys.readouterr().err.count("[encoder] is ignored") == 2


def test_benchmark_data_paths_count_as_paths_in_any_shape() -> None:
    from rlaif.core.resume import sensitive_kind

    assert sensitive_kind("videos", "/data/msvd/videos") == "path"
    assert sensitive_kind("annotations", {"sft": "a.json", "test": "b.json"}) == "path"
    assert sensitive_kind("annotations", ["a.json", "b.json"]) == "path"
    assert sensitive_kind("preferences", "rm.json") == "path"
    assert sensitive_kind("judge_urls", ["http://127.0.0.1:1/v1"]) == "endpoint"
    assert sensitive_kind("qtypes", ["attribute", "counting"]) is None
