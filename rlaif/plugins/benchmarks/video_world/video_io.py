"""Video files through PyAV: write mp4, read uniformly sampled frames, split into clips.

:func:`read_frames` is the one loader for every video, generated or real: it samples
``n_frames`` indices with ``linspace`` over the whole video (VLM-RLAIF samples 50 frames
this way) and decodes only up to the last one it needs. :func:`split_clips` cuts a frame
sequence into clips of at most 20 frames, as VLM-RLAIF does before captioning each clip.
A file that is missing or does not decode raises :class:`VideoFileError` naming it, not
whichever PyAV error the damage happens to trip (a cut file can read as
``DecoderNotFoundError``); the world cache catches it to re-render its own videos.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from rlaif.core.errors import VideoFileError

#: What PyAV raises on a damaged file: its FFmpeg errors (EOFError and InvalidDataError
#: among them) and OSError for a file that vanished or cannot be read.
_DECODE_ERRORS = (av.error.FFmpegError, OSError)


def uniform_indices(total: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over ``[0, total)``, first and last included
    (``np.linspace`` rounded); indices repeat when ``n > total``."""
    if total <= 0:
        raise ValueError("a video needs at least one frame")
    if n <= 0:
        raise ValueError("n must be positive")
    return [int(i) for i in np.linspace(0, total - 1, n).round().astype(int)]


def split_clips(
    frames: int | Sequence[int], max_clip_frames: int | None = 20, n_clips: int | None = None
) -> list[list[int]]:
    """Split frame indices (or ``range(frames)`` when given a count) into consecutive clips.

    Without ``n_clips`` the fewest clips of at most ``max_clip_frames`` are made; with it,
    exactly ``n_clips`` (capped at the number of frames, so no clip is empty). Clip sizes
    differ by at most one, longer clips first. Raises ``ValueError`` when ``n_clips`` would
    force a clip longer than ``max_clip_frames`` (pass ``max_clip_frames=None`` to allow it).
    """
    indices = list(range(frames)) if isinstance(frames, int) else [int(i) for i in frames]
    if not indices:
        return []
    total = len(indices)
    if n_clips is None:
        if max_clip_frames is None:
            n_clips = 1
        else:
            if max_clip_frames <= 0:
                raise ValueError("max_clip_frames must be positive")
            n_clips = math.ceil(total / max_clip_frames)
    if n_clips <= 0:
        raise ValueError("n_clips must be positive")
    n_clips = min(n_clips, total)
    if max_clip_frames is not None and math.ceil(total / n_clips) > max_clip_frames:
        raise ValueError(
            f"{n_clips} clips of {total} frames exceed max_clip_frames={max_clip_frames}; "
            "use more clips or max_clip_frames=None"
        )
    base, extra = divmod(total, n_clips)
    clips, start = [], 0
    for k in range(n_clips):
        stop = start + base + (1 if k < extra else 0)
        clips.append(indices[start:stop])
        start = stop
    return clips


def write_video(
    path: str | os.PathLike[str], frames: np.ndarray, *, fps: float = 8.0, codec: str = "h264", crf: int = 10
) -> None:
    """Write uint8 RGB frames ``[T, H, W, 3]`` as an mp4 (``yuv420p``; ``H`` and ``W``
    must be even). Single-threaded with preset ``ultrafast``, so the bytes are a function
    of the frames. ``codec`` is ``h264`` (libx264) or ``mpeg4``; ``crf`` (h264) or
    ``qscale`` (mpeg4) sets the quality."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even frame sides, got {height}x{width}")
    from fractions import Fraction

    target: Any = path if hasattr(path, "write") else str(path)  # a file object (codec_roundtrip) or a path
    with av.open(target, mode="w", format="mp4") as container:
        stream: Any = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        if codec in ("h264", "libx264"):
            # ultrafast: slower presets read uninitialised memory on tiny frames (the
            # bytes then depend on what the process allocated before), ultrafast does not.
            stream.options = {"crf": str(crf), "preset": "ultrafast"}
        elif codec == "mpeg4":
            stream.options = {"qscale": str(max(1, min(crf, 31)))}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def codec_roundtrip(frames: np.ndarray, *, fps: float = 8.0, codec: str = "h264") -> np.ndarray:
    """``frames`` as a reader sees them after :func:`write_video` (in memory): the
    chroma subsampling and coding loss of the benchmark's own videos, for models trained
    on rendered frames that must work on decoded ones."""
    import io

    buffer = io.BytesIO()
    write_video(buffer, frames, fps=fps, codec=codec)
    buffer.seek(0)
    with av.open(buffer) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(decoded)


def count_frames(path: str | os.PathLike[str]) -> int:
    """Number of frames, from the container when it says, else by decoding."""
    path = existing_video(path)
    try:
        with av.open(str(path)) as container:
            stream = video_stream(container, path)
            if stream.frames:
                return int(stream.frames)
            return sum(1 for _ in container.decode(stream))
    except _DECODE_ERRORS as exc:
        raise undecodable(path, exc) from exc


def existing_video(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or a one-line error when it is missing or not a file."""
    path = Path(path)
    if not path.is_file():
        raise VideoFileError(str(path), "no such file" if not path.exists() else "not a file")
    return path


def video_stream(container: Any, path: Path) -> Any:
    """The first video stream of an open container, or a one-line error naming the file."""
    if not container.streams.video:
        raise VideoFileError(str(path), "it holds no video stream (damaged or not a video)")
    return container.streams.video[0]


def undecodable(path: Path, exc: BaseException) -> VideoFileError:
    """The one-line error for a PyAV failure while decoding ``path``."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return VideoFileError(
        str(path), f"it does not decode ({type(exc).__name__}: {reason}); damaged or truncated?"
    )


def read_frames(
    path: str | os.PathLike[str], n_frames: int | None = None, *, frame_range: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode uint8 RGB frames ``[T, H, W, 3]``.

    ``n_frames=None`` returns every frame; otherwise ``n_frames`` frames at
    :func:`uniform_indices` (repeating frames when the video is shorter). ``frame_range``
    ``(start, stop)`` restricts sampling to those frames (a clip of the video).
    """
    path = existing_video(path)
    sampling = n_frames is not None or frame_range is not None
    frames: list[np.ndarray] | None = None
    try:
        with av.open(str(path)) as container:
            stream = video_stream(container, path)
            stream.thread_type = "NONE"  # tiny frames: threads cost more than they save
            total = int(stream.frames or 0)
            if total and sampling:
                picked = _decode_indices(container.decode(stream), _wanted(total, n_frames, frame_range))
                if picked is not None:
                    return picked
            else:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        if frames is None:  # the container's frame count was wrong: decode everything
            with av.open(str(path)) as container:
                stream = video_stream(container, path)
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except _DECODE_ERRORS as exc:
        raise undecodable(path, exc) from exc
    if not frames:
        raise VideoFileError(str(path), "no frames decode from it (damaged or truncated?)")
    if not sampling:
        return np.stack(frames)
    return np.stack([frames[i] for i in _wanted(len(frames), n_frames, frame_range)])


def _wanted(total: int, n_frames: int | None, frame_range: tuple[int, int] | None) -> list[int]:
    start, stop = frame_range if frame_range is not None else (0, total)
    start, stop = max(0, start), min(total, stop)
    if stop <= start:
        raise ValueError(f"empty frame range {frame_range} for a video of {total} frames")
    if n_frames is None:
        return list(range(start, stop))
    return [start + i for i in uniform_indices(stop - start, n_frames)]


def _decode_indices(decoded, wanted: list[int]) -> np.ndarray | None:
    """Keep only the frames at ``wanted`` (may repeat); None if the video ends early."""
    need = set(wanted)
    last = max(need)
    kept: dict[int, np.ndarray] = {}
    for i, frame in enumerate(decoded):
        if i in need:
            kept[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    if len(kept) < len(need):
        return None
    return np.stack([kept[i] for i in wanted])
