"""Curriculum SFT: the judging format, item building, curriculum ordering, a tiny run that
lowers the loss and resumes, and evaluation. Unit tests use a synthetic world and a TINY
policy; the ``integration`` test runs the real default stack on a small video world."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rlaif.core.errors import UsageError
from rlaif.core.records import Prompt, VideoRef
from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
from rlaif.plugins.policies.tiny_lm import (
    load_world_tokenizer,
    new_tiny_lm,
    tiny_lm_config,
    train_world_tokenizer,
)
from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM
from rlaif.train.evaluate import baseline_metrics, eval_prompts, evaluate_policy
from rlaif.train.sft import (
    FOCUS_SKILLS,
    FocusSkill,
    SFTItem,
    alignment_items,
    build_sft_items,
    curriculum_stages,
    focus_items,
    format_judge_question,
    format_ranking,
    judge_items,
    parse_ranking,
    run_sft,
)

torch.set_num_threads(1)

COLOURS = ["red", "green", "blue", "yellow"]


class FakeWorld:
    """A coloured frame per video; QA about the colour, one long describe item, two clips."""

    name = "fake-sft"
    has_ground_truth = True

    def __init__(self, n_videos: int = 8) -> None:
        self.colour = {f"v{i}": COLOURS[i % len(COLOURS)] for i in range(n_videos)}

    def _ref(self, vid: str) -> VideoRef:
        return VideoRef(vid, f"/none/{vid}.mp4", 12)

    def prompts(self, split: str) -> list[Prompt]:
        vids = sorted(self.colour)
        vids = vids[:-2] if split == "sft" else vids[-2:]
        out = []
        for vid in vids:
            c = self.colour[vid]
            meta = {"gold_narrative": f"a {c} square sits still.", "clip_captions": [f"a {c} square.", "it stays."]}
            out.append(Prompt(f"{vid}-a", self._ref(vid), "What colour is the square?", c, "attribute", meta))
            out.append(Prompt(f"{vid}-d", self._ref(vid), "Describe this video in detail.",
                              f"a big {c} square sits still in the middle of the frame.", "describe", meta))
        return out

    def frames(self, video: VideoRef, n_frames: int | None = None) -> np.ndarray:
        value = 40 + 50 * COLOURS.index(self.colour[video.video_id])
        return np.full((12, 32, 32, 3), value, np.uint8)

    def clip_captions(self, video: VideoRef) -> list[str]:
        return [f"a {self.colour[video.video_id]} square.", "it stays."]

    def score(self, prompts: list[Prompt], answers: list[str]) -> dict[str, float]:
        ok = [float(a.strip() == p.reference) for p, a in zip(prompts, answers, strict=True)]
        return {"acc/all": sum(ok) / len(ok), "n/all": float(len(ok))}


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    world = FakeWorld()
    texts = [p.question + " " + str(p.reference) for p in world.prompts("sft")] + ["rank the answers to: A B C > |"]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_world_tokenizer(texts * 3, path, vocab_size=300)
    return path


def tiny_policy(tokenizer_path: Path, world: FakeWorld) -> TinyVideoLM:
    tok = load_world_tokenizer(tokenizer_path)
    lm = new_tiny_lm(tiny_lm_config(len(tok), hidden_size=32, layers=2, heads=2, intermediate_size=64), seed=0)
    return TinyVideoLM(TinyConvEncoder(feature_dim=16, width=8), lm, tok, frames=world.frames, n_frames=4,
                       lora_r=4, lora_alpha=8, seed=0)


def test_judge_format_round_trips() -> None:
    question = format_judge_question("What colour?", ["red", "blue", "green"], narrative="a red square.")
    assert question == "rank the answers to: What colour? | context: a red square. | A: red | B: blue | C: green"
    assert format_judge_question("Q?", ["x", "y"]) == "rank the answers to: Q? | A: x | B: y"
    text = format_ranking([1, 0, 2], "the answer is blue")
    assert text == "B > A > C because the answer is blue"
    assert parse_ranking(text, 3) == [1, 0, 2]
    assert parse_ranking("C > A > B", 3) == [2, 0, 1]
    assert parse_ranking("B > A", 3) is None  # a candidate missing
    assert parse_ranking("B > B > A", 3) is None
    assert parse_ranking("no idea", 2) is None


def test_judge_items_rank_gold_first() -> None:
    world = FakeWorld()
    items = judge_items(world.prompts("sft"), seed=0, fraction=1.0)
    short = [p for p in world.prompts("sft") if p.qtype != "describe"]
    assert len(items) == len(short)  # describe items are never judged
    for item in items:
        candidates = item.prompt.meta["candidates"]
        order = parse_ranking(item.answer, len(candidates))
        gold = item.answer.split("the answer is ")[1]
        assert order is not None and candidates[order[0]] == gold
        assert 2 <= len(candidates) <= 4 and len(set(candidates)) == len(candidates)
        assert item.prompt.qtype == "judge" and item.prompt.question.startswith("rank the answers to:")


def test_items_cover_qa_captions_and_judging() -> None:
    world = FakeWorld()
    items = build_sft_items(world, seed=0)
    kinds = {k: [it for it in items if it.kind == k] for k in ("qa", "caption", "judge")}
    assert len(kinds["qa"]) == len(world.prompts("sft"))
    assert len(kinds["caption"]) == 2 * 6  # two clips for each of the six sft videos
    first, second = kinds["caption"][:2]
    assert first.prompt.meta["frame_range"] == [0, 6] and second.prompt.meta["frame_range"] == [6, 12]
    assert first.prompt.question == "Describe this video in detail."
    assert kinds["judge"]


def test_curriculum_puts_short_answers_first() -> None:
    world = FakeWorld()
    items = build_sft_items(world, seed=0)
    words = lambda a: len(a.split())  # noqa: E731
    (easy_name, easy), (hard_name, hard) = curriculum_stages(items, words, seed=0, replay=0.0)
    assert (easy_name, hard_name) == ("easy", "hard")
    assert max(words(it.answer) for it in easy) < min(words(it.answer) for it in hard)
    assert len(easy) + len(hard) == len(items)
    # Replay: the hard stage also revisits a share of the easy items.
    (_, easy2), (_, hard2) = curriculum_stages(items, words, seed=0, replay=0.5)
    assert len(hard2) == len(hard) + round(0.5 * len(easy))
    # Without curriculum: the same multiset of items in one shuffled stage.
    ((name, everything),) = curriculum_stages(items, words, curriculum=False, seed=0, replay=0.5)
    assert name == "all" and sorted(map(id, everything)) == sorted(map(id, easy2 + hard2))


def test_tiny_sft_lowers_loss_saves_and_resumes(tokenizer_path: Path, tmp_path: Path) -> None:
    world = FakeWorld()
    policy = tiny_policy(tokenizer_path, world)
    before = {n: p.detach().clone() for n, p in policy.named_trainable_parameters()}
    metrics = run_sft(tmp_path / "sft", benchmark=world, policy=policy, lr=1e-2, batch_size=8, epochs_per_stage=3,
                      progress=False)
    assert metrics["loss/easy"] < metrics["loss_first/easy"]
    assert metrics["stages"]["easy"] > 0 and metrics["stages"]["hard"] > 0
    assert (tmp_path / "sft" / "policy.json").exists() and (tmp_path / "sft" / "sft.json").exists()
    for stage in ("easy", "hard"):
        assert json.loads((tmp_path / "sft" / "stages" / stage / "stage.json").read_text())["steps"] > 0
    assert any(not torch.equal(before[n], p) for n, p in policy.named_trainable_parameters())
    assert not any(p.requires_grad for p in policy.encoder.parameters())

    # A finished run is reused as is.
    assert run_sft(tmp_path / "sft", benchmark=world, policy=tiny_policy(tokenizer_path, world)) == metrics
    # An interrupted run resumes after its last finished stage.
    (tmp_path / "sft" / "sft.json").unlink()
    resumed = run_sft(tmp_path / "sft", benchmark=world, policy=tiny_policy(tokenizer_path, world), lr=1e-2,
                      batch_size=8, epochs_per_stage=3, progress=False)
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in metrics.items() if k != "seconds"}

    loaded = TinyVideoLM.load(tmp_path / "sft", frames=world.frames)  # for RL: merged + fresh adapter
    scores = evaluate_policy(loaded, world, split="test", batch_size=3, max_new_tokens=4, long_max_new_tokens=6)
    assert 0.0 <= scores["acc/all"] <= 1.0 and scores["n/all"] == 4


def test_focus_stages_train_each_skill_alone_in_turn(tokenizer_path: Path, tmp_path: Path) -> None:
    world = FakeWorld()
    items = build_sft_items(world, seed=0)
    attribute = FocusSkill("attr", "attribute", epochs=2)
    focus = focus_items(items, attribute)
    assert {(it.kind, it.prompt.qtype) for it in focus} == {("qa", "attribute")}
    assert len(focus) == sum(p.qtype == "attribute" for p in world.prompts("sft"))
    prefix = focus[0].prompt.question.split()[0]
    narrow = focus_items(items, FocusSkill("narrow", "attribute", prefix))
    assert narrow and all(it.prompt.question.startswith(prefix) for it in narrow)
    assert len(narrow) == sum(p.qtype == "attribute" and p.question.startswith(prefix) for p in world.prompts("sft"))
    assert focus_items(items, FocusSkill("none", "no-such-type")) == []

    skills = (attribute, FocusSkill("again", "attribute", prefix, epochs=1), FocusSkill("none", "no-such-type"))
    metrics = run_sft(tmp_path / "sft", benchmark=world, policy=tiny_policy(tokenizer_path, world), batch_size=4,
                      epochs_per_stage=1, focus_skills=skills, progress=False)
    # in the given order, a skill with no items skipped, before the curriculum
    assert list(metrics["stages"]) == ["focus-attr", "focus-again", "easy", "hard"]
    assert metrics["stages"]["focus-attr"] == len(focus) and metrics["stages"]["focus-again"] == len(narrow)
    stage = json.loads((tmp_path / "sft" / "stages" / "focus-attr" / "stage.json").read_text())
    assert stage["steps"] == 2 * -(-len(focus) // 4) and stage["items"] == len(focus)
    again = json.loads((tmp_path / "sft" / "stages" / "focus-again" / "stage.json").read_text())
    assert again["steps"] == -(-len(narrow) // 4)
    assert metrics["loss/focus-attr"] < metrics["loss_first/focus-attr"]


def test_grounding_can_leave_out_the_fresh_questions(tmp_path: Path) -> None:
    from rlaif.plugins.benchmarks.video_world import VideoWorld

    world = VideoWorld(root=str(tmp_path / "world"), seed=0, n_sft=4, n_rl=2, n_test=2, min_frames=16,
                       max_frames=20, progress=False)
    both = alignment_items(world, 2)
    captions = alignment_items(world, 2, questions=False)
    assert {it.kind for it in both} == {"caption", "qa"}
    assert {it.kind for it in captions} == {"caption"}  # the scarce-QA setting: QA only from the sft split
    assert sorted(it.answer for it in captions) == sorted(it.answer for it in both if it.kind == "caption")

    class OlderBenchmark:  # a third party's alignment_examples without the ``questions`` option
        def alignment_examples(self, n_videos: int) -> list[Prompt]:
            return world.alignment_examples(n_videos)

    assert alignment_items(OlderBenchmark(), 2) == both
    with pytest.raises(UsageError, match="no questions option"):
        alignment_items(OlderBenchmark(), 2, questions=False)


def test_eval_subset_is_seeded_and_baselines_optional() -> None:
    world = FakeWorld(n_videos=20)
    subset = eval_prompts(world, "sft", limit=5, seed=0)
    assert len(subset) == 5 and subset == eval_prompts(world, "sft", limit=5, seed=0)
    ids = [p.prompt_id for p in world.prompts("sft")]
    assert [ids.index(p.prompt_id) for p in subset] == sorted(ids.index(p.prompt_id) for p in subset)
    assert eval_prompts(world, "sft", limit=None) == world.prompts("sft")
    assert baseline_metrics(world) == {}
    assert isinstance(SFTItem(world.prompts("sft")[0], "red", "qa").answer, str)


@pytest.mark.integration
def test_default_sft_on_a_small_video_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    from rlaif.plugins.benchmarks.video_world import VideoWorld
    from rlaif.train.sft import default_sft_dir

    world = VideoWorld(root=str(tmp_path / "world"), seed=0, n_sft=12, n_rl=6, n_test=6, min_frames=16,
                       max_frames=20, progress=False)
    out = default_sft_dir(world, seed=0)
    assert out.parent == tmp_path / "cache" / "sft"
    quick = tuple(replace(skill, epochs=1) for skill in FOCUS_SKILLS)
    metrics = run_sft(out, benchmark=world, seed=0, lora_r=8, lora_alpha=8, epochs_per_stage=1, focus_skills=quick,
                      progress=False)
    assert metrics["kinds"]["qa"] and metrics["kinds"]["caption"] and metrics["kinds"]["judge"]
    # the default recipe reads directions, then colours, alone first
    assert list(metrics["stages"])[:3] == ["focus-direction", "focus-colour", "align"]
    assert all(np.isfinite(metrics[f"loss/{stage}"]) for stage in ("easy", "hard"))  # learning: unit test above
    policy = TinyVideoLM.load(out, frames=world.frames)
    scores = evaluate_policy(policy, world, limit=12)
    assert "acc/all" in scores and scores["n/all"] == 12
    baselines = baseline_metrics(world)
    assert {"single_frame", "random"} <= set(baselines)
