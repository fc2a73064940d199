"""Turn a judge's free text into a ranking of labelled candidates, without ever raising.

An LLM judge asked for "B > A > C" answers in many shapes: with prose around it, in lower
case, as a numbered list, as JSON, naming only the winner, forgetting a candidate or
repeating one. :func:`parse_ranking` accepts all of these and reports what it could not
read as ``failure`` (with the reason) instead of an exception, so one bad reply costs one
group, never a training step.

Formats, tried in this order (the first that names a known label wins):

1. **JSON**: ``["B", "A", "C"]``, ``{"ranking": ["B", "A", "C"], "reason": "..."}``; a
   nested list is a tie (``["B", ["A", "C"]]``), as is ``"A=C"`` inside a list.
2. **Chains**: labels joined by ``>`` (also ``>>``, ``->``, ``→``, ``≻``, "is better
   than") with ``=`` (also ``==``, ``≈``) for ties: ``B > A = C``. The chain naming the
   most labels wins.
3. **Numbered lists**: ``1. B 2. A 3. C`` (one per line or inline; ``1)``, ``#1``,
   ``Rank 1:`` work too); equal numbers are ties.
4. **Comma lists** after a word such as "ranking" or "order": ``Ranking: B, A, C``.
5. **Winner only**: "Answer B is best", "The best answer is B", "I choose B", or a bare
   "B". Only the top is known, so the remaining candidates form one tied block at the
   bottom (documented behaviour, relied on by pairwise judging).

Then, whatever the format: unknown labels are ignored, a repeated label keeps its first
position, and labels never mentioned are appended as one tied block at the end (a single
missing label simply comes last). Labels match case-insensitively; a label written in
another case than given (``a`` for ``A``) must not run into a following word, so the
article in "1. A good answer..." is not read as candidate A.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Judge replies longer than this are cut before parsing (replies are short; this bounds
#: the work an adversarial or runaway output can cause).
MAX_PARSE_CHARS = 20_000

_DECO = r"[\[\]\(\)\*\"'`{}_]*"
_PREFIX = r"(?:(?:answer|response|candidate|option|choice)\s*#?\s*)?"
_GT = r">{1,2}|≻|→|->|=>|(?:is\s+)?(?:better|preferred)\s+(?:than|over|to)|beats"
_EQ = r"={1,2}|≈|~"
_WEAK = r",|;|,?\s*(?:and\s+)?then|,?\s*followed\s+by"
_GAP = re.compile(
    rf"^\s*{_DECO}\s*(?:\([^()\n]{{0,40}}\)\s*)?(?:(?P<gt>{_GT})|(?P<eq>{_EQ})|(?P<weak>{_WEAK}))"
    rf"\s*{_DECO}\s*{_PREFIX}{_DECO}\s*$",
    re.IGNORECASE,
)
_MAX_GAP = 80
_WEAK_KEYWORD = re.compile(r"rank|order|best|sort|prefer", re.IGNORECASE)
_FOLLOW_OK = re.compile(
    r"[ \t]*(?:$|\n|[^\sA-Za-z]|(?:is|was|because|as|since|has|gives|provides|with|and|then|rank)\b)", re.IGNORECASE
)
_REASON = re.compile(
    r"(?:(?:reason|rationale|explanation|justification)\s*[:\-]\s*|(?=\bbecause\b))(?P<r>[^\n]+)",
    re.IGNORECASE,
)
_JSON_RANK_KEYS = ("ranking", "rankings", "order", "ordering", "rank", "ranks", "best_to_worst",
                   "result", "answer", "preference", "best")
_JSON_REASON_KEYS = ("reason", "rationale", "explanation", "justification", "why")


@dataclass(frozen=True)
class ParsedRanking:
    """A parsed verdict over ``K`` labels, by label index.

    Without ``failure``, ``order`` is a permutation of ``range(K)`` (best first) and
    ``ties`` lists blocks of two or more candidates, each contiguous in ``order``. With a
    ``failure``, ``order`` and ``ties`` are empty."""

    order: list[int] = field(default_factory=list)
    ties: list[list[int]] = field(default_factory=list)
    reason: str = ""
    failure: str | None = None
    #: Which format was recognised (``json``, ``chain``, ``numbered``, ``list``, ``top``).
    source: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None


class _Labels:
    """Label lookup plus the regexes that depend on the label set."""

    def __init__(self, labels: Sequence[str]) -> None:
        labels = [str(label) for label in labels]
        if not labels:
            raise ValueError("parse_ranking needs at least one label")
        folded = [label.casefold() for label in labels]
        if any(not label or label != label.strip() or any(c.isspace() for c in label) for label in labels):
            raise ValueError(f"labels must be non-empty and contain no whitespace: {labels!r}")
        if len(set(folded)) != len(folded):
            raise ValueError(f"labels must be distinct (case-insensitively): {labels!r}")
        self.labels = labels
        self.index = {f: i for i, f in enumerate(folded)}
        alts = sorted({re.escape(label) for label in labels}, key=len, reverse=True)
        core = "|".join([*alts, "[A-Za-z]"])  # any single letter is label-like (may be unknown)
        self.core = rf"(?:{core})"
        self.token = re.compile(rf"(?<![A-Za-z0-9_]){self.core}(?![A-Za-z0-9_])", re.IGNORECASE)
        lab = rf"(?P<lab>{self.core})(?![A-Za-z0-9_])"
        lead = rf"{_DECO}\s*{_PREFIX}{_DECO}\s*"
        self.numbered = re.compile(
            rf"(?:(?<=[\s:;,(\[])|^)(?:rank(?:ed)?\s*)?#?\s*(?P<num>\d{{1,2}})\s*(?:st|nd|rd|th)?\s*"
            rf"(?:place\s*)?[.):\-]\s*{lead}{lab}",
            re.IGNORECASE | re.MULTILINE,
        )
        best = (r"(?:the\s+)?(?:best|better|strongest|winner|top|preferred|correct\s+one|"
                r"most\s+(?:accurate|correct|detailed|helpful|complete))")
        self.top = [
            re.compile(
                rf"\b(?:best|better|winning|top|preferred|strongest)\s+(?:answer|response|candidate|option|choice)?"
                rf"\s*(?:is|:|=|would\s+be|here\s+is)\s*{lead}{lab}",
                re.IGNORECASE,
            ),
            re.compile(rf"(?<![A-Za-z0-9_]){_PREFIX}{_DECO}\s*{lab}{_DECO}\s*(?:is|was)\s+{best}", re.IGNORECASE),
            re.compile(
                rf"\b(?:i\s+(?:would\s+)?(?:choose|pick|prefer|select|vote\s+for)|winner\s*[:=\-]|"
                rf"choice\s*[:=\-]|answer\s*[:=\-]|verdict\s*[:=\-]|final\s+answer\s*(?:is|[:=\-]))\s*{lead}{lab}",
                re.IGNORECASE,
            ),
            re.compile(rf"^\W*{lead}{lab}\W*$", re.IGNORECASE),
        ]

    def lookup(self, text: str) -> int | None:
        return self.index.get(text.casefold())

    def plausible(self, match: re.Match[str], text: str, group: str = "lab") -> bool:
        """A label written in another case than given must not run into a word
        ("1. A good answer" is an article, "1. a" or "1. a is best" a label)."""
        written = match.group(group)
        i = self.lookup(written)
        if i is None:
            return False
        if written == self.labels[i]:
            return True
        return _FOLLOW_OK.match(text, match.end(group)) is not None


def parse_ranking(text: str | None, labels: Sequence[str]) -> ParsedRanking:
    """Parse a judge's reply into an order over ``labels`` (see the module docstring).

    Never raises for any ``text``; raises :class:`ValueError` only for an invalid label
    set (empty, duplicated or containing whitespace), which is a programming error."""
    lab = _Labels(labels)
    if not isinstance(text, str):
        return ParsedRanking(failure=f"judge output is {type(text).__name__}, not text")
    text = text[:MAX_PARSE_CHARS]
    if not text.strip():
        return ParsedRanking(failure="empty judge output")
    try:
        return _parse(text, lab)
    except Exception as exc:  # a parser bug must not take a training step down with it
        return ParsedRanking(failure=f"parser error: {type(exc).__name__}: {exc}")


def _parse(text: str, lab: _Labels) -> ParsedRanking:
    found = _from_json(text, lab)
    if found is not None:
        blocks, reason, span = found
        return _finish(blocks, lab, reason or _reason(text, span), "json")
    chains = _chains(text, lab)
    strong = [c for c in chains if c.strong]
    if strong:
        best = max(strong, key=lambda c: (c.known, -c.start))
        return _finish(best.blocks, lab, _reason(text, (best.start, best.end)), "chain")
    numbered = _numbered(text, lab)
    if numbered is not None:
        blocks, span = numbered
        return _finish(blocks, lab, _reason(text, span), "numbered")
    weak = [c for c in chains if not c.strong and _WEAK_KEYWORD.search(_line_before(text, c.start))]
    if weak:
        best = max(weak, key=lambda c: (c.known, -c.start))
        return _finish(best.blocks, lab, _reason(text, (best.start, best.end)), "list")
    top = _top(text, lab)
    if top is not None:
        winner, span = top
        return _finish([[winner]], lab, _reason(text, span), "top")
    return ParsedRanking(failure="no ranking found in judge output", reason=_one_line(text)[:200])


# ----------------------------------------------------------------------------- helpers
def _finish(blocks: list[list[int]], lab: _Labels, reason: str, source: str) -> ParsedRanking:
    """Drop repeats (first occurrence wins) and append unmentioned labels as a tied block."""
    seen: set[int] = set()
    clean: list[list[int]] = []
    for block in blocks:
        kept = []
        for c in block:
            if c not in seen:
                seen.add(c)
                kept.append(c)
        if kept:
            clean.append(kept)
    if not clean:
        return ParsedRanking(failure="judge output names none of the candidates' labels", reason=reason)
    missing = [i for i in range(len(lab.labels)) if i not in seen]
    if missing:
        clean.append(missing)
    order = [c for block in clean for c in block]
    ties = [block for block in clean if len(block) > 1]
    return ParsedRanking(order=order, ties=ties, reason=reason, source=source)


@dataclass
class _Chain:
    blocks: list[list[int]]
    start: int
    end: int
    strong: bool
    known: int


def _chains(text: str, lab: _Labels) -> list[_Chain]:
    """Maximal runs of label tokens joined by separators (``>``, ``=``, ``,``...)."""
    tokens = list(lab.token.finditer(text))
    chains: list[_Chain] = []
    run: list[tuple[re.Match[str], str]] = []  # (token, separator before it)

    def close() -> None:
        if len(run) >= 2:
            chain = _chain_from(run, lab, text)
            if chain is not None:
                chains.append(chain)

    for tok in tokens:
        if run:
            gap = text[run[-1][0].end() : tok.start()]
            m = _GAP.match(gap) if len(gap) <= _MAX_GAP else None
            if m is not None:
                run.append((tok, "gt" if m.group("gt") else "eq" if m.group("eq") else "weak"))
                continue
            close()
        run = [(tok, "")]
    close()
    return chains


def _chain_from(run: list[tuple[re.Match[str], str]], lab: _Labels, text: str) -> _Chain | None:
    blocks: list[list[int]] = []
    strong = False
    known: set[int] = set()
    for k, (tok, sep) in enumerate(run):
        strong = strong or sep in ("gt", "eq")
        i = lab.lookup(tok.group(0))
        if k == 0 or sep != "eq":
            blocks.append([])
        if i is not None:
            blocks[-1].append(i)
            known.add(i)
    if not known:
        return None
    return _Chain(blocks, run[0][0].start(), run[-1][0].end(), strong, len(known))


def _numbered(text: str, lab: _Labels) -> tuple[list[list[int]], tuple[int, int]] | None:
    entries: list[tuple[int, int, int]] = []  # (rank number, position, label)
    start, end = len(text), 0
    for m in lab.numbered.finditer(text):
        if not lab.plausible(m, text):
            continue
        i = lab.lookup(m.group("lab"))
        if i is None:
            continue
        entries.append((int(m.group("num")), m.start(), i))
        start, end = min(start, m.start()), max(end, m.end())
    if len({i for _, _, i in entries}) < 2:
        return None
    entries.sort()
    blocks: list[list[int]] = []
    last: int | None = None
    for num, _, i in entries:
        if num != last:
            blocks.append([])
            last = num
        blocks[-1].append(i)
    return blocks, (start, end)


def _top(text: str, lab: _Labels) -> tuple[int, tuple[int, int]] | None:
    best: tuple[int, int, tuple[int, int]] | None = None
    for pattern in lab.top:
        for m in pattern.finditer(text):
            if not lab.plausible(m, text):
                continue
            i = lab.lookup(m.group("lab"))
            if i is not None and (best is None or m.start() < best[0]):
                best = (m.start(), i, (m.start(), m.end()))
            break  # the first plausible match of each pattern is enough
    if best is None:
        return None
    return best[1], best[2]


def _line_before(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    return text[max(line_start, pos - 80) : pos]


# ----------------------------------------------------------------------------- JSON
def _from_json(text: str, lab: _Labels) -> tuple[list[list[int]], str, tuple[int, int]] | None:
    if "[" not in text and "{" not in text:
        return None
    tries = 0
    for m in re.finditer(r"[\[{]", text):
        tries += 1
        if tries > 20:
            break
        segment = _balanced(text, m.start())
        if segment is None:
            continue
        value = _loads(segment)
        if value is None:
            continue
        reason = ""
        if isinstance(value, dict):
            reason = _json_reason(value)
        blocks = _json_blocks(value, lab, depth=0)
        if blocks and any(blocks):
            return blocks, reason, (m.start(), m.start() + len(segment))
    return None


def _balanced(text: str, start: int, limit: int = 4000) -> str | None:
    """The bracketed segment starting at ``start`` (quotes respected), or None."""
    depth = 0
    quote: str | None = None
    escaped = False
    for j in range(start, min(len(text), start + limit)):
        c = text[j]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
            continue
        if c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return text[start : j + 1]
    return None


def _loads(segment: str) -> Any:
    for candidate in (segment, segment.replace("'", '"')):
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    return None


def _json_reason(value: dict[str, Any]) -> str:
    for key, item in value.items():
        if str(key).lower() in _JSON_REASON_KEYS and isinstance(item, str | int | float):
            return _one_line(str(item))
    return ""


def _json_blocks(value: Any, lab: _Labels, depth: int) -> list[list[int]] | None:
    if depth > 4:
        return None
    if isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}
        for key in _JSON_RANK_KEYS:
            if key in lowered:
                got = _json_blocks(lowered[key], lab, depth + 1)
                if got:
                    return got
        for v in value.values():
            if isinstance(v, list):
                got = _json_blocks(v, lab, depth + 1)
                if got:
                    return got
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return _string_blocks(str(value), lab)
    if not isinstance(value, list):
        return None
    if value and all(isinstance(v, dict) for v in value):
        return _json_records(value, lab)
    blocks: list[list[int]] = []
    for item in value:
        if isinstance(item, list):
            tied = [i for sub in item for b in (_string_blocks(str(sub), lab) or []) for i in b]
            if tied:
                blocks.append(tied)
        elif isinstance(item, str | int) and not isinstance(item, bool):
            blocks.extend(_string_blocks(str(item), lab) or [])
    return blocks or None


def _json_records(items: list[dict[str, Any]], lab: _Labels) -> list[list[int]] | None:
    """``[{"label": "B", "rank": 1}, ...]``: sort by rank; equal ranks tie."""
    rows: list[tuple[float, int, int]] = []
    for pos, item in enumerate(items):
        lowered = {str(k).lower(): v for k, v in item.items()}
        name = next((lowered[k] for k in ("label", "answer", "candidate", "id", "name") if k in lowered), None)
        rank = next((lowered[k] for k in ("rank", "position", "place") if k in lowered), pos + 1)
        if name is None or isinstance(rank, bool) or not isinstance(rank, int | float):
            continue
        got = _string_blocks(str(name), lab)
        if got and got[0]:
            rows.append((float(rank), pos, got[0][0]))
    if not rows:
        return None
    rows.sort()
    blocks: list[list[int]] = []
    last: float | None = None
    for rank, _, i in rows:
        if rank != last:
            blocks.append([])
            last = rank
        blocks[-1].append(i)
    return blocks


def _string_blocks(item: str, lab: _Labels) -> list[list[int]] | None:
    """One JSON string: a label ("B", "Answer B") or a small chain ("A=C", "B > A")."""
    item = item.strip()
    i = lab.lookup(item)
    if i is not None:
        return [[i]]
    chains = [c for c in _chains(item, lab) if c.strong]
    if chains:
        return max(chains, key=lambda c: c.known).blocks
    tokens = [lab.lookup(m.group(0)) for m in lab.token.finditer(item)]
    known = [t for t in tokens if t is not None]
    if len(known) == 1:
        return [[known[0]]]
    return None


# ----------------------------------------------------------------------------- reason
def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reason(text: str, span: tuple[int, int] | None) -> str:
    """A one-line reason: "Reason: ..." or a "because ..." clause, else the first line of
    at least three words outside the ranking itself (after it, then before it)."""
    m = _REASON.search(text)
    if m is not None:
        return _one_line(m.group("r"))[:300]
    parts = [text] if span is None else [text[span[1] :], text[: span[0]]]
    for part in parts:
        for line in part.splitlines():
            if line.rstrip().endswith(":"):  # a heading such as "Ranking (best to worst):"
                continue
            line = line.strip(" \t.:;,-*#>")
            if len(line.split()) >= 3:
                return _one_line(line)[:300]
    return ""
