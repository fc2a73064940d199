"""Reading users' videos with PyAV by seeking to the sampled frames.

Real videos are long (an ActivityNet video runs for minutes at 30 fps), so decoding every
frame to keep 8 or 50 of them is the cost users hit first (host-RAM OOM reports against
ms-swift and Video-o3). :func:`read_sampled_frames` instead seeks to the keyframe before
each sampled frame (found by demuxing, which decodes nothing) and decodes forward only to
the wanted frame; a target whose keyframe the decoder has already passed is reached by
decoding on, so no frame is decoded twice. Where seeking cannot be
trusted -- a frame without a timestamp, a target the seek overshot, a video that ends
before the frame count said -- it falls back to a sequential decode that keeps only the
wanted frames, so memory stays bounded by what is returned.

:func:`probe_video` reads what the :class:`~rlaif.core.records.VideoRef` records (frame
count and frame rate, which Qwen's temporal position ids need) and decodes the first
frame, so a file that does not decode fails when the benchmark loads, not mid-run. Mp4
and avi containers state a frame count; webm and mkv do not, and the count is then
estimated from the duration and frame rate (``VideoInfo.exact`` is false).

A folder of frame images (VLM-RLAIF ships videos as 50 extracted frames) is read by
:func:`read_image_frames`, also through PyAV.
"""

from __future__ import annotations

import bisect
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from rlaif.core.errors import VideoFileError
from rlaif.plugins.benchmarks.video_world.video_io import (
    existing_video,
    read_frames,
    undecodable,
    uniform_indices,
    video_stream,
)

#: Containers looked for when an annotation names a video without its extension.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".mkv", ".avi", ".mov")

#: What PyAV raises on a damaged file (FFmpeg errors, EOFError among them) and OSError
#: for a file that vanished or cannot be read.
_DECODE_ERRORS = (av.error.FFmpegError, OSError, EOFError)

@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learnt of a file. ``start`` is the first frame's time in
    seconds (timestamps are counted from it); ``exact`` says whether ``n_frames`` is the
    container's own count rather than duration x fps."""

    n_frames: int
    fps: float | None
    start: float = 0.0
    exact: bool = True


class _SeekFailed(Exception):
    """Seeking cannot be trusted for this file; decode sequentially instead."""


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, frame rate and first timestamp of a video, decoding one frame.
    Raises :class:`VideoFileError` for a file that is missing or does not decode."""
    path = existing_video(path)
    try:
        with av.open(str(path)) as container:
            stream = video_stream(container, path)
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise VideoFileError(str(path), "no frames decode from it (damaged or truncated?)")
            fps = _fps(stream)
            start = float(first.time) if first.time is not None else 0.0
            if stream.frames:
                return VideoInfo(int(stream.frames), fps, start, exact=True)
            duration = _duration(container, stream)
            if fps and duration:
                return VideoInfo(max(1, round((duration - start) * fps)), fps, start, exact=False)
        return VideoInfo(count_decoded_frames(path), fps, start, exact=True)
    except _DECODE_ERRORS as exc:
        raise undecodable(path, exc) from exc


def count_decoded_frames(path: str | os.PathLike[str]) -> int:
    """Frames that really decode (slow: every frame is decoded, none is kept)."""
    path = existing_video(path)
    try:
        with av.open(str(path)) as container:
            stream = video_stream(container, path)
            return sum(1 for _ in container.decode(stream))
    except _DECODE_ERRORS as exc:
        raise undecodable(path, exc) from exc


def read_sampled_frames(
    path: str | os.PathLike[str],
    n_frames: int | None = None,
    *,
    frame_range: Sequence[int] | None = None,
    info: VideoInfo | None = None,
    seek: bool = True,
) -> np.ndarray:
    """uint8 RGB frames ``[T, H, W, 3]`` at :func:`uniform_indices` of the video (all
    frames when ``n_frames`` is None), within ``frame_range`` ``(start, stop)`` if given.

    ``seek=True`` seeks to each sampled frame (see the module docstring) and falls back to
    a sequential decode when seeking cannot be trusted; ``seek=False`` always decodes
    sequentially, keeping only the wanted frames. ``info`` (from :func:`probe_video`)
    saves probing the file again."""
    path = existing_video(path)
    info = info or probe_video(path)
    try:
        if seek and n_frames is not None and info.fps:
            try:
                return _seek_frames(path, _wanted(info.n_frames, n_frames, frame_range), info)
            except _SeekFailed:
                pass
        return _sequential_frames(path, n_frames, frame_range, info)
    except _DECODE_ERRORS as exc:
        raise undecodable(path, exc) from exc


def read_all_frames(path: str | os.PathLike[str]) -> np.ndarray:
    """Every frame, decoded in order: the reference the sampled reads must agree with."""
    return read_frames(path)


def read_image_frames(
    files: Sequence[str | os.PathLike[str]], n_frames: int | None = None, *, frame_range: Sequence[int] | None = None
) -> np.ndarray:
    """uint8 RGB frames ``[T, H, W, 3]`` from a list of frame images (in video order),
    sampled like :func:`read_sampled_frames`; only the sampled images are decoded."""
    if not files:
        raise VideoFileError("(no frames)", "the frame list is empty")
    out: dict[int, np.ndarray] = {}
    wanted = _wanted(len(files), n_frames, frame_range)
    for i in sorted(set(wanted)):
        path = existing_video(files[i])
        try:
            with av.open(str(path)) as container:
                frame = next(iter(container.decode(video_stream(container, path))), None)
        except _DECODE_ERRORS as exc:
            raise undecodable(path, exc) from exc
        if frame is None:
            raise VideoFileError(str(path), "the image does not decode")
        out[i] = frame.to_ndarray(format="rgb24")
    shapes = {a.shape for a in out.values()}
    if len(shapes) > 1:
        raise VideoFileError(str(Path(files[0]).parent), f"its frame images differ in size: {sorted(shapes)}")
    return np.stack([out[i] for i in wanted])


# -- seeking -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _keyframes(path: str, size: int, mtime_ns: int) -> tuple[int, ...]:
    """Timestamps (stream time base) of the video's keyframes, read by demuxing without
    decoding (a fraction of a decode's cost); keyed by the file's size and mtime."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        return tuple(sorted(p.pts for p in container.demux(stream) if p.is_keyframe and p.pts is not None))


def keyframe_times(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Keyframe timestamps of ``path`` in its video stream's time base (cached)."""
    stat = Path(path).stat()
    return _keyframes(str(path), stat.st_size, stat.st_mtime_ns)


def _seek_frames(path: Path, wanted: list[int], info: VideoInfo) -> np.ndarray:
    """Frames at ``wanted`` (may repeat), decoding each from the keyframe before it --
    unless the decoder already stands between that keyframe and the target, when it
    simply decodes on (so dense samples never decode a frame twice). Raises
    :class:`_SeekFailed` when a frame has no timestamp, a seek lands past its target or
    the video ends early."""
    assert info.fps is not None
    fps = info.fps
    keys = keyframe_times(path)
    if not keys:
        raise _SeekFailed
    kept: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = video_stream(container, path)
        time_base = stream.time_base
        if time_base is None:
            raise _SeekFailed
        key_index = [round((float(k * time_base) - info.start) * fps) for k in keys]
        decoded: Any = None
        position = -1  # index of the last frame decoded
        for target in sorted(set(wanted)):
            k = max(0, bisect.bisect_right(key_index, target) - 1)
            landed = decoded is None or key_index[k] > position
            if landed:
                container.seek(int(keys[k]), stream=stream, backward=True, any_frame=False)
                decoded = container.decode(stream)
            for frame in decoded:
                if frame.time is None:
                    raise _SeekFailed
                position = round((float(frame.time) - info.start) * fps)
                if landed and position > target:
                    raise _SeekFailed  # the seek went past the frame
                landed = False
                if position >= target:
                    if position > target:
                        raise _SeekFailed  # timestamps skip this frame: not a constant rate
                    kept[target] = frame.to_ndarray(format="rgb24")
                    break
            else:
                raise _SeekFailed  # ended before the target: the frame count was an estimate
    return np.stack([kept[i] for i in wanted])


def _sequential_frames(
    path: Path, n_frames: int | None, frame_range: Sequence[int] | None, info: VideoInfo
) -> np.ndarray:
    """Decode in order, keeping only the wanted frames. When the frame count was an
    estimate the video is counted first (a decode that keeps nothing), so the sampled
    indices are those of the frames that really exist."""
    total = info.n_frames if info.exact else count_decoded_frames(path)
    wanted = _wanted(total, n_frames, frame_range)
    need, last = set(wanted), max(wanted)
    kept: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = video_stream(container, path)
        for i, frame in enumerate(container.decode(stream)):
            if i in need:
                kept[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    if len(kept) < len(need):
        if info.exact:  # the container's count was wrong: count for real and sample again
            return _sequential_frames(path, n_frames, frame_range, VideoInfo(total, info.fps, info.start, False))
        raise VideoFileError(str(path), f"only {len(kept)} of the sampled frames decode (truncated?)")
    return np.stack([kept[i] for i in wanted])


# -- helpers -------------------------------------------------------------------------------


def _wanted(total: int, n_frames: int | None, frame_range: Sequence[int] | None) -> list[int]:
    """Frame indices to return: ``n_frames`` uniform ones (all when None) within
    ``frame_range`` ``[start, stop)``, clipped to the video."""
    start, stop = (int(frame_range[0]), int(frame_range[1])) if frame_range is not None else (0, total)
    start, stop = max(0, start), min(total, stop)
    if stop <= start:
        raise ValueError(f"empty frame range {frame_range} for a video of {total} frames")
    if n_frames is None:
        return list(range(start, stop))
    return [start + i for i in uniform_indices(stop - start, n_frames)]


def _fps(stream: Any) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _duration(container: Any, stream: Any) -> float | None:
    """Seconds from the first timestamp to the end of the last frame, as the container
    states it (the stream's own duration, else the container's)."""
    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base) + float((stream.start_time or 0) * stream.time_base)
    if container.duration:
        return float(container.duration) / av.time_base + float(container.start_time or 0) / av.time_base
    return None
