"""The video-world benchmark: determinism, real mp4 round trips, sampling and clips, QA,
scoring, baselines that show temporal questions need more than one frame, index reuse."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlaif.core.errors import UsageError
from rlaif.core.protocols import Benchmark
from rlaif.core.records import Prompt
from rlaif.plugins.benchmarks.video_world import VideoWorld
from rlaif.plugins.benchmarks.video_world.baselines import (
    detect_objects,
    random_baseline,
    single_frame_baseline,
)
from rlaif.plugins.benchmarks.video_world.benchmark import SPLITS
from rlaif.plugins.benchmarks.video_world.scoring import (
    extract_facts,
    is_correct,
    long_answer_score,
    normalize_answer,
)
from rlaif.plugins.benchmarks.video_world.video_io import (
    count_frames,
    read_frames,
    split_clips,
    uniform_indices,
    write_video,
)
from rlaif.plugins.benchmarks.video_world.vocab import LEANING_ANSWERS, QTYPES, SHORT_QTYPES
from rlaif.plugins.benchmarks.video_world.world import generate_video, state_at
from rlaif.plugins.encoders.tiny_conv import labelled_fingerprint, world_fingerprint

SMALL = {"n_sft": 8, "n_rl": 6, "n_test": 6, "progress": False}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> VideoWorld:
    return VideoWorld(root=str(tmp_path_factory.mktemp("world")), seed=0, **SMALL)


@pytest.fixture(scope="module")
def baseline_world(tmp_path_factory: pytest.TempPathFactory) -> VideoWorld:
    """Enough test videos for baseline accuracies to mean something (~40 per type)."""
    return VideoWorld(
        root=str(tmp_path_factory.mktemp("baseline")), seed=1, n_sft=30, n_rl=0, n_test=40, progress=False
    )


# -- registration and protocol -----------------------------------------------------------


def test_registered_through_the_benchmarks_plugin_and_built_by_the_registry(tmp_path):
    from rlaif.core.registry import Registry
    from rlaif.plugins import benchmarks

    registry = Registry()
    registry.add_plugin(benchmarks, "builtin-benchmarks")
    spec = registry.get("benchmark", "video-world")
    assert spec.target == "rlaif.plugins.benchmarks.video_world:VideoWorld" and spec.description
    bench = registry.build(
        "benchmark",
        "video-world",
        {"root": str(tmp_path), "n_sft": 1, "n_rl": 1, "n_test": 1, "progress": False},
    )
    assert isinstance(bench, Benchmark)
    assert bench.name == "video-world" and bench.has_ground_truth


def test_registering_and_scoring_import_neither_numpy_nor_av():
    code = (
        "import sys\n"
        "import rlaif.plugins.benchmarks as b\n"
        "b.rlaif_register_benchmarks(lambda *a, **k: None)\n"
        "from rlaif.plugins.benchmarks.video_world import scoring\n"
        "assert scoring.is_correct('counting', '2', 'two')\n"
        "bad = {'numpy', 'av', 'torch'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- generation --------------------------------------------------------------------------


def test_same_seed_same_world_and_frames_other_seed_differs(world, tmp_path):
    again = VideoWorld(root=str(tmp_path / "again"), seed=0, **SMALL)
    other = VideoWorld(root=str(tmp_path / "other"), seed=1, **SMALL)
    for split in ("sft", "test"):
        mine, theirs = world.prompts(split), again.prompts(split)
        assert [(p.prompt_id, p.question, p.reference) for p in mine] == [
            (p.prompt_id, p.question, p.reference) for p in theirs
        ]
        for a, b in zip(world.videos(split), again.videos(split), strict=True):
            assert world.events(a) == again.events(b)
            assert np.array_equal(world.frames(a), again.frames(b))
            assert open(a.path, "rb").read() == open(b.path, "rb").read()  # byte-identical mp4s
    assert [p.reference for p in world.prompts("sft")] != [p.reference for p in other.prompts("sft")]
    assert world.events(world.videos("sft")[0]) != other.events(other.videos("sft")[0])


def test_generation_invariants():
    for i in range(40):
        video = generate_video(f"v{i}", f"inv/{i}", canvas=32)
        assert 16 <= video.n_frames <= 48 and 1 <= len(video.objects) <= 3
        frames = [e.frame for e in video.events]
        assert frames == sorted(frames) and len(set(frames)) == len(frames) and min(frames, default=1) > 0
        assert len({o.shape for o in video.objects}) == len(video.objects)
        rendered = video.render()
        assert rendered.shape == (video.n_frames, 32, 32, 3) and rendered.dtype == np.uint8
        # state derived from events agrees with the rendered pixels
        f = video.n_frames // 2
        visible = {s.colour for s in state_at(video.objects, video.events, f) if s.visible}
        assert {d.colour for d in detect_objects(rendered[f])} == visible


# -- video io ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_mp4_round_trip(tmp_path, codec):
    video = generate_video("rt", "round-trip", canvas=32)
    frames = video.render()
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=8.0, codec=codec)
    with av.open(str(path)) as container:  # a real mp4 that PyAV opens
        assert "mp4" in container.format.name
        stream = container.streams.video[0]
        assert stream.codec_context.name in ({"h264"} if codec == "h264" else {"mpeg4"})
        assert (stream.width, stream.height) == (32, 32)
    decoded = read_frames(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert count_frames(path) == len(frames)
    err = np.abs(decoded.astype(int) - frames.astype(int)).mean()
    assert err < (6.0 if codec == "h264" else 12.0)
    sampled = read_frames(path, 5)
    assert sampled.shape == (5, 32, 32, 3)
    for got, i in zip(sampled, uniform_indices(len(frames), 5), strict=True):
        assert np.array_equal(got, decoded[i])
    clip = read_frames(path, 3, frame_range=(4, 10))
    assert np.array_equal(clip, decoded[[4, 7, 9]])


def test_write_video_rejects_odd_sides(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))


def test_frames_sample_uniformly_and_repeat_for_short_videos(world):
    video = world.videos("sft")[0]
    every = world.frames(video)
    assert len(every) == video.n_frames
    many = world.frames(video, 50)
    assert many.shape[0] == 50
    assert np.array_equal(many, every[uniform_indices(len(every), 50)])


def test_uniform_indices():
    assert uniform_indices(10, 5) == [0, 2, 4, 7, 9]
    assert uniform_indices(100, 1) == [0]
    assert uniform_indices(5, 5) == [0, 1, 2, 3, 4]
    assert uniform_indices(3, 7) == [0, 0, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        uniform_indices(0, 3)


def test_split_clips_cases():
    assert split_clips(50) == [list(range(0, 17)), list(range(17, 34)), list(range(34, 50))]
    assert split_clips(20) == [list(range(20))]
    assert split_clips(21) == [list(range(11)), list(range(11, 21))]
    assert [len(c) for c in split_clips(50, n_clips=3)] == [17, 17, 16]
    assert split_clips([3, 9, 12], n_clips=5) == [[3], [9], [12]]  # no empty clips
    assert split_clips(0) == []
    with pytest.raises(ValueError):
        split_clips(50, n_clips=1)  # a 50-frame clip breaks max_clip_frames=20
    assert split_clips(50, max_clip_frames=None, n_clips=1) == [list(range(50))]


@settings(max_examples=60, deadline=None)  # no deadline: CI machines are shared
@given(
    st.lists(st.integers(0, 500), min_size=1, max_size=120),
    st.integers(1, 30),
    st.none() | st.integers(1, 12),
)
def test_split_clips_covers_all_frames_in_order(indices, max_clip, n_clips):
    try:
        clips = split_clips(indices, max_clip_frames=max_clip, n_clips=n_clips)
    except ValueError:
        assert n_clips is not None and -(-len(indices) // n_clips) > max_clip
        return
    assert [i for clip in clips for i in clip] == indices
    assert all(1 <= len(c) <= max_clip for c in clips)
    assert max(map(len, clips)) - min(map(len, clips)) <= 1
    if n_clips is not None:
        assert len(clips) == min(n_clips, len(indices))


# -- ground truth and QA ---------------------------------------------------------------------


def test_all_question_types_with_answers_of_varied_length(world):
    prompts = world.prompts("sft") + world.prompts("rl")
    assert {p.qtype for p in prompts} == set(QTYPES)
    words = {q: [len(p.reference.split()) for p in prompts if p.qtype == q] for q in QTYPES}
    assert max(words["attribute"] + words["counting"] + words["direction"]) == 1
    assert min(words["temporal"]) >= 3
    assert min(words["describe"]) > max(words["temporal"]) // 2 and max(words["describe"]) >= 12
    assert len({p.prompt_id for p in prompts}) == len(prompts)
    p = next(p for p in prompts if p.qtype == "describe")
    assert p.question == "Describe this video in detail."
    assert p.reference == p.meta["gold_narrative"] == world.narrative(p.video)
    assert p.meta["clip_captions"] == world.clip_captions(p.video)
    assert all(len(c) <= 20 for c in split_clips(p.video.n_frames))


def test_the_labelled_split_leans_to_one_answer_per_question_and_rl_and_test_do_not(tmp_path):
    lean = VideoWorld(root=str(tmp_path / "w"), seed=0, n_sft=40, n_rl=4, n_test=4, progress=False)
    even = VideoWorld(root=str(tmp_path / "w"), seed=0, n_sft=40, n_rl=4, n_test=4, label_lean=0.0,
                      progress=False)  # same videos, every question served
    assert lean.label_lean == 0.75
    for split in ("rl", "test"):
        assert lean.prompts(split) == even.prompts(split)
    served = {p.prompt_id for p in lean.prompts("sft")}
    assert served < {p.prompt_id for p in even.prompts("sft")}
    closed = [p for p in even.prompts("sft") if p.qtype in ("attribute", "counting", "direction")]
    others = [p for p in closed if p.reference not in LEANING_ANSWERS]
    assert len(others) >= 60
    assert all(p.prompt_id in served for p in even.prompts("sft") if p not in others)  # open ones, leaning ones
    kept = sum(p.prompt_id in served for p in others) / len(others)
    assert 0.1 < kept < 0.4  # ~1 - label_lean, by a seeded hash
    assert lean.prompts("sft") == lean.prompts("sft")  # the same questions every time
    dropped = len(even.prompts("sft")) - len(served)
    assert len(even.texts()) - len(lean.texts()) == 2 * dropped  # nor their words in the LM corpus
    assert world_fingerprint(lean) == world_fingerprint(even)  # the encoder's key: videos only
    assert labelled_fingerprint(lean) != labelled_fingerprint(even)  # the base LM's and SFT's key
    for bad in (1.0, -0.1):
        with pytest.raises(UsageError, match="label_lean"):
            VideoWorld(root=str(tmp_path / "w"), seed=0, n_sft=40, n_rl=4, n_test=4, label_lean=bad)


def test_clip_captions_recomputed_for_forced_clip_counts(world):
    video = max(world.videos("rl"), key=lambda v: v.n_frames)
    three = world.clip_captions(video, n_clips=3)
    assert len(three) == 3 and all(three)
    assert three[0].startswith("a ")  # the first clip opens with the initial state
    for event in world.events(video):
        assert sum(event.caption in c for c in three) == 1  # each event in exactly one clip
    assert world.clip_captions(video) == world.clip_captions(video, max_clip_frames=20)
    sampled = world.clip_captions(video, n_frames=50)  # VLM-RLAIF: 50 frames, clips <= 20
    assert len(sampled) == 3 and world.narrative(video, n_frames=50) == " ".join(sampled)
    assert world.frames(video, 4, frame_range=(0, 8)).shape[0] == 4


def test_ground_truth_answers_score_perfectly(world):
    prompts = world.prompts("test")
    metrics = world.score(prompts, [p.reference for p in prompts])
    assert metrics["acc/all"] == metrics["acc/short"] == 1.0
    assert metrics["score/describe"] == 5.0
    assert all(metrics[f"acc/{q}"] == 1.0 for q in QTYPES)
    stripped = [Prompt(p.prompt_id, p.video, p.question, None, p.qtype) for p in prompts]
    assert world.score(stripped, [p.reference for p in prompts])["acc/all"] == 1.0
    with pytest.raises(ValueError):
        world.score(prompts, [])


def test_single_frame_cannot_answer_temporal_questions(baseline_world):
    single = single_frame_baseline(baseline_world, "test")
    assert single["acc/temporal"] < 0.6 and single["acc/direction"] < 0.6
    assert single["acc/attribute"] > 0.7  # yet a single frame does see colours and shapes
    blind = random_baseline(baseline_world, "test", "majority")
    assert blind["acc/temporal"] < 0.2 and blind["acc/attribute"] < single["acc/attribute"]
    uniform = random_baseline(baseline_world, "test", "uniform", seed=3)
    assert uniform["acc/short"] < 0.5


def test_qtypes_option_filters_prompts(world, tmp_path):
    only = VideoWorld(root=str(world.root), qtypes="temporal,direction", **SMALL)
    assert {p.qtype for p in only.prompts("sft")} == {"temporal", "direction"}
    with pytest.raises(UsageError):
        VideoWorld(root=str(tmp_path), qtypes=["when"], **SMALL)


def test_sft_examples_and_texts(world):
    examples = world.sft_examples()
    captions = [e for e in examples if e.qtype == "caption"]
    assert captions and all(
        e.reference and e.meta["frame_range"][1] > e.meta["frame_range"][0] for e in captions
    )
    assert len(examples) == len(world.prompts("sft")) + len(captions)
    texts = world.texts()
    assert "Describe this video in detail." in texts
    test_answers = {p.reference for p in world.prompts("test") if p.qtype == "describe"}
    assert not test_answers & set(texts)  # held-out text stays out of pretraining


# -- splits and cache ------------------------------------------------------------------------


def test_splits_disjoint(world):
    ids = {s: {v.video_id for v in world.videos(s)} for s in ("sft", "rl", "test")}
    assert not (ids["sft"] & ids["rl"] or ids["sft"] & ids["test"] or ids["rl"] & ids["test"])
    paths = {s: {v.path for v in world.videos(s)} for s in ("sft", "rl", "test")}
    assert len(set().union(*paths.values())) == sum(map(len, paths.values()))
    content = {s: {open(p, "rb").read() for p in paths[s]} for s in paths}
    assert not (content["sft"] & content["test"] or content["rl"] & content["test"])
    with pytest.raises(UsageError):
        world.prompts("train")


def test_index_is_reused_without_rewriting_files(world):
    files = sorted(world.root.rglob("*"))
    before = {f: os.stat(f).st_mtime_ns for f in files}
    again = VideoWorld(root=str(world.root), seed=0, **SMALL)
    assert again.build_seconds is None and world.build_seconds is not None
    assert {f: os.stat(f).st_mtime_ns for f in sorted(world.root.rglob("*"))} == before
    assert again.prompts("rl") == world.prompts("rl")
    index = json.loads((world.root / "index.json").read_text())
    assert index["format"] == "video-world/1" and set(index["splits"]) == {"sft", "rl", "test"}


def test_killed_build_is_redone_and_other_options_refused(tmp_path):
    root = tmp_path / "w"
    VideoWorld(root=str(root), **SMALL)
    (root / "index.json").unlink()  # as if the build had been killed before the index
    rebuilt = VideoWorld(root=str(root), **SMALL)
    assert rebuilt.build_seconds is not None and len(rebuilt.prompts("sft")) > 0
    assert not list(root.rglob("*.tmp*"))
    with pytest.raises(UsageError, match="other options"):
        VideoWorld(root=str(root), **{**SMALL, "n_sft": 9})


def test_default_root_is_a_cache_folder_keyed_by_options(tmp_path, monkeypatch):
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    a = VideoWorld(**{**SMALL, "n_sft": 1, "n_rl": 1, "n_test": 1})
    b = VideoWorld(**{**SMALL, "n_sft": 1, "n_rl": 1, "n_test": 1, "seed": 5})
    assert a.root.parent == b.root.parent == tmp_path / "world" and a.root != b.root


# -- scoring -------------------------------------------------------------------------------------


def test_normalize_answer():
    assert normalize_answer("The Red circle stopped.") == "red circle stopped"
    assert normalize_answer("  Two! ") == "2" == normalize_answer("2")
    assert normalize_answer("an apple, a day") == "apple day"


@pytest.mark.parametrize(
    ("qtype", "pred", "ref", "ok"),
    [
        ("counting", "2", "two", True),
        ("counting", "Three.", "three", True),
        ("counting", "three objects", "three", False),
        ("attribute", "Red", "red", True),
        ("direction", "left", "right", False),
        ("temporal", "Red circle stopped", "the red circle stopped", True),
        ("temporal", "the red circle stopped", "the blue circle stopped", False),
    ],
)
def test_is_correct(qtype, pred, ref, ok):
    assert is_correct(qtype, pred, ref) is ok


def test_long_answer_score_is_monotone_in_overlap():
    ref = (
        "a big red circle moves left. a small blue square sits still. the blue square turns green. "
        "the red circle and the green square collide."
    )
    sentences = [s.strip() + "." for s in ref.split(".") if s.strip()]
    scores = [long_answer_score(" ".join(sentences[:k]), ref) for k in range(len(sentences) + 1)]
    assert scores[0] == 0.0 and scores[-1] == 5.0
    assert all(a < b for a, b in zip(scores, scores[1:], strict=False))
    assert long_answer_score("", ref) == 0.0
    assert long_answer_score("a red circle moves right.", ref) < long_answer_score(
        "a red circle moves left.", ref
    )
    wrong = "a big purple triangle moves up."
    assert long_answer_score(wrong, ref) == 0.0
    assert long_answer_score(sentences[0] + " " + wrong, ref) < long_answer_score(sentences[0], ref)
    assert is_correct("describe", ref, ref) and not is_correct("describe", "", ref)


def test_item_score(world):
    temporal = next(p for p in world.prompts("sft") if p.qtype == "temporal")
    assert world.item_score(temporal, temporal.reference) == 1.0
    assert world.item_score(temporal, "") == 0.0
    near = temporal.reference.replace("the ", "the purple ", 1)
    assert 0.0 < world.item_score(temporal, near) < 0.5
    describe = next(p for p in world.prompts("sft") if p.qtype == "describe")
    assert world.item_score(describe, describe.reference) == 1.0
    assert 0.0 < world.item_score(describe, describe.reference.split(".")[0]) < 1.0
    counting = next(p for p in world.prompts("sft") if p.qtype == "counting")
    assert world.item_score(counting, "seventeen") == 0.0


def test_extract_facts():
    facts = extract_facts("The big red circle turns blue and moves left.")
    assert {
        ("object", "red", "circle"),
        ("size", "red", "circle", "big"),
        ("action", "red", "circle", "turn:blue"),
        ("action", "red", "circle", "left"),
        ("action", "red", "circle", "move"),
    } <= facts
    assert extract_facts("nothing to see") == set()


def test_score_table_keys(world):
    prompts = world.prompts("sft")
    metrics = world.score(prompts, ["" for _ in prompts])
    assert {"acc/short", "acc/all", "score/describe"} | {f"acc/{q}" for q in SHORT_QTYPES} <= set(metrics)
    assert metrics["acc/all"] == 0.0 and metrics["score/describe"] == 0.0


# -- damaged cache -------------------------------------------------------------------------------

TINY = {"n_sft": 2, "n_rl": 2, "n_test": 1, "progress": False}


def _snapshot(world: VideoWorld) -> dict[str, tuple[bytes, np.ndarray]]:
    return {v.video_id: (open(v.path, "rb").read(), world.frames(v)) for s in SPLITS for v in world.videos(s)}


def _damage_four(world: VideoWorld) -> list[str]:
    """Garbage of the same size, a cut file, a deleted file and flipped bytes mid-file
    (same size, still an mp4 header): the four ways a cache goes bad."""
    paths = [v.path for s in SPLITS for v in world.videos(s)][:4]
    garbage, cut, deleted, flipped = paths
    size = os.path.getsize(garbage)
    open(garbage, "wb").write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    data = open(cut, "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    os.unlink(deleted)
    data = bytearray(open(flipped, "rb").read())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
    open(flipped, "wb").write(bytes(data))
    return paths


def test_index_records_each_videos_size_and_hash(tmp_path):
    world = VideoWorld(root=str(tmp_path / "w"), **TINY)
    entries = [e for s in SPLITS for e in json.loads(world.index_path.read_text())["splits"][s]]
    assert len(entries) == 5
    for entry in entries:
        data = (world.root / entry["file"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("new_instance", [True, False], ids=["new-instance", "same-instance"])
def test_damaged_or_missing_videos_are_rerendered_to_the_same_frames(tmp_path, new_instance):
    world = VideoWorld(root=str(tmp_path / "w"), **TINY)
    before = _snapshot(world)  # every file hashed once in this process
    damaged = _damage_four(world)  # new mtimes, so hashed again on next use
    if new_instance:
        world = VideoWorld(root=str(tmp_path / "w"), **TINY)
        assert world.build_seconds is None  # the index is reused, only videos are redone
    index_before = world.index_path.read_bytes()
    for s in SPLITS:
        for v in world.videos(s):
            assert np.array_equal(world.frames(v), before[v.video_id][1]), v.video_id
            assert open(v.path, "rb").read() == before[v.video_id][0]  # byte-identical again
    assert sorted(world.rebuilt) == sorted(damaged)
    assert world.index_path.read_bytes() == index_before  # same bytes, so the index stands
    # sampled reads and reads by id go through the same check
    os.unlink(damaged[0])
    video = world.videos("sft")[0]
    every = before[video.video_id][1]
    assert np.array_equal(world.frames(video.video_id, 3), every[uniform_indices(len(every), 3)])
    assert not list(world.root.rglob("*.tmp*"))


def test_damage_that_keeps_size_and_mtime_is_caught_when_decoding_fails(tmp_path):
    """The cheap per-read check (size, and a hash only when size or mtime changed) misses
    bytes swapped under an unchanged mtime; the failed decode then checks the hash."""
    world = VideoWorld(root=str(tmp_path / "w"), **TINY)
    video = world.videos("rl")[0]
    frames = world.frames(video)  # hashed now
    stat = os.stat(video.path)
    open(video.path, "wb").write(bytes(stat.st_size))  # zeros: same size, no mp4
    os.utime(video.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert np.array_equal(world.frames(video), frames) and world.rebuilt == [video.path]


def test_damaged_fresh_alignment_videos_are_rerendered(tmp_path):
    world = VideoWorld(root=str(tmp_path / "w"), **TINY)
    refs = list({p.video.path: p.video for p in world.alignment_examples(2)}.values())
    before = [world.frames(ref) for ref in refs]
    os.unlink(refs[0].path)
    open(refs[1].path, "wb").write(b"not an mp4")
    assert all(np.array_equal(world.frames(ref), frames) for ref, frames in zip(refs, before, strict=True))
    assert world.rebuilt == [refs[0].path, refs[1].path]


def test_index_without_hashes_still_rebuilds_missing_and_undecodable_videos(tmp_path):
    world = VideoWorld(root=str(tmp_path / "w"), **TINY)
    before = _snapshot(world)
    index = json.loads(world.index_path.read_text())
    for s in SPLITS:  # as the index was written before sizes and hashes were recorded
        for entry in index["splits"][s]:
            del entry["bytes"], entry["sha256"]
    world.index_path.write_text(json.dumps(index))
    garbage, cut, deleted, flipped = _damage_four(world)
    world = VideoWorld(root=str(tmp_path / "w"), **TINY)
    for s in SPLITS:
        for v in world.videos(s):
            if v.path != flipped:  # bytes flipped mid-file may still decode: no hash to tell
                assert np.array_equal(world.frames(v), before[v.video_id][1]), v.video_id
    assert sorted(world.rebuilt) == sorted([garbage, cut, deleted])
    index = json.loads(world.index_path.read_text())
    stamped = {str(world.root / e["file"]) for s in SPLITS for e in index["splits"][s] if "sha256" in e}
    assert stamped == {garbage, cut, deleted}  # the index learns the stamps of what it re-rendered


@pytest.mark.parametrize("damage", ["garbage", "half", "head", "empty", "missing", "directory"])
def test_users_unreadable_video_is_a_one_line_error_naming_it(tmp_path, world, damage):
    from rlaif.core.errors import VideoFileError

    path = tmp_path / "mine.mp4"
    write_video(path, generate_video("mine", "users-own", canvas=32).render())
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif damage in ("half", "head", "empty"):
        path.write_bytes(data[: {"half": len(data) // 2, "head": 100, "empty": 0}[damage]])
    elif damage == "missing":
        path.unlink()
    else:
        path.unlink()
        path.mkdir()
    for read in (lambda: read_frames(path), lambda: read_frames(path, 4), lambda: count_frames(path),
                 lambda: world.frames(str(path))):  # fmt: skip
        with pytest.raises(VideoFileError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"cannot read the video {path}: ") and "\n" not in message
    assert str(path) not in world.rebuilt  # a user's file is never rewritten


def test_every_cut_of_a_video_is_a_video_error_or_decodes(tmp_path):
    """PyAV reports a cut mp4 as InvalidDataError, DecoderNotFoundError, EOFError, an
    empty stream list or no frames, depending on where the cut falls; all are one error."""
    from rlaif.core.errors import VideoFileError

    path = tmp_path / "cut.mp4"
    write_video(path, generate_video("cut", "cut-points", canvas=32).render())
    data = path.read_bytes()
    for cut in range(0, len(data), max(1, len(data) // 60)):
        path.write_bytes(data[:cut])
        try:
            frames = read_frames(path)
        except VideoFileError as exc:
            assert str(path) in str(exc)
        else:
            assert frames.ndim == 4 and len(frames) > 0
