"""Procedural generation of one world video: a plan of 1-3 moving shapes, its rendering,
its ground-truth events, per-clip captions and question-answer items.

Everything is a pure function of a string seed (``random.Random`` seeded with a string is
stable across Python versions and ``PYTHONHASHSEED``), so a world can be regenerated
bit-for-bit. Within one video every object has its own shape and its own colour (a
recoloured object takes a colour no other object uses), so "the square" and "the red
circle" are unambiguous. Events happen at distinct frames, never at frame 0 (what holds at
frame 0 is the initial state), so "what happened after X?" has exactly one answer.

Event semantics (frame ``f`` of an event): ``appear`` visible from ``f`` on; ``disappear``
invisible from ``f`` on; ``start`` moving from ``f`` (it is displaced between ``f`` and
``f + 1``); ``stop`` still from ``f`` on; ``recolour`` new colour from ``f`` on;
``collide`` two objects touch at ``f`` and both stop there.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlaif.plugins.benchmarks.video_world.vocab import (
    COLOURS,
    DESCRIBE_QUESTION,
    DIRECTIONS,
    NUMBER_WORDS,
    SHAPES,
    SIZES,
    object_pixels,
)

#: Bump when generation changes, so cached worlds built by older code are not reused.
GENERATOR_VERSION = 1

_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_SPEEDS = (0.25, 0.5, 0.75, 1.0)  # pixels per frame on a 32 px canvas
_P_COLLISION = 0.35
_P_RECOLOUR = 0.35


@dataclass(frozen=True)
class WorldObject:
    """One object as it is at frame 0 (``colour`` is its first colour)."""

    index: int
    shape: str
    colour: str
    size: str
    visible_at_start: bool = True
    direction_at_start: str | None = None  # moving at frame 0, or still


@dataclass(frozen=True)
class Event:
    """Something that happens at ``frame``; ``caption`` (present tense, for captions) and
    ``past`` (past tense, for temporal QA) name objects by their colour at that time."""

    frame: int
    kind: str  # appear | disappear | start | stop | recolour | collide
    obj: int
    direction: str | None = None  # start
    colour: str | None = None  # recolour: the new colour
    other: int | None = None  # collide: the second object
    caption: str = ""
    past: str = ""


@dataclass(frozen=True)
class QAItem:
    qtype: str
    question: str
    answer: str


@dataclass
class Track:
    """Motion plan of one object (top-left corner in pixels, may be fractional)."""

    size_px: int
    appear: int  # visible for appear <= f < vanish
    vanish: int
    x0: float
    y0: float
    direction: str | None = None
    speed: float = 0.0
    move_start: int = 0  # moving for move_start <= f < move_end
    move_end: int = 0
    collide_at: int | None = None
    partner: int | None = None
    recolour_at: int | None = None
    new_colour: str | None = None

    def position(self, frame: int) -> tuple[int, int]:
        if self.direction is None:
            return _round(self.x0), _round(self.y0)
        steps = min(max(frame - self.move_start, 0), self.move_end - self.move_start)
        dx, dy = _STEP[self.direction]
        return _round(self.x0 + dx * self.speed * steps), _round(self.y0 + dy * self.speed * steps)

    def colour(self, frame: int, first: str) -> str:
        if self.recolour_at is not None and self.new_colour is not None and frame >= self.recolour_at:
            return self.new_colour
        return first

    def visible(self, frame: int) -> bool:
        return self.appear <= frame < self.vanish


@dataclass
class WorldVideo:
    """A generated video: its objects, events and motion tracks (tracks are only needed
    to render; captions and QA derive from objects and events alone)."""

    video_id: str
    n_frames: int
    canvas: int
    objects: list[WorldObject]
    events: list[Event]
    tracks: list[Track] = field(default_factory=list)

    def render(self) -> np.ndarray:
        """uint8 frames ``[T, S, S, 3]`` on a black background."""
        frames = np.zeros((self.n_frames, self.canvas, self.canvas, 3), np.uint8)
        for obj, track in zip(self.objects, self.tracks, strict=True):
            mask = shape_mask(obj.shape, track.size_px)
            s = track.size_px
            for f in range(self.n_frames):
                if not track.visible(f):
                    continue
                x, y = track.position(f)
                frames[f, y : y + s, x : x + s][mask] = COLOURS[track.colour(f, obj.colour)]
        return frames


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))


_MASKS: dict[tuple[str, int], np.ndarray] = {}


def shape_mask(shape: str, px: int) -> np.ndarray:
    """Boolean ``[px, px]`` mask of a shape filling its bounding box."""
    key = (shape, px)
    if key not in _MASKS:
        yy, xx = np.mgrid[0:px, 0:px].astype(float) + 0.5
        if shape == "square":
            mask = np.ones((px, px), bool)
        elif shape == "circle":
            mask = (xx - px / 2) ** 2 + (yy - px / 2) ** 2 <= (px / 2) ** 2 + 0.5
        elif shape == "triangle":  # pointing up: half-width grows linearly with the row
            mask = np.abs(xx - px / 2) <= yy / 2 + 0.25
        else:
            raise ValueError(f"unknown shape {shape!r}")
        _MASKS[key] = mask
    return _MASKS[key]


# -- planning ------------------------------------------------------------------------


def generate_video(
    video_id: str,
    seed_key: str,
    *,
    canvas: int = 32,
    min_frames: int = 16,
    max_frames: int = 48,
    max_objects: int = 3,
) -> WorldVideo:
    """Plan one video from ``seed_key`` by rejection sampling: a plan is kept when events
    fall on distinct frames, objects never overlap (except a colliding pair touching) and
    there are at least two events (relaxed after many tries, so it always terminates)."""
    if not 1 <= max_objects <= len(SHAPES):
        raise ValueError(f"max_objects must be between 1 and {len(SHAPES)}")
    if min_frames < 8 or max_frames < min_frames:
        raise ValueError("need 8 <= min_frames <= max_frames")
    rng = random.Random(seed_key)
    n_frames = rng.randint(min_frames, max_frames)
    n_objects = rng.randint(1, max_objects)
    for attempt in range(400):
        n = n_objects if attempt < 250 else 1
        min_events = 2 if attempt < 150 else 0
        planned = _plan(rng, canvas, n_frames, n, min_events)
        if planned is not None:
            objects, events, tracks = planned
            return WorldVideo(video_id, n_frames, canvas, objects, events, tracks)
    raise RuntimeError(f"could not plan video {video_id}")  # pragma: no cover - one still object always fits


def _plan(
    rng: random.Random, canvas: int, T: int, n: int, min_events: int
) -> tuple[list[WorldObject], list[Event], list[Track]] | None:
    scale = canvas / 32
    colours = rng.sample(list(COLOURS), n)
    shapes = rng.sample(list(SHAPES), n)
    sizes = [rng.choice(SIZES) for _ in range(n)]
    pixels = [object_pixels(s, canvas) for s in sizes]
    planned: dict[int, Track] = {}
    if n >= 2 and rng.random() < _P_COLLISION:
        i, j = rng.sample(range(n), 2)
        pair = _plan_collision(rng, canvas, T, pixels[i], pixels[j], scale)
        if pair is not None:
            planned[i], planned[j] = pair
            planned[i].partner, planned[j].partner = j, i
    for k in range(n):
        if k not in planned:
            planned[k] = _plan_solo(rng, canvas, T, pixels[k], scale)
    full = [planned[k] for k in range(n)]
    solos = [k for k, t in enumerate(full) if t.collide_at is None and t.vanish - t.appear > 6]
    if solos and rng.random() < _P_RECOLOUR:
        t = full[rng.choice(solos)]
        t.recolour_at = rng.randint(t.appear + 2, t.vanish - 3)
        t.new_colour = rng.choice([c for c in COLOURS if c not in colours])
    if not any(t.appear == 0 for t in full) or _overlaps(full, T):
        return None
    objects = [
        WorldObject(
            k,
            shapes[k],
            colours[k],
            sizes[k],
            full[k].appear == 0,
            full[k].direction if full[k].direction and full[k].move_start == 0 else None,
        )
        for k in range(n)
    ]
    events = _events(objects, full, T)
    frames = [e.frame for e in events]
    if len(set(frames)) != len(frames) or len(events) < min_events:
        return None
    return objects, events, full


def _plan_solo(rng: random.Random, S: int, T: int, px: int, scale: float) -> Track:
    room = S - px
    appear = 0 if rng.random() < 0.7 else rng.randint(2, max(2, T // 2))
    vanish = T
    earliest_vanish = appear + max(6, T // 4)
    if rng.random() < 0.25 and earliest_vanish <= T - 2:
        vanish = rng.randint(earliest_vanish, T - 2)
    track = Track(px, appear, vanish, rng.randint(0, room), rng.randint(0, room))
    if rng.random() >= 0.8:
        return track  # a still object
    direction = rng.choice(DIRECTIONS)
    speed = rng.choice(_SPEEDS) * scale
    if appear == 0 and rng.random() < 0.5:
        start = 0
    elif appear + 2 <= vanish - 4:
        start = rng.randint(appear + 2, vanish - 4)
    else:
        return track
    longest = min(int(room / speed), vanish - start)
    if longest < 3:
        return track
    duration = longest if rng.random() < 0.3 else rng.randint(3, longest)
    travel = speed * duration
    sign = _STEP[direction][0] + _STEP[direction][1]
    along = rng.randint(math.ceil(travel), room) if sign < 0 else rng.randint(0, math.floor(room - travel))
    across = rng.randint(0, room)
    x0, y0 = (along, across) if direction in ("left", "right") else (across, along)
    track.x0, track.y0 = x0, y0
    track.direction, track.speed, track.move_start, track.move_end = direction, speed, start, start + duration
    return track


def _plan_collision(
    rng: random.Random, S: int, T: int, pa: int, pb: int, scale: float
) -> tuple[Track, Track] | None:
    """Two objects on one line moving towards each other until they touch at frame fc
    at contact coordinate c (a's far edge, b's near edge); both stop there."""
    horizontal = rng.random() < 0.5
    for _ in range(10):
        fc = rng.randint(3, T - 3)
        va, vb = rng.choice(_SPEEDS) * scale, rng.choice(_SPEEDS) * scale
        lo, hi = math.ceil(pa + va * fc), math.floor(S - pb - vb * fc)
        if lo > hi:
            continue
        c = rng.randint(lo, hi)
        across_a = rng.randint(0, S - pa)
        across_b = min(max(across_a + (pa - pb) // 2, 0), S - pb)  # centres aligned
        fwd, back = ("right", "left") if horizontal else ("down", "up")

        a = _collision_track(horizontal, c - pa - va * fc, across_a, pa, fwd, va, T, fc)
        b = _collision_track(horizontal, c + vb * fc, across_b, pb, back, vb, T, fc)
        return a, b
    return None


def _collision_track(
    horizontal: bool, along: float, across: int, px: int, direction: str, v: float, T: int, fc: int
) -> Track:
    x0, y0 = (along, across) if horizontal else (across, along)
    return Track(px, 0, T, x0, y0, direction, v, 0, fc, collide_at=fc)


def _overlaps(tracks: Sequence[Track], T: int) -> bool:
    """True when two visible objects overlap, or come within 1 px (a colliding pair may touch)."""
    for f in range(T):
        boxes = [(k, *t.position(f), t.size_px) for k, t in enumerate(tracks) if t.visible(f)]
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                ka, xa, ya, sa = boxes[a]
                kb, xb, yb, sb = boxes[b]
                gap = 0 if tracks[ka].partner == kb else 1
                if xa < xb + sb + gap and xb < xa + sa + gap and ya < yb + sb + gap and yb < ya + sa + gap:
                    return True
    return False


def _events(objects: Sequence[WorldObject], tracks: Sequence[Track], T: int) -> list[Event]:
    raw: list[Event] = []
    for k, t in enumerate(tracks):
        if t.appear > 0:
            raw.append(Event(t.appear, "appear", k))
        if t.vanish < T:
            raw.append(Event(t.vanish, "disappear", k))
        if t.direction is not None and t.move_start > 0:
            raw.append(Event(t.move_start, "start", k, direction=t.direction))
        if t.direction is not None and t.collide_at is None and t.move_end < t.vanish:
            raw.append(Event(t.move_end, "stop", k))
        if t.recolour_at is not None:
            raw.append(Event(t.recolour_at, "recolour", k, colour=t.new_colour))
        if t.collide_at is not None and t.partner is not None and k < t.partner:
            raw.append(Event(t.collide_at, "collide", k, other=t.partner))
    raw.sort(key=lambda e: (e.frame, e.obj, e.kind))
    colour = {o.index: o.colour for o in objects}
    named: list[Event] = []
    for e in raw:
        o = objects[e.obj]
        name = f"{colour[e.obj]} {o.shape}"
        if e.kind == "appear":
            caption, past = f"a {o.size} {name} appears", f"the {name} appeared"
        elif e.kind == "disappear":
            caption, past = f"the {name} disappears", f"the {name} disappeared"
        elif e.kind == "start":
            caption, past = (
                f"the {name} starts moving {e.direction}",
                f"the {name} started moving {e.direction}",
            )
        elif e.kind == "stop":
            caption, past = f"the {name} stops", f"the {name} stopped"
        elif e.kind == "recolour":
            caption, past = f"the {name} turns {e.colour}", f"the {name} turned {e.colour}"
            colour[e.obj] = e.colour or colour[e.obj]
        else:  # collide
            other = f"{colour[e.other]} {objects[e.other].shape}"  # type: ignore[index]
            caption, past = f"the {name} and the {other} collide", f"the {name} and the {other} collided"
        named.append(Event(e.frame, e.kind, e.obj, e.direction, e.colour, e.other, caption, past))
    return named


# -- state, captions and questions (from objects and events only) ---------------------


@dataclass
class ObjectState:
    visible: bool
    colour: str
    direction: str | None


def state_at(objects: Sequence[WorldObject], events: Sequence[Event], frame: int) -> list[ObjectState]:
    """Every object's state at ``frame`` (after the events of that frame)."""
    states = [ObjectState(o.visible_at_start, o.colour, o.direction_at_start) for o in objects]
    for e in events:
        if e.frame > frame:
            break
        s = states[e.obj]
        if e.kind == "appear":
            s.visible = True
        elif e.kind == "disappear":
            s.visible, s.direction = False, None
        elif e.kind == "start":
            s.direction = e.direction
        elif e.kind == "stop":
            s.direction = None
        elif e.kind == "recolour":
            s.colour = e.colour or s.colour
        elif e.kind == "collide":
            s.direction = None
            states[e.other].direction = None  # type: ignore[index]
    return states


def caption_clips(
    objects: Sequence[WorldObject], events: Sequence[Event], clips: Sequence[Sequence[int]]
) -> list[str]:
    """One templated caption per clip (each clip a list of frame indices, in order).

    The first clip opens with what holds at its first frame ("a big red circle moves
    left."); every clip then lists its events in order; a clip without events says what
    continues ("the red circle keeps moving left.").
    """
    starts = [clip[0] for clip in clips if len(clip)]
    if len(starts) != len(clips):
        raise ValueError("empty clip")
    captions = []
    for n, a in enumerate(starts):
        # A clip owns the events from its first frame up to the next clip's first frame,
        # so sampled (non-contiguous) clips still cover every event exactly once.
        end = starts[n + 1] if n + 1 < len(starts) else 10**9
        sentences: list[str] = []
        if n == 0:
            for o, s in zip(objects, state_at(objects, events, a), strict=True):
                if s.visible:
                    doing = f"moves {s.direction}" if s.direction else "sits still"
                    sentences.append(f"a {o.size} {s.colour} {o.shape} {doing}.")
            if not sentences:
                sentences.append("the scene is empty.")
        inside = [e for e in events if (a < e.frame < end if n == 0 else a <= e.frame < end)]
        sentences += [e.caption + "." for e in inside]
        if n > 0 and not inside:
            for o, s in zip(objects, state_at(objects, events, a), strict=True):
                if s.visible:
                    doing = f"keeps moving {s.direction}" if s.direction else "stays still"
                    sentences.append(f"the {s.colour} {o.shape} {doing}.")
            if not sentences:
                sentences.append("the scene is empty.")
        captions.append(" ".join(sentences))
    return captions


def make_questions(
    objects: Sequence[WorldObject], events: Sequence[Event], narrative: str, rng: random.Random
) -> list[QAItem]:
    """Two attribute questions, one counting, one direction (when something moves), one
    temporal (when there are two events) and one describe question per video."""
    final = state_at(objects, events, 10**9)
    attribute: list[QAItem] = []
    for o in objects:
        if any(e.kind == "recolour" and e.obj == o.index for e in events):
            if rng.random() < 0.5:
                attribute.append(
                    QAItem("attribute", f"What colour is the {o.shape} at the start of the video?", o.colour)
                )
            else:
                attribute.append(
                    QAItem(
                        "attribute",
                        f"What colour is the {o.shape} at the end of the video?",
                        final[o.index].colour,
                    )
                )
        else:
            attribute.append(QAItem("attribute", f"What colour is the {o.shape}?", o.colour))
        attribute.append(QAItem("attribute", f"What shape is the {o.colour} object?", o.shape))
        attribute.append(QAItem("attribute", f"Is the {o.colour} {o.shape} small or big?", o.size))
    items = rng.sample(attribute, 2)

    movers: dict[int, tuple[str, str]] = {}  # object -> (name when it sets off, direction)
    for o in objects:
        if o.direction_at_start:
            movers[o.index] = (f"{o.colour} {o.shape}", o.direction_at_start)
    for e in events:
        if e.kind == "start":
            colour = state_at(objects, events, e.frame)[e.obj].colour
            movers[e.obj] = (f"{colour} {objects[e.obj].shape}", e.direction or "")
    counting = [
        QAItem("counting", "How many objects are there in the video?", NUMBER_WORDS[len(objects)]),
        QAItem(
            "counting", "How many big objects are there?", NUMBER_WORDS[sum(o.size == "big" for o in objects)]
        ),
        QAItem("counting", "How many objects move during the video?", NUMBER_WORDS[len(movers)]),
    ]
    items.append(rng.choice(counting))
    if movers:
        name, direction = movers[rng.choice(sorted(movers))]
        items.append(QAItem("direction", f"Which way does the {name} move?", direction))
    if len(events) >= 2:
        i = rng.randrange(len(events) - 1)
        if rng.random() < 0.5:
            items.append(QAItem("temporal", f"What happened after {events[i].past}?", events[i + 1].past))
        else:
            items.append(QAItem("temporal", f"What happened before {events[i + 1].past}?", events[i].past))
    items.append(QAItem("describe", DESCRIBE_QUESTION, narrative))
    return items


def object_from_dict(data: dict[str, Any]) -> WorldObject:
    return WorldObject(**data)


def event_from_dict(data: dict[str, Any]) -> Event:
    return Event(**data)
