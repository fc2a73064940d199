"""Judge-scored evaluation (Video-ChatGPT's protocol) against a real HTTP judge on
127.0.0.1: an OpenAI chat-completions server (http.server in a thread, like the LM-backed
one in tests/plugins/oracles/conftest.py) that answers scripted verdicts, so accuracy,
scores, the on-disk cache, rescoring spreads, malformed replies and VCGBench's criteria are
checked by hand; then ``evaluate_items`` and ``rlaif eval`` on a video-qa benchmark of
tiny mp4s."""

from __future__ import annotations

import json
import re
import statistics
import threading
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rlaif.core.errors import UsageError
from rlaif.core.records import Prompt, Rollout, VideoRef
from rlaif.train.judge_eval import (
    AnswerJudge,
    VerdictCache,
    build_answer_judge,
    judge_answers,
    parse_verdict,
)

Messages = list[dict[str, str]]


class ScriptedJudge:
    """``POST /v1/chat/completions`` answered by ``respond(messages, n)`` (``n``: how many
    times this exact conversation was asked before). Counts every request."""

    def __init__(self, respond: Callable[[Messages, int], str]) -> None:
        self.respond = respond
        self.lock = threading.Lock()
        self.calls = 0
        self.seen: dict[str, int] = {}
        self.bodies: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                key = json.dumps(request["messages"], sort_keys=True)
                with server.lock:
                    server.calls += 1
                    n = server.seen.get(key, 0)
                    server.seen[key] = n + 1
                    server.bodies.append(request)
                text = server.respond(request["messages"], n)
                payload = json.dumps({"id": "chatcmpl-test", "object": "chat.completion", "model": request["model"],
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def field_of(messages: Messages, name: str) -> str:
    """A ``Name: value`` line of the judge's user message."""
    match = re.search(rf"^{name}: (.*)$", messages[-1]["content"] if messages[-1]["role"] == "user" else "", re.M)
    if match is None:  # a retry: the original question is the first user message
        match = re.search(rf"^{name}: (.*)$", messages[1]["content"], re.M)
    assert match is not None, (name, messages)
    return match.group(1)


#: prediction -> the scripted QA reply.
QA_VERDICTS = {"right": "{'pred': 'yes', 'score': 5}", "close": "{'pred': 'yes', 'score': 3}",
               "wrong": "{'pred': 'no', 'score': 1}"}


def qa_judge(messages: Messages, n: int) -> str:
    return QA_VERDICTS.get(field_of(messages, "Predicted answer"), QA_VERDICTS["wrong"])


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[Messages, int], str]], ScriptedJudge]]:
    servers: list[ScriptedJudge] = []

    def start(respond: Callable[[Messages, int], str]) -> ScriptedJudge:
        servers.append(ScriptedJudge(respond).__enter__())
        return servers[-1]

    yield start
    for server in servers:
        server.__exit__()


def qa_prompt(i: int, qtype: str = "open", **meta: Any) -> Prompt:
    return Prompt(f"q{i}", VideoRef(f"v{i}", f"v{i}.mp4"), f"what happens in video {i}?", f"reference {i}", qtype,
                  {"needs_judge": True, **meta})


def http_judge(server: ScriptedJudge, **kwargs: Any) -> AnswerJudge:
    return build_answer_judge(judge_url=server.url, model=kwargs.pop("model", "judge-x"), retries=0, **kwargs)


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("text", "pred", "score"), [
    ("{'pred': 'yes', 'score': 4}", "yes", 4.0),
    ('{"pred": "no", "score": 0}', "no", 0.0),
    ("Sure! ```python\n{'pred': 'Yes', 'score': '5'}\n```", "yes", 5.0),
    ("{'pred': 'yes', 'score': 4.8}", "yes", 4.8),
    ("pred: no, score: 2 -- the colours differ", "no", 2.0),
    ("{'score': 3, 'pred': 'yes.'}", "yes", 3.0),
])
def test_replies_are_read_leniently(text: str, pred: str, score: float) -> None:
    parsed = parse_verdict(text)
    assert (parsed.pred, parsed.score, parsed.failure) == (pred, score, None)


@pytest.mark.parametrize(("text", "why"), [
    ("I think it is correct.", "no score"),
    ("{'pred': 'yes', 'score': 7}", "not a number from 0 to 5"),
    ("{'pred': 'maybe', 'score': 3}", "neither yes nor no"),
    ("{'score': 3}", "no yes/no verdict"),
    ("{'pred': 'yes', 'score': 'high'}", "not a number"),
])
def test_unreadable_replies_say_why(text: str, why: str) -> None:
    parsed = parse_verdict(text)
    assert parsed.failure and why in parsed.failure and parsed.score is None


def test_a_criterion_needs_only_a_score() -> None:
    assert parse_verdict("{'score': 3}", "detail").score == 3.0
    assert parse_verdict("Score: 2", "temporal").score == 2.0


# ----------------------------------------------------------------------------- the QA protocol
def test_accuracy_is_the_yes_share_and_score_the_mean(serve: Any) -> None:
    server = serve(qa_judge)
    prompts = [qa_prompt(0, "motion"), qa_prompt(1, "motion"), qa_prompt(2, "color"), qa_prompt(3, "color")]
    answers = ["right", "wrong", "close", "wrong"]
    judge = http_judge(server)
    report = judge_answers(judge, prompts, answers)
    m = report.metrics
    assert m["judge/acc/all"] == 2 / 4 and m["judge/score/all"] == (5 + 1 + 3 + 1) / 4
    assert m["judge/acc/motion"] == 0.5 and m["judge/score/motion"] == 3.0
    assert m["judge/acc/color"] == 0.5 and m["judge/score/color"] == 2.0
    assert m["n/judged"] == 4 and "n/judge_failed" not in m
    assert server.calls == 4 and judge.asked == 4
    sent = next(b for b in server.bodies if "Question: what happens in video 0?" in b["messages"][1]["content"])
    assert sent["model"] == "judge-x" and sent["temperature"] == 0.0
    assert "Correct answer: reference 0\nPredicted answer: right" in sent["messages"][1]["content"]
    assert "'pred'" in sent["messages"][1]["content"] and "0 to 5" in sent["messages"][1]["content"]
    record = report.item_record(1)
    assert record is not None and record["status"] == "ok" and record["verdict"] == "no" and record["score"] == 1.0
    assert record["criteria"]["qa"]["raw"] == QA_VERDICTS["wrong"]


def test_the_cache_makes_a_second_scoring_free(serve: Any, tmp_path: Path) -> None:
    server = serve(qa_judge)
    prompts, answers = [qa_prompt(i) for i in range(3)], ["right", "close", "wrong"]
    first = judge_answers(http_judge(server), prompts, answers)
    assert server.calls == 3
    judge = http_judge(server)  # a new process would build it afresh from the same file
    again = judge_answers(judge, prompts, answers)
    assert server.calls == 3 and judge.asked == 0
    assert again.metrics == first.metrics
    assert all(v.cached for item in again.draws[0] for v in item.values())
    assert (tmp_path / "cache" / "judge-eval" / "verdicts.sqlite").is_file()
    # Another judge model, or another prediction, is another request.
    judge_answers(http_judge(server, model="judge-y"), prompts, answers)
    assert server.calls == 6
    judge_answers(http_judge(server), prompts, ["right", "close", "right"])
    assert server.calls == 7


def test_rescoring_reports_the_spread_across_draws(serve: Any) -> None:
    # The n-th time a conversation is asked, the judge says yes iff n is even, score 4 - n.
    def drifting(messages: Messages, n: int) -> str:
        return f"{{'pred': '{'yes' if n % 2 == 0 else 'no'}', 'score': {4 - n}}}"

    server = serve(drifting)
    prompts, answers = [qa_prompt(0), qa_prompt(1)], ["a", "b"]
    report = judge_answers(http_judge(server), prompts, answers, rescore=2)
    assert server.calls == 6  # two items x three draws: the extra draws do not reuse draw 0
    assert report.metrics["judge/acc/all"] == 1.0 and report.metrics["judge/score/all"] == 4.0
    acc, score = report.spread["judge/acc/all"], report.spread["judge/score/all"]
    assert acc == {"mean": pytest.approx(2 / 3), "std": pytest.approx(statistics.stdev([1, 0, 1])),
                   "min": 0.0, "max": 1.0, "draws": 3.0}
    assert score == {"mean": 3.0, "std": 1.0, "min": 2.0, "max": 4.0, "draws": 3.0}
    record = report.item_record(0)
    assert record is not None and record["criteria"]["qa"]["draw_scores"] == [4.0, 3.0, 2.0]
    assert record["criteria"]["qa"]["draw_preds"] == ["yes", "no", "yes"]
    # Each draw is cached under its index: the same rescoring again is free, one more draw is not.
    again = judge_answers(http_judge(server), prompts, answers, rescore=2)
    assert server.calls == 6 and again.spread == report.spread
    judge_answers(http_judge(server), prompts, answers, rescore=3)
    assert server.calls == 8
    with pytest.raises(UsageError, match="rescore"):
        judge_answers(http_judge(server), prompts, answers, rescore=-1)


def test_a_malformed_reply_is_retried_once_then_counted_as_judge_failed(serve: Any) -> None:
    def flaky(messages: Messages, n: int) -> str:
        retry = messages[-2]["role"] == "assistant"
        prediction = field_of(messages, "Predicted answer")
        if prediction == "garbled":
            return "I would say it is mostly fine"  # never readable
        if prediction == "late" and not retry:
            return "Verdict: the answer is good."
        return QA_VERDICTS["right"] if prediction in ("late", "right") else QA_VERDICTS["wrong"]

    server = serve(flaky)
    prompts, answers = [qa_prompt(i) for i in range(4)], ["right", "late", "garbled", "wrong"]
    report = judge_answers(http_judge(server), prompts, answers)
    assert server.calls == 4 + 2  # one retry each for the two unreadable replies
    retries = [b["messages"] for b in server.bodies if len(b["messages"]) == 4]
    assert sorted(m[2]["content"] for m in retries) == ["I would say it is mostly fine", "Verdict: the answer is good."]
    retry = retries[0]
    assert retry[2]["role"] == "assistant" and retry[:2] == next(
        b["messages"] for b in server.bodies if b["messages"][1]["content"] == retry[1]["content"])
    assert "could not be read" in retry[3]["content"]
    m = report.metrics
    assert m["n/judge_failed"] == 1 and m["n/judged"] == 3
    assert m["judge/acc/all"] == 2 / 3  # the failed item is left out, not counted as "no"
    late, failed = report.item_record(1), report.item_record(2)
    assert late is not None and late["status"] == "ok" and late["criteria"]["qa"]["attempts"] == 2
    assert failed is not None and failed["status"] == "judge_failed" and failed["verdict"] is None
    assert "after a retry" in failed["criteria"]["qa"]["failure"]
    assert "mostly fine" in failed["criteria"]["qa"]["raw"]
    # Readable replies are cached (the retried one too); the failure is asked again next time.
    judge_answers(http_judge(server), prompts, answers)
    assert server.calls == 6 + 2


# ----------------------------------------------------------------------------- VCGBench
#: criterion title in the judge's system message -> the scripted score.
VCG_SCORES = {"correctness of information": 4, "detail orientation": 3, "contextual understanding": 2,
              "temporal understanding": 1, "consistency": 5}


def vcg_judge(messages: Messages, n: int) -> str:
    title = re.search(r"on one criterion: (.*?)\.", messages[0]["content"])
    assert title is not None
    score = VCG_SCORES[title.group(1)]
    if title.group(1) == "consistency":  # both answers must be there; a contradiction scores 0
        a1, a2 = field_of(messages, "Predicted answer to question 1"), field_of(messages, "Predicted answer to question 2")
        score = score if a1 == a2 else 0
    return f"{{'score': {score}}}"


def vcg_prompt(i: int, qtype: str, question_2: str | None = None) -> Prompt:
    meta: dict[str, Any] = {"needs_judge": True, "format": "vcgbench"}
    if question_2 is not None:
        meta["question_2"] = question_2
    return Prompt(f"g{i}", VideoRef("v", "v.mp4"), f"question {i}?", "a man walks a dog, then sits", qtype, meta)


def test_vcgbench_criteria_and_consistency_over_both_phrasings(serve: Any) -> None:
    server = serve(vcg_judge)
    prompts = [vcg_prompt(0, "generic"), vcg_prompt(1, "temporal"), vcg_prompt(2, "consistency", "rephrased 2?"),
               vcg_prompt(3, "consistency", "rephrased 3?")]
    answers = ["desc", "then", "same", "yes"]
    report = judge_answers(http_judge(server), prompts, answers, {2: "same", 3: "no"})
    assert server.calls == 3 + 1 + 2
    m = report.metrics
    assert (m["vcg/correctness"], m["vcg/detail"], m["vcg/context"], m["vcg/temporal"]) == (4, 3, 2, 1)
    assert m["vcg/consistency"] == (5 + 0) / 2
    assert m["vcg/average"] == pytest.approx((4 + 3 + 2 + 1 + 2.5) / 5)
    assert "judge/acc/all" not in m and m["n/judged"] == 4
    consistency = next(b["messages"][1]["content"] for b in server.bodies if "Question 2:" in b["messages"][1]["content"]
                       and "rephrased 2?" in b["messages"][1]["content"])
    assert "Question 1: question 2?" in consistency and "Predicted answer to question 2: same" in consistency
    generic = report.item_record(0)
    assert generic is not None and set(generic["criteria"]) == {"correctness", "detail", "context"}
    assert generic["score"] == 3.0 and generic["verdict"] is None


def test_judges_that_cannot_serve_are_refused() -> None:
    for judge in (None, "world", "self"):
        with pytest.raises(UsageError, match="judge-url"):
            build_answer_judge(judge)
    with pytest.raises(UsageError, match="--judge-url"):
        build_answer_judge("openai")


def test_the_verdict_cache_survives_reopening(tmp_path: Path) -> None:
    cache = VerdictCache(tmp_path / "v.sqlite")
    cache.put_many([("k1", "j", 0, {"text": "{'score': 1}", "attempts": 1})])
    cache.close()
    again = VerdictCache(tmp_path / "v.sqlite")
    assert again.get_many(["k1", "k2"]) == {"k1": {"text": "{'score': 1}", "attempts": 1}}
    again.close()


# ----------------------------------------------------------------------------- video-qa
def write_clip(path: Path, n: int = 8) -> Path:
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("h264", rate=Fraction(8))
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        for i in range(n):
            frame = np.full((32, 32, 3), (i * 20) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def vcg_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two tiny mp4s and VCGBench generic, temporal and consistency files, plus a JSONL
    with one short answer (exact match) and one long one (the judge)."""
    root = tmp_path_factory.mktemp("vqa")
    write_clip(root / "videos" / "v_one.mp4")
    write_clip(root / "videos" / "two.mp4")
    files = {
        "generic": [{"video_name": "one", "Q": "What is in the video?", "A": "a man walks a dog in a park"}],
        "temporal": [{"video_name": "two", "Q": "What happens first?", "A": "he opens the door, then sits down"}],
        "consistency": [{"video_name": "one", "Q1": "Who walks the dog?", "Q2": "Whose dog is walked, and by whom?",
                         "A": "a man walks his own dog"}],
    }
    paths = []
    for name, rows in files.items():
        (root / f"{name}_qa.json").write_text(json.dumps(rows))
        paths.append(str(root / f"{name}_qa.json"))
    (root / "mixed.jsonl").write_text(
        json.dumps({"video": "two", "question": "how many doors?", "answer": "one"}) + "\n"
        + json.dumps({"video": "one", "question": "describe the park", "answer": "green grass, tall trees, a bench"})
        + "\n")
    return {"videos": str(root / "videos"), "vcg": paths, "jsonl": str(root / "mixed.jsonl"), "root": root}


class CannedPolicy:
    """Answers by question: enough of the Policy API for greedy evaluation."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def generate(self, prompts: Sequence[Prompt], n: int = 1, **_: Any) -> list[list[Rollout]]:
        self.asked += [p.question for p in prompts]
        return [[Rollout(p.prompt_id, 0, self.answers.get(p.question, "one"))] * n for p in prompts]


def test_evaluate_items_judges_free_text_and_exact_matches_the_rest(vcg_data: dict[str, Any], serve: Any) -> None:
    from rlaif.plugins.benchmarks.video_qa import VideoQA
    from rlaif.train.evaluate import evaluate_items, read_items, write_items

    bench = VideoQA(videos=vcg_data["videos"], annotations=vcg_data["jsonl"])
    policy = CannedPolicy({"describe the park": "right"})
    server = serve(qa_judge)
    # Without a judge, the free-text item is counted as unscored, not failed or crashed.
    plain = evaluate_items(policy, bench)
    assert plain.metrics["acc/all"] == 1.0 and plain.metrics["n/unscored"] == 1
    unscored = next(i for i in plain.items if i.prompt_id == "mixed-1")
    assert not unscored.scored and unscored.judge == {"status": "unscored"}
    judged = evaluate_items(policy, bench, judge=http_judge(server), k=2)
    m = judged.metrics
    assert m["acc/all"] == 1.0 and m["judge/acc/all"] == 1.0 and m["judge/score/all"] == 5.0
    assert m["n/judged"] == 1 and "n/unscored" not in m and "pass@2/short" in m
    item = next(i for i in judged.items if i.prompt_id == "mixed-1")
    assert item.scored and item.correct and item.score == 1.0 and item.samples == ()
    assert item.judge is not None and item.judge["criteria"]["qa"]["raw"] == QA_VERDICTS["right"]
    assert server.calls == 1
    # --scorer judge sends the short answer too; its exact-match score stays its own.
    everything = evaluate_items(policy, bench, judge=http_judge(server), scorer="judge", k=0)
    assert everything.metrics["n/judged"] == 2 and server.calls == 2
    short = next(i for i in everything.items if i.prompt_id == "mixed-0")
    assert short.correct and short.judge is not None and short.judge["verdict"] == "no"
    path = write_items(vcg_data["root"] / "items.jsonl", everything.items)
    assert read_items(path) == everything.items


def test_consistency_items_ask_the_policy_both_phrasings(vcg_data: dict[str, Any], serve: Any) -> None:
    from rlaif.plugins.benchmarks.video_qa import VideoQA
    from rlaif.train.evaluate import evaluate_items

    bench = VideoQA(videos=vcg_data["videos"], annotations=vcg_data["vcg"], format="vcgbench")
    policy = CannedPolicy({"Who walks the dog?": "a man", "Whose dog is walked, and by whom?": "a man"})
    server = serve(vcg_judge)
    evaluation = evaluate_items(policy, bench, judge=http_judge(server), k=0, rescore=1)
    assert "Whose dog is walked, and by whom?" in policy.asked
    m = evaluation.metrics
    assert (m["vcg/correctness"], m["vcg/detail"], m["vcg/context"], m["vcg/temporal"], m["vcg/consistency"]) == \
        (4, 3, 2, 1, 5)
    assert server.calls == 5 * 2  # five verdicts, two draws
    assert evaluation.judge_spread["vcg/consistency"]["std"] == 0.0
    consistency = next(i for i in evaluation.items if i.qtype == "consistency")
    assert consistency.judge is not None and consistency.judge["second_answer"] == "a man"
    assert consistency.correct and consistency.score == 1.0
    with pytest.raises(UsageError, match="rescore"):
        evaluate_items(policy, bench, rescore=1)


@pytest.mark.integration
def test_rlaif_eval_end_to_end_on_video_qa(vcg_data: dict[str, Any], serve: Any, llama_dir: str,
                                           tmp_path: Path) -> None:
    """``rlaif eval --config`` with a video-qa benchmark of VCGBench files and a tiny
    text LM (hf-causal-lm; it ignores the video) judged over HTTP; run twice, the second
    time from the cache."""
    pytest.importorskip("peft")
    from typer.testing import CliRunner

    from rlaif.cli.main import app

    config = tmp_path / "eval.toml"
    config.write_text(
        "[benchmark]\nname = \"video-qa\"\nformat = \"vcgbench\"\n"
        f"videos = {json.dumps(vcg_data['videos'])}\nannotations = {json.dumps(vcg_data['vcg'])}\n"
        "[policy]\nname = \"hf-causal-lm\"\n"
        f"path = {json.dumps(llama_dir)}\ndevice = \"cpu\"\ndtype = \"float32\"\nlora_r = 2\nlora_alpha = 4\n"
        "[run]\nmax_new_tokens = 4\n")
    server = serve(vcg_judge)
    args = ["eval", "--config", str(config), "--judge-url", server.url, "--judge-model", "tiny-judge", "--k", "0",
            "--no-baselines", "--json", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.splitlines()[-1])["policy"]
    assert metrics["n/judged"] == 3 and metrics["vcg/temporal"] == 1.0 and metrics["vcg/correctness"] == 4.0
    assert server.calls == 5
    lines = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert {line["schema"] for line in lines} == {"eval-item/2"}
    assert all(line["judge"]["status"] == "ok" and line["judge"]["criteria"] for line in lines)
    again = CliRunner().invoke(app, [*args[:-2], "--rescore", "1", "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert server.calls == 5 + 5  # draw 0 from the cache, draw 1 asked
    report = json.loads(again.stdout.splitlines()[-1])
    assert report["policy"] == metrics
    assert report["rescore"]["vcg/temporal"] == {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0, "draws": 2.0}
    table = CliRunner().invoke(app, [*args[:-3], "--rescore", "1"])
    assert table.exit_code == 0, table.output
    assert server.calls == 10 and "judge metrics over 2 draws" in table.output and "judged 3 items" in table.output
    # Without a judge the free-text items are reported as unscored.
    plain = CliRunner().invoke(app, ["eval", "--config", str(config), "--k", "0", "--no-baselines"])
    assert plain.exit_code == 0, plain.output
    assert "unscored 3" in plain.output


@pytest.mark.integration
def test_a_local_model_judges_through_the_same_path(llama_dir: str) -> None:
    """A local Hugging Face judge (the random tiny Llama: it cannot write the dict, so
    every verdict fails after its retry, visibly), greedy and sampled."""
    prompts, answers = [qa_prompt(0), vcg_prompt(1, "temporal")], ["one two", "three"]
    judge = build_answer_judge(llama_dir)
    report = judge_answers(judge, prompts, answers)
    assert report.metrics["n/judge_failed"] == 2 and report.metrics["n/judged"] == 0
    assert "judge/acc/all" not in report.metrics and judge.asked == 4
    record = report.item_record(0)
    assert record is not None and record["status"] == "judge_failed"
    assert record["criteria"]["qa"]["raw"].startswith("{'pred': '")  # the pre-filled reply
    sampled = build_answer_judge(llama_dir, temperature=0.7)
    assert judge_answers(sampled, prompts, answers).metrics["n/judge_failed"] == 2
