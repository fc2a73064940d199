"""Fresh scenes and the provenance of everything trained before RL: the world LM's
corpus and the world judge's items never contain an ``rl``/``test`` narrative or a
reference answer tied to one of those videos."""

from __future__ import annotations

import pytest

from rlaif.plugins.benchmarks.video_world import VideoWorld


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> VideoWorld:
    # Many one-object videos in rl/test make chance collisions with fresh scenes likely,
    # which is what decontamination must catch.
    return VideoWorld(root=str(tmp_path_factory.mktemp("world")), seed=0, n_sft=6, n_rl=30, n_test=30,
                      max_objects=1, min_frames=16, max_frames=20, progress=False)


def test_fresh_scenes_are_seeded_and_differ_by_purpose(world: VideoWorld) -> None:
    a = [s.narrative(3) for s in world.fresh_scenes(5, "lm")]
    assert a == [s.narrative(3) for s in world.fresh_scenes(5, "lm")]
    assert a != [s.narrative(3) for s in world.fresh_scenes(5, "judge")]


def test_fresh_scenes_skip_every_private_narrative(world: VideoWorld) -> None:
    private = world.private_narratives()
    scenes = world.fresh_scenes(300, "lm")
    for scene in scenes:
        assert not {scene.narrative(1), scene.narrative(3)} & private
    # The world is small enough that plain generation does hit private narratives: the
    # check above is not vacuous.
    from rlaif.plugins.benchmarks.video_world.fresh import fresh_scenes

    raw = list(fresh_scenes(world.seed, 300, purpose="lm", params=world.params))
    assert any({s.narrative(1), s.narrative(3)} & private for s in raw)


def _private_strings(world: VideoWorld) -> set[str]:
    """rl/test narratives (under every clip cut), bare and as the answer of a describe
    question, long enough to be specific to one video, and not also in the labelled sft
    split, which every model may read (in a world this small a sft narrative can
    contain an rl one)."""
    sft = world.texts()
    bare = {s for s in world.private_narratives() if len(s.split()) > 6 and not any(s in t for t in sft)}
    return bare | {f"answer: {s}" for s in bare}


def test_world_lm_corpus_has_no_rl_or_test_text(world: VideoWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.plugins.policies import tiny_video_lm

    monkeypatch.setattr(tiny_video_lm, "LM_FRESH_SCENES", 200)
    corpus = tiny_video_lm.world_texts(world)
    private = _private_strings(world)
    assert private
    leaked = [s for s in private if any(s in doc for doc in corpus)]
    assert not leaked, f"{len(leaked)} rl/test strings in the LM corpus, e.g. {leaked[0]!r}"


def test_world_judge_reads_only_sft_and_fresh_scenes(world: VideoWorld) -> None:
    from rlaif.plugins.oracles.world_judge import training_documents

    examples = world.judge_training_examples(n_fresh=200)
    docs = [p + a for p, a in training_documents(examples)]
    private = _private_strings(world)
    leaked = [s for s in private if any(s in d for d in docs)]
    assert not leaked, f"{len(leaked)} rl/test strings in the judge's training text, e.g. {leaked[0]!r}"
    sft = world.prompts("sft")
    assert [(q, a) for _, q, a in examples[: len(sft)]] == [(p.question, p.reference) for p in sft]
    assert len(examples) > len(sft) + 200 * 4  # every fresh scene brings its questions


def test_alignment_examples_caption_and_question_fresh_videos_on_disk(world: VideoWorld) -> None:
    examples = world.alignment_examples(n_videos=3)
    private = world.private_narratives()
    captions = [p for p in examples if p.qtype == "caption"]
    questions = [p for p in examples if p.qtype != "caption"]
    assert len(captions) == 3 * 4  # a 1-clip and a 3-clip cut per video
    assert {p.qtype for p in questions} <= {"attribute", "counting", "direction", "temporal"}
    assert {p.qtype for p in questions} >= {"attribute", "counting"}
    assert len({p.video.video_id for p in examples}) == 3
    for p in captions:
        start, stop = p.meta["frame_range"]
        frames = world.frames(p.video, 4, frame_range=(start, stop))  # a real mp4 through PyAV
        assert frames.shape[1:] == (world.size, world.size, 3)
        assert p.reference and p.reference not in private
    split_videos = {v.video_id for split in ("sft", "rl", "test") for v in world.videos(split)}
    assert not {p.video.video_id for p in examples} & split_videos
    assert {p.video.video_id for p in questions} <= {p.video.video_id for p in captions}
    assert examples == world.alignment_examples(n_videos=3)  # written once, read back the same
    assert all(p.qtype == "caption" for p in world.alignment_examples(n_videos=3, questions=False))
