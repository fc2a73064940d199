"""Judge-scored evaluation of free-text answers, as Video-ChatGPT scores them.

Exact match cannot score a description, so Video-ChatGPT (Maaz et al. 2024,
"Video-ChatGPT: Towards Detailed Video Understanding via Large Vision and Language
Models", §4) asks an LLM judge. Open-ended QA (MSVD-, MSRVTT-, TGIF-, ActivityNet-QA): the
judge reads the question, the reference answer and the prediction and replies with a
verdict and a score, ``{'pred': 'yes', 'score': 4}``; accuracy is yes / (yes + no) and
the score is the mean of the 0-5 scores. Its generative benchmark (VCGBench) scores five
criteria 0-5: correctness of information, detail orientation and contextual
understanding on the generic questions, temporal understanding on the temporal ones, and
consistency on pairs of phrasings of one question (the policy answers both, the judge
compares both answers with the reference). The prompts here are our own wording of that
protocol.

Any ``llm-judge`` backend (:mod:`rlaif.plugins.oracles.judge_backends`: an
OpenAI-compatible server or a local Hugging Face model) can judge. A reply is parsed
leniently (a Python dict, JSON, or ``pred: yes, score: 4`` in prose); one that cannot be
read is asked again once, with the unreadable reply and a reminder of the format, and
then counts as ``judge_failed`` -- reported, never read as "no".

Replies are cached on disk (:class:`VerdictCache`, SQLite under
``$RLAIF_CACHE/judge-eval/``) per (judge, conversation, sampling settings, draw), so
scoring the same predictions again costs no judge call. ``rescore = N`` asks the judge N
more times (draws 1..N, each cached under its own index, never answered from draw 0) and
:func:`metric_spread` reports how much the metrics move across the draws.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import re
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlaif.core.cache import cache_root
from rlaif.core.errors import UsageError
from rlaif.core.records import Prompt
from rlaif.plugins.oracles.judge_backends import Conversation, JudgeReply

#: ``rlaif eval --scorer``: ``auto`` judges the items that need a judge and scores the
#: rest by the benchmark's exact match; ``judge`` judges every item with a reference;
#: ``exact`` judges none (items that need a judge are then counted as unscored).
SCORERS = ("auto", "judge", "exact")

#: The open-ended QA protocol: a yes/no verdict and a 0-5 score.
QA = "qa"
#: VCGBench's criteria, in the order Video-ChatGPT reports them.
VCG_CRITERIA = ("correctness", "detail", "context", "temporal", "consistency")
#: Which VCGBench criteria score a question of each type.
VCG_CRITERIA_OF = {"generic": ("correctness", "detail", "context"), "temporal": ("temporal",),
                   "consistency": ("consistency",)}
MAX_SCORE = 5.0
#: Where a judge's reply must end up, for a local judge that can be pre-filled; chat
#: endpoints ignore it (their reply is parsed either way).
ANSWER_PREFIX = {QA: "{'pred': '", "criterion": "{'score': "}
MAX_RAW_CHARS = 2000
MAX_TEXT_CHARS = 1500

QA_SYSTEM = (
    "You judge answers to questions about videos. You compare a predicted answer with the correct answer and "
    "decide whether they mean the same thing.\n"
    "Instructions:\n"
    "- Look for a match in meaning between the predicted answer and the correct answer, not in wording.\n"
    "- Synonyms and paraphrases count as matches.\n"
    "- Decide whether the prediction is correct, taking the correct answer as the truth."
)
QA_USER = (
    "Judge this question and answer about a video.\n\n"
    "Question: {question}\n"
    "Correct answer: {reference}\n"
    "Predicted answer: {prediction}\n\n"
    "Give a verdict, yes or no, and a score, an integer from 0 to 5 where 5 means the prediction matches the "
    "correct answer best. Write your reply as a Python dictionary with the keys 'pred' (the string 'yes' or "
    "'no') and 'score' (an integer, not a string), and write nothing else: no explanation, no other text. "
    "For example: {{'pred': 'yes', 'score': 4}}"
)
#: criterion -> (its name in the prompt, what the judge should look at).
CRITERIA: dict[str, tuple[str, tuple[str, ...]]] = {
    "correctness": ("correctness of information", (
        "The predicted answer must state facts that agree with the correct answer, which describes the video.",
        "Synonyms and paraphrases count as matches.",
        "Score how factually accurate the prediction is; anything it gets wrong lowers the score.",
    )),
    "detail": ("detail orientation", (
        "Check that the prediction covers every major point of the correct answer and leaves out no key aspect.",
        "Check that it gives specific details rather than generic statements.",
        "Synonyms and paraphrases count as matches.",
        "Give one score for completeness and specificity together.",
    )),
    "context": ("contextual understanding", (
        "Check that the prediction fits the overall context of the video as the correct answer describes it, "
        "with nothing out of context or at odds with it.",
        "The prediction should capture the main themes and the mood of the video.",
        "Synonyms and paraphrases count as matches.",
    )),
    "temporal": ("temporal understanding", (
        "Check that the prediction gives the events in the order the correct answer gives them.",
        "Synonyms and paraphrases count as matches.",
        "Score how well the prediction keeps the sequence of events.",
    )),
    "consistency": ("consistency", (
        "The model answered two phrasings of the same question. Both predicted answers should agree with the "
        "correct answer and with each other, with no contradiction or notable difference in what they say "
        "about the video.",
        "Synonyms and paraphrases count as matches.",
        "Score how consistent the two answers are with each other and with the correct answer.",
    )),
}
CRITERION_SYSTEM = (
    "You evaluate the answers a video question-answering model wrote, on one criterion: {title}. You compare "
    "the predicted answer with the correct answer.\nInstructions:\n{instructions}"
)
CRITERION_USER = (
    "Evaluate this answer about a video for {title}.\n\n"
    "Question: {question}\n"
    "Correct answer: {reference}\n"
    "Predicted answer: {prediction}\n\n"
    "{ask}"
)
CONSISTENCY_USER = (
    "Evaluate these two answers about a video for {title}.\n\n"
    "Question 1: {question}\n"
    "Question 2: {question_2}\n"
    "Correct answer: {reference}\n"
    "Predicted answer to question 1: {prediction}\n"
    "Predicted answer to question 2: {prediction_2}\n\n"
    "{ask}"
)
CRITERION_ASK = (
    "Give a score, an integer from 0 to 5 where 5 is best for {title}. Write your reply as a Python dictionary "
    "with the key 'score' (an integer, not a string), and write nothing else: no explanation, no other text. "
    "For example: {{'score': 4}}"
)
RETRY_USER = "Your reply could not be read. Reply with the Python dictionary only, for example: {example}"
EXAMPLE = {QA: "{'pred': 'yes', 'score': 4}", "criterion": "{'score': 4}"}


# ----------------------------------------------------------------------------- what to judge
def needs_judge(benchmark: Any, prompt: Prompt) -> bool:
    """Whether ``prompt``'s answer is free text exact match cannot score: the benchmark's
    ``needs_judge(prompt)`` when it has one, else ``prompt.meta["needs_judge"]``."""
    ask = getattr(benchmark, "needs_judge", None)
    if callable(ask):
        return bool(ask(prompt))
    return bool(prompt.meta.get("needs_judge", False))


def routed_to_judge(benchmark: Any, prompts: Sequence[Prompt], scorer: str = "auto") -> list[bool]:
    """Per prompt, whether ``scorer`` sends it to the judge (see :data:`SCORERS`); an item
    without a reference answer is never judged."""
    if scorer not in SCORERS:
        raise UsageError(f"--scorer {scorer!r}: choose one of {', '.join(SCORERS)}")
    if scorer == "exact":
        return [False] * len(prompts)
    return [p.reference is not None and (scorer == "judge" or needs_judge(benchmark, p)) for p in prompts]


def criteria_for(prompt: Prompt) -> tuple[str, ...]:
    """The criteria that score ``prompt``: VCGBench's by question type for a VCGBench
    item (and consistency for any item with a second phrasing), else the open-ended QA
    verdict."""
    if prompt.meta.get("question_2"):
        return ("consistency",)
    if prompt.meta.get("format") == "vcgbench":
        return VCG_CRITERIA_OF.get(prompt.qtype, ("correctness", "detail", "context"))
    return (QA,)


def second_phrasing(prompt: Prompt) -> Prompt | None:
    """The prompt of a consistency item's second phrasing (``meta["question_2"]``), for
    the policy to answer; None for other items."""
    question = prompt.meta.get("question_2")
    if not question:
        return None
    return replace(prompt, prompt_id=f"{prompt.prompt_id}#q2", question=str(question))


# ----------------------------------------------------------------------------- prompts
def _clip(text: str | None) -> str:
    text = " ".join(str(text or "").split())
    if not text:
        return "(no answer)"
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 3] + "..."


def judge_conversation(criterion: str, prompt: Prompt, prediction: str, prediction_2: str | None = None
                       ) -> Conversation:
    """The chat the judge reads for one criterion of one answer."""
    fields = {"question": _clip(prompt.question), "reference": _clip(prompt.reference), "prediction": _clip(prediction)}
    if criterion == QA:
        return [{"role": "system", "content": QA_SYSTEM}, {"role": "user", "content": QA_USER.format(**fields)}]
    if criterion not in CRITERIA:
        raise ValueError(f"unknown judging criterion {criterion!r}; known: {QA}, {', '.join(CRITERIA)}")
    title, instructions = CRITERIA[criterion]
    system = CRITERION_SYSTEM.format(title=title, instructions="\n".join(f"- {line}" for line in instructions))
    ask = CRITERION_ASK.format(title=title)
    if criterion == "consistency":
        user = CONSISTENCY_USER.format(title=title, ask=ask, question_2=_clip(prompt.meta.get("question_2")),
                                       prediction_2=_clip(prediction_2), **fields)
    else:
        user = CRITERION_USER.format(title=title, ask=ask, **fields)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# ----------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class ParsedVerdict:
    """A readable reply: ``pred`` ("yes"/"no", open-ended QA only) and ``score`` in 0-5;
    or ``failure`` saying why the reply cannot be read."""

    pred: str | None = None
    score: float | None = None
    failure: str | None = None


_DICT = re.compile(r"\{[^{}]*\}", re.S)
_PRED = re.compile(r"""["']?\bpred["']?\s*[:=]\s*["']?\s*(yes|no)\b""", re.I)
_SCORE = re.compile(r"""["']?\bscore["']?\s*[:=]\s*["']?\s*(-?\d+(?:\.\d+)?)""", re.I)


def parse_verdict(text: str, criterion: str = QA) -> ParsedVerdict:
    """Read a judge's reply: a Python or JSON dict (``{'pred': 'yes', 'score': 4}``,
    also inside prose or a code fence), else ``pred``/``score`` written out. The score
    must be a number in 0-5 (an integer is asked for; a fraction is kept as given); open-
    ended QA also needs ``pred`` yes or no."""
    data: dict[str, Any] = {}
    for block in _DICT.findall(text or ""):
        parsed = _literal_dict(block)
        if parsed is not None and ("score" in parsed or "pred" in parsed):
            data = parsed
            break
    if not data:
        pred_match = _PRED.search(text or "")
        score_match = _SCORE.search(text or "")
        if pred_match:
            data["pred"] = pred_match.group(1)
        if score_match:
            data["score"] = score_match.group(1)
    if "score" not in data:
        return ParsedVerdict(failure="no score in the reply")
    score = _number(data["score"])
    if score is None or not 0.0 <= score <= MAX_SCORE:
        return ParsedVerdict(failure=f"score {data['score']!r} is not a number from 0 to 5")
    if criterion != QA:
        return ParsedVerdict(score=score)
    pred = str(data.get("pred", "")).strip().strip(".!").lower()
    if pred not in ("yes", "no"):
        return ParsedVerdict(failure="no yes/no verdict in the reply" if "pred" not in data
                             else f"verdict {data['pred']!r} is neither yes nor no")
    return ParsedVerdict(pred=pred, score=score)


def _literal_dict(block: str) -> dict[str, Any] | None:
    for read in (ast.literal_eval, json.loads):
        with contextlib.suppress(ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = read(block)
            if isinstance(value, dict):
                return {str(k).strip().lower(): v for k, v in value.items()}
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
    return number if math.isfinite(number) else None


# ----------------------------------------------------------------------------- cache
class VerdictCache:
    """Judge replies in one SQLite file, keyed by :meth:`AnswerJudge.cache_key`. Each
    batch of replies is written in one transaction, so the file never holds half a
    write; the connection is opened on first use (never at import, never shared across
    ``fork``) and closed by :meth:`close`."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_root() / "judge-eval" / "verdicts.sqlite"
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
            with conn:
                conn.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, judge TEXT NOT NULL, "
                             "draw INTEGER NOT NULL, reply TEXT NOT NULL, created REAL NOT NULL)")
            self._conn = conn
        return self._conn

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The cached replies among ``keys`` (``{"text", "attempts", ...}``)."""
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            conn = self._connection()
            for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, reply in conn.execute(f"SELECT key, reply FROM replies WHERE key IN ({marks})", chunk):
                    with contextlib.suppress(ValueError):
                        found[key] = json.loads(reply)
        return found

    def put_many(self, rows: Sequence[tuple[str, str, int, dict[str, Any]]]) -> None:
        """Store ``(key, judge, draw, reply)`` rows in one transaction."""
        if not rows:
            return
        now = time.time()
        with self._lock:
            conn = self._connection()
            with conn:
                conn.executemany("INSERT OR REPLACE INTO replies (key, judge, draw, reply, created) "
                                 "VALUES (?, ?, ?, ?, ?)",
                                 [(key, judge, draw, json.dumps(reply, sort_keys=True), now)
                                  for key, judge, draw, reply in rows])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# ----------------------------------------------------------------------------- judging
@dataclass(frozen=True)
class Verdict:
    """One criterion of one answer, as the judge scored it in one draw."""

    criterion: str
    pred: str | None = None
    score: float | None = None
    raw: str = ""
    failure: str | None = None
    attempts: int = 1
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"score": self.score, "raw": self.raw[:MAX_RAW_CHARS], "attempts": self.attempts,
                               "cached": self.cached}
        if self.criterion == QA:
            out = {"pred": self.pred, **out}
        if self.failure is not None:
            out["failure"] = self.failure
        return out


@dataclass(frozen=True)
class _Task:
    item: int
    criterion: str
    conversation: Conversation

    @property
    def prefix(self) -> str:
        return ANSWER_PREFIX[QA if self.criterion == QA else "criterion"]


class AnswerJudge:
    """Scores answers with a judge backend, through a :class:`VerdictCache`.

    :param backend: a :mod:`judge_backends` backend (its ``generate`` is called).
    :param cache: where replies are kept; None judges afresh every time.
    :param temperature: the judge's sampling temperature (0: greedy); a backend must
        accept a ``temperature`` argument for any other value.
    :param max_new_tokens: the reply's budget (a dict needs a dozen tokens).
    :param batch_size: conversations per backend call.
    """

    def __init__(self, backend: Any, *, cache: VerdictCache | None = None, temperature: float = 0.0,
                 max_new_tokens: int = 48, batch_size: int = 32) -> None:
        if temperature < 0:
            raise UsageError(f"judge temperature must be >= 0, got {temperature}")
        if temperature > 0 and not _accepts_temperature(backend):
            raise UsageError(f"judge {getattr(backend, 'name', backend)!r} samples greedily only; "
                             "drop --judge-temperature")
        self.backend = backend
        self.cache = cache
        self.temperature = float(temperature)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = max(1, int(batch_size))
        #: Conversations sent to the backend so far (retries included; cache hits not).
        self.asked = 0

    @property
    def name(self) -> str:
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    def identity(self) -> str:
        """What makes two judges the same for the cache: the backend's name, endpoint
        and model (or local model path)."""
        parts = [self.name]
        for attr in ("endpoint", "model", "model_path"):
            value = getattr(self.backend, attr, None)
            if isinstance(value, str) and value:
                parts.append(f"{attr}={value}")
        return "|".join(parts)

    def cache_key(self, conversation: Conversation, prefix: str, draw: int) -> str:
        blob = json.dumps({"judge": self.identity(), "messages": list(conversation), "prefix": prefix,
                           "max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "draw": draw},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def judge(self, prompts: Sequence[Prompt], answers: Sequence[str],
              second_answers: Mapping[int, str] | None = None, *, draw: int = 0) -> list[dict[str, Verdict]]:
        """Per item, its criteria's verdicts (:func:`criteria_for`) in draw ``draw``.
        ``second_answers[i]`` is the answer to item i's second phrasing (consistency)."""
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(answers)} answers for {len(prompts)} questions")
        second = second_answers or {}
        tasks = [_Task(i, criterion, judge_conversation(criterion, prompt, answers[i], second.get(i)))
                 for i, prompt in enumerate(prompts) for criterion in criteria_for(prompt)]
        verdicts = self._verdicts(tasks, draw)
        out: list[dict[str, Verdict]] = [{} for _ in prompts]
        for task, verdict in zip(tasks, verdicts, strict=True):
            out[task.item][task.criterion] = verdict
        return out

    def _verdicts(self, tasks: Sequence[_Task], draw: int) -> list[Verdict]:
        keys = [self.cache_key(t.conversation, t.prefix, draw) for t in tasks]
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        results: list[Verdict | None] = [None] * len(tasks)
        for i, task in enumerate(tasks):
            hit = hits.get(keys[i])
            if hit is not None:
                parsed = parse_verdict(str(hit.get("text", "")), task.criterion)
                if parsed.failure is None:  # a reply the parser can no longer read is asked again
                    results[i] = Verdict(task.criterion, parsed.pred, parsed.score, str(hit.get("text", "")),
                                         attempts=int(hit.get("attempts", 1)), cached=True)
        todo = [i for i, r in enumerate(results) if r is None]
        replies = self._generate([tasks[i].conversation for i in todo], [tasks[i].prefix for i in todo])
        retry: list[tuple[int, str]] = []
        fresh: list[tuple[int, str, int]] = []
        for i, reply in zip(todo, replies, strict=True):
            task = tasks[i]
            if reply.failure is not None:  # the request itself failed (after the backend's retries)
                results[i] = Verdict(task.criterion, raw=reply.text, failure=f"judge request failed: {reply.failure}")
                continue
            parsed = parse_verdict(reply.text, task.criterion)
            if parsed.failure is None:
                results[i] = Verdict(task.criterion, parsed.pred, parsed.score, reply.text)
                fresh.append((i, reply.text, 1))
            else:
                retry.append((i, reply.text))
        if retry:
            conversations = [[*tasks[i].conversation, {"role": "assistant", "content": text},
                              {"role": "user", "content": RETRY_USER.format(example=EXAMPLE[
                                  QA if tasks[i].criterion == QA else "criterion"])}] for i, text in retry]
            again = self._generate(conversations, [tasks[i].prefix for i, _ in retry])
            for (i, first), reply in zip(retry, again, strict=True):
                task = tasks[i]
                second = parse_verdict(reply.text, task.criterion) if reply.failure is None else None
                raw = f"{first}\n--- retry ---\n{reply.text}"
                if second is not None and second.failure is None:
                    results[i] = Verdict(task.criterion, second.pred, second.score, raw, attempts=2)
                    fresh.append((i, reply.text, 2))
                else:
                    why = reply.failure if second is None else second.failure
                    results[i] = Verdict(task.criterion, raw=raw, attempts=2,
                                         failure=f"unreadable judge reply after a retry ({why})")
        if self.cache is not None:
            self.cache.put_many([(keys[i], self.identity(), draw, {"text": text, "attempts": attempts})
                                 for i, text, attempts in fresh])
        return [r if r is not None else Verdict(t.criterion, failure="not judged") for r, t in zip(results, tasks,
                                                                                                    strict=True)]

    def _generate(self, conversations: Sequence[Conversation], prefixes: Sequence[str]) -> list[JudgeReply]:
        """Replies in batches; conversations with different pre-fills go in separate calls."""
        replies: list[JudgeReply | None] = [None] * len(conversations)
        for prefix in sorted(set(prefixes)):
            index = [i for i, p in enumerate(prefixes) if p == prefix]
            for start in range(0, len(index), self.batch_size):
                chunk = index[start : start + self.batch_size]
                extra = {"temperature": self.temperature} if self.temperature > 0 else {}
                got = self.backend.generate([conversations[i] for i in chunk], max_new_tokens=self.max_new_tokens,
                                            answer_prefix=prefix, **extra)
                self.asked += len(chunk)
                for i, reply in zip(chunk, got, strict=True):
                    replies[i] = reply
        return [r if r is not None else JudgeReply(failure="no reply") for r in replies]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _accepts_temperature(backend: Any) -> bool:
    from rlaif.core.registry import accepts_keyword

    return accepts_keyword(backend.generate, "temperature")


# ----------------------------------------------------------------------------- metrics
@dataclass
class JudgeReport:
    """What judging a set of answers measured: ``metrics`` of draw 0, the per-item
    verdicts of every draw (``draws[d][i]``: criterion -> verdict, empty for an item not
    judged) and, with rescoring, the ``spread`` of each metric across the draws."""

    metrics: dict[str, float]
    draws: list[list[dict[str, Verdict]]]
    spread: dict[str, dict[str, float]] = field(default_factory=dict)

    def item_record(self, i: int, second_answer: str | None = None) -> dict[str, Any] | None:
        """Item i's judge record for the per-item file: status (``ok`` or
        ``judge_failed``), verdict and score (mean over its criteria, 0-5), and per
        criterion the verdict, score and raw reply (and each draw's score when rescored)."""
        verdicts = self.draws[0][i] if self.draws else {}
        if not verdicts:
            return None
        status, verdict, score = item_outcome(verdicts)
        criteria = {}
        for name, v in verdicts.items():
            entry = v.to_dict()
            if len(self.draws) > 1:
                entry["draw_scores"] = [d[i][name].score for d in self.draws]
                if name == QA:
                    entry["draw_preds"] = [d[i][name].pred for d in self.draws]
            criteria[name] = entry
        record: dict[str, Any] = {"status": status, "verdict": verdict, "score": score, "criteria": criteria}
        if second_answer is not None:
            record["second_answer"] = second_answer
        return record


def item_outcome(verdicts: Mapping[str, Verdict]) -> tuple[str, str | None, float | None]:
    """``(status, verdict, score)`` of one item: ``judge_failed`` when any criterion
    failed; the QA verdict; the mean score over the criteria that were read."""
    read = [v for v in verdicts.values() if v.ok]
    status = "ok" if len(read) == len(verdicts) else "judge_failed"
    qa = verdicts.get(QA)
    verdict = qa.pred if qa is not None and qa.ok else None
    score = sum(float(v.score or 0.0) for v in read) / len(read) if read else None
    return status, verdict, score


def judge_metrics(prompts: Sequence[Prompt], verdicts: Sequence[Mapping[str, Verdict]]) -> dict[str, float]:
    """Metrics of one draw. Open-ended QA: ``judge/acc/<qtype>`` (yes / (yes + no)) and
    ``judge/score/<qtype>`` (mean 0-5), and over all QA items ``judge/acc/all`` and
    ``judge/score/all``. VCGBench: ``vcg/<criterion>`` (mean 0-5) and ``vcg/average``
    (the mean of the criteria measured). Counts: ``n/judged`` (items every criterion of
    which was read), ``n/judge_failed`` (items with a criterion unread after a retry;
    left out of that criterion's mean, never counted as "no")."""
    qa: dict[str, list[Verdict]] = {}
    vcg: dict[str, list[float]] = {}
    judged = failed = 0
    for prompt, item in zip(prompts, verdicts, strict=True):
        if not item:
            continue
        if all(v.ok for v in item.values()):
            judged += 1
        else:
            failed += 1
        for name, v in item.items():
            if not v.ok:
                continue
            if name == QA:
                qa.setdefault(prompt.qtype, []).append(v)
            else:
                vcg.setdefault(name, []).append(float(v.score or 0.0))
    metrics: dict[str, float] = {}
    for group, members in [*sorted(qa.items()), ("all", [v for vs in qa.values() for v in vs])]:
        if members:
            metrics[f"judge/acc/{group}"] = sum(v.pred == "yes" for v in members) / len(members)
            metrics[f"judge/score/{group}"] = sum(float(v.score or 0.0) for v in members) / len(members)
    for name in VCG_CRITERIA:
        if vcg.get(name):
            metrics[f"vcg/{name}"] = sum(vcg[name]) / len(vcg[name])
    means = [metrics[f"vcg/{name}"] for name in VCG_CRITERIA if f"vcg/{name}" in metrics]
    if means:
        metrics["vcg/average"] = sum(means) / len(means)
    metrics["n/judged"] = float(judged)
    if failed:
        metrics["n/judge_failed"] = float(failed)
    return metrics


def metric_spread(per_draw: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """For each accuracy or score metric, its ``mean``, ``std`` (sample standard
    deviation; 0 with one draw), ``min`` and ``max`` across draws and the number of
    ``draws`` that measured it."""
    names = sorted({k for m in per_draw for k in m if not k.startswith("n/")})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = [float(m[name]) for m in per_draw if name in m]
        out[name] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "min": min(values), "max": max(values), "draws": float(len(values))}
    return out


def judge_answers(judge: AnswerJudge, prompts: Sequence[Prompt], answers: Sequence[str],
                  second_answers: Mapping[int, str] | None = None, *, rescore: int = 0) -> JudgeReport:
    """Judge every answer in draw 0 (cached), then in ``rescore`` more draws, and report
    draw 0's metrics with, when rescored, each metric's spread over all draws."""
    if rescore < 0:
        raise UsageError(f"--rescore must be >= 0, got {rescore}")
    draws = [judge.judge(prompts, answers, second_answers, draw=d) for d in range(rescore + 1)]
    per_draw = [judge_metrics(prompts, d) for d in draws]
    return JudgeReport(per_draw[0], draws, metric_spread(per_draw) if rescore else {})


# ----------------------------------------------------------------------------- building
def build_answer_judge(judge: str | None = None, judge_url: str | None = None, model: str = "default",
                       api_key_env: str = "OPENAI_API_KEY", *, temperature: float = 0.0, device: str = "cpu",
                       timeout: float = 60.0, retries: int = 2, concurrency: int = 4, cache: bool = True,
                       cache_path: str | Path | None = None) -> AnswerJudge:
    """A judge as ``rlaif run`` names one: ``judge_url`` (or ``judge="openai"`` with it)
    for an OpenAI-compatible server serving ``model``, whose API key is read from the
    environment variable ``api_key_env``; ``judge="smollm2"`` or a local directory / hub
    id of a Hugging Face causal LM. The world judge and ``self`` were taught the video
    world's yes/no format, not this protocol, and are refused."""
    from rlaif.plugins.oracles.judge_backends import LocalHFBackend, OpenAIChatBackend

    backend: Any
    if judge_url is not None or judge == "openai":
        if not judge_url:
            raise UsageError("--judge openai needs --judge-url (e.g. http://127.0.0.1:8000/v1)")
        batch = 8 * max(1, concurrency)
        # One backend call holds up to `batch` requests; its deadline covers them all.
        step_timeout = timeout * (retries + 1) * math.ceil(batch / max(1, concurrency)) + 30.0
        backend = OpenAIChatBackend(judge_url, model, api_key_env=api_key_env, timeout=timeout, retries=retries,
                                    concurrency=concurrency, cache=None, step_timeout=step_timeout)
    elif judge in (None, "", "world", "self"):
        raise UsageError(f"judge-scored evaluation needs --judge-url URL (an OpenAI-compatible server), "
                         f"--judge smollm2 or --judge MODEL_DIR; {judge or 'no judge'!r} cannot serve it")
    elif judge == "smollm2":
        backend = LocalHFBackend.smollm2(device=device)
        batch = 16
    else:
        backend = LocalHFBackend(judge, device=device)
        batch = 16
    store = VerdictCache(cache_path) if cache else None
    return AnswerJudge(backend, cache=store, temperature=temperature, batch_size=batch)


@contextlib.contextmanager
def opened(judge: AnswerJudge | None) -> Iterator[AnswerJudge | None]:
    """Close the judge's cache file when the evaluation is done."""
    try:
        yield judge
    finally:
        if judge is not None:
            judge.close()
