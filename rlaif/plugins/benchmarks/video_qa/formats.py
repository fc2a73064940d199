"""Parsers for the video-QA annotation files the field publishes (see
``/work/shared/datasets.md``), each turning a file into plain records.

* ``qa-pairs``: Video-ChatGPT / Video-LLaVA zero-shot QA (MSVD-QA, MSRVTT-QA, TGIF-QA,
  ActivityNet-QA): ``*_q.json`` (``video_name``, ``question``, ``question_id``) joined on
  ``question_id`` with the matching ``*_a.json`` (``answer``, ``type``).
* ``vcgbench``: Video-ChatGPT's generative benchmark: generic and temporal files (``Q``,
  ``A``, ``video_name``) and consistency files (``Q1``, ``Q2``, ``A``); lmms-eval's
  ``question``/``answer``/``question_1``/``question_2`` spellings are read too.
* ``jsonl``: one ``{"video", "question", "answer"}`` object per line, with optional
  ``id``, ``split``, ``type`` and ``needs_judge`` (a ``.json`` list of the same works).
* VLM-RLAIF SFT conversations (``conversations`` of ``from: human|gpt`` turns with a
  ``video``, or the ``images`` of its extracted frames) and reward-model preferences
  (``output_1``, ``output_2``, ``preference`` 1 or 2).

A malformed file raises :class:`AnnotationError`, one line naming the file, the item (its
index, and its id when it has one) and the field. Only the standard library is used here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.core.errors import AnnotationError

FORMATS: tuple[str, ...] = ("qa-pairs", "vcgbench", "jsonl")

#: ActivityNet-QA's ``type`` codes (MILVLG/activitynet-qa).
ACTIVITYNET_QA_TYPES: tuple[str, ...] = (
    "motion", "spatial", "temporal", "yes_no", "color", "object", "location", "number", "other",
)  # fmt: skip

_MEDIA_TAG = re.compile(r"<(?:video|image)>\s*")


@dataclass(frozen=True)
class QAItem:
    """One question about one video, as an annotation file states it.

    ``video`` is the name the file gives (resolved against the videos root later);
    ``frames`` lists frame images instead, for data shipped as extracted frames.
    ``split`` is set when the file says it; ``needs_judge`` marks answers too long for
    exact match. ``extra`` holds what a scorer may need beyond the answer (the second
    phrasing of a consistency question, earlier turns of a conversation)."""

    item_id: str
    video: str
    question: str
    answer: str | None
    qtype: str = "open"
    needs_judge: bool = False
    split: str | None = None
    frames: tuple[str, ...] = ()
    source: str = ""
    index: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PreferenceRecord:
    """One reward-model preference: for ``question`` about the video, ``chosen`` was
    preferred to ``rejected`` (VLM-RLAIF's ``preference`` 1 or 2 says which output)."""

    item_id: str
    video: str
    question: str
    chosen: str
    rejected: str
    frames: tuple[str, ...] = ()
    history: tuple[tuple[str, str], ...] = ()
    source: str = ""
    index: int = 0


# -- the formats ---------------------------------------------------------------------------


def read_qa_pairs(
    question_file: str | Path, answer_file: str | Path | None = None, qtype_names: Mapping[str, str] | None = None
) -> list[QAItem]:
    """Join a ``*_q.json`` with its ``*_a.json`` (default: the same name with ``_a``) on
    ``question_id``. ``type`` becomes the qtype, renamed through ``qtype_names`` (e.g.
    ActivityNet's ``3`` -> ``yes_no``); items without one get ``open``. Every question
    needs exactly one answer and every answer a question (a file pairing gone wrong is
    an error, not a silent mismatch)."""
    q_path = Path(question_file)
    if answer_file is None:
        if not q_path.name.endswith("_q.json"):
            raise AnnotationError(str(q_path), None, None, "a qa-pairs file must be named *_q.json (its answers are "
                                  "read from the matching *_a.json)")
        answer_file = q_path.with_name(q_path.name[: -len("_q.json")] + "_a.json")
    a_path = Path(answer_file)
    answers: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, rec in enumerate(_json_list(a_path)):
        qid = _id(rec, a_path, i, "question_id", required=True)
        if qid in answers:
            raise AnnotationError(str(a_path), _label(i, qid), "question_id", f"duplicate id (also item {answers[qid][0]})")
        answers[qid] = (i, rec)
    items: list[QAItem] = []
    seen: dict[str, int] = {}
    for i, rec in enumerate(_json_list(q_path)):
        qid = _id(rec, q_path, i, "question_id", required=True)
        label = _label(i, qid)
        if qid in seen:
            raise AnnotationError(str(q_path), label, "question_id", f"duplicate id (also item {seen[qid]})")
        seen[qid] = i
        if qid not in answers:
            raise AnnotationError(str(q_path), label, "question_id", f"no answer with this id in {a_path}")
        j, answer = answers[qid]
        a_label = _label(j, qid)
        qtype = _qtype(answer, a_path, a_label, qtype_names)
        items.append(QAItem(
            item_id=qid, video=_text(rec, q_path, label, "video_name", "video"), question=_text(rec, q_path, label, "question"),
            answer=_text(answer, a_path, a_label, "answer", numbers=True), qtype=qtype, source=str(q_path), index=i,
        ))  # fmt: skip
    orphans = sorted(set(answers) - set(seen), key=lambda q: answers[q][0])
    if orphans:
        j = answers[orphans[0]][0]
        raise AnnotationError(str(a_path), _label(j, orphans[0]), "question_id",
                              f"no question with this id in {q_path} ({len(orphans)} such answers)")
    return items


def read_vcgbench(path: str | Path) -> list[QAItem]:
    """Video-ChatGPT's generative benchmark. A file whose items have ``Q1``/``Q2`` is a
    consistency file (qtype ``consistency``, ``extra["question_2"]`` the second
    phrasing); otherwise qtype ``temporal`` when the file name says so, else
    ``generic``. Every answer is long: ``needs_judge``."""
    path = Path(path)
    items = []
    for i, rec in enumerate(_json_list(path)):
        label = _label(i, rec.get("question_id") if isinstance(rec, dict) else None)
        _object(rec, path, label)
        item_id = _id(rec, path, i, "question_id", required=False) or f"{path.stem}-{i}"
        video = _text(rec, path, label, "video_name", "video")
        answer = _text(rec, path, label, "A", "answer", numbers=True)
        if "Q1" in rec or "question_1" in rec:
            question = _text(rec, path, label, "Q1", "question_1")
            extra = {"question_2": _text(rec, path, label, "Q2", "question_2")}
            qtype = "consistency"
        else:
            question = _text(rec, path, label, "Q", "question")
            extra = {}
            qtype = "temporal" if "temporal" in path.stem.lower() else "generic"
        items.append(QAItem(item_id, video, question, answer, qtype, needs_judge=True, source=str(path), index=i,
                            extra=extra))
    return items


def read_jsonl(path: str | Path, short_answer_words: int = 5) -> list[QAItem]:
    """The hand-written form: ``video``, ``question``, ``answer`` and optional ``id``
    (default ``<file stem>-<line index>``), ``split``, ``type`` (default ``open``) and
    ``needs_judge`` (default: the answer is longer than ``short_answer_words`` words)."""
    path = Path(path)
    items = []
    for i, rec in enumerate(_json_lines(path)):
        label = _label(i, rec.get("id") if isinstance(rec, dict) else None)
        _object(rec, path, label)
        answer = _text(rec, path, label, "answer", numbers=True)
        needs_judge = rec.get("needs_judge")
        if needs_judge is None:
            needs_judge = len(answer.split()) > short_answer_words
        elif not isinstance(needs_judge, bool):
            raise AnnotationError(str(path), label, "needs_judge", f"expected true or false, got {needs_judge!r}")
        items.append(QAItem(
            item_id=_id(rec, path, i, "id", required=False) or f"{path.stem}-{i}",
            video=_text(rec, path, label, "video"), question=_text(rec, path, label, "question"), answer=answer,
            qtype=_text(rec, path, label, "type", required=False, numbers=True) or "open", needs_judge=needs_judge,
            split=_text(rec, path, label, "split", required=False) or None, source=str(path), index=i,
        ))  # fmt: skip
    return items


def read_conversations(path: str | Path) -> list[QAItem]:
    """VLM-RLAIF SFT data: one item per ``gpt`` turn, its question the ``human`` turn
    before it (``<video>``/``<image>`` tags removed) and ``extra["history"]`` the
    earlier ``[question, answer]`` turns. The video is ``video``, or the frame images
    ``images`` (``image``: a single frame). qtype ``conversation``; answers are free
    text, so ``needs_judge``."""
    path = Path(path)
    items = []
    for i, rec in enumerate(_json_records(path)):
        label = _label(i, rec.get("id") if isinstance(rec, dict) else None)
        _object(rec, path, label)
        base = _id(rec, path, i, "id", required=False) or f"{path.stem}-{i}"
        video, frames = _media(rec, path, label)
        turns = _turns(rec, path, label)
        history: list[tuple[str, str]] = []
        for k, (question, answer) in enumerate(_pairs(turns, path, label, need_answer=True)):
            items.append(QAItem(
                item_id=f"{base}-t{k}", video=video, question=question, answer=answer, qtype="conversation",
                needs_judge=True, frames=frames, source=str(path), index=i,
                extra={"history": [list(h) for h in history], "src_data": rec.get("src_data")},
            ))  # fmt: skip
            history.append((question, str(answer)))
    return items


def read_preferences(path: str | Path) -> list[PreferenceRecord]:
    """VLM-RLAIF reward-model data: ``output_1`` and ``output_2`` (``{"value": ...}`` or
    plain text) and ``preference`` (1 or 2: which output is better) for the question of
    ``question``, else of the last ``human`` turn of ``conversations`` (the ``gpt``
    turn after it is the slot the outputs fill)."""
    path = Path(path)
    out = []
    for i, rec in enumerate(_json_records(path)):
        label = _label(i, rec.get("id") if isinstance(rec, dict) else None)
        _object(rec, path, label)
        video, frames = _media(rec, path, label)
        history: tuple[tuple[str, str], ...] = ()
        if "question" in rec:
            question = _text(rec, path, label, "question")
        else:
            pairs = _pairs(_turns(rec, path, label), path, label, need_answer=False)
            if not pairs:
                raise AnnotationError(str(path), label, "conversations", "no human turn to take the question from")
            question = pairs[-1][0]
            history = tuple((q, str(a)) for q, a in pairs[:-1])
        outputs = [_output(rec, path, label, key) for key in ("output_1", "output_2")]
        pref = rec.get("preference")
        if isinstance(pref, str) and pref.strip() in ("1", "2"):
            pref = int(pref)
        if pref not in (1, 2) or isinstance(pref, bool):
            raise AnnotationError(str(path), label, "preference", f"expected 1 or 2, got {pref!r}")
        chosen, rejected = outputs if pref == 1 else outputs[::-1]
        item_id = _id(rec, path, i, "id", required=False) or f"{path.stem}-{i}"
        out.append(PreferenceRecord(item_id, video, question, chosen, rejected, frames, history, str(path), i))
    return out


# -- reading files ---------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnnotationError(str(path), None, None, "no such annotation file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(str(path), None, None, f"cannot be read ({type(exc).__name__}: {exc})") from None


def _json_list(path: Path) -> list[Any]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(str(path), None, None,
                              f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, list):
        raise AnnotationError(str(path), None, None, f"expected a JSON list of items, got a {type(data).__name__}")
    return data


def _json_lines(path: Path) -> list[Any]:
    """One JSON object per non-empty line; a ``.json`` file holding a list works too."""
    if path.suffix == ".json":
        return _json_list(path)
    records = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AnnotationError(str(path), f"{len(records)} (line {n})", None,
                                  f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    return records


def _json_records(path: Path) -> list[Any]:
    return _json_lines(path) if path.suffix == ".jsonl" else _json_list(path)


# -- fields ----------------------------------------------------------------------------------


def _label(index: int, item_id: Any = None) -> str:
    if item_id is None or isinstance(item_id, (dict, list)):
        return str(index)
    return f"{index} (id {str(item_id)!r})"


def _object(rec: Any, path: Path, label: str) -> None:
    if not isinstance(rec, dict):
        raise AnnotationError(str(path), label, None, f"expected a JSON object, got {type(rec).__name__}")


def _text(rec: Any, path: Path, label: str, *names: str, required: bool = True, numbers: bool = False) -> str:
    """The first of ``names`` present in ``rec``, as stripped non-empty text (numbers
    allowed with ``numbers``); ``""`` when absent and not ``required``."""
    _object(rec, path, label)
    for name in names:
        if name in rec:
            value = rec[name]
            break
    else:
        if not required:
            return ""
        spelled = " or ".join(repr(n) for n in names)
        raise AnnotationError(str(path), label, names[0], f"missing (expected {spelled})")
    kinds: tuple[type, ...] = (str, int, float) if numbers else (str,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise AnnotationError(str(path), label, name, f"expected text, got {type(value).__name__} {value!r:.40}")
    text = str(value).strip()
    if not text and required:
        raise AnnotationError(str(path), label, name, "is empty")
    return text


def _id(rec: Any, path: Path, index: int, name: str, *, required: bool) -> str:
    label = _label(index)
    _object(rec, path, label)
    if name not in rec:
        if required:
            raise AnnotationError(str(path), label, name, "missing")
        return ""
    value = rec[name]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise AnnotationError(str(path), label, name, f"expected a non-empty text or integer id, got {value!r:.40}")
    return str(value).strip()


def _qtype(rec: dict[str, Any], path: Path, label: str, names: Mapping[str, str] | None) -> str:
    code = _text(rec, path, label, "type", required=False, numbers=True)
    if not code:
        return "open"
    if names:
        if code not in names:
            raise AnnotationError(str(path), label, "type", f"{code!r} is not among the qtype_names {sorted(names)}")
        return names[code]
    return code


def _media(rec: dict[str, Any], path: Path, label: str) -> tuple[str, tuple[str, ...]]:
    """``(video name, frame files)``: ``video``, else the frames of ``images`` (or the
    single ``image``), named after their folder."""
    if "video" in rec:
        return _text(rec, path, label, "video"), ()
    if "images" in rec or "image" in rec:
        key = "images" if "images" in rec else "image"
        value = rec[key]
        frames = [value] if isinstance(value, str) else value
        if not isinstance(frames, list) or not frames or not all(isinstance(f, str) and f.strip() for f in frames):
            raise AnnotationError(str(path), label, key, "expected a non-empty list of frame image paths")
        return str(Path(frames[0]).parent), tuple(f.strip() for f in frames)
    raise AnnotationError(str(path), label, "video", "missing (expected 'video', or the frame list 'images')")


def _turns(rec: dict[str, Any], path: Path, label: str) -> list[tuple[str, str]]:
    """``(speaker, text)`` of each turn, speaker ``human`` or ``gpt`` (``role`` and the
    ``user``/``assistant`` spellings are read too)."""
    turns = rec.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise AnnotationError(str(path), label, "conversations", "expected a non-empty list of turns")
    out = []
    for k, turn in enumerate(turns):
        where = f"conversations[{k}]"
        if not isinstance(turn, dict):
            raise AnnotationError(str(path), label, where, f"expected an object, got {type(turn).__name__}")
        speaker = turn.get("from", turn.get("role"))
        speaker = {"user": "human", "assistant": "gpt"}.get(str(speaker), speaker)
        if speaker not in ("human", "gpt"):
            raise AnnotationError(str(path), label, f"{where}.from", f"expected 'human' or 'gpt', got {speaker!r}")
        value = turn.get("value")
        if not isinstance(value, str):
            raise AnnotationError(str(path), label, f"{where}.value", f"expected text, got {type(value).__name__}")
        out.append((speaker, value))
    return out


def _pairs(turns: Sequence[tuple[str, str]], path: Path, label: str, *, need_answer: bool
           ) -> list[tuple[str, str | None]]:
    """``(question, answer)`` per human turn; turns must alternate, human first. A last
    human turn without a reply gets ``None`` unless ``need_answer``."""
    out: list[tuple[str, str | None]] = []
    for k, (speaker, value) in enumerate(turns):
        expected = "human" if k % 2 == 0 else "gpt"
        if speaker != expected:
            raise AnnotationError(str(path), label, f"conversations[{k}].from",
                                  f"expected {expected!r} (turns alternate, human first), got {speaker!r}")
        if speaker == "human":
            question = _MEDIA_TAG.sub("", value).strip()
            if not question:
                raise AnnotationError(str(path), label, f"conversations[{k}].value", "the question is empty")
            out.append((question, None))
        else:
            out[-1] = (out[-1][0], value.strip())
    if need_answer and (not out or out[-1][1] is None):
        raise AnnotationError(str(path), label, "conversations", "the last human turn has no gpt reply")
    return out


def _output(rec: dict[str, Any], path: Path, label: str, key: str) -> str:
    value = rec.get(key)
    if isinstance(value, dict):
        value = value.get("value")
        key = f"{key}.value"
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError(str(path), label, key, f"expected a non-empty answer text, got {value!r:.40}")
    return value.strip()
