"""The ``llm-judge`` oracle: an instruction-following LLM orders each group's answers.

This is the AI-feedback half of RLAIF (methods.md §2) turned into an oracle ranker
(§1): no reward model is trained; a judge reads the question, optionally a narrative of
the video, and the G candidate answers, and its verdict becomes a :class:`Ranking`.

How it judges (options of :func:`build_llm_judge`):

* **Listwise** (default): all G answers labelled A, B, C... in one prompt.
  ``mode="score"`` ranks by the judge's *label likelihoods*: the log-probability of each
  label as the next token after "The best answer is", one forward pass for all groups of
  a step, no text to parse. ``mode="generate"`` lets the judge write "B > A > C" and a
  reason, parsed by :mod:`ranking_parser` (robust to prose, JSON, numbered lists...).
* **Pairwise tournament** (``pairwise=True``, for weak judges): every pair is judged in
  both A/B orders and the two verdicts averaged, which cancels position bias; a
  candidate's score is its Borda count of averaged wins (with hard verdicts this is the
  Copeland score shifted by a constant), and the order follows the score. The share of
  pairs whose two orders agree is reported as ``consistency``.
* **Permutations** (``permutations=k``, listwise): the candidates are shown in k orders
  (the identity, then seeded shuffles), the k rankings are combined by Borda count, and
  their agreement -- the mean pairwise Kendall tau-b -- goes into the rationale as
  ``agreement=...`` and into :attr:`LLMJudgeOracle.last_agreement`.
* **Context**: ``context="narrative"`` builds (and caches) the VLM-RLAIF narrative of
  the video with :func:`narrative.narrative_for`, captioned by ``captioner`` (default
  ``auto``: the SFT policy's caption-tuned copy where it can be built, else the wired
  policy itself);
  ``"none"`` judges blind; ``"gold"`` uses the benchmark's ground-truth narrative -- an
  upper-bound diagnostic only, so that oracle declares ``needs_reference``.

Failures (a reply that cannot be read, a timeout...) are recorded per group with the raw
text: ``on_failure="skip"`` returns a failed ranking with an empty order, ``"tie"`` an
all-tied order that still carries ``failure`` (so every loss leaves the group out and
counts it in ``groups_failed``, as for ``skip``). Templates are overridable with ``template``, a
string with ``{question}``, ``{context}``, ``{candidates}``, ``{labels}`` and optionally
``{instruction}`` (appended when absent). API keys never reach rankings or logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import random
import re
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlaif.core.cache import cache_root
from rlaif.core.errors import ConfigError, OracleError
from rlaif.core.records import Group, Ranking
from rlaif.plugins.oracles.judge_backends import (
    Conversation,
    JsonlRequestCache,
    JudgeReply,
    LocalHFBackend,
    OpenAIChatBackend,
    PolicyJudgeBackend,
    StoreRequestCache,
)
from rlaif.plugins.oracles.narrative import (
    NARRATIVE_CLIPS,
    GoldNarrative,
    MemoryNarratives,
    PolicyCaptioner,
    SharedNarratives,
    narrative_for,
    prefetch_narratives,
    shared_narratives,
)
from rlaif.plugins.oracles.ranking_parser import parse_ranking

log = logging.getLogger(__name__)

LABELS = string.ascii_uppercase
SYSTEM_PROMPT = "You are a careful, impartial judge of answers to questions about a video."
TEMPLATE_WITH_CONTEXT = (
    "Question: {question}\n\n"
    "What happens in the video (described clip by clip):\n{context}\n\n"
    "Candidate answers:\n{candidates}\n\n{instruction}"
)
TEMPLATE_NO_CONTEXT = "Question about a video: {question}\n\nCandidate answers:\n{candidates}\n\n{instruction}"
INSTRUCTIONS = {
    ("list", "generate"): (
        "Rank all {n} answers from best to worst by how correct and complete they are{video}. On the first line "
        'write only the ranking, the labels {labels} joined by ">", for example: {example}. On the second line '
        'write "Reason:" and one short sentence.'
    ),
    ("list", "score"): "Which answer ({labels}) is the best{video}? Reply with its label only.",
    ("pair", "generate"): (
        "Which answer is better{video}, A or B? On the first line write only the label of the better answer. "
        'On the second line write "Reason:" and one short sentence.'
    ),
    ("pair", "score"): "Which answer is better{video}, A or B? Reply with its label only.",
    ("point", "generate"): "Is the answer correct{video}? Reply yes or no.",
    ("point", "score"): "Is the answer correct{video}? Reply yes or no.",
}
#: The two verdict words of pointwise judging, "correct" first.
VERDICT_LABELS = ["yes", "no"]
#: How the judge's turn begins: score mode reads the next token's label log-probs; in
#: generate mode, backends that can pre-fill (local models) start the reply with it,
#: which keeps small judges on format.
ANSWER_PREFIX = {"list": "The best answer is", "pair": "The better answer is", "point": "Verdict:"}
GENERATE_PREFIX = {"list": "Ranking (best to worst):", "pair": "The better answer is", "point": "Verdict:"}
MAX_ANSWER_CHARS = 600
MAX_CONTEXT_CHARS = 2000
MAX_RAW_CHARS = 8000

MODES = ("score", "generate")
CONTEXTS = ("narrative", "none", "gold")
ON_FAILURE = ("skip", "tie")


# ----------------------------------------------------------------------------- aggregation
def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall tau-b between two rank-position vectors (ties allowed); 1.0 when both
    rank nothing (all tied), 0.0 when only one does."""
    concordant = discordant = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif (da > 0) == (db > 0):
            concordant += 1
        else:
            discordant += 1
    n_a = concordant + discordant + ties_b  # pairs a separates
    n_b = concordant + discordant + ties_a
    if n_a == 0 and n_b == 0:
        return 1.0
    if n_a == 0 or n_b == 0:
        return 0.0
    return (concordant - discordant) / math.sqrt(n_a * n_b)


def mean_agreement(positions: Sequence[Sequence[float]]) -> float | None:
    """Mean Kendall tau-b over all pairs of rankings; None with fewer than two."""
    pairs = list(itertools.combinations(positions, 2))
    if not pairs:
        return None
    return sum(kendall_tau(a, b) for a, b in pairs) / len(pairs)


def borda_points(positions: Sequence[Sequence[float]]) -> list[float]:
    """Mean Borda points (G-1-position; ties share the mean) over rankings."""
    g = len(positions[0])
    return [round(sum(g - 1 - p[c] for p in positions) / len(positions), 9) for c in range(g)]


def pairwise_scores(g: int, prefs: dict[tuple[int, int], list[float]]) -> tuple[list[float], int]:
    """Borda count of averaged pairwise preferences: ``prefs[(i, j)]`` holds P(i beats j)
    from each order it was judged in; unjudged pairs count as a draw. Returns the scores
    and how many pairs had any verdict."""
    scores = [0.0] * g
    judged = 0
    for i, j in itertools.combinations(range(g), 2):
        got = prefs.get((i, j), [])
        p = sum(got) / len(got) if got else 0.5
        judged += bool(got)
        scores[i] += p
        scores[j] += 1.0 - p
    return [round(s, 9) for s in scores], judged


# ----------------------------------------------------------------------------- jobs
@dataclass
class _Job:
    """One conversation for the judge: group ``group``, candidates ``shown`` in label
    order (a permutation of the group in listwise mode, an ordered pair in pairwise)."""

    group: int
    shown: list[int]
    kind: str  # "list" | "pair"
    conversation: Conversation
    labels: list[str]
    native: Any = None  # the policy's own judging item (native judging), else None


class _SafeFormat(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _clean(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    if not text:
        return "(empty answer)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LLMJudgeOracle:
    """An LLM ranks each group of answers; see the module docstring for the options.

    ``backend`` is a :mod:`judge_backends` backend; ``captioner`` (default: the wired
    policy as its SFT self) describes clips for narratives. Attributes after each
    :meth:`rank`: ``last_seconds`` (judging time of the call), ``last_agreement`` (mean
    over groups of the permutation agreement, or pairwise order consistency; None with
    one permutation) and ``last_agreements`` (per group)."""

    name = "llm-judge"
    needs_reference = False

    def __init__(self, backend: Any, *, mode: str = "score", pairwise: bool = False, pointwise: bool = False,
                 score_levels: int | None = None, min_margin: float | None = None, debias: bool = False,
                 permutations: int = 1, context: str = "narrative", n_clips: int = NARRATIVE_CLIPS,
                 template: str | None = None, on_failure: str = "skip",
                 seed: int = 0, max_new_tokens: int = 64, benchmark: Any = None, policy: Any = None,
                 store: Any = None, captioner: Any = None, shared_narratives: SharedNarratives | None = None
                 ) -> None:
        _check_options(mode, context, on_failure, permutations, n_clips, max_new_tokens)
        self.backend = backend
        self.mode = mode
        if pairwise and pointwise:
            raise ConfigError("llm-judge: choose pairwise or pointwise, not both")
        self.pairwise = bool(pairwise)
        self.pointwise = bool(pointwise)
        # Pointwise scores are P(correct); listwise and pairwise ones are label
        # likelihoods or Borda points with no fixed scale (losses then use ranks).
        self.score_range = (0.0, 1.0) if pointwise else None
        if score_levels is not None and (not pointwise or int(score_levels) < 2):
            raise ConfigError("llm-judge score_levels needs pointwise judging and at least 2 levels")
        self.score_levels = None if score_levels is None else int(score_levels)
        if min_margin is not None and (not pointwise or not 0.0 < float(min_margin) < 1.0):
            raise ConfigError("llm-judge min_margin needs pointwise judging and a value between 0 and 1")
        self.min_margin = None if min_margin is None else float(min_margin)
        if debias and not pointwise:
            raise ConfigError("llm-judge debias needs pointwise judging (it corrects each answer's P(correct))")
        self.debias = AnswerBias() if debias else None
        self.permutations = int(permutations)
        self.context = context
        self.n_clips = int(n_clips)
        self.template = template
        self.on_failure = on_failure
        self.seed = int(seed)
        self.max_new_tokens = int(max_new_tokens)
        self.benchmark = benchmark
        self.needs_context = context == "narrative"
        # The gold narrative is a ground-truth annotation: only oracles that declare
        # needs_reference are shown it (and only benchmarks with ground truth allow that).
        self.needs_reference = context == "gold"
        if captioner is None and context == "narrative" and policy is not None:
            captioner = PolicyCaptioner(policy)
        if context == "gold":
            captioner = GoldNarrative(benchmark)
        self.captioner = captioner
        has_cache = callable(getattr(store, "get_narrative", None)) and callable(getattr(store, "put_narrative", None))
        self.narratives = store if has_cache else MemoryNarratives()
        self.shared_narratives = shared_narratives  # across runs, for captioners named by their weights
        # A policy judging in its own trained format (see PolicyJudgeBackend); a
        # user template always wins.
        self.native = template is None and bool(getattr(backend, "native", False))
        self.scoring = mode == "score" and bool(getattr(backend, "supports_scores", False))
        if mode == "score" and not self.scoring:
            log.warning("judge %s cannot score labels; llm-judge falls back to mode='generate'",
                        getattr(backend, "name", backend))
        self.last_seconds = 0.0
        self.last_agreement: float | None = None
        self.last_agreements: list[float | None] = []

    @property
    def endpoint(self) -> str | None:
        """The URL the judge is asked at (endpoint backends), for error messages."""
        return getattr(self.backend, "endpoint", None)

    def __repr__(self) -> str:
        return (f"LLMJudgeOracle(backend={self.backend!r}, mode={self.mode!r}, pairwise={self.pairwise}, "
                f"permutations={self.permutations}, context={self.context!r})")

    # -- the verdicts ----------------------------------------------------------------
    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        started = time.perf_counter()
        results: list[Ranking | None] = [None] * len(groups)
        contexts: list[str | None] = [None] * len(groups)
        for b, group in enumerate(groups):
            g = len(group.rollouts)
            if g > len(LABELS):
                raise OracleError(f"llm-judge labels candidates A-Z; a group of {g} is too large")
            if g == 0:
                results[b] = Ranking(group.prompt.prompt_id, self.name, failure="group has no candidates")
            elif g == 1:
                results[b] = Ranking(group.prompt.prompt_id, self.name, order=[0], rationale="single candidate")
        if self.context == "narrative" and self.captioner is not None:
            with contextlib.suppress(Exception):  # a failure here resurfaces per group below
                prefetch_narratives([g.prompt.video for b, g in enumerate(groups) if results[b] is None
                                     and g.context is None], benchmark=self.benchmark, captioner=self.captioner,
                                    store=self.narratives, n_clips=self.n_clips, shared=self.shared_narratives)
        for b, group in enumerate(groups):
            if results[b] is None and self.context != "none":
                try:
                    contexts[b] = self._context_of(group)
                except Exception as exc:
                    results[b] = self._failed(group, f"no narrative: {type(exc).__name__}: {exc}", "")
        jobs = [job for b, group in enumerate(groups) if results[b] is None
                for job in self._jobs(b, group, contexts[b])]
        rivals: dict[int, Group] = {}  # debias: answers scored only to measure the judge's leanings
        if self.pointwise and self.debias is not None:
            for b, group in enumerate(groups):
                texts = self.debias.rivals(group) if results[b] is None else []
                if texts:
                    rivals[b] = dataclasses.replace(group, rollouts=[
                        dataclasses.replace(group.rollouts[0], text=t) for t in texts])
        rival_jobs = [job for b, shadow in rivals.items() for job in self._jobs(b, shadow, contexts[b])]
        replies = self._ask(jobs + rival_jobs)
        rival_scores: dict[int, dict[str, float]] = {}
        for job, reply in zip(rival_jobs, replies[len(jobs):], strict=True):
            p = self._verdict_probability(reply)
            if p is not None:
                rival_scores.setdefault(job.group, {})[rivals[job.group].rollouts[job.shown[0]].text] = p
        replies = replies[: len(jobs)]
        by_group: dict[int, list[tuple[_Job, JudgeReply]]] = {}
        for job, reply in zip(jobs, replies, strict=True):
            by_group.setdefault(job.group, []).append((job, reply))
        agreements: list[float | None] = [None] * len(groups)
        if self.pointwise:
            verdicts = {b: self._pointwise_scores(groups[b], pairs) for b, pairs in by_group.items()}
            if self.debias is not None:  # this step's answers count towards their own bias (batch calibration)
                self.debias.update((groups[b], scores, rival_scores.get(b, {}))
                                   for b, (scores, _, _) in verdicts.items() if scores)
            for b, (scores, raws, failure) in verdicts.items():
                results[b] = failure or self._pointwise_verdict(groups[b], scores, raws)
        else:
            for b, pairs in by_group.items():
                verdict = self._pairwise_verdict if self.pairwise else self._listwise_verdict
                results[b], agreements[b] = verdict(groups[b], pairs)
        self.last_agreements = agreements
        known = [a for a in agreements if a is not None]
        self.last_agreement = sum(known) / len(known) if known else None
        self.last_seconds = time.perf_counter() - started
        return [r if r is not None else Ranking(g.prompt.prompt_id, self.name, failure="not judged")
                for r, g in zip(results, groups, strict=True)]

    def _context_of(self, group: Group) -> str:
        if group.context is not None:
            return group.context
        if self.captioner is None:
            raise OracleError("context='narrative' needs a captioner: wire a policy (or pass context='none')")
        return narrative_for(group.prompt, benchmark=self.benchmark, captioner=self.captioner,
                             n_clips=self.n_clips, store=self.narratives, shared=self.shared_narratives)

    def _ask(self, jobs: list[_Job]) -> list[JudgeReply]:
        """One backend call per kind of prompt, so a step is judged in one batch."""
        if not jobs:
            return []
        conversations = [j.conversation for j in jobs]
        try:
            if self.native and self.scoring:
                replies = self.backend.score_native([j.native for j in jobs], [j.labels for j in jobs])
            elif self.native:
                replies = self.backend.generate_native([j.native for j in jobs], max_new_tokens=self.max_new_tokens)
            elif self.scoring:
                prefix = ANSWER_PREFIX[jobs[0].kind]
                replies = self.backend.score_labels(conversations, [j.labels for j in jobs], answer_prefix=prefix)
            else:
                replies = self.backend.generate(conversations, max_new_tokens=self.max_new_tokens,
                                                answer_prefix=GENERATE_PREFIX[jobs[0].kind])
        except OracleError:
            raise
        except Exception as exc:  # the judge crashed: every group of the step fails, the run goes on
            log.warning("judge %s failed on %d prompts: %s", getattr(self.backend, "name", "?"), len(jobs), exc)
            replies = [JudgeReply(failure=f"judge error: {type(exc).__name__}: {exc}") for _ in jobs]
        if len(replies) != len(jobs):
            replies = [JudgeReply(failure=f"judge returned {len(replies)} replies for {len(jobs)} prompts")
                       for _ in jobs]
        return list(replies)

    # -- prompts ---------------------------------------------------------------------
    def _jobs(self, b: int, group: Group, context: str | None) -> list[_Job]:
        g = len(group.rollouts)
        if self.pointwise:
            return [_Job(b, [c], "point", self._conversation(group, [c], "point", context), list(VERDICT_LABELS),
                         self._native_prompt(group, [c], context)) for c in range(g)]
        if self.pairwise:
            shown = [[i, j] for i, j in itertools.combinations(range(g), 2)]
            shown += [[j, i] for i, j in shown]
            kind = "pair"
        else:
            rng = random.Random(f"{self.seed}:{group.prompt.prompt_id}")
            shown = [list(range(g))]
            for _ in range(self.permutations - 1):
                shown.append(rng.sample(range(g), g))
            kind = "list"
        return [_Job(b, s, kind, self._conversation(group, s, kind, context), list(LABELS[: len(s)]),
                     self._native_prompt(group, s, context)) for s in shown]

    def _native_prompt(self, group: Group, shown: list[int], context: str | None) -> Any:
        if not self.native:
            return None
        candidates = [_clean(group.rollouts[c].text, MAX_ANSWER_CHARS) for c in shown]
        narrative = _clean(context, MAX_CONTEXT_CHARS) if context and self.context != "none" else None
        return self.backend.judge_prompt(group.prompt, candidates, narrative)

    def _conversation(self, group: Group, shown: list[int], kind: str, context: str | None) -> Conversation:
        labels = list(VERDICT_LABELS) if kind == "point" else list(LABELS[: len(shown)])
        if kind == "point":
            candidates = f"Answer: {_clean(group.rollouts[shown[0]].text, MAX_ANSWER_CHARS)}"
        else:
            candidates = "\n".join(f"Answer {label}: {_clean(group.rollouts[c].text, MAX_ANSWER_CHARS)}"
                                   for label, c in zip(labels, shown, strict=True))
        has_context = self.context != "none"
        video = " given what happens in the video" if has_context else ""
        example = " > ".join(labels[1:2] + labels[:1] + labels[2:])
        instruction = INSTRUCTIONS[(kind, "score" if self.scoring else "generate")].format(
            n=len(shown), labels=", ".join(labels), example=example, video=video)
        fields = _SafeFormat(question=" ".join(group.prompt.question.split()),
                             context=_clean(context or "", MAX_CONTEXT_CHARS) if has_context else "",
                             candidates=candidates, labels=", ".join(labels), instruction=instruction)
        if self.template is not None:
            user = self.template.format_map(fields)
            if "{instruction}" not in self.template:
                user = f"{user.rstrip()}\n\n{instruction}"
        else:
            user = (TEMPLATE_WITH_CONTEXT if has_context else TEMPLATE_NO_CONTEXT).format_map(fields)
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    # -- verdicts --------------------------------------------------------------------
    def _failed(self, group: Group, why: str, raw: str) -> Ranking:
        pid, g = group.prompt.prompt_id, len(group.rollouts)
        raw = raw[:MAX_RAW_CHARS]
        if self.on_failure == "tie" and g > 0:  # still a failure: every loss leaves it out and counts it
            return Ranking(pid, self.name, order=list(range(g)), ties=[list(range(g))] if g > 1 else [],
                           rationale=f"judge failed ({why}); all tied", raw=raw, failure=why)
        return Ranking(pid, self.name, raw=raw, failure=why)

    def _one_listwise(self, job: _Job, reply: JudgeReply) -> tuple[Ranking | None, str]:
        """The ranking one reply gives over the group's candidates, or (None, why)."""
        if reply.failure is not None:
            return None, reply.failure
        pid = ""
        if self.scoring:
            values = reply.label_logprobs or []
            if len(values) != len(job.shown) or any(v != v for v in values):
                return None, "judge returned no usable label scores"
            scores = [0.0] * len(job.shown)
            for label_index, c in enumerate(job.shown):
                scores[c] = float(values[label_index])
            best = max(range(len(scores)), key=lambda c: scores[c])
            total = math.log(sum(math.exp(s - scores[best]) for s in scores)) + scores[best]
            why = f"best by label likelihood: candidate {best} (p={math.exp(scores[best] - total):.2f} among labels)"
            return Ranking.from_scores(pid, self.name, scores, rationale=why), ""
        parsed = parse_ranking(reply.text, job.labels)
        if parsed.failure is not None:
            return None, parsed.failure
        order = [job.shown[i] for i in parsed.order]
        ties = [[job.shown[i] for i in block] for block in parsed.ties]
        why = ("winner only; " if parsed.source == "top" else "") + parsed.reason
        return Ranking(pid, self.name, order=order, ties=ties, rationale=why), ""

    def _listwise_verdict(self, group: Group, pairs: list[tuple[_Job, JudgeReply]]
                          ) -> tuple[Ranking, float | None]:
        pid = group.prompt.prompt_id
        if len(pairs) > 1:  # say which candidate each label stood for in each permutation
            raw = "\n---\n".join(f"[labels A.. = candidates {job.shown}] {r.text}" for job, r in pairs)
        else:
            raw = pairs[0][1].text if pairs else ""
        outcomes = [self._one_listwise(job, reply) for job, reply in pairs]
        good = [r for r, _ in outcomes if r is not None]
        errors = [why for r, why in outcomes if r is None]
        if not good:
            return self._failed(group, errors[0] if errors else "no verdict", raw), None
        if len(pairs) == 1:
            only = good[0]
            return Ranking(pid, self.name, order=only.order, ties=only.ties, scores=only.scores,
                           rationale=only.rationale, raw=raw[:MAX_RAW_CHARS]), None
        positions = [r.positions() for r in good]
        agreement = mean_agreement(positions)
        notes = [f"agreement={agreement:.2f}" if agreement is not None else "agreement=n/a",
                 f"Borda over {len(good)}/{len(pairs)} permutations"]
        if errors:
            notes.append(f"{len(errors)} failed ({errors[0]})")
        rationale = "; ".join([*notes, good[0].rationale]) if good[0].rationale else "; ".join(notes)
        final = Ranking.from_scores(pid, self.name, borda_points(positions), rationale=rationale,
                                    raw=raw[:MAX_RAW_CHARS])
        return final, agreement

    def _pairwise_verdict(self, group: Group, pairs: list[tuple[_Job, JudgeReply]]) -> tuple[Ranking, float | None]:
        g = len(group.rollouts)
        prefs: dict[tuple[int, int], list[float]] = {}
        hard: dict[tuple[int, int], list[float]] = {}
        raws, errors = [], []
        for job, reply in pairs:
            first, second = job.shown
            raws.append(f"[A={first} B={second}] {reply.text}")
            p_first = self._pair_preference(job, reply)
            if p_first is None:
                errors.append(reply.failure or "unreadable verdict")
                continue
            key, p = ((first, second), p_first) if first < second else ((second, first), 1.0 - p_first)
            prefs.setdefault(key, []).append(p)
            hard.setdefault(key, []).append(0.5 if p == 0.5 else float(p > 0.5))
        raw = "\n".join(raws)[:MAX_RAW_CHARS]
        if not prefs:
            return self._failed(group, errors[0] if errors else "no verdict", raw), None
        scores, judged = pairwise_scores(g, prefs)
        both = [v for v in hard.values() if len(v) == 2]
        consistency = sum(v[0] == v[1] for v in both) / len(both) if both else None
        notes = [f"consistency={consistency:.2f}" if consistency is not None else "consistency=n/a",
                 f"pairwise Borda over {judged}/{g * (g - 1) // 2} pairs, both orders"]
        if errors:
            notes.append(f"{len(errors)} verdicts failed ({errors[0]})")
        return Ranking.from_scores(group.prompt.prompt_id, self.name, scores, rationale="; ".join(notes),
                                   raw=raw), consistency

    def _pointwise_scores(self, group: Group, pairs: list[tuple[_Job, JudgeReply]]
                          ) -> tuple[list[float], list[str], Ranking | None]:
        """Each candidate's P(correct): the "yes" share of the two verdict words'
        probabilities (score mode), or 1 / 0 for a written yes / no. A group with any
        unreadable verdict fails as a whole (a partial order would rank the unread)."""
        scores = [0.0] * len(group.rollouts)
        raws = []
        for job, reply in pairs:
            raws.append(f"[{job.shown[0]}] {reply.text}")
            p_yes = self._verdict_probability(reply)
            if p_yes is None:
                return [], raws, self._failed(group, reply.failure or "unreadable verdict", "\n".join(raws))
            scores[job.shown[0]] = p_yes
        return scores, raws, None

    def _pointwise_verdict(self, group: Group, scores: list[float], raws: list[str]) -> Ranking:
        """The ranking by P(correct), after the answer-bias correction (``debias``), the
        fixed scale (``score_levels``) and abstention (``min_margin``), in that order."""
        rationale = "P(correct) per answer"
        if self.debias is not None:
            scores = self.debias.correct(group, scores)
            rationale = "P(correct) per answer, answer bias removed"
        if self.score_levels is not None:  # a verdict on a fixed scale: clear misses tie
            top = self.score_levels - 1
            scores = [round(p * top) / top for p in scores]
        scores = [round(p, 6) for p in scores]
        if self.min_margin is not None and not confident(scores, self.min_margin):
            mean = round(sum(scores) / len(scores), 6)
            return Ranking.from_scores(group.prompt.prompt_id, self.name, [mean] * len(scores),
                                       rationale=f"abstained: no answer ahead by {self.min_margin}",
                                       raw="\n".join(raws)[:MAX_RAW_CHARS])
        return Ranking.from_scores(group.prompt.prompt_id, self.name, scores, rationale=rationale,
                                   raw="\n".join(raws)[:MAX_RAW_CHARS])

    def _verdict_probability(self, reply: JudgeReply) -> float | None:
        if reply.failure is not None:
            return None
        if self.scoring:
            return _first_of_two(reply)
        words = re.findall(r"[a-z]+", reply.text.lower().removeprefix(ANSWER_PREFIX["point"].lower()))
        if not words or words[0] not in VERDICT_LABELS:
            return None
        return 1.0 if words[0] == VERDICT_LABELS[0] else 0.0

    def _pair_preference(self, job: _Job, reply: JudgeReply) -> float | None:
        """P(the candidate shown as A beats the one shown as B) from one reply."""
        if reply.failure is not None:
            return None
        if self.scoring:
            return _first_of_two(reply)
        parsed = parse_ranking(reply.text, job.labels)
        if parsed.failure is not None:
            return None
        if parsed.ties:
            return 0.5
        return 1.0 if parsed.order[0] == 0 else 0.0


class AnswerBias:
    """Batch calibration (Zhou et al., 2024) of a pointwise judge, per answer.

    Why: RL learns what a reward says about *every* item far faster than what it says
    about one. A judge that leans to an answer ("small", "circle") whatever the video
    shows hands the policy that lean, and the policy takes it (README). This keeps, for
    each (question type, normalised answer), the mean log-odds of the judge's P(correct)
    over the groups it has scored that answer in, and subtracts it (re-centred on the
    question type's mean), so an answer wins a group by what the context says about this
    item, not by how the judge rates that answer everywhere. Answers seen in fewer than
    ``min_count`` groups are left as they are (long free-text answers are all unique).

    Scored only where the policy says it, an answer's mean would also measure how often
    the policy is right when it says it: an answer the policy over-says is often wrong, so
    its mean is low for a true reason, and subtracting it would hand back the policy's
    own lean. So the judge also scores each group's *rivals* (:meth:`rivals`: answers that
    other groups of the question type set against the group's answers, at least
    ``min_together`` times), and each answer's mean runs over every group of its family,
    whatever the policy said there."""

    def __init__(self, min_count: int = 8, min_together: int = 3, max_rivals: int = 8) -> None:
        self.min_count = int(min_count)
        self.min_together = int(min_together)
        self.max_rivals = int(max_rivals)
        self.sums: dict[tuple[str, str], tuple[float, int]] = {}
        #: Groups in which two answers were both sampled, by answer and answer.
        self.together: dict[tuple[str, str], dict[str, int]] = {}

    @staticmethod
    def key(group: Group, text: str) -> tuple[str, str]:
        return group.prompt.qtype, " ".join(re.findall(r"[a-z0-9]+", text.lower()))

    def rivals(self, group: Group) -> list[str]:
        """Answers to score beside the group's own: seen in ``min_count`` groups and set
        against one of the group's answers in ``min_together``, at most ``max_rivals``,
        most frequent first."""
        qtype = group.prompt.qtype
        own = {self.key(group, r.text) for r in group.rollouts}
        set_against = {other for k in own for other, n in self.together.get(k, {}).items()
                       if n >= self.min_together and (qtype, other) not in own}
        known = [a for a in set_against if self.sums.get((qtype, a), (0.0, 0))[1] >= self.min_count]
        return sorted(known, key=lambda a: (-self.sums[(qtype, a)][1], a))[: self.max_rivals]

    def update(self, judged: Iterable[tuple[Group, Sequence[float], Mapping[str, float]]]) -> None:
        """Count each group once per answer: its candidates' scores (``Sequence``, one per
        rollout; the same answer twice counts once) and its rivals' (``Mapping`` text ->
        P(correct))."""
        for group, scores, rival_scores in judged:
            seen: dict[tuple[str, str], list[float]] = {}
            for rollout, p in zip(group.rollouts, scores, strict=True):
                seen.setdefault(self.key(group, rollout.text), []).append(_logit(p))
            sampled = list(seen)
            for text, p in rival_scores.items():
                seen.setdefault(self.key(group, text), []).append(_logit(p))
            for k, values in seen.items():
                total, n = self.sums.get(k, (0.0, 0))
                self.sums[k] = (total + sum(values) / len(values), n + 1)
            for a in sampled:
                row = self.together.setdefault(a, {})
                for b in sampled:
                    if b != a:
                        row[b[1]] = row.get(b[1], 0) + 1

    def correct(self, group: Group, scores: Sequence[float]) -> list[float]:
        qtype = group.prompt.qtype
        known = [(t, n) for (q, _), (t, n) in self.sums.items() if q == qtype]
        centre = sum(t for t, _ in known) / max(1, sum(n for _, n in known))
        out = []
        for rollout, p in zip(group.rollouts, scores, strict=True):
            total, n = self.sums.get(self.key(group, rollout.text), (0.0, 0))
            shift = total / n - centre if n >= self.min_count else 0.0
            out.append(1.0 / (1.0 + math.exp(shift - _logit(p))))
        return out


def _logit(p: float, eps: float = 1e-6) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


def confident(scores: Sequence[float], margin: float) -> bool:
    """Whether the best score leads the best lower one by at least ``margin`` (all equal:
    nothing to lead)."""
    top = max(scores)
    rest = [s for s in scores if s < top]
    return bool(rest) and top - max(rest) >= margin


def _first_of_two(reply: JudgeReply) -> float | None:
    """P(the first of two labels) from a score-mode reply's two label log-probs (A over B,
    yes over no), or None when they are missing or NaN."""
    values = reply.label_logprobs or []
    if len(values) != 2 or any(v != v for v in values):
        return None
    first, second = values
    return 1.0 / (1.0 + math.exp(max(-50.0, min(50.0, second - first))))


def _check_options(mode: str, context: str, on_failure: str, permutations: int, n_clips: int,
                   max_new_tokens: int) -> None:
    problems = []
    if mode not in MODES:
        problems.append(f"llm-judge mode must be one of {', '.join(MODES)}, got {mode!r}")
    if context not in CONTEXTS:
        problems.append(f"llm-judge context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    if on_failure not in ON_FAILURE:
        problems.append(f"llm-judge on_failure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
    if not isinstance(permutations, int) or permutations < 1:
        problems.append(f"llm-judge permutations must be a positive integer, got {permutations!r}")
    if not isinstance(n_clips, int) or n_clips < 1:
        problems.append(f"llm-judge n_clips must be a positive integer, got {n_clips!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        problems.append(f"llm-judge max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if problems:
        raise ConfigError(problems)


#: ``captioner`` choices besides a directory: ``tuned`` where it can be built, else ``sft``;
#: the run's policy as its SFT self (VLM-RLAIF); a caption-tuned copy of the SFT policy
#: (``rlaif.train.captioner``).
CAPTIONERS = ("auto", "sft", "tuned")


def narrative_writer(captioner: str, policy: Any, benchmark: Any, *, progress: bool = False) -> Any:
    """The :class:`PolicyCaptioner` that writes a run's narratives.

    ``sft``: the run's policy with its RL adapter off (VLM-RLAIF). ``tuned``: the SFT
    policy continued on fresh captions alone (a tiny-video-lm loaded from a saved SFT
    policy; built once, cached; it names colours and sizes far better, README). ``auto``:
    ``tuned`` where the policy is such a tiny-video-lm and the benchmark offers fresh
    captions (``alignment_examples``), else ``sft``. Anything else: a saved policy
    directory, loaded by the run's policy class."""
    from pathlib import Path

    source = _sft_source(policy)
    if captioner == "auto":
        tunable = source is not None and callable(getattr(benchmark, "alignment_examples", None))
        captioner = "tuned" if tunable else "sft"
    if captioner == "sft":
        return PolicyCaptioner(policy)
    if captioner == "tuned":
        if source is None:
            raise OracleError("llm-judge captioner='tuned' tunes the run's SFT policy, and this policy was not loaded "
                              "from a saved tiny-video-lm; pass captioner='sft' or a captioner directory")
        from rlaif.train.captioner import cached_captioner

        path = cached_captioner(benchmark, source, progress=progress)
    else:
        path = Path(captioner)
        if not path.is_dir():
            raise OracleError(f"llm-judge captioner={captioner!r}: not {' or '.join(map(repr, CAPTIONERS))} and no "
                              "such directory (a saved policy, e.g. from rlaif sft)")
    load = getattr(type(policy), "load", None)
    if not callable(load):
        raise OracleError(f"llm-judge captioner={captioner!r}: the run's policy cannot load a saved captioner; "
                          "pass captioner='sft'")
    from rlaif.core.cache import tree_digest
    from rlaif.train.captioner import SKIPPED

    # Named by its weights, not its path: the adapted judge and stored narratives are keyed
    # by this name, and a copy of the same captioner elsewhere must find them.
    name = f"captioner:{tree_digest(path, exclude=SKIPPED)[:16]}"
    return PolicyCaptioner(load(path, frames=getattr(policy, "frames", None), new_adapter=False), frozen=False,
                           name=name, names_weights=True)


def _sft_source(policy: Any) -> str | None:
    """The saved tiny-video-lm directory the run's policy was loaded from (merged into it)."""
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM

    if not isinstance(policy, TinyVideoLM):
        return None
    merged = [h["merged"] for h in getattr(policy, "history", []) if isinstance(h, dict) and "merged" in h]
    return str(merged[-1]) if merged else None


def build_llm_judge(
    judge: str = "world",
    judge_url: str | None = None,
    model: str = "default",
    api_key_env: str = "OPENAI_API_KEY",
    mode: str = "score",
    pairwise: bool = False,
    pointwise: bool | None = None,
    score_levels: int | None = None,
    min_margin: float | None = None,
    calibrate: bool = False,
    answer_first: bool | None = None,
    debias: bool = False,
    adapt: bool = True,
    permutations: int = 1,
    context: str = "narrative",
    n_clips: int = NARRATIVE_CLIPS,
    captioner: str = "auto",
    template: str | None = None,
    timeout: float = 30.0,
    step_timeout: float = 60.0,
    retries: int = 2,
    concurrency: int = 4,
    on_failure: str = "skip",
    seed: int = 0,
    max_new_tokens: int = 64,
    cache: bool = True,
    narrative_cache: bool = True,
    device: str = "cpu",
    policy: Any = None,
    benchmark: Any = None,
    store: Any = None,
    progress: bool = False,
) -> LLMJudgeOracle:
    """Build the ``llm-judge`` oracle.

    :param judge: ``world`` (default: the world judge, trained once and cached on the
        benchmark's ``judge_training_examples()``, its ``sft`` split and fresh scenes; see
        :mod:`world_judge`), ``smollm2`` (SmolLM2-135M-Instruct from the
        ``judge`` extra), ``self`` (the run's policy, as its SFT self), ``openai`` (needs
        ``judge_url``), or a local directory / hub id of any Hugging Face causal LM.
    :param judge_url: an OpenAI-compatible base URL (``http://127.0.0.1:8000/v1``); when
        set the judge is that endpoint, serving ``model``.
    :param api_key_env: the environment variable holding the endpoint's API key.
    :param mode: ``score`` (label likelihoods, one forward pass) or ``generate``.
    :param pairwise: pairwise tournament, both A/B orders per pair.
    :param pointwise: one verdict (correct: yes / no) per candidate; default: on for the
        world judge (the format it was trained on), off for the others.
    :param score_levels: pointwise only: P(correct) rounded to this many evenly spaced
        levels, as a judge scoring on Video-ChatGPT's 0-5 scale does (6): answers the
        judge clearly rejects tie, as the ground truth ties wrong answers. Off by default:
        on the world judge it lowered Kendall tau with generated narratives (README).
    :param min_margin: pointwise only: rank a group only when its best answer's
        P(correct) leads every other answer's by at least this much; otherwise tie all
        (the judge abstains, so a rank loss leaves the group out). A judge that cannot
        tell answers apart still orders them by its priors, and RL turns those priors
        into the policy's answers; an abstaining judge gives no signal instead. Off by
        default: on the default world 0.3 left the RL result unchanged (README).
    :param calibrate: world judge only: weigh the answer's probability with the
        narrative against its probability without (see ``WorldJudgeBackend``); off by
        default (measured: lower tau, and RL collapses onto answers unlikely a priori).
    :param answer_first: world judge only (default: on there, unless ``calibrate``): the
        judge answers the question itself first, then scores each answer by its expected
        word F1 against its own answer and the other candidates, each weighed by the
        judge's probability (``WorldJudgeBackend.expected_agreement``), so a partly right
        sentence earns partial credit. Off: the judge's probability of each answer alone
        (Kendall tau with the gold narrative 0.647, on: 0.741; README).
    :param debias: pointwise only: batch calibration per answer (:class:`AnswerBias`):
        subtract the judge's mean log-odds for each answer of a question type over the run,
        so its leanings towards some answers do not become the policy's; each group's
        rivals are scored too, so the means do not carry the policy's own lean. Off by
        default: on the default world RL gained less with it (+0.005 against +0.013,
        README).
    :param adapt: world judge reading generated narratives only: first fine-tune it on
        the run's captioner's ``n_clips``-clip narratives of fresh scenes (cached per
        captioner and cut; see ``cached_adapted_judge``). Trained on gold narratives
        alone it believes every caption; adapted, it learns how far to trust them
        (README). Off: the gold-trained judge as is.
    :param permutations: listwise candidate orders to judge and aggregate (Borda).
    :param context: ``narrative``, ``none`` or ``gold`` (upper-bound diagnostic).
    :param n_clips: clips per narrative (VLM-RLAIF: 3).
    :param captioner: who writes the narratives: ``auto`` (default: ``tuned`` where the
        policy is a saved tiny-video-lm and the benchmark offers fresh captions, else
        ``sft``), ``sft`` (the run's policy as its SFT self, as VLM-RLAIF does), ``tuned``
        (that SFT policy continued on fresh scenes' captions alone, built once and cached:
        it names colours and sizes right far more often, and the world judge reading its
        3-clip narratives ranks at Kendall tau 0.440 against 0.362, README) or a saved
        policy directory (:func:`narrative_writer`).
    :param template: user-message template; ``{question} {context} {candidates}
        {labels}`` and optionally ``{instruction}``.
    :param timeout, retries, concurrency: per-request seconds, retries on timeouts /
        5xx / connection errors, parallel requests (endpoint judges only).
    :param step_timeout: seconds one step's judging may take in all, retries and backoff
        included (endpoint judges only); requests unanswered by then fail.
    :param on_failure: ``skip`` (failed ranking, empty order) or ``tie`` (all tied, still
        marked failed: losses leave it out either way).
    :param seed: seeds the permutations.
    :param cache: cache endpoint replies (in the run store, else in the cache dir).
    :param narrative_cache: keep the narratives of a captioner named by its weights (the
        default caption-tuned captioner, or a directory) in ``<cache>/narratives`` for
        every later run over the same videos; each run still records them in its store.
    :param device: where a local judge model runs (``cpu``, ``cuda``, ``cuda:1``...).
    :param progress: (wiring) progress bars while the world judge trains on first use.
    """
    if answer_first and (judge != "world" or judge_url is not None):
        raise ConfigError(f"llm-judge answer_first is an option of the world judge; judge={judge!r} scores by "
                          "its verdicts")
    writer: Any = None  # default: the wired policy as its SFT self (LLMJudgeOracle)
    if context == "narrative" and policy is not None:
        writer = narrative_writer(captioner, policy, benchmark, progress=progress)
    if judge_url is not None or judge == "openai":
        if not judge_url:
            raise ConfigError("llm-judge judge='openai' needs judge_url (e.g. http://127.0.0.1:8000/v1)")
        request_cache: Any = None
        if cache:
            if callable(getattr(store, "put_narrative", None)):
                request_cache = StoreRequestCache(store)
            else:
                request_cache = JsonlRequestCache(cache_root() / "judges" / "requests.jsonl")
        backend: Any = OpenAIChatBackend(judge_url, model, api_key_env=api_key_env, timeout=timeout,
                                         step_timeout=step_timeout, retries=retries, concurrency=concurrency,
                                         cache=request_cache)
    elif judge == "world":
        from rlaif.plugins.oracles.world_judge import (
            WorldJudgeBackend,
            cached_adapted_judge,
            cached_world_judge,
        )

        if not callable(getattr(benchmark, "judge_training_examples", None)):
            raise OracleError(f"llm-judge judge='world' is trained on the benchmark's judge_training_examples() and "
                              f"benchmark {getattr(benchmark, 'name', benchmark)!r} has none; pass judge='smollm2', "
                              "'self', 'openai' or a model directory")
        path = cached_world_judge(benchmark, seed=0, progress=progress)
        if adapt and context == "narrative" and policy is not None and callable(
                getattr(benchmark, "judge_adaptation_scenes", None)):
            path = cached_adapted_judge(benchmark, writer, base=path, cuts=(n_clips,), progress=progress)
        backend = WorldJudgeBackend(path, device=device, calibrate=calibrate,
                                    answer_first=not calibrate if answer_first is None else answer_first)
        pointwise = True if pointwise is None else pointwise
    elif judge == "smollm2":
        backend = LocalHFBackend.smollm2(device=device)
    elif judge == "self":
        if policy is None:
            raise OracleError("llm-judge judge='self' needs the run's policy; none was wired")
        backend = PolicyJudgeBackend(policy)
    else:
        backend = LocalHFBackend(judge, device=device)
    return LLMJudgeOracle(backend, mode=mode, pairwise=pairwise, pointwise=bool(pointwise), score_levels=score_levels,
                          min_margin=min_margin, debias=debias,
                          permutations=permutations, context=context,
                          n_clips=n_clips, template=template, on_failure=on_failure, seed=seed,
                          max_new_tokens=max_new_tokens, benchmark=benchmark, policy=policy, store=store,
                          captioner=writer, shared_narratives=shared_narratives() if narrative_cache else None)
