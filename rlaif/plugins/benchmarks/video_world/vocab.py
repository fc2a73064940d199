"""The closed vocabulary of the video world: shapes, colours, sizes, directions, question
types and number words. Pure constants (no numpy), shared by the generator, the scorer
and the baselines so that a word means the same thing everywhere."""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("square", "circle", "triangle")

#: Saturated RGB colours far apart in hue *and* luma, so they stay recognisable after
#: yuv420p chroma subsampling and h264 coding of tiny frames.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 240),
    "yellow": (235, 215, 40),
    "purple": (170, 60, 220),
}

SIZES: tuple[str, ...] = ("small", "big")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

#: The answer each closed short question of the labelled ``sft`` split leans to (one per
#: question: size, shape, colour, count, direction; the vocabularies are disjoint), see
#: ``VideoWorld(label_lean=...)``. Chosen arbitrarily; only the lean matters.
LEANING_ANSWERS: frozenset[str] = frozenset({"small", "circle", "red", "one", "left"})

#: Question types, shortest answers first (answer length is a difficulty signal).
SHORT_QTYPES: tuple[str, ...] = ("attribute", "counting", "direction", "temporal")
LONG_QTYPES: tuple[str, ...] = ("describe",)
QTYPES: tuple[str, ...] = SHORT_QTYPES + LONG_QTYPES

#: The captioning prompt of Video-ChatGPT / VLM-RLAIF, used verbatim for ``describe``.
DESCRIBE_QUESTION = "Describe this video in detail."

NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # fmt: skip


def object_pixels(size: str, canvas: int) -> int:
    """Side of an object's bounding box in pixels (7 / 11 px on a 32 px canvas)."""
    return round((0.22 if size == "small" else 0.34) * canvas)
