"""Reference baselines that bound what the video world measures.

* :func:`single_frame_baseline` answers from ONE decoded frame (the middle one): it finds
  the objects by colour in the pixels, reads shape from how much of its bounding box an
  object fills and size from its extent, and answers what a still image can tell. What
  needs motion or order (direction, temporal, how many objects move) it guesses from the
  ``sft`` split's answers. High attribute accuracy with low direction / temporal accuracy
  shows those questions really need more than one frame.
* :func:`random_baseline` never looks at the video: per question template it answers the
  most frequent ``sft`` answer (``majority``) or a uniformly drawn one (``uniform``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlaif.core.records import Prompt
from rlaif.plugins.benchmarks.video_world.vocab import COLOURS, NUMBER_WORDS, SHAPES, SIZES, object_pixels

_COLOUR_RE = "|".join(COLOURS)
_SHAPE_RE = "|".join(SHAPES)
_OBJECT = re.compile(rf"\b({_COLOUR_RE}) ({_SHAPE_RE})\b")


@dataclass(frozen=True)
class Detection:
    colour: str
    shape: str
    size: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive)
    area: int


def detect_objects(frame: np.ndarray) -> list[Detection]:
    """Objects in one uint8 RGB frame ``[H, W, 3]``. Bright pixels are labelled with the
    nearest palette colour; each colour's largest 4-connected blob is one object, and its
    shape and size are those of the template (shape mask of either size, placed around
    the blob) that overlaps it best (intersection over union)."""
    canvas = frame.shape[0]
    palette = np.array(list(COLOURS.values()), np.float32)  # [K, 3]
    pixels = frame.astype(np.float32)
    dist = ((pixels[:, :, None, :] - palette[None, None]) ** 2).sum(-1)  # [H, W, K]
    label = dist.argmin(-1)
    # Loose thresholds: yuv420p halves chroma, so edge pixels are washed-out blends.
    keep = (pixels.max(-1) > 100) & (dist.min(-1) < 110.0**2)
    min_area = object_pixels("small", canvas) ** 2 * 0.3
    found = []
    for k, colour in enumerate(COLOURS):
        blob = _largest_blob(keep & (label == k))
        if blob.sum() < min_area:
            continue
        ys, xs = np.nonzero(blob)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        shape, size = _best_template(blob, box)
        found.append(Detection(colour, shape, size, box, int(blob.sum())))
    return found


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (flood fill; frames are tiny)."""
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    height, width = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, blob = [(int(y0), int(x0))], []
        while stack:
            y, x = stack.pop()
            blob.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(blob) > len(best):
            best = blob
    out = np.zeros_like(mask)
    if best:
        out[tuple(np.array(best).T)] = True
    return out


def _best_template(blob: np.ndarray, box: tuple[int, int, int, int]) -> tuple[str, str]:
    from rlaif.plugins.benchmarks.video_world.world import shape_mask

    x0, y0, x1, y1 = box
    height, width = blob.shape
    area = blob.sum()
    best, best_iou = ("square", "small"), -1.0
    for size in SIZES:
        side = object_pixels(size, height)
        for shape in SHAPES:
            template = shape_mask(shape, side)
            # Placements whose box covers the blob's box give or take one pixel.
            for ty in range(max(0, y1 + 1 - side - 1), min(height - side, y0 + 1) + 1):
                for tx in range(max(0, x1 + 1 - side - 1), min(width - side, x0 + 1) + 1):
                    inter = blob[ty : ty + side, tx : tx + side][template].sum()
                    iou = inter / (area + template.sum() - inter)
                    if iou > best_iou:
                        best, best_iou = (shape, size), iou
    return best


class _Priors:
    """Answer statistics of a split, per question template (objects masked out)."""

    def __init__(self, prompts: Sequence[Prompt]) -> None:
        self.by_template: dict[str, Counter[str]] = {}
        self.by_qtype: dict[str, Counter[str]] = {}
        self.temporal_verbs: Counter[str] = Counter()
        for p in prompts:
            answer = p.reference or ""
            self.by_template.setdefault(template(p.question), Counter())[answer] += 1
            self.by_qtype.setdefault(p.qtype, Counter())[answer] += 1
            if p.qtype == "temporal":
                self.temporal_verbs[_OBJECT.sub("X", answer)] += 1

    def answers(self, prompt: Prompt) -> Counter[str]:
        return (
            self.by_template.get(template(prompt.question))
            or self.by_qtype.get(prompt.qtype)
            or Counter({"": 1})
        )

    def majority(self, prompt: Prompt) -> str:
        return self.answers(prompt).most_common(1)[0][0]


def template(question: str) -> str:
    """The question with object words masked: "what colour is the SHAPE?" and so on."""
    q = question.lower()
    q = re.sub(rf"\b({_COLOUR_RE})\b", "COLOUR", q)
    return re.sub(rf"\b({_SHAPE_RE})\b", "SHAPE", q)


def answer_from_frame(prompt: Prompt, frame: np.ndarray, priors: _Priors) -> str:
    """What a model that sees only ``frame`` can answer (see the module docstring)."""
    seen = detect_objects(frame)
    by_colour = {d.colour: d for d in seen}
    by_shape = {d.shape: d for d in seen}
    q = prompt.question.lower()
    if m := re.fullmatch(rf"what colour is the ({_SHAPE_RE})( at the (start|end) of the video)?\?", q):
        if m.group(1) in by_shape:
            return by_shape[m.group(1)].colour
    elif m := re.fullmatch(rf"what shape is the ({_COLOUR_RE}) object\?", q):
        if m.group(1) in by_colour:
            return by_colour[m.group(1)].shape
    elif m := re.fullmatch(rf"is the ({_COLOUR_RE}) ({_SHAPE_RE}) small or big\?", q):
        d = by_colour.get(m.group(1)) or by_shape.get(m.group(2))
        if d is not None:
            return d.size
    elif q == "how many objects are there in the video?":
        return NUMBER_WORDS[len(seen)]
    elif q == "how many big objects are there?":
        return NUMBER_WORDS[sum(d.size == "big" for d in seen)]
    elif prompt.qtype == "temporal":
        # Name an object the question does not mention and give the commonest event.
        mentioned = {m.group(0) for m in _OBJECT.finditer(q)}
        others = [f"{d.colour} {d.shape}" for d in seen if f"{d.colour} {d.shape}" not in mentioned]
        verbs = [v for v, _ in priors.temporal_verbs.most_common() if v.count("X") == 1]
        if others and verbs:
            return verbs[0].replace("X", others[0])
    elif prompt.qtype == "describe":
        return " ".join(f"a {d.size} {d.colour} {d.shape} sits still." for d in seen) or "the scene is empty."
    return priors.majority(prompt)  # needs motion, or nothing seen: guess


def single_frame_answers(bench: Any, prompts: Sequence[Prompt], prior_split: str = "sft") -> list[str]:
    """Answers of the single-frame baseline, seeing each video's middle frame only."""
    priors = _Priors(bench.prompts(prior_split))
    frames: dict[str, np.ndarray] = {}
    answers = []
    for p in prompts:
        if p.video.video_id not in frames:
            video = bench.frames(p.video)
            frames[p.video.video_id] = video[len(video) // 2]
        answers.append(answer_from_frame(p, frames[p.video.video_id], priors))
    return answers


def single_frame_baseline(bench: Any, split: str = "test", prior_split: str = "sft") -> dict[str, float]:
    """Metrics of the single-frame baseline on ``split`` (``bench.score`` table)."""
    prompts = bench.prompts(split)
    return bench.score(prompts, single_frame_answers(bench, prompts, prior_split))


def random_answers(
    bench: Any, prompts: Sequence[Prompt], strategy: str = "majority", seed: int = 0, prior_split: str = "sft"
) -> list[str]:
    """Blind answers: per question template, the most frequent ``prior_split`` answer
    (``majority``) or one drawn uniformly from the distinct answers seen (``uniform``)."""
    if strategy not in ("majority", "uniform"):
        raise ValueError(f"strategy must be 'majority' or 'uniform', got {strategy!r}")
    priors = _Priors(bench.prompts(prior_split))
    rng = random.Random(seed)
    if strategy == "majority":
        return [priors.majority(p) for p in prompts]
    return [rng.choice(sorted(priors.answers(p))) for p in prompts]


def random_baseline(
    bench: Any, split: str = "test", strategy: str = "majority", seed: int = 0
) -> dict[str, float]:
    """Metrics of :func:`random_answers` on ``split``."""
    prompts = bench.prompts(split)
    return bench.score(prompts, random_answers(bench, prompts, strategy, seed))
