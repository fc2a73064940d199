"""Held-out evaluation: greedy answers from the policy, scored by the benchmark.

Long-answer question types (``describe``, ``caption``) get a larger token budget than
short ones and are generated in their own batches, so one long description does not keep
a whole batch of one-word answers decoding. Baselines that the benchmark ships (a
single-frame and a blind "random" baseline for the video world) are scored by
:func:`baseline_metrics` on the same items for comparison.

Sampling metrics (``rlaif eval --k``) show the headroom RL can use: ``pass@k`` (is a right
answer among k samples at the run's temperature?) against ``maj@k`` (is the most frequent
answer right?). Describe answers are long and rarely repeat, so both are measured on
short-answer types only.

Every evaluation keeps its per-item results (:class:`ItemResult`), so two policies can be
compared item by item (:mod:`rlaif.train.compare`). They are JSON lines in files beside
the run's store, not in LMDB: ``RUN_DIR/eval/step-NNNNNN.jsonl`` for the evaluations
inside ``rlaif run`` / ``rlaif replay`` and ``DIR/items.jsonl`` for ``rlaif eval --out DIR``.

Free-text answers that exact match cannot score (``needs_judge`` items) go to a judge LLM
when one is given (:mod:`rlaif.train.judge_eval`, Video-ChatGPT's protocol); without one
they are counted as unscored (``n/unscored``) and marked so in the per-item file.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlaif.core.errors import UsageError
from rlaif.core.records import Prompt
from rlaif.train.judge_eval import AnswerJudge, judge_answers, needs_judge, routed_to_judge, second_phrasing

#: Question types whose answers are descriptions rather than a few words.
LONG_QTYPES: frozenset[str] = frozenset({"describe", "caption"})


def eval_prompts(benchmark: Any, split: str = "test", limit: int | None = None, seed: int = 0) -> list[Prompt]:
    """The split's prompts, or a seeded random subset of ``limit`` of them kept in split
    order (the first ``limit`` would over-represent the first videos)."""
    prompts = list(benchmark.prompts(split))
    if limit is not None and 0 < limit < len(prompts):
        keep = sorted(random.Random(f"eval:{seed}").sample(range(len(prompts)), limit))
        prompts = [prompts[i] for i in keep]
    return prompts


def greedy_answers(policy: Any, prompts: Sequence[Prompt], *, batch_size: int = 64, max_new_tokens: int = 24,
                   long_max_new_tokens: int = 96) -> list[str]:
    """One greedy answer per prompt, batched, long-answer types with a larger budget."""
    answers: list[str] = [""] * len(prompts)
    short = [i for i, p in enumerate(prompts) if not _is_long(p)]
    long = [i for i, p in enumerate(prompts) if _is_long(p)]
    for indices, budget in ((short, max_new_tokens), (long, long_max_new_tokens)):
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            groups = policy.generate([prompts[i] for i in chunk], 1, max_new_tokens=budget, greedy=True)
            for i, group in zip(chunk, groups, strict=False):
                answers[i] = group[0].text
    return answers


def _is_long(prompt: Prompt) -> bool:
    """A description rather than a few words: a long question type, or an answer the
    benchmark leaves to a judge."""
    return prompt.qtype in LONG_QTYPES or bool(prompt.meta.get("needs_judge"))


@dataclass(frozen=True)
class ItemResult:
    """One evaluated item, enough to pair it with another policy's answer later.

    ``score`` is ``benchmark.item_score`` in [0, 1]; ``correct`` is whether the item counts
    in ``acc/all`` (for video-world a describe answer passes at 3/5, so the two differ).
    When sampling metrics were measured on the item, ``samples`` are the sampled answers,
    ``samples_correct`` how many scored 1 and ``majority_correct`` whether the most
    frequent of the first k did (:func:`majority_answer`).

    An item exact match cannot score (``needs_judge``) takes ``score`` (judge score / 5)
    and ``correct`` (verdict yes; for VCGBench criteria, a mean score of 3 or more) from
    the judge; ``scored`` is false when no judge scored it (none given, or
    ``judge_failed``). ``judge`` is the judge's record of any judged item: status,
    verdict, score and each criterion's raw reply (:meth:`JudgeReport.item_record`)."""

    prompt_id: str
    qtype: str
    answer: str
    score: float
    correct: bool
    samples: tuple[str, ...] = ()
    samples_correct: int | None = None
    majority_correct: bool | None = None
    scored: bool = True
    judge: dict[str, Any] | None = None


#: Schema of one line of a per-item results file; a reader refuses a newer major version.
#: 2 added ``scored`` and ``judge``.
ITEM_SCHEMA = "eval-item/2"


@dataclass
class Evaluation:
    """What one evaluation measured: the metrics table and the items behind it."""

    metrics: dict[str, float]
    items: list[ItemResult] = field(default_factory=list)
    #: With ``rescore``: each judge metric's mean, std, min and max across the draws.
    judge_spread: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_items(policy: Any, benchmark: Any, split: str = "test", limit: int | None = None,
                   batch_size: int = 64, max_new_tokens: int = 24, long_max_new_tokens: int = 96,
                   seed: int = 0, k: int = 0, samples: int | None = None,
                   temperature: float = 1.0, judge: AnswerJudge | None = None, scorer: str = "auto",
                   rescore: int = 0) -> Evaluation:
    """Greedy answers on ``split`` (all items, or a seeded subset of ``limit``) scored by
    ``benchmark.score``, with every item's result. With ``k > 0`` it also samples
    ``samples`` (default ``k``) answers per short-answer item at ``temperature`` (torch
    seeded by ``seed`` inside, the caller's RNG untouched) and adds ``pass@1/...``,
    ``pass@k/...`` and ``maj@k/...`` (:func:`sampling_metrics`).

    With a ``judge``, the items ``scorer`` routes to it (``auto``: those that need one)
    are judged (:func:`judge_eval.judge_answers`; consistency items get the policy's
    answer to their second phrasing too), adding ``judge/...``, ``vcg/...`` and
    ``n/judged`` / ``n/judge_failed``; ``rescore`` more draws give
    :attr:`Evaluation.judge_spread`. Items needing a judge that none scored are counted
    in ``n/unscored``."""
    import torch

    prompts = eval_prompts(benchmark, split, limit, seed)
    routed = routed_to_judge(benchmark, prompts, scorer) if judge is not None else [False] * len(prompts)
    if rescore and judge is None:
        raise UsageError("--rescore asks the judge again: give a judge (--judge-url URL or --judge MODEL)")
    seconds = {i: q for i, p in enumerate(prompts) if routed[i] and (q := second_phrasing(p)) is not None}
    with torch.no_grad():
        answers = greedy_answers(policy, [*prompts, *seconds.values()], batch_size=batch_size,
                                 max_new_tokens=max_new_tokens, long_max_new_tokens=long_max_new_tokens)
    second_answers = dict(zip(seconds, answers[len(prompts):], strict=True))
    answers = answers[: len(prompts)]
    metrics = {key: float(v) for key, v in benchmark.score(prompts, answers).items()}
    judged: dict[int, dict[str, Any]] = {}
    spread: dict[str, dict[str, float]] = {}
    if judge is not None and any(routed):
        index = [i for i, r in enumerate(routed) if r]
        report = judge_answers(judge, [prompts[i] for i in index], [answers[i] for i in index],
                               {j: second_answers[i] for j, i in enumerate(index) if i in second_answers},
                               rescore=rescore)
        metrics.update(report.metrics)
        spread = report.spread
        judged = {i: record for j, i in enumerate(index)
                  if (record := report.item_record(j, second_answers.get(i))) is not None}
    unscored = sum(needs_judge(benchmark, p) and i not in judged for i, p in enumerate(prompts))
    if unscored:
        metrics["n/unscored"] = float(unscored)
    sampled: dict[int, list[str]] = {}
    if k > 0:
        if (samples or k) < k:
            raise UsageError(f"pass@{k} needs at least {k} samples per item, got {samples}")
        short = [i for i, p in enumerate(prompts) if not _is_long(p) and not needs_judge(benchmark, p)]
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)
            texts = sampled_answers(policy, [prompts[i] for i in short], samples or k,
                                    temperature=temperature, batch_size=batch_size, max_new_tokens=max_new_tokens)
        sampled = dict(zip(short, texts, strict=True))
    items = [_item_result(benchmark, prompt, answer, sampled.get(i), k, judged.get(i)) for i, (prompt, answer)
             in enumerate(zip(prompts, answers, strict=True))]
    if k > 0:
        metrics.update(sampling_metrics(items, k))
    return Evaluation(metrics, items, spread)


def evaluate_policy(policy: Any, benchmark: Any, split: str = "test", limit: int | None = None,
                    batch_size: int = 64, max_new_tokens: int = 24, long_max_new_tokens: int = 96,
                    seed: int = 0) -> dict[str, float]:
    """The metrics of :func:`evaluate_items`: e.g. ``acc/all``, ``acc/short``,
    ``acc/<qtype>``, ``score/describe``."""
    return evaluate_items(policy, benchmark, split, limit, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, long_max_new_tokens=long_max_new_tokens,
                          seed=seed).metrics


def _item_result(benchmark: Any, prompt: Prompt, answer: str, samples: list[str] | None,
                 k: int, judged: dict[str, Any] | None = None) -> ItemResult:
    """``correct`` is the item's ``acc/all`` scored alone, so it agrees with the metrics
    table by construction; a benchmark whose table has no ``acc/all`` falls back to a
    full :func:`item_score`. A sample is right when it scores 1; the majority groups
    answers by the benchmark's ``normalize_answer`` when it has one (else
    :func:`plain_normalize`). An item that needs a judge is scored by ``judged`` (its
    judge record), or left unscored."""
    if needs_judge(benchmark, prompt):
        ok = judged is not None and judged["status"] == "ok"
        if not ok:
            return ItemResult(prompt.prompt_id, prompt.qtype, answer, 0.0, False, scored=False,
                              judge=judged or {"status": "unscored"})
        assert judged is not None
        score = float(judged["score"]) / 5.0
        correct = judged["verdict"] == "yes" if judged["verdict"] is not None else score >= 0.6
        return ItemResult(prompt.prompt_id, prompt.qtype, answer, score, correct, judge=judged)
    score = item_score(benchmark, prompt, answer)
    alone = benchmark.score([prompt], [answer]).get("acc/all")
    correct = bool(score >= 1.0 if alone is None else alone >= 1.0)
    if samples is None:
        return ItemResult(prompt.prompt_id, prompt.qtype, answer, score, correct, judge=judged)
    normalize = getattr(benchmark, "normalize_answer", None) or plain_normalize
    hits = sum(_is_right(benchmark, prompt, text) for text in samples)
    vote = majority_answer(samples[:k], normalize)
    return ItemResult(prompt.prompt_id, prompt.qtype, answer, score, correct, tuple(samples), hits,
                      _is_right(benchmark, prompt, vote), judge=judged)


# --------------------------------------------------------------------------- sampling metrics
def sampled_answers(policy: Any, prompts: Sequence[Prompt], n: int, *, temperature: float = 1.0,
                    batch_size: int = 64, max_new_tokens: int = 24) -> list[list[str]]:
    """``n`` sampled answers per prompt, about ``batch_size`` sequences per generate call."""
    per_call = max(1, batch_size // n)
    out: list[list[str]] = []
    for start in range(0, len(prompts), per_call):
        groups = policy.generate(list(prompts[start : start + per_call]), n, max_new_tokens=max_new_tokens,
                                 temperature=temperature)
        out += [[r.text for r in group] for group in groups]
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are right (Chen et al. 2021,
    "Evaluating Large Language Models Trained on Code", eq. 1):
    ``1 - C(n - c, k) / C(n, k)``, the chance that k of the n drawn without replacement
    include a right one."""
    if not 0 <= c <= n or not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 0 < k <= n; got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_answer(answers: Sequence[str], normalize: Callable[[str], str]) -> str:
    """The most frequent answer after ``normalize`` (ties: the one sampled first),
    returned as first sampled, so the benchmark scores the text the policy wrote."""
    keys = [normalize(a) for a in answers]
    top, _ = Counter(keys).most_common(1)[0]
    return answers[keys.index(top)]


def plain_normalize(text: str) -> str:
    """Lowercase, punctuation dropped, spaces squeezed: how answers are grouped for
    majority voting when the benchmark offers no ``normalize_answer`` of its own."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def sampling_metrics(items: Sequence[ItemResult], k: int) -> dict[str, float]:
    """``pass@1``, ``pass@k`` (:func:`pass_at_k` from each item's samples) and ``maj@k``
    over the items that were sampled, per ``/<qtype>`` and over ``/short``; pure
    arithmetic on stored results, so a per-item file is enough to recompute them."""
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for item in items:
        if item.samples_correct is None:
            continue
        n, c = len(item.samples), item.samples_correct
        row = (pass_at_k(n, c, 1), pass_at_k(n, c, k), float(bool(item.majority_correct)))
        rows.setdefault(item.qtype, []).append(row)
    every = [row for group in rows.values() for row in group]
    metrics: dict[str, float] = {}
    for name, group in [*sorted(rows.items()), ("short", every)]:
        if group:
            for j, metric in enumerate(("pass@1", f"pass@{k}", f"maj@{k}")):
                metrics[f"{metric}/{name}"] = sum(row[j] for row in group) / len(group)
    return metrics


def item_score(benchmark: Any, prompt: Prompt, answer: str) -> float:
    """``benchmark.item_score``; a minimal benchmark without one (only ``score``) gets
    the item's ``acc/all`` scored alone, so any benchmark keeps per-item results."""
    if hasattr(benchmark, "item_score"):
        return float(benchmark.item_score(prompt, answer))
    return float(benchmark.score([prompt], [answer]).get("acc/all", 0.0))


def _is_right(benchmark: Any, prompt: Prompt, answer: str) -> bool:
    return item_score(benchmark, prompt, answer) >= 1.0


# --------------------------------------------------------------------------- per-item files
def run_items_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Where the evaluation at ``step`` of a run keeps its per-item results."""
    return Path(run_dir) / "eval" / f"step-{step:06d}.jsonl"


def write_items(path: str | os.PathLike[str], items: Iterable[ItemResult]) -> Path:
    """One JSON line per item, written to a temporary file and renamed into place, so a
    reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as fh:
        for item in items:
            fh.write(json.dumps({"schema": ITEM_SCHEMA, **asdict(item)}) + "\n")
    os.replace(tmp, path)
    return path


def read_items(path: str | os.PathLike[str]) -> list[ItemResult]:
    """The per-item results in ``path``: a results file, a ``rlaif eval --out`` directory
    (``items.jsonl``) or a run directory (its last evaluation, ``eval/step-*.jsonl``)."""
    file = items_file(path)
    items = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        data = json.loads(line)
        schema = str(data.pop("schema", ITEM_SCHEMA))
        if not schema.startswith("eval-item/") or int(schema.partition("/")[2]) > 2:
            raise UsageError(f"{file}:{number}: per-item schema {schema!r}; this rlaif reads {ITEM_SCHEMA!r}")
        data["samples"] = tuple(data.get("samples", ()))
        items.append(ItemResult(**data))
    return items


def items_file(path: str | os.PathLike[str]) -> Path:
    """The per-item results file that ``path`` stands for; see :func:`read_items`."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "items.jsonl").is_file():
        return path / "items.jsonl"
    steps = sorted((path / "eval").glob("step-*.jsonl")) if path.is_dir() else []
    if steps:
        return steps[-1]  # zero-padded step numbers: the last name is the last evaluation
    raise UsageError(f"{path}: no per-item evaluation results (expected a .jsonl file, DIR/items.jsonl "
                     "from `rlaif eval --out DIR`, or a run directory with eval/step-*.jsonl)")


def _baseline_functions(benchmark: Any) -> dict[str, Callable[[str], Any]]:
    """Baselines the benchmark offers: methods ``single_frame_baseline`` /
    ``random_baseline``, or functions of those names in a ``baselines`` module next to
    the benchmark's module, called as ``fn(benchmark, split)``."""
    found: dict[str, Callable[[str], Any]] = {}
    module = None
    package = type(benchmark).__module__.rpartition(".")[0]
    if package:
        try:
            module = importlib.import_module(package + ".baselines")
        except ImportError:
            module = None
    for name in ("single_frame_baseline", "random_baseline"):
        method = getattr(benchmark, name, None)
        if callable(method):
            found[name.removesuffix("_baseline")] = method
        elif module is not None and callable(getattr(module, name, None)):
            found[name.removesuffix("_baseline")] = functools.partial(getattr(module, name), benchmark)
    return found


def baseline_metrics(benchmark: Any, split: str = "test") -> dict[str, dict[str, float]]:
    """``{"single_frame": metrics, "random": metrics}`` for whichever baselines the
    benchmark provides (empty when it provides none), on the whole ``split``."""
    return {name: {k: float(v) for k, v in fn(split).items()} for name, fn in _baseline_functions(benchmark).items()}
