"""VerIPO's rollout-aware verifier: DPO pairs built from a GRPO phase's stored rollouts.

Li et al., 2025 (arXiv 2505.19000; methods.md §3). After a GRPO phase, the verifier
reads what the phase stored -- every group's rollouts and the oracle's ranking -- and
builds preference pairs of three kinds, always between two rollouts of one prompt:

* **penalty**: a *clean correct* answer (correct, finished with EOS, not repetitive)
  against one that is wrong, truncated (no EOS) or repetitive;
* **consistency**: where the policy writes reasoning (``<think>...</think>`` then the
  answer, or ``answer because reasoning`` / ``reasoning: ...``), a correct answer whose
  reasoning a small judge LLM says supports it, against a correct answer whose reasoning
  it says does not. Skipped, with a count, when no judge is configured or no correct
  answer carries reasoning;
* **reflection**: a correct answer that corrects itself (``wait``, ``on second
  thought``, ``let me re-check``...) against a direct wrong one. Skipped, with a count,
  where the data has no self-corrected correct answer (the embedded world never has).

*Correct* is the oracle's verdict: a score normalised to [0, 1] by the oracle's
declared ``score_range`` at or above ``correct_threshold`` (the ground-truth oracle:
item score 1); a rank-only oracle's top tie block when it has more than one block. A
group whose ranking failed gives no pair. *Repetitive*: more than
``repetition_threshold`` of the answer's word n-grams (n = ``repetition_ngram``) are
repeats of an earlier one, ``1 - distinct / total``.

The verifier also names the phase's *solved* prompts, those whose every rollout was
correct; :mod:`rlaif.train.veripo` drops a seeded share of them from the prompt pool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlaif.core.records import Group, PreferencePair, Ranking
from rlaif.plugins.losses.advantages import ranking_scores

PAIR_KINDS = ("penalty", "consistency", "reflection")

_THINK = re.compile(r"<think>(?P<reasoning>.*?)</think>\s*(?P<answer>.*)", re.S | re.I)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_REASONING_LABEL = re.compile(r"^(?P<answer>.*?)\s*\breasoning:\s*(?P<reasoning>.+)$", re.S | re.I)
_BECAUSE = re.compile(r"^(?P<answer>.*?)\s*\bbecause\b\s*(?P<reasoning>.+)$", re.S | re.I)
_REFLECTION = re.compile(
    r"\b(wait\b|on second thought|let me (re-?check|reconsider|look again)|re-?examin\w*|i was wrong)", re.I
)


@dataclass(frozen=True)
class VerifierSettings:
    correct_threshold: float = 1.0
    repetition_ngram: int = 3
    repetition_threshold: float = 0.5
    max_pairs_per_group: int = 4


@dataclass
class StepGroup:
    """One judged group of a stored step: what the verifier reads."""

    step: int
    group: Group
    ranking: Ranking


@dataclass
class VerifierResult:
    pairs: list[PreferencePair] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    solved: list[str] = field(default_factory=list)  # prompt ids whose every rollout was correct


class ConsistencyJudge(Protocol):
    def agrees(self, items: Sequence[tuple[str, str, str]]) -> list[bool | None]:
        """For each ``(question, reasoning, answer)``: does the reasoning support the
        answer? ``None`` where the judge gave no usable verdict."""
        ...


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of the word n-grams of ``text`` that repeat an earlier one (0 when it has none)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_repetitive(text: str, settings: VerifierSettings) -> bool:
    return repeated_ngram_share(text, settings.repetition_ngram) > settings.repetition_threshold


def split_reasoning(text: str) -> tuple[str, str] | None:
    """``(reasoning, answer)`` of an answer that carries its reasoning, else None."""
    for pattern in (_THINK, _REASONING_LABEL, _BECAUSE):
        match = pattern.match(text.strip())
        if match:
            reasoning, answer = match.group("reasoning").strip(), match.group("answer").strip()
            tagged = _ANSWER_TAG.search(answer)
            answer = tagged.group(1).strip() if tagged else answer
            if reasoning and answer:
                return reasoning, answer
    return None


def is_reflective(text: str) -> bool:
    return bool(_REFLECTION.search(text))


def correct_flags(ranking: Ranking, group_size: int, threshold: float) -> list[bool] | None:
    """Per candidate: did the oracle judge it correct? None when the ranking cannot say
    (failed, or a rank-only ranking whose candidates all tie)."""
    if not ranking.ok:
        return None
    if ranking.scores is not None and ranking.score_range is not None:
        scores = ranking_scores(ranking, group_size)
        return None if scores is None else [s >= threshold - 1e-9 for s in scores]
    blocks = ranking.tie_groups()
    if len(blocks) < 2:
        return None
    top = set(blocks[0])
    return [i in top for i in range(group_size)]


def _pair(kind: str, reason: str, step: int, chosen: Any, rejected: Any, prompt_id: str) -> PreferencePair:
    return PreferencePair(prompt_id=prompt_id, kind=kind, reason=reason, chosen_step=step,
                          chosen_index=chosen.index, rejected_step=step, rejected_index=rejected.index,
                          chosen_text=chosen.text, rejected_text=rejected.text)


def build_pairs(entries: Sequence[StepGroup], settings: VerifierSettings | None = None,
                judge: ConsistencyJudge | None = None) -> VerifierResult:
    """The verifier's pairs and counts over ``entries`` (a GRPO phase's groups), in a
    deterministic order: entry by entry, penalty then consistency then reflection."""
    settings = settings or VerifierSettings()
    counts = {f"pairs/{k}": 0 for k in PAIR_KINDS}
    counts.update({"groups": 0, "groups_unjudged": 0, "consistency_skipped_no_judge": 0,
                   "consistency_skipped_no_reasoning": 0, "consistency_no_contrast": 0,
                   "consistency_judge_failed": 0, "reflection_skipped_no_data": 0})
    pairs: list[PreferencePair] = []
    all_correct: dict[str, bool] = {}
    pending: list[tuple[int, StepGroup, list[Any]]] = []  # consistency candidates per entry
    per_entry: list[list[PreferencePair]] = []
    limit = settings.max_pairs_per_group
    for entry in entries:
        counts["groups"] += 1
        rollouts = list(entry.group.rollouts)
        pid = entry.group.prompt.prompt_id
        flags = correct_flags(entry.ranking, len(rollouts), settings.correct_threshold)
        mine: list[PreferencePair] = []
        per_entry.append(mine)
        if flags is None:
            counts["groups_unjudged"] += 1
            all_correct[pid] = False
            continue
        all_correct[pid] = all_correct.get(pid, True) and all(flags)
        repetitive = [is_repetitive(r.text, settings) for r in rollouts]
        clean = [r for r, ok, rep in zip(rollouts, flags, repetitive, strict=True) if ok and r.finished and not rep]
        # penalty: clean correct vs truncated / repetitive / wrong (that order of reasons)
        bad = []
        for r, ok, rep in zip(rollouts, flags, repetitive, strict=True):
            if not r.finished:
                bad.append((r, "truncated"))
            elif rep:
                bad.append((r, "repetitive"))
            elif not ok:
                bad.append((r, "wrong"))
        if clean:
            for i, (r, reason) in enumerate(bad[:limit]):
                mine.append(_pair("penalty", reason, entry.step, clean[i % len(clean)], r, pid))
        # consistency: judged later, all groups in one judge call
        reasoned = [r for r in clean if split_reasoning(r.text) is not None]
        if not reasoned:
            counts["consistency_skipped_no_reasoning"] += 1
        elif judge is None:
            counts["consistency_skipped_no_judge"] += 1
        else:
            pending.append((len(per_entry) - 1, entry, reasoned))
        # reflection: self-corrected correct vs direct wrong
        reflective = [r for r in clean if is_reflective(r.text)]
        direct_wrong = [r for r, ok in zip(rollouts, flags, strict=True) if not ok and not is_reflective(r.text)]
        if not reflective or not direct_wrong:
            counts["reflection_skipped_no_data"] += 1
        else:
            for i, r in enumerate(direct_wrong[:limit]):
                mine.append(_pair("reflection", "direct", entry.step, reflective[i % len(reflective)], r, pid))
    if pending and judge is not None:
        items = [(entry.group.prompt.question, *(split_reasoning(r.text) or ("", "")))
                 for _, entry, rs in pending for r in rs]
        verdicts = iter(judge.agrees(items))
        for slot, entry, reasoned in pending:
            said = [(r, next(verdicts)) for r in reasoned]
            counts["consistency_judge_failed"] += sum(v is None for _, v in said)
            good = [r for r, v in said if v is True]
            poor = [r for r, v in said if v is False]
            if not good or not poor:
                counts["consistency_no_contrast"] += 1
                continue
            for i, r in enumerate(poor[:limit]):
                per_entry[slot].append(_pair("consistency", "inconsistent", entry.step, good[i % len(good)], r,
                                             entry.group.prompt.prompt_id))
    for mine in per_entry:
        mine.sort(key=lambda p: PAIR_KINDS.index(p.kind))  # stable: penalty, consistency, reflection
        pairs.extend(mine)
        for p in mine:
            counts[f"pairs/{p.kind}"] += 1
    solved = sorted(pid for pid, ok in all_correct.items() if ok)
    return VerifierResult(pairs, counts, solved)


# --------------------------------------------------------------------------- the judge
CONSISTENCY_SYSTEM = ("You check whether a line of reasoning supports an answer to a question about a video. "
                      "Reply with one word: yes or no.")
CONSISTENCY_USER = ("Question: {question}\nReasoning: {reasoning}\nAnswer: {answer}\n"
                    "Does the reasoning support this answer? Reply yes or no.")


class BackendConsistencyJudge:
    """A :class:`ConsistencyJudge` on any llm-judge backend
    (:mod:`rlaif.plugins.oracles.judge_backends`): one ``generate`` call for all items,
    the reply's first word read as yes / no."""

    def __init__(self, backend: Any, max_new_tokens: int = 4) -> None:
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.calls = 0

    def agrees(self, items: Sequence[tuple[str, str, str]]) -> list[bool | None]:
        if not items:
            return []
        conversations = [[{"role": "system", "content": CONSISTENCY_SYSTEM},
                          {"role": "user", "content": CONSISTENCY_USER.format(question=q, reasoning=r, answer=a)}]
                         for q, r, a in items]
        self.calls += 1
        replies = self.backend.generate(conversations, max_new_tokens=self.max_new_tokens)
        return [_yes_no(reply.text) if reply.failure is None else None for reply in replies]


def _yes_no(text: str) -> bool | None:
    words = re.findall(r"[a-z]+", (text or "").lower())
    if not words:
        return None
    return True if words[0] == "yes" else False if words[0] == "no" else None


def build_consistency_judge(options: dict[str, Any], store: Any = None) -> BackendConsistencyJudge | None:
    """The judge a dpo phase's options name (``judge_url``, or ``judge`` = ``smollm2`` or
    a model directory / hub id), or None when they name none."""
    from rlaif.core.cache import cache_root
    from rlaif.plugins.oracles.judge_backends import (
        JsonlRequestCache,
        LocalHFBackend,
        OpenAIChatBackend,
        StoreRequestCache,
    )

    url, judge = options.get("judge_url") or "", options.get("judge") or ""
    if url:
        cache: Any = (StoreRequestCache(store) if callable(getattr(store, "put_narrative", None))
                      else JsonlRequestCache(cache_root() / "judges" / "requests.jsonl"))
        backend: Any = OpenAIChatBackend(url, options.get("judge_model") or "default",
                                         api_key_env=options.get("api_key_env") or "OPENAI_API_KEY", cache=cache)
        return BackendConsistencyJudge(backend)
    if judge == "smollm2":
        return BackendConsistencyJudge(LocalHFBackend.smollm2())
    if judge:
        return BackendConsistencyJudge(LocalHFBackend(judge))
    return None
