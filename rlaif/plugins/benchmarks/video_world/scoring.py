"""Scoring answers against the world's ground truth, without a judge model.

Short answers (``attribute``, ``counting``, ``direction``, ``temporal``) are right when
they equal the reference after :func:`normalize_answer`. Long answers (``describe``) get
a 0-5 score in the spirit of Video-ChatGPT's correctness score, computed from facts
instead of a judge (:func:`long_answer_score`). Only the vocabulary is imported here, so
oracles and the loop can score without numpy or PyAV.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rlaif.plugins.benchmarks.video_world.vocab import (
    COLOURS,
    DIRECTIONS,
    LONG_QTYPES,
    NUMBER_WORDS,
    SHAPES,
    SHORT_QTYPES,
    SIZES,
)

#: A ``describe`` answer counts as correct in ``acc/describe`` and ``acc/all`` at this score.
DESCRIBE_PASS_SCORE = 3.0

_ARTICLES = frozenset({"a", "an", "the"})
_NUMBERS = {word: str(i) for i, word in enumerate(NUMBER_WORDS)}


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, write numbers as digits, squeeze spaces:
    ``"The Red circle stopped."`` -> ``"red circle stopped"``, ``"Two"`` -> ``"2"``."""
    tokens = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(_NUMBERS.get(t, t) for t in tokens if t not in _ARTICLES)


def is_correct(qtype: str, pred: str, ref: str) -> bool:
    """Exact match after normalisation; ``describe`` passes at :data:`DESCRIBE_PASS_SCORE`."""
    if qtype in LONG_QTYPES:
        return long_answer_score(pred, ref) >= DESCRIBE_PASS_SCORE
    return normalize_answer(pred) == normalize_answer(ref)


def item_score(qtype: str, pred: str, ref: str) -> float:
    """Quality of one answer in [0, 1], what a verifier-style oracle ranks by: 1 for a
    correct short answer; for a wrong ``temporal`` answer, half the word-level F1 of the
    normalised answers (right event, wrong object earns something, never 0.5 or more);
    0 for other wrong short answers; ``long_answer_score / 5`` for ``describe``."""
    if qtype in LONG_QTYPES:
        return long_answer_score(pred, ref) / 5.0
    p, r = normalize_answer(pred), normalize_answer(ref)
    if p == r:
        return 1.0
    if qtype != "temporal":
        return 0.0
    return 0.5 * _word_f1(p.split(), r.split())


def _word_f1(pred: list[str], ref: list[str]) -> float:
    common = sum(min(pred.count(w), ref.count(w)) for w in set(pred))
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


# -- facts for long answers ------------------------------------------------------------

_SHAPE_WORDS = {s: s for s in SHAPES} | {
    "squares": "square", "box": "square", "circles": "circle", "ball": "circle", "disc": "circle",
    "triangles": "triangle",
}  # fmt: skip
_ACTION_WORDS = {
    **dict.fromkeys(("move", "moves", "moved", "moving", "travels", "slides", "goes"), "move"),
    **dict.fromkeys(("stop", "stops", "stopped", "halts"), "stop"),
    **dict.fromkeys(("still", "stationary", "static", "motionless"), "still"),
    **dict.fromkeys(("appear", "appears", "appeared", "enters"), "appear"),
    **dict.fromkeys(
        ("disappear", "disappears", "disappeared", "vanishes", "vanished", "leaves"), "disappear"
    ),
    **dict.fromkeys(("turn", "turns", "turned", "changes", "changed", "becomes", "became"), "turn"),
    **dict.fromkeys(
        ("collide", "collides", "collided", "collision", "hit", "hits", "bump", "bumps"), "collide"
    ),
}
_DIRECTION_WORDS = set(DIRECTIONS)


def extract_facts(text: str) -> set[tuple[str, ...]]:
    """Facts a description states, sentence by sentence.

    An object mention is ``[size] colour shape`` ("big red circle"). Each sentence yields
    ``("object", colour, shape)`` per mention, ``("size", colour, shape, size)`` when a
    size precedes it, and ``("action", colour, shape, a)`` for every mention and every
    action ``a`` in the sentence: a verb class (move, stop, still, appear, disappear,
    turn, collide), a direction (left, right, up, down), or, in a sentence with a turn
    verb, ``turn:<colour>`` for a colour not followed by a shape ("turns blue").
    """
    facts: set[tuple[str, ...]] = set()
    for sentence in re.split(r"[.!?;\n]+", text.lower()):
        tokens = re.findall(r"[a-z]+", sentence)
        mentions: list[tuple[str, str, str | None]] = []
        actions: set[str] = set()
        loose_colours: set[str] = set()
        for i, tok in enumerate(tokens):
            shape = _SHAPE_WORDS.get(tok)
            if shape is not None and i > 0 and tokens[i - 1] in COLOURS:
                size = tokens[i - 2] if i > 1 and tokens[i - 2] in SIZES else None
                mentions.append((tokens[i - 1], shape, size))
            elif shape is not None and i > 1 and tokens[i - 1] in SIZES and tokens[i - 2] in COLOURS:
                mentions.append((tokens[i - 2], shape, tokens[i - 1]))  # "red big circle"
            elif tok in _ACTION_WORDS:
                actions.add(_ACTION_WORDS[tok])
            elif tok in _DIRECTION_WORDS:
                actions.add(tok)
            elif tok in COLOURS and not _names_shape(tokens, i):
                loose_colours.add(tok)
        if "turn" in actions:
            actions |= {f"turn:{c}" for c in loose_colours}
        for colour, shape, size in mentions:
            facts.add(("object", colour, shape))
            if size is not None:
                facts.add(("size", colour, shape, size))
            for action in actions:
                facts.add(("action", colour, shape, action))
    return facts


def _names_shape(tokens: list[str], i: int) -> bool:
    """Whether the colour at ``i`` starts an object mention ("red circle", "red big circle")."""
    rest = tokens[i + 1 : i + 3]
    return bool(rest) and (
        rest[0] in _SHAPE_WORDS or (len(rest) == 2 and rest[0] in SIZES and rest[1] in _SHAPE_WORDS)
    )


def long_answer_score(pred: str, ref: str) -> float:
    """0-5 score of a long answer: ``5 * F1`` between the facts of ``pred`` and ``ref``
    (:func:`extract_facts`), where precision = |P ∩ R| / |P| and recall = |P ∩ R| / |R|.

    The reference itself scores 5, an answer with no facts 0; adding true facts never
    lowers the score and adding false ones lowers precision. A reference without facts
    scores 5 only against an answer without facts."""
    p, r = extract_facts(pred), extract_facts(ref)
    if not r:
        return 5.0 if not p else 0.0
    hit = len(p & r)
    if hit == 0:
        return 0.0
    precision, recall = hit / len(p), hit / len(r)
    return 5.0 * 2 * precision * recall / (precision + recall)


# -- tables ----------------------------------------------------------------------------


def score_answers(qtypes: Sequence[str], preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Metrics over items: ``acc/<qtype>`` and ``n/<qtype>`` per type present, ``acc/short``
    (all short-answer items), ``score/describe`` (mean 0-5), ``acc/all`` (every item,
    ``describe`` counted correct at :data:`DESCRIBE_PASS_SCORE`) and ``n/all``."""
    if not len(qtypes) == len(preds) == len(refs):
        raise ValueError(f"got {len(preds)} answers for {len(qtypes)} questions ({len(refs)} references)")
    correct: dict[str, list[float]] = {}
    long_scores: list[float] = []
    for qtype, pred, ref in zip(qtypes, preds, refs, strict=True):
        if qtype in LONG_QTYPES:
            score = long_answer_score(pred or "", ref)
            long_scores.append(score)
            ok = score >= DESCRIBE_PASS_SCORE
        else:
            ok = normalize_answer(pred or "") == normalize_answer(ref)
        correct.setdefault(qtype, []).append(float(ok))
    metrics: dict[str, float] = {}
    order = [q for q in SHORT_QTYPES + LONG_QTYPES if q in correct] + sorted(
        set(correct) - set(SHORT_QTYPES + LONG_QTYPES)
    )
    for qtype in order:
        metrics[f"acc/{qtype}"] = sum(correct[qtype]) / len(correct[qtype])
        metrics[f"n/{qtype}"] = float(len(correct[qtype]))
    short = [v for q in order if q not in LONG_QTYPES for v in correct[q]]
    if short:
        metrics["acc/short"] = sum(short) / len(short)
    if long_scores:
        metrics["score/describe"] = sum(long_scores) / len(long_scores)
    every = [v for q in order for v in correct[q]]
    if every:
        metrics["acc/all"] = sum(every) / len(every)
    metrics["n/all"] = float(len(every))
    return metrics
