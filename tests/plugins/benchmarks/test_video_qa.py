"""The video-qa benchmark: each annotation format's parser on files written here, one-line
errors for malformed files and missing videos, seeking decode against a full decode,
splits, and discovery through the plugin registry."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import fields
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rlaif.core.errors import AnnotationError, ConfigError, UsageError, VideoFileError, VideoItemError
from rlaif.core.protocols import Benchmark
from rlaif.core.records import VideoRef
from rlaif.plugins.benchmarks.video_qa import VideoQA, decode
from rlaif.plugins.benchmarks.video_qa.benchmark import PreferenceExample, seeded_split
from rlaif.plugins.benchmarks.video_qa.decode import (
    VideoInfo,
    probe_video,
    read_all_frames,
    read_sampled_frames,
)
from rlaif.plugins.benchmarks.video_world.video_io import uniform_indices

#: container -> (PyAV format, encoder)
CONTAINERS = {".mp4": ("mp4", "h264"), ".webm": ("webm", "libvpx"), ".mkv": ("matroska", "h264"),
              ".avi": ("avi", "mpeg4")}


def clip_frames(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` frames that differ from one another (a moving bar over a shade)."""
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i] = (i * 5 + seed * 40) % 200
        frames[i, (i * 3) % size, :, 1] = 255
        frames[i, :, (i + seed) % size, 2] = 255
    return frames


def write_clip(path: Path, n: int = 24, *, fps: int = 8, gop: int = 4, seed: int = 0) -> Path:
    """A tiny video in the container its suffix names, with a keyframe every ``gop``
    frames (so seeking has keyframes to land on)."""
    fmt, codec = CONTAINERS[path.suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.thread_count = 1
        for frame in clip_frames(n, seed=seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: Path, frame: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def require_container(suffix: str, folder: Path) -> None:
    """Skip, with the reason, when this PyAV build cannot write ``suffix`` files."""
    fmt, codec = CONTAINERS[suffix]
    try:
        write_clip(folder / f"probe{suffix}", 2)
    except Exception as exc:  # noqa: BLE001 -- an encoder or muxer missing from this FFmpeg build
        pytest.skip(f"PyAV here cannot write {suffix} ({fmt}/{codec}): {type(exc).__name__}: {exc}")


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mp4s (one with ActivityNet's ``v_`` prefix), one webm, mkv and avi each when this
    PyAV can write them, a damaged mp4 and a folder of frame images."""
    root = tmp_path_factory.mktemp("videos")
    write_clip(root / "clip_a.mp4", 24, seed=0)
    write_clip(root / "v_anet1.mp4", 32, seed=1)
    write_clip(root / "sub" / "clip_b.mp4", 16, seed=2)
    for suffix, name in ((".webm", "clip_w"), (".mkv", "clip_k"), (".avi", "clip_v")):
        try:
            write_clip(root / f"{name}{suffix}", 20, seed=3)
        except Exception:  # noqa: BLE001 -- the tests that need it skip with the reason
            pass
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    for i, frame in enumerate(clip_frames(6, seed=4)):
        write_image(root / "frames" / "vid9" / f"{i:04d}.png", frame)
    return root


def build(videos: Path, **options: object) -> VideoQA:
    return VideoQA(videos=str(videos), **options)  # type: ignore[arg-type]


def assert_one_line(exc: BaseException, *parts: str) -> None:
    message = str(exc)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)


# -- registration ------------------------------------------------------------------------


def test_discovered_and_built_by_the_registry(videos, tmp_path):
    from rlaif.core.registry import load_plugins

    ann = write_jsonl(tmp_path / "qa.jsonl", [{"video": "clip_a", "question": "what colour?", "answer": "red"}])
    registry = load_plugins()
    spec = registry.get("benchmark", "video-qa")
    assert spec.target == "rlaif.plugins.benchmarks.video_qa:VideoQA" and spec.description
    bench = registry.build("benchmark", "video-qa", {"videos": str(videos), "annotations": str(ann)})
    assert isinstance(bench, Benchmark)
    assert bench.name == "video-qa" and bench.has_ground_truth
    assert [p.question for p in bench.prompts("test")] == ["what colour?"]


def test_registering_and_parsing_import_neither_numpy_nor_av():
    code = (
        "import sys\n"
        "import rlaif.plugins.benchmarks as b\n"
        "b.rlaif_register_benchmarks(lambda *a, **k: None)\n"
        "import rlaif.plugins.benchmarks.video_qa\n"
        "from rlaif.plugins.benchmarks.video_qa import formats\n"
        "bad = {'numpy', 'av', 'torch'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_misspelt_option_is_refused_by_the_registry(videos):
    from rlaif.core.registry import load_plugins

    with pytest.raises(ConfigError, match="formatt"):
        load_plugins().build("benchmark", "video-qa", {"videos": str(videos), "formatt": "jsonl"})


# -- formats -------------------------------------------------------------------------------


def test_qa_pairs_join_on_question_id_and_find_activitynet_prefixes(videos, tmp_path):
    # MSVD-style names and ActivityNet's: "anet1" is stored as v_anet1.mp4, "v_clip_a" as clip_a.mp4.
    q = write_json(tmp_path / "test_q.json", [
        {"video_name": "anet1", "question": "is it moving", "question_id": "anet1_0"},
        {"video_name": "v_clip_a", "question": "what color is the bar", "question_id": "clip_a_1"},
        {"video_name": "sub/clip_b", "question": "how many bars", "question_id": 7},
    ])
    write_json(tmp_path / "test_a.json", [  # another order: the join is by id, not position
        {"answer": "green", "type": 4, "question_id": "clip_a_1"},
        {"answer": 2, "type": 7, "question_id": 7},
        {"answer": "yes", "type": 3, "question_id": "anet1_0"},
    ])
    bench = build(videos, annotations=str(q), format="qa-pairs", qtype_names="activitynet")
    prompts = bench.prompts("test")
    assert [(p.prompt_id, p.reference, p.qtype) for p in prompts] == [
        ("anet1_0", "yes", "yes_no"), ("clip_a_1", "green", "color"), ("7", "2", "number"),
    ]
    assert [Path(p.video.path).name for p in prompts] == ["v_anet1.mp4", "clip_a.mp4", "clip_b.mp4"]
    assert [(p.video.n_frames, p.video.fps) for p in prompts] == [(32, 8.0), (24, 8.0), (16, 8.0)]
    assert prompts[2].video.video_id == "sub/clip_b"
    assert all(p.meta["needs_judge"] is False and p.meta["split"] == "test" for p in prompts)
    # short answers: exact match after normalisation
    metrics = bench.score(prompts, ["Yes.", "the Green", "two"])
    assert metrics["acc/all"] == 1.0 and metrics["n/all"] == 3 and metrics["acc/color"] == 1.0
    assert bench.item_score(prompts[0], "no") == 0.0 and bench.item_score(prompts[2], "2") == 1.0
    # without qtype_names the raw codes are the types
    plain = build(videos, annotations=str(q), format="qa-pairs")
    assert [p.qtype for p in plain.prompts("test")] == ["3", "4", "7"]


def test_vcgbench_generic_temporal_and_consistency(videos, tmp_path):
    generic = write_json(tmp_path / "generic_qa.json", [
        {"Q": "Describe the video.", "A": "A green bar moves down over a grey background.", "video_name": "clip_a"},
    ])
    temporal = write_json(tmp_path / "temporal_qa.json", [
        {"Q": "What happens first?", "A": "The bar starts at the top.", "video_name": "v_anet1"},
    ])
    consistency = write_json(tmp_path / "consistency_qa.json", [
        {"Q1": "What moves?", "Q2": "Which object is in motion?", "A": "A green bar.", "video_name": "clip_a"},
    ])
    bench = build(videos, annotations=[str(generic), str(temporal), str(consistency)], format="vcgbench")
    prompts = bench.prompts("test")
    assert [p.qtype for p in prompts] == ["generic", "temporal", "consistency"]
    assert [p.prompt_id for p in prompts] == ["generic_qa-0", "temporal_qa-0", "consistency_qa-0"]
    assert prompts[2].question == "What moves?" and prompts[2].meta["question_2"] == "Which object is in motion?"
    assert all(p.meta["needs_judge"] for p in prompts)
    # long answers are left to a judge: counted, not scored, and refused per item
    assert bench.score(prompts, ["x", "y", "z"]) == {"n/all": 0.0, "n/needs_judge": 3.0}
    with pytest.raises(UsageError, match="needs a judge"):
        bench.item_score(prompts[0], "anything")
    # lmms-eval's spellings read the same
    lmms = write_json(tmp_path / "lmms" / "consistency.json", [
        {"question_1": "What moves?", "question_2": "Which moves?", "answer": "A bar.", "video_name": "clip_a"},
    ])
    assert build(videos, annotations=str(lmms), format="vcgbench").prompts("test")[0].meta["question_2"] == "Which moves?"


def test_jsonl_finds_the_extension_and_scores_short_answers(videos, tmp_path):
    rows = [{"video": "clip_a", "question": "how many bars?", "answer": "Two", "type": "count", "id": "q1"},
            {"video": "clip_a.mp4", "question": "what colour?", "answer": "green"},
            {"video": "clip_a", "question": "describe it", "answer": "a green bar slides down the frame slowly"}]
    for suffix, name in ((".webm", "clip_w"), (".mkv", "clip_k"), (".avi", "clip_v")):
        if (videos / f"{name}{suffix}").exists():
            rows.append({"video": name, "question": f"{suffix} ok?", "answer": "yes"})
    ann = write_jsonl(tmp_path / "mine.jsonl", rows)
    bench = build(videos, annotations=str(ann))
    prompts = bench.prompts("test")
    assert [p.prompt_id for p in prompts][:3] == ["q1", "mine-1", "mine-2"]
    assert [p.qtype for p in prompts][:3] == ["count", "open", "open"]
    assert [p.meta["needs_judge"] for p in prompts][:3] == [False, False, True]  # > 5 words needs a judge
    for p in prompts[3:]:
        assert Path(p.video.path).suffix == p.question.split()[0]
        assert p.video.n_frames == 20 and p.video.fps == 8.0
    answers = ["2", "Green!", "whatever"] + ["yes"] * (len(prompts) - 3)
    metrics = bench.score(prompts, answers)
    assert metrics["acc/count"] == 1.0 and metrics["acc/all"] == 1.0 and metrics["n/needs_judge"] == 1.0
    assert bench.score(prompts[:2], ["3", "green"])["acc/all"] == 0.5
    assert bench.normalize_answer("The Two.") == "2"


def test_vlm_rlaif_conversations_are_sft_examples(videos, tmp_path):
    frames = [f"frames/vid9/{i:04d}.png" for i in range(6)]
    sft = write_json(tmp_path / "SFT_short.json", [
        {"id": "s1", "src_data": "anet", "video": "clip_a", "conversations": [
            {"from": "human", "value": "<video>\nWhat is shown?"}, {"from": "gpt", "value": "A bar."},
            {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": "Green."}]},
        {"id": "s2", "images": frames, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the clip."}, {"from": "gpt", "value": "Bars move."}]},
    ])
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"video": "clip_a", "question": "q?", "answer": "a", "split": "sft"}])
    bench = build(videos, annotations=str(qa), sft_conversations=str(sft))
    examples = bench.sft_examples("sft")
    assert [(p.prompt_id, p.question, p.reference, p.qtype) for p in examples] == [
        ("qa-0", "q?", "a", "open"),
        ("s1-t0", "What is shown?", "A bar.", "conversation"),
        ("s1-t1", "What colour is it?", "Green.", "conversation"),
        ("s2-t0", "Describe the clip.", "Bars move.", "conversation"),
    ]
    assert examples[2].meta["history"] == [["What is shown?", "A bar."]]
    assert examples[1].meta["src_data"] == "anet" and examples[1].meta["needs_judge"]
    # a video shipped as frame images: its frames are the images, sampled like a video's
    ref = examples[3].video
    assert ref.n_frames == 6 and ref.fps is None and ref.video_id == "frames/vid9"
    got = bench.frames(examples[3], 3)
    want = np.stack([read_all_frames(videos / f)[0] for f in np.array(frames)[uniform_indices(6, 3)]])
    assert np.array_equal(got, want)
    assert bench.prompts("sft")[0].prompt_id == "qa-0" and bench.sft_examples("rl") == []


def test_vlm_rlaif_preferences_become_reward_model_pairs(videos, tmp_path):
    from rlaif.train.reward_model import PreferencePair

    conv = [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": ""}]
    prefs = write_json(tmp_path / "RM_data.json", [
        {"id": "p0", "video": "clip_a", "conversations": conv, "output_1": {"value": "A bar moves."},
         "output_2": {"value": "A cat sleeps."}, "preference": 1},
        {"id": "p1", "video": "clip_a", "conversations": conv, "output_1": {"value": "Nothing."},
         "output_2": {"value": "A green bar moves down."}, "preference": 2},
        {"id": "p2", "video": "v_anet1", "question": "Is it dark?", "output_1": "no", "output_2": "yes",
         "preference": "2"},
    ])
    bench = build(videos, preferences=str(prefs))
    pairs = bench.preference_pairs()
    assert all(isinstance(p, PreferenceExample) for p in pairs)
    assert [(p.prompt_id, p.chosen.text, p.rejected.text) for p in pairs] == [
        ("p0", "A bar moves.", "A cat sleeps."), ("p0", "A green bar moves down.", "Nothing."), ("p2", "yes", "no"),
    ]
    assert pairs[0].prompt is pairs[1].prompt and pairs[0].prompt.question == "What happens?"
    assert pairs[2].prompt.video.n_frames == 32
    # the fields the reward-model loop reads from its own pairs are all here
    assert {f.name for f in fields(PreferencePair)} <= {f.name for f in fields(PreferenceExample)}
    assert bench.preference_pairs("rl") == [] and bench.prompts("test") == []


# -- malformed files -----------------------------------------------------------------------

MALFORMED = [
    # (format, file name, content, parts every error line must name)
    ("jsonl", "a.jsonl", '{"video": "clip_a", "question": "q", "answer": "a"}\n{"video": "clip_a", "answer": "a"}\n',
     ["a.jsonl", "item 1", "field 'question'", "missing"]),
    ("jsonl", "a.jsonl", '{"video": "clip_a", "question": "q", "answer": "a"}\n{"video": "clip_a",\n',
     ["a.jsonl", "item 1 (line 2)", "not valid JSON"]),
    ("jsonl", "a.jsonl", '{"id": "x9", "video": "clip_a", "question": "q", "answer": ["a"]}\n',
     ["a.jsonl", "item 0 (id 'x9')", "field 'answer'", "expected text"]),
    ("jsonl", "a.jsonl", '{"video": "clip_a", "question": "q", "answer": "a", "split": "train"}\n',
     ["a.jsonl", "item 0", "field 'split'", "'train' is not a split"]),
    ("jsonl", "a.jsonl", '{"video": "clip_a", "question": "q", "answer": "a", "needs_judge": "yes"}\n',
     ["a.jsonl", "item 0", "field 'needs_judge'"]),
    ("vcgbench", "consistency_qa.json", json.dumps([{"Q1": "a?", "A": "b", "video_name": "clip_a"}]),
     ["consistency_qa.json", "item 0", "field 'Q2'"]),
    ("vcgbench", "generic_qa.json", json.dumps({"Q": "a?"}), ["generic_qa.json", "expected a JSON list"]),
    ("vcgbench", "generic_qa.json", json.dumps(["just text"]), ["generic_qa.json", "item 0", "expected a JSON object"]),
]


@pytest.mark.parametrize("fmt, name, content, parts", MALFORMED)
def test_malformed_files_are_one_line_errors_naming_file_item_and_field(videos, tmp_path, fmt, name, content, parts):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(AnnotationError) as info:
        build(videos, annotations=str(path), format=fmt)
    assert_one_line(info.value, *parts)
    assert info.value.exit_code == 2


def test_malformed_qa_pairs(videos, tmp_path):
    q = write_json(tmp_path / "val_q.json", [{"video_name": "clip_a", "question": "a?", "question_id": "q0"},
                                             {"video_name": "clip_a", "question": "b?", "question_id": "q1"}])
    a = write_json(tmp_path / "val_a.json", [{"answer": "x", "question_id": "q0"}])
    with pytest.raises(AnnotationError) as info:
        build(videos, annotations=str(q), format="qa-pairs")
    assert_one_line(info.value, "val_q.json", "item 1 (id 'q1')", "field 'question_id'", "no answer")
    write_json(a, [{"answer": "x", "question_id": "q0"}, {"answer": {"text": "y"}, "question_id": "q1"}])
    with pytest.raises(AnnotationError) as info:
        build(videos, annotations=str(q), format="qa-pairs")
    assert_one_line(info.value, "val_a.json", "item 1 (id 'q1')", "field 'answer'")
    write_json(a, [{"answer": "x", "question_id": "q0"}, {"answer": "y", "question_id": "q1"},
                   {"answer": "z", "question_id": "q2"}])
    with pytest.raises(AnnotationError) as info:
        build(videos, annotations=str(q), format="qa-pairs")
    assert_one_line(info.value, "val_a.json", "item 2 (id 'q2')", "no question with this id")
    bad_name = write_json(tmp_path / "questions.json", [])
    with pytest.raises(AnnotationError, match=r"\*_q\.json"):
        build(videos, annotations=str(bad_name), format="qa-pairs")
    with pytest.raises(AnnotationError) as info:
        build(videos, annotations=str(tmp_path / "nowhere_q.json"), format="qa-pairs")
    assert_one_line(info.value, "nowhere_a.json", "no such annotation file")


def test_malformed_vlm_rlaif_files(videos, tmp_path):
    sft = write_json(tmp_path / "sft.json", [{"id": "s7", "video": "clip_a", "conversations": [
        {"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]}])
    with pytest.raises(AnnotationError) as info:
        build(videos, sft_conversations=str(sft))
    assert_one_line(info.value, "sft.json", "item 0 (id 's7')", "field 'conversations[1].from'", "'robot'")
    prefs = write_json(tmp_path / "rm.json", [{"video": "clip_a", "question": "q", "output_1": {"value": "a"},
                                               "output_2": {"value": "b"}, "preference": 3}])
    with pytest.raises(AnnotationError) as info:
        build(videos, preferences=str(prefs))
    assert_one_line(info.value, "rm.json", "item 0", "field 'preference'", "expected 1 or 2")
    prefs = write_json(tmp_path / "rm.json", [{"video": "clip_a", "question": "q", "output_1": {"value": "a"},
                                               "preference": 1}])
    with pytest.raises(AnnotationError) as info:
        build(videos, preferences=str(prefs))
    assert_one_line(info.value, "rm.json", "item 0", "field 'output_2'")


def test_an_id_used_twice_is_an_error_naming_both_places(videos, tmp_path):
    one = write_jsonl(tmp_path / "one.jsonl", [{"id": "dup", "video": "clip_a", "question": "q", "answer": "a"}])
    two = write_jsonl(tmp_path / "two.jsonl", [{"id": "dup", "video": "clip_a", "question": "r", "answer": "b"}])
    with pytest.raises(AnnotationError) as info:
        build(videos, annotations={"rl": str(one), "test": str(two)})
    assert_one_line(info.value, "two.jsonl", "item 0 (id 'dup')", "field 'id'", "one.jsonl")


# -- missing and unreadable videos -----------------------------------------------------------


def test_a_missing_video_is_an_error_or_a_count(videos, tmp_path):
    ann = write_jsonl(tmp_path / "qa.jsonl", [
        {"id": "ok", "video": "clip_a", "question": "q", "answer": "a"},
        {"id": "lost", "video": "no_such_clip", "question": "q", "answer": "a"},
    ])
    with pytest.raises(VideoItemError) as info:
        build(videos, annotations=str(ann))
    assert_one_line(info.value, "item lost", str(videos / "no_such_clip"), "no such file", "skip_missing")
    assert isinstance(info.value, VideoFileError) and info.value.item == "lost"
    bench = build(videos, annotations=str(ann), skip_missing=True)
    assert [p.prompt_id for p in bench.prompts("test")] == ["ok"]
    assert bench.skipped == 1 and bench.skipped_items[0].item_id == "lost"
    summary = bench.summary()
    assert summary["skipped"] == 1 and summary["items"]["test"] == 1 and "lost" in summary["skipped_examples"][0]


def test_an_unreadable_video_is_an_error_or_a_count(videos, tmp_path):
    ann = write_jsonl(tmp_path / "qa.jsonl", [
        {"id": "ok", "video": "clip_a", "question": "q", "answer": "a"},
        {"id": "bad1", "video": "broken", "question": "q", "answer": "a"},
        {"id": "bad2", "video": "broken", "question": "r", "answer": "b"},
    ])
    bench = build(videos, annotations=str(ann))  # found; probed when the split is read
    with pytest.raises(VideoItemError) as info:
        bench.prompts("test")
    assert_one_line(info.value, "item bad1", str(videos / "broken.mp4"))
    bench = build(videos, annotations=str(ann), skip_missing=True)
    assert [p.prompt_id for p in bench.prompts("test")] == ["ok"]
    assert bench.skipped == 2 and bench.summary()["skipped"] == 2
    bench.prompts("test")  # read again: nothing counted twice
    assert bench.skipped == 2
    # a damaged file met while decoding names the file too
    with pytest.raises(VideoFileError, match="broken.mp4"):
        bench.frames(VideoRef("x", str(videos / "broken.mp4")), 4)


def test_a_missing_frame_image_is_reported(videos, tmp_path):
    sft = write_json(tmp_path / "sft.json", [{"id": "f1", "images": ["frames/vid9/0000.png", "frames/vid9/9999.png"],
                                              "conversations": [{"from": "human", "value": "q"},
                                                                {"from": "gpt", "value": "a"}]}])
    with pytest.raises(VideoItemError) as info:
        build(videos, sft_conversations=str(sft))
    assert_one_line(info.value, "item f1-t0", "9999.png", "no such frame image")


# -- decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mkv", ".avi"])
def test_seeking_returns_the_frames_a_full_decode_returns(tmp_path, monkeypatch, suffix):
    require_container(suffix, tmp_path)
    path = write_clip(tmp_path / f"long{suffix}", 90, gop=10, seed=5)
    full = read_all_frames(path)
    info = probe_video(path)
    assert info.n_frames == len(full) == 90 and info.fps == 8.0
    assert info.exact == (suffix in (".mp4", ".avi"))  # webm and mkv state no frame count

    def no_fallback(*args, **kwargs):  # the seeking path must serve these reads itself
        raise AssertionError("fell back to a sequential decode")

    monkeypatch.setattr(decode, "_sequential_frames", no_fallback)
    for n in (1, 2, 7, 16, 90, 120):
        got = read_sampled_frames(path, n, info=info)
        assert np.array_equal(got, full[uniform_indices(90, n)]), n
    clip = read_sampled_frames(path, 5, frame_range=(40, 60), info=info)
    assert np.array_equal(clip, full[[40 + i for i in uniform_indices(20, 5)]])
    monkeypatch.undo()
    sequential = read_sampled_frames(path, 16, info=info, seek=False)
    assert np.array_equal(sequential, full[uniform_indices(90, 16)])


def test_seeking_falls_back_to_a_sequential_decode(tmp_path, monkeypatch):
    path = write_clip(tmp_path / "clip.mp4", 30, gop=6)
    full = read_all_frames(path)
    # a frame count that overstates the video (an estimate): seeking runs out, the
    # fallback counts the real frames and samples those
    wrong = VideoInfo(n_frames=36, fps=8.0, start=0.0, exact=False)
    assert np.array_equal(read_sampled_frames(path, 6, info=wrong), full[uniform_indices(30, 6)])
    # no keyframe index to seek by
    monkeypatch.setattr(decode, "keyframe_times", lambda p: ())
    assert np.array_equal(read_sampled_frames(path, 6), full[uniform_indices(30, 6)])


def test_frames_through_the_benchmark(videos, tmp_path):
    ann = write_jsonl(tmp_path / "qa.jsonl", [{"video": "v_anet1", "question": "q", "answer": "a"}])
    bench = build(videos, annotations=str(ann))
    prompt = bench.prompts("test")[0]
    full = read_all_frames(videos / "v_anet1.mp4")
    assert np.array_equal(bench.frames(prompt, 8), full[uniform_indices(32, 8)])
    assert np.array_equal(bench.frames(prompt.video, 4, frame_range=(8, 16)),
                          full[[8 + i for i in uniform_indices(8, 4)]])
    assert np.array_equal(bench.frames("v_anet1", 3), full[uniform_indices(32, 3)])
    assert bench.videos("test") == [prompt.video]
    with pytest.raises(UsageError, match="not part"):
        bench.frames("nope", 2)


# -- splits ----------------------------------------------------------------------------------


def test_splits_from_files_and_from_the_jsonl_field(videos, tmp_path):
    rl = write_jsonl(tmp_path / "rl.jsonl", [{"video": "clip_a", "question": "a?", "answer": "x"}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"video": "v_anet1", "question": "b?", "answer": "y"}])
    bench = build(videos, annotations={"rl": str(rl), "test": [str(test)]})
    assert [p.prompt_id for p in bench.prompts("rl")] == ["rl-0"] and bench.prompts("rl")[0].meta["split"] == "rl"
    assert [p.prompt_id for p in bench.prompts("test")] == ["test-0"] and bench.prompts("sft") == []
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [
        {"video": "clip_a", "question": "a?", "answer": "x", "split": "sft"},
        {"video": "clip_a", "question": "b?", "answer": "y"},  # follows its video into sft
        {"video": "v_anet1", "question": "c?", "answer": "z", "split": "rl"},
        {"video": "sub/clip_b", "question": "d?", "answer": "w"},  # no split, no fractions: test
    ])
    bench = build(videos, annotations=str(mixed))
    assert {s: [p.prompt_id for p in bench.prompts(s)] for s in ("sft", "rl", "test")} == {
        "sft": ["mixed-0", "mixed-1"], "rl": ["mixed-2"], "test": ["mixed-3"]}
    with pytest.raises(AnnotationError, match="given as the 'rl' split"):
        build(videos, annotations={"rl": str(mixed)})
    with pytest.raises(UsageError, match="unknown split 'train'"):
        bench.prompts("train")


def test_seeded_split_by_video_partitions_items(videos, tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    rows = []
    for v in range(40):
        shutil.copy(videos / "clip_a.mp4", root / f"vid{v:02d}.mp4")
        rows += [{"video": f"vid{v:02d}", "question": f"q{k}?", "answer": "a"} for k in range(3)]
    ann = write_jsonl(tmp_path / "all.jsonl", rows)
    fractions = {"sft": 0.2, "rl": 0.5, "test": 0.3}
    bench = build(root, annotations=str(ann), split_fractions=fractions, seed=3)
    by_split = {s: bench.prompts(s) for s in ("sft", "rl", "test")}
    ids = [p.prompt_id for ps in by_split.values() for p in ps]
    assert sorted(ids) == sorted(f"all-{i}" for i in range(120)) and len(set(ids)) == 120  # each item once
    videos_of = {s: {p.video.video_id for p in ps} for s, ps in by_split.items()}
    assert not (videos_of["sft"] & videos_of["rl"] or videos_of["sft"] & videos_of["test"]
                or videos_of["rl"] & videos_of["test"])  # a video never straddles two splits
    assert all(videos_of[s] for s in videos_of)
    again = build(root, annotations=str(ann), split_fractions=fractions, seed=3)
    assert {s: [p.prompt_id for p in again.prompts(s)] for s in by_split} == {
        s: [p.prompt_id for p in ps] for s, ps in by_split.items()}
    other = build(root, annotations=str(ann), split_fractions=fractions, seed=4)
    assert [p.prompt_id for p in other.prompts("test")] != [p.prompt_id for p in by_split["test"]]
    # a video keeps its split when others are added
    assert all(seeded_split(v, fractions, 3) == s for s, vs in videos_of.items() for v in vs)
    assert seeded_split("vid00", {"test": 1.0}, 0) == "test"


def test_bad_options_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        VideoQA(videos=str(tmp_path / "nowhere"), annotations="x.jsonl", format="csv",
                split_fractions={"train": 0.5, "test": 0.2}, qtype_names="msvd")
    assert_one_line(info.value, "is not a folder", "unknown format 'csv'", "unknown splits ['train']",
                    "sum to 1", "unknown qtype_names preset 'msvd'")
