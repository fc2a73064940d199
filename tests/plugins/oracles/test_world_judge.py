"""The world judge: trained from the benchmark's judge material only, cached by what it
read, and run pointwise by ``llm-judge`` (one verdict per answer, P(correct) scores)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from rlaif.core.errors import ConfigError, OracleError
from rlaif.plugins.oracles.llm_judge import LLMJudgeOracle, build_llm_judge
from rlaif.plugins.oracles.world_judge import (
    ADAPT_RECIPE,
    WorldJudgeBackend,
    adapt_world_judge,
    cached_adapted_judge,
    cached_world_judge,
    captioned_examples,
    focus_stages,
    judge_prompt_text,
    train_world_judge,
    word_f1,
)


@pytest.fixture(scope="module")
def examples(world: Any) -> list[tuple[str, str, str]]:
    return world.judge_training_examples(n_fresh=30)


@pytest.fixture(scope="module")
def judge_dir(examples: list[tuple[str, str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("judge")
    metrics = train_world_judge(examples, out, steps=40, batch_size=8, seed=0)
    assert metrics["answer_loss_last"] < metrics["answer_loss_first"]  # it learns something
    return out


def test_backend_scores_each_answer_with_a_probability(judge_dir: Path, world: Any) -> None:
    backend = WorldJudgeBackend(judge_dir)
    prompt = world.prompts("rl")[0]
    item = backend.judge_prompt(prompt, ["red"], "a big red circle sits still.")
    assert item[0].startswith("context: a big red circle") and item[0].endswith("answer:")
    replies = backend.score_native([item, backend.judge_prompt(prompt, ["red"], None)], [["yes", "no"]] * 2)
    for reply in replies:
        yes, no = reply.label_logprobs
        assert math.isclose(math.exp(yes) + math.exp(no), 1.0, rel_tol=1e-6)
        assert 0.0 < math.exp(yes) < 1.0
    assert replies[0].label_logprobs != replies[1].label_logprobs  # the context is read
    with pytest.raises(OracleError, match="one answer at a time"):
        backend.judge_prompt(prompt, ["red", "blue"], None)


def test_pointwise_ranking_has_no_position_bias(judge_dir: Path, group_of: Any) -> None:
    oracle = LLMJudgeOracle(WorldJudgeBackend(judge_dir, calibrate=False), pointwise=True, context="none")
    answers = ["red", "blue", "two", "red"]
    forward = oracle.rank([group_of(0, answers)])[0]
    backward = oracle.rank([group_of(0, answers[::-1])])[0]
    assert forward.ok and forward.scores is not None and backward.scores is not None
    assert forward.scores == backward.scores[::-1]  # each answer judged on its own
    assert forward.scores[0] == forward.scores[3]  # the same answer, the same verdict
    assert any(sorted(block) == [0, 3] for block in forward.tie_groups())
    assert oracle.score_range == (0.0, 1.0) and all(0.0 <= s <= 1.0 for s in forward.scores)


def test_calibrated_verdicts_weigh_the_narrative_against_the_prior(judge_dir: Path, world: Any) -> None:
    raw, calibrated = WorldJudgeBackend(judge_dir), WorldJudgeBackend(judge_dir, calibrate=True)
    prompt = world.prompts("rl")[0]
    narrative = "a big red circle sits still. the red circle turns blue."
    items = [calibrated.judge_prompt(prompt, [a], narrative) for a in ("red", "blue", "two")]
    read = raw.answer_probabilities([(text, answer) for text, _, answer in items])
    prior = raw.answer_probabilities([(blind, answer) for _, blind, answer in items])
    assert calibrated.verdicts(items) == pytest.approx([r / (r + q) for r, q in zip(read, prior, strict=True)])
    blind = [calibrated.judge_prompt(prompt, [a], None) for a in ("red", "blue", "two")]
    assert calibrated.verdicts(blind) == pytest.approx([0.5, 0.5, 0.5])  # no narrative, no evidence


def test_word_f1_gives_a_partly_right_answer_partial_credit() -> None:
    assert word_f1("The red circle stopped.", "the red circle stopped") == 1.0
    assert word_f1("the blue circle stopped", "the red circle stopped") == pytest.approx(0.75)
    assert word_f1("red", "blue") == 0.0
    assert word_f1("", "") == 1.0 and word_f1("", "red") == 0.0


def _logp(model: Any, tokenizer: Any, prompt: str, answer: str) -> float:
    """log P(answer <eos> | <bos> prompt), one sequence at a time (no padding)."""
    p = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    a = [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + a])).logits[0, len(p) - 1 : -1]
    return float(torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(a)[:, None]).sum())


def test_answer_first_scores_each_answer_by_its_expected_agreement_with_the_judge(judge_dir: Path,
                                                                                  world: Any) -> None:
    """The batched, left-padded scoring equals the formula computed one sequence at a time:
    the judge's own greedy answer and the prompt's candidates, weighed by P(whole answer)."""
    backend = WorldJudgeBackend(judge_dir, answer_first=True, answer_tokens=12)
    model, tokenizer = backend.load()
    prompts = [p for p in world.prompts("rl") if p.qtype in ("temporal", "attribute")][:2]
    narrative = "a big red circle sits still. the red circle starts moving left. the red circle stops."
    groups = [[backend.judge_prompt(prompts[0], [a], narrative) for a in ("the red circle stopped", "red", "red")],
              [backend.judge_prompt(prompts[1], [a], None) for a in ("blue", "the red circle stopped")]]
    items = [item for group in groups for item in group]
    scores = backend.verdicts(items)
    expected = []
    for group in groups:
        text = group[0][0]
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            own = model.generate(input_ids=ids, do_sample=False, max_new_tokens=12, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:]
        own_text = " " + (" ".join(tokenizer.decode(own, skip_special_tokens=True).split()) or "(empty)")
        hypotheses = {h: math.exp(_logp(model, tokenizer, text, h)) for h in {own_text, *(a for _, _, a in group)}}
        expected += [sum(w * word_f1(a, h) for h, w in hypotheses.items()) / sum(hypotheses.values())
                     for _, _, a in group]
    assert scores == pytest.approx(expected, rel=1e-4)
    assert scores[1] == scores[2] and all(0.0 <= s <= 1.0 for s in scores)
    fresh = WorldJudgeBackend(judge_dir, answer_first=True, answer_tokens=12)  # nothing remembered
    assert fresh.own_answers([groups[1][0][0], groups[0][0][0]])[::-1] == backend.own_answers(
        [groups[0][0][0], groups[1][0][0]])  # a prompt's answer does not depend on its batch
    with pytest.raises(OracleError, match="calibrate or answer_first"):
        WorldJudgeBackend(judge_dir, answer_first=True, calibrate=True)
    with pytest.raises(ConfigError, match="answer_first is an option of the world judge"):
        build_llm_judge(judge="smollm2", answer_first=True)


def test_the_judge_answers_each_prompt_once(judge_dir: Path, world: Any) -> None:
    """Own answers are remembered per prompt: a later step asking a known question
    generates only for the new ones, and scores as a judge without the memory would."""
    backend = WorldJudgeBackend(judge_dir, answer_first=True, answer_tokens=12)
    model, _ = backend.load()
    asked: list[int] = []
    real = model.generate

    def counting(**kwargs: Any) -> Any:
        asked.append(int(kwargs["input_ids"].shape[0]))
        return real(**kwargs)

    model.generate = counting
    texts = [judge_prompt_text(p.question, None) for p in world.prompts("rl")[:3]]
    first = backend.own_answers(texts[:2])
    assert asked == [2]
    assert backend.own_answers([texts[1], texts[2], texts[2]]) == [first[1], *backend.own_answers([texts[2]] * 2)]
    assert asked == [2, 1]  # only the new question, once
    items = [(texts[0], " red"), (texts[2], " two")]
    assert backend.expected_agreement(items) == WorldJudgeBackend(
        judge_dir, answer_first=True, answer_tokens=12).expected_agreement(items)
    assert asked == [2, 1]


def test_judge_is_cached_by_what_it_read(world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.plugins.oracles import world_judge

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    calls: list[int] = []
    real = world_judge.train_world_judge

    def small(examples: Any, out: Any, **kw: Any) -> Any:
        calls.append(len(examples))
        return real(examples, out, **{**kw, "steps": 2, "batch_size": 4})

    monkeypatch.setattr(world_judge, "train_world_judge", small)

    class Few:
        def __init__(self, n: int) -> None:
            self.n = n

        def judge_training_examples(self) -> list[tuple[str, str, str]]:
            return world.judge_training_examples(n_fresh=self.n)

    first = cached_world_judge(Few(3))
    assert cached_world_judge(Few(3)) == first and len(calls) == 1
    assert cached_world_judge(Few(4)) != first and len(calls) == 2

    class Focused(Few):
        judge_focus_answers = ("left", "right")

    assert cached_world_judge(Focused(3)) not in (first, cached_world_judge(Few(4))) and len(calls) == 3

    class Staged(Few):
        judge_focus_answers = (("left", "right"), ("red", "blue"))

    assert cached_world_judge(Staged(3)) not in (first, cached_world_judge(Focused(3))) and len(calls) == 4
    assert build_llm_judge(judge="world", benchmark=Few(3), context="none").debias is None and len(calls) == 4
    assert build_llm_judge(judge="world", benchmark=Few(3), context="none", debias=True).debias is not None


def test_focus_answers_are_read_alone_first(examples: list[tuple[str, str, str]], tmp_path: Path) -> None:
    directions = ("left", "right", "up", "down")
    metrics = train_world_judge(examples, tmp_path / "judge", steps=2, batch_size=4, seed=0,
                                focus_answers=directions, focus_steps=3)
    held_in = len(examples) - max(1, len(examples) // 20)
    assert 0 < metrics["focus_examples"] <= sum(a in directions for _, _, a in examples) <= held_in
    assert metrics["focus_steps"] == 3 and len(metrics["focus_stages"]) == 1
    colours = ("red", "green", "blue", "yellow", "purple")
    staged = train_world_judge(examples, tmp_path / "staged", steps=2, batch_size=4, seed=0,
                               focus_answers=(directions, colours, ("no such answer",)), focus_steps=3)
    assert len(staged["focus_stages"]) == 2  # one stage per group with examples, in turn
    assert staged["focus_stages"][0] == metrics["focus_examples"]
    assert 0 < staged["focus_stages"][1] <= sum(a in colours for _, _, a in examples)
    assert focus_stages(directions) == [directions] and focus_stages(()) == []
    assert focus_stages([directions, (), colours]) == [directions, colours]
    plain = train_world_judge(examples, tmp_path / "plain", steps=2, batch_size=4, seed=0)
    assert plain["focus_examples"] == 0 and plain["focus_steps"] == 0


def test_world_judge_needs_judge_material() -> None:
    class Bare:
        name = "bare"

    with pytest.raises(OracleError, match="judge_training_examples"):
        build_llm_judge(judge="world", benchmark=Bare())


def test_score_levels_put_verdicts_on_a_fixed_scale(judge_dir: Path, group_of: Any) -> None:
    from rlaif.core.errors import ConfigError

    fine = LLMJudgeOracle(WorldJudgeBackend(judge_dir, calibrate=False), pointwise=True, context="none")
    coarse = LLMJudgeOracle(WorldJudgeBackend(judge_dir, calibrate=False), pointwise=True, score_levels=6,
                            context="none")
    answers = ["red", "blue", "two", "up"]
    exact = fine.rank([group_of(0, answers)])[0].scores
    levelled = coarse.rank([group_of(0, answers)])[0].scores
    assert exact is not None and levelled is not None
    assert levelled == [round(p * 5) / 5 for p in exact]
    with pytest.raises(ConfigError, match="score_levels"):
        LLMJudgeOracle(WorldJudgeBackend(judge_dir), score_levels=6)


def test_min_margin_abstains_unless_one_answer_clearly_leads(judge_dir: Path, group_of: Any) -> None:
    from rlaif.core.errors import ConfigError
    from rlaif.plugins.oracles.llm_judge import confident

    answers = ["red", "blue", "two", "red"]
    fine = LLMJudgeOracle(WorldJudgeBackend(judge_dir), pointwise=True, context="none").rank([group_of(0, answers)])[0]
    assert fine.scores is not None
    top = max(fine.scores)
    lead = top - max(s for s in fine.scores if s < top)
    assert 0.0 < lead < 0.99

    def ranked(margin: float) -> Any:
        oracle = LLMJudgeOracle(WorldJudgeBackend(judge_dir), pointwise=True, min_margin=margin, context="none")
        return oracle.rank([group_of(0, answers)])[0]

    sure = ranked(lead / 2)
    assert sure.scores == fine.scores and sure.order == fine.order  # a clear lead: ranked as before
    unsure = ranked(lead + 0.005)
    assert unsure.ok and unsure.failure is None  # an abstention, not a failure
    assert len(set(unsure.scores or [])) == 1 and sorted(unsure.tie_groups()[0]) == [0, 1, 2, 3]
    assert unsure.scores[0] == pytest.approx(sum(fine.scores) / 4, abs=1e-5)  # the mean: scalar losses see no spread
    assert confident([0.9, 0.5, 0.9], 0.4) and not confident([0.9, 0.6, 0.9], 0.4) and not confident([0.5, 0.5], 0.1)
    with pytest.raises(ConfigError, match="min_margin"):
        LLMJudgeOracle(WorldJudgeBackend(judge_dir), min_margin=0.2)
    with pytest.raises(ConfigError, match="min_margin"):
        LLMJudgeOracle(WorldJudgeBackend(judge_dir), pointwise=True, min_margin=1.5)

# ----------------------------------------------------------------------------- adaptation
class Saying:
    """A captioner that says the same of every clip: a real Captioner, one whose
    narratives are known in advance."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.name = f"saying:{text}"

    def caption(self, video: Any, frame_indices: Any) -> str:
        return self.text


def test_adaptation_scenes_are_fresh_videos_with_their_questions(world: Any) -> None:
    scenes = world.judge_adaptation_scenes(4)
    assert len(scenes) == 4
    private = {p.video.video_id for split in ("rl", "test") for p in world.prompts(split)}
    private_refs = {str(p.reference) for split in ("rl", "test") for p in world.prompts(split)}
    for video, qa in scenes:
        assert video.video_id.startswith("fresh-judge-") and video.video_id not in private
        assert Path(video.path).exists() and len(world.frames(video)) == video.n_frames
        assert qa and all(q and a for q, a in qa)
    described = [a for _, qa in scenes for q, a in qa if q.startswith("Describe")]
    assert not set(described) & private_refs  # no rl/test narrative among the answers
    assert [q for _, qa in scenes for q, _ in qa] == [
        q for n, q, _ in captioned_examples(scenes, Saying("x."), benchmark=world, n_clips=3)]


def test_captioned_examples_read_the_captioners_narratives(world: Any) -> None:
    scenes = world.judge_adaptation_scenes(3)
    examples = captioned_examples(scenes, Saying("a red circle sits still."), benchmark=world, n_clips=3)
    assert {n for n, _, _ in examples} == {" ".join(["a red circle sits still."] * 3)}  # 3 clips, joined
    assert [(q, a) for _, q, a in examples] == [pair for _, qa in scenes for pair in qa]
    one = captioned_examples(scenes, Saying("x."), benchmark=world, n_clips=1)
    assert {n for n, _, _ in one} == {"x."}


def test_adapting_fine_tunes_the_judge_on_captioned_scenes(world: Any, judge_dir: Path,
                                                          examples: list[tuple[str, str, str]], tmp_path: Path) -> None:
    read = captioned_examples(world.judge_adaptation_scenes(6), Saying("the scene is empty."), benchmark=world,
                              n_clips=3)
    metrics = adapt_world_judge(judge_dir, read, examples, tmp_path / "adapted", steps=20, batch_size=8, lr=2e-3)
    assert metrics["recipe"] == ADAPT_RECIPE and metrics["examples"] == len(read)
    assert metrics["answer_loss_last"] < metrics["answer_loss_first"]  # it learns something
    assert metrics["heldout_answer_loss_before"] > 0 and metrics["heldout_answer_loss"] > 0
    backend = WorldJudgeBackend(tmp_path / "adapted")
    prompt = world.prompts("rl")[0]
    assert 0.0 < backend.verdicts([backend.judge_prompt(prompt, ["red"], "the scene is empty.")])[0] < 1.0
    with pytest.raises(OracleError, match="captioned examples"):
        adapt_world_judge(judge_dir, [], examples, tmp_path / "none")


def test_adapted_judge_is_cached_per_captioner(world: Any, judge_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.plugins.oracles import world_judge

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    calls: list[int] = []
    real = world_judge.adapt_world_judge

    def small(base: Any, read: Any, original: Any, out: Any, **kw: Any) -> Any:
        calls.append(len(read))
        return real(base, read, original, out, **{**kw, "steps": 2, "batch_size": 4})

    monkeypatch.setattr(world_judge, "adapt_world_judge", small)
    first = cached_adapted_judge(world, Saying("a."), base=judge_dir, n_scenes=3)
    assert first.name.startswith("adapted-") and (first / "judge.json").exists()
    assert cached_adapted_judge(world, Saying("a."), base=judge_dir, n_scenes=3) == first and len(calls) == 1
    assert cached_adapted_judge(world, Saying("b."), base=judge_dir, n_scenes=3) != first and len(calls) == 2
    assert cached_adapted_judge(world, Saying("a."), base=judge_dir, n_scenes=3, cuts=(1, 3)) != first
    assert len(calls) == 3 and calls[2] == 2 * calls[0]  # each scene told in 1 clip and in 3


def test_world_judge_reading_generated_narratives_is_adapted_to_the_policy(
        world: Any, small_video_policy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.plugins.oracles import world_judge
    from rlaif.plugins.oracles.narrative import PolicyCaptioner

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    train, adapt = world_judge.train_world_judge, world_judge.adapt_world_judge
    monkeypatch.setattr(world_judge, "train_world_judge",
                        lambda examples, out, **kw: train(examples, out, **{**kw, "steps": 2, "batch_size": 4}))
    monkeypatch.setattr(world_judge, "adapt_world_judge",
                        lambda b, r, o, out, **kw: adapt(b, r, o, out, **{**kw, "steps": 2, "batch_size": 4}))
    reading = build_llm_judge(judge="world", policy=small_video_policy, benchmark=world)
    blind = build_llm_judge(judge="world", context="none", policy=small_video_policy, benchmark=world)
    plain = build_llm_judge(judge="world", adapt=False, policy=small_video_policy, benchmark=world)
    base = cached_world_judge(world)
    assert blind.backend.path == plain.backend.path == base
    assert reading.backend.path.name.startswith("adapted-") and reading.backend.path.parent == base.parent
    assert isinstance(reading.captioner, PolicyCaptioner) and reading.captioner.policy is small_video_policy
    made = json.loads((reading.backend.path / "judge.json").read_text())
    assert made["recipe"] == ADAPT_RECIPE and made["base"] == str(base)


def test_debias_removes_what_the_judge_says_of_an_answer_everywhere(judge_dir: Path, group_of: Any) -> None:
    """Batch calibration: an answer the judge rates the same way in every group stops
    winning by that rating; what the context says of one item still decides."""
    from rlaif.core.errors import ConfigError
    from rlaif.core.records import Group
    from rlaif.plugins.oracles.llm_judge import AnswerBias

    def bias_over(p_small: list[float], p_big: list[float]) -> tuple[AnswerBias, list[Group]]:
        bias = AnswerBias(min_count=2)
        groups = [group_of(i, ["small", "big"]) for i in range(len(p_small))]
        bias.update((g, [s, b], {}) for g, s, b in zip(groups, p_small, p_big, strict=True))
        return bias, groups

    # The judge leans to "small" everywhere (0.8 against 0.4): on its own that lean ties.
    bias, groups = bias_over([0.8, 0.8, 0.8], [0.4, 0.4, 0.4])
    even = bias.correct(groups[0], [0.8, 0.4])
    assert even[0] == pytest.approx(even[1], abs=1e-9)
    # One item where the context tips it: the corrected scores keep that item's evidence.
    bias, groups = bias_over([0.8, 0.8, 0.8, 0.7], [0.4, 0.4, 0.4, 0.6])
    corrected = bias.correct(groups[3], [0.7, 0.6])
    assert corrected[1] > corrected[0]  # raw 0.7 > 0.6 for "small"; after the lean is removed, "big" wins
    assert bias.correct(groups[3], [0.7, 0.6]) == bias.correct(groups[3], [0.7, 0.6])
    rare = AnswerBias(min_count=10)
    rare.update([(groups[0], [0.8, 0.4], {})])
    assert rare.correct(groups[0], [0.8, 0.4]) == pytest.approx([0.8, 0.4])  # too few to estimate: as is

    # A judge with no lean (right 0.9, wrong 0.1) and a policy that over-says "small": it
    # says "small" everywhere and "big" only where the object is big. Scored only where
    # sampled, "big" looks favoured (it is always right when said) and the correction
    # would hand the policy's lean back; scored as a rival everywhere, it does not.
    truth = ["small", "big"] * 6
    said = [group_of(i, ["small", "big"] if t == "big" else ["small", "small"]) for i, t in enumerate(truth)]

    def verdict(t: str, a: str) -> float:
        return 0.9 if a == t else 0.1

    naive, fair = AnswerBias(min_count=2), AnswerBias(min_count=2)
    for g, t in zip(said, truth, strict=True):
        scores = [verdict(t, r.text) for r in g.rollouts]
        naive.update([(g, scores, {})])
        fair.update([(g, scores, {} if t == "big" else {"big": verdict(t, "big")})])
    big_item = said[1]
    raw, confounded, unconfounded = [0.1, 0.9], naive.correct(big_item, [0.1, 0.9]), fair.correct(big_item, [0.1, 0.9])
    assert unconfounded == pytest.approx(raw)  # no lean to take out
    assert confounded[1] - confounded[0] < 0.7 * (raw[1] - raw[0])  # the policy's lean handed back in part
    rivals = AnswerBias(min_count=2, min_together=2)
    rivals.update((g, [0.5, 0.5], {}) for g in said)
    assert rivals.rivals(group_of(99, ["small", "small"])) == ["big"]  # set against "small" in 6 groups
    assert rivals.rivals(group_of(99, ["small", "big"])) == []  # nothing left to add
    assert rivals.together[AnswerBias.key(big_item, "small")]["big"] == 6

    oracle = LLMJudgeOracle(WorldJudgeBackend(judge_dir), pointwise=True, debias=True, context="none")
    answers = ["red", "blue", "two", "red"]
    first = oracle.rank([group_of(0, answers), group_of(1, answers)])
    assert all(r.ok and r.scores is not None for r in first)
    assert first[0].scores is not None and first[0].scores[0] == first[0].scores[3]  # same answer, same score
    first_group = group_of(0, answers)
    assert oracle.debias is not None and oracle.debias.sums[AnswerBias.key(first_group, "red")][1] == 2  # once a group
    assert AnswerBias.key(first_group, " Red. ") == AnswerBias.key(first_group, "red")
    oracle.debias = AnswerBias(min_count=1, min_together=1)  # the judge scores rivals as soon as seen together
    oracle.rank([group_of(0, answers)])
    alone = oracle.rank([group_of(2, ["red", "red"])])[0]
    assert alone.ok and alone.scores is not None and len(alone.scores) == 2  # rivals are not ranked
    assert oracle.debias.sums[AnswerBias.key(first_group, "blue")][1] == 2  # but scored: "blue" in the second group too
    with pytest.raises(ConfigError, match="debias"):
        LLMJudgeOracle(WorldJudgeBackend(judge_dir), debias=True)


def test_a_tuned_captioner_writes_the_narratives(world: Any, small_video_policy: Any, tmp_path: Path) -> None:
    """``captioner``: the run's SFT self, a saved policy directory, or the SFT policy tuned
    on fresh captions alone (``rlaif.train.captioner``), which learns only from them."""
    from rlaif.core.cache import tree_digest
    from rlaif.core.errors import UsageError
    from rlaif.plugins.oracles.llm_judge import narrative_writer
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM
    from rlaif.train.captioner import caption_examples, tune_captioner

    sft = tmp_path / "sft"
    small_video_policy.save(sft)
    items = caption_examples(world, 3)
    assert items and {it.kind for it in items} == {"caption"}
    assert {it.prompt.meta["split"] for it in items} == {"fresh"}  # never a split's video
    metrics = tune_captioner(sft, tmp_path / "cap", benchmark=world, n_videos=3, epochs=2, lr=1e-2, batch_size=4,
                             progress=False)
    assert metrics["steps"] == 2 * -(-len(items) // 4) and metrics["loss"] < metrics["loss_first"]
    assert tune_captioner(sft, tmp_path / "cap", benchmark=world) == metrics  # built once
    before = TinyVideoLM.load(sft, frames=world.frames, new_adapter=False)
    after = TinyVideoLM.load(tmp_path / "cap", frames=world.frames, new_adapter=False)
    changed = [n for (n, a), (_, b) in zip(before.named_trainable_parameters(), after.named_trainable_parameters(),
                                           strict=True) if not torch.equal(a, b)]
    assert changed

    run_policy = TinyVideoLM.load(sft, frames=world.frames)  # as RL loads it: SFT merged, fresh adapter
    assert narrative_writer("sft", run_policy, world).name == "policy:tiny-video-lm:sft"
    saved = narrative_writer(str(tmp_path / "cap"), run_policy, world)
    assert saved.name == f"captioner:{tree_digest(tmp_path / 'cap', exclude=('stages',))[:16]}"
    assert saved.frozen is False
    video = world.videos("rl")[0]
    assert isinstance(saved.caption(video, [0, 1, 2, 3]), str)
    with pytest.raises(OracleError, match="no such directory"):
        narrative_writer(str(tmp_path / "missing"), run_policy, world)
    with pytest.raises(OracleError, match="captioner='sft'"):
        narrative_writer("tuned", small_video_policy, world)  # not loaded from a saved SFT policy
    assert narrative_writer("auto", small_video_policy, world).name == "policy:tiny-video-lm:sft"

    class NoCaptions:
        name = "no-captions"

    with pytest.raises(UsageError, match="no fresh clip captions"):
        caption_examples(NoCaptions(), 3)


@pytest.fixture()
def captioner_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The policies a tuned captioner was built from, in a fresh cache, each build cut to
    two steps on three videos."""
    from rlaif.train import captioner as tuning

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    real, builds = tuning.tune_captioner, []

    def small(source: Any, out: Any, **kw: Any) -> Any:
        builds.append(source)
        return real(source, out, **{**kw, "n_videos": 3, "epochs": 1, "batch_size": 4, "max_steps": 2})

    monkeypatch.setattr(tuning, "tune_captioner", small)
    return builds


def test_an_oracle_builds_the_tuned_captioner_from_what_it_may_read(
        world: Any, small_video_policy: Any, tmp_path: Path, captioner_builds: list[Any]) -> None:
    """In a run the oracle holds only the benchmark's training material (the
    OracleBenchmarkView): the tuned captioner reads fresh captions alone, so it builds
    there, and ``auto`` (the default) picks it for a policy loaded from a saved SFT
    directory. Its cache key is what it read, not the splits' annotations."""
    from rlaif.plugins.oracles.llm_judge import narrative_writer
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM
    from rlaif.train.rl import OracleBenchmarkView

    sft = tmp_path / "sft"
    small_video_policy.save(sft)
    run_policy = TinyVideoLM.load(sft, frames=world.frames)
    view = OracleBenchmarkView(world)
    writer = narrative_writer("auto", run_policy, view)
    assert writer.name.startswith("captioner:") and writer.frozen is False
    assert narrative_writer("tuned", run_policy, view).name == writer.name
    assert narrative_writer("tuned", run_policy, world).name == writer.name  # the same key unwrapped
    assert len(captioner_builds) == 1  # built once, then cached
    with pytest.raises(OracleError, match="needs_reference"):
        view.clip_captions(world.videos("sft")[0])  # the annotations stay closed


def test_a_copy_of_the_sft_policy_elsewhere_finds_the_same_captioner(
        world: Any, small_video_policy: Any, tmp_path: Path, captioner_builds: list[Any]) -> None:
    """The tuned captioner and the narratives' name are keyed by the policy's weights, not
    its path: the same SFT policy in another cache (a shipped one, a colleague's) reuses
    the captioner and the adapted judge built for it; a policy trained further does not."""
    import shutil

    from rlaif.plugins.oracles.llm_judge import narrative_writer
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM

    small_video_policy.save(tmp_path / "sft")
    shutil.copytree(tmp_path / "sft", tmp_path / "elsewhere" / "sft")
    here = narrative_writer("tuned", TinyVideoLM.load(tmp_path / "sft", frames=world.frames), world)
    there = narrative_writer("tuned", TinyVideoLM.load(tmp_path / "elsewhere" / "sft", frames=world.frames), world)
    assert here.name == there.name and len(captioner_builds) == 1
    changed = TinyVideoLM.load(tmp_path / "sft", frames=world.frames)
    with torch.no_grad():
        next(p for p in changed.projector.parameters()).add_(0.01)
    changed.save(tmp_path / "trained-further")
    other = narrative_writer("tuned", TinyVideoLM.load(tmp_path / "trained-further", frames=world.frames), world)
    assert other.name != here.name and len(captioner_builds) == 2
