"""The llm-judge oracle: aggregation (Borda, Kendall tau, pairwise both-orders), failure
policies, templates, a real tiny causal LM through LocalHFBackend, narrative caching in a
real run store, gold context, self-judging, and that an API key never leaks."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rlaif.core.errors import ConfigError
from rlaif.core.records import Group, Ranking, Rollout, VideoRef
from rlaif.core.registry import Registry
from rlaif.plugins.oracles.judge_backends import JudgeReply, LocalHFBackend, PolicyJudgeBackend
from rlaif.plugins.oracles.llm_judge import (
    LLMJudgeOracle,
    borda_points,
    build_llm_judge,
    kendall_tau,
    mean_agreement,
    pairwise_scores,
)
from rlaif.plugins.oracles.narrative import PolicyCaptioner, SharedNarratives, narrative_for, narrative_key

ANSWER = re.compile(r"^Answer ([A-Z]): (.*)$", re.MULTILINE)


class QualityJudge:
    """Deterministic stand-in judge for aggregation tests only: an answer's quality is
    how often it says "good"; ``bias`` is added to whichever answer is shown as A
    (position bias). Records every conversation and call."""

    name = "quality"
    supports_scores = True

    def __init__(self, bias: float = 0.0) -> None:
        self.bias = bias
        self.calls: list[tuple[str, int]] = []
        self.conversations: list[Any] = []

    def _values(self, conversation: Any) -> list[tuple[str, float]]:
        user = conversation[-1]["content"]
        return [(label, text.count("good") + (self.bias if label == "A" else 0.0))
                for label, text in ANSWER.findall(user)]

    def score_labels(self, conversations: Sequence[Any], labels: Sequence[Sequence[str]], *,
                     answer_prefix: str) -> list[JudgeReply]:
        self.calls.append(("score", len(conversations)))
        self.conversations += list(conversations)
        return [JudgeReply(text="scores", label_logprobs=[v for _, v in self._values(c)]) for c in conversations]

    def generate(self, conversations: Sequence[Any], *, max_new_tokens: int, answer_prefix: str = ""
                 ) -> list[JudgeReply]:
        self.calls.append(("generate", len(conversations)))
        self.conversations += list(conversations)
        out = []
        for c in conversations:
            ranked = sorted(self._values(c), key=lambda lv: -lv[1])
            out.append(JudgeReply(text=" > ".join(label for label, _ in ranked) + "\nReason: more good words."))
        return out


class FixedTextJudge:
    """Replies the same text to everything (a position-biased or broken judge)."""

    name = "fixed"
    supports_scores = False

    def __init__(self, text: str) -> None:
        self.text = text

    def generate(self, conversations: Sequence[Any], *, max_new_tokens: int, answer_prefix: str = ""
                 ) -> list[JudgeReply]:
        return [JudgeReply(text=self.text) for _ in conversations]


class CrashingJudge:
    name = "crash"
    supports_scores = True

    def score_labels(self, *args: Any, **kwargs: Any) -> list[JudgeReply]:
        raise RuntimeError("CUDA out of memory (simulated)")


def groups_with_quality(group_of: Any, n: int = 3, g: int = 4, seed: int = 0) -> tuple[list[Group], list[list[int]]]:
    """Groups whose answers have distinct qualities (0..g-1 "good"s, shuffled)."""
    rng = random.Random(seed)
    groups, best_first = [], []
    for b in range(n):
        qualities = rng.sample(range(g), g)
        groups.append(group_of(b, [" ".join(["good"] * q + ["answer"]) for q in qualities]))
        best_first.append(sorted(range(g), key=lambda i: -qualities[i]))
    return groups, best_first


# ----------------------------------------------------------------------------- aggregation
def test_kendall_tau_values() -> None:
    assert kendall_tau([0, 1, 2], [0, 1, 2]) == 1.0
    assert kendall_tau([0, 1, 2], [2, 1, 0]) == -1.0
    assert kendall_tau([0, 1, 2], [0, 2, 1]) == pytest.approx(1 / 3)
    # tau-b with a tie in one ranking: C=2, D=0, ties_b=1 -> 2/sqrt(3*2)
    assert kendall_tau([0, 1, 2], [0, 1.5, 1.5]) == pytest.approx(2 / np.sqrt(6))
    assert kendall_tau([1, 1, 1], [1, 1, 1]) == 1.0
    assert mean_agreement([[0, 1, 2]]) is None
    assert mean_agreement([[0, 1, 2], [0, 1, 2], [2, 1, 0]]) == pytest.approx((1 - 1 - 1) / 3)


def test_borda_and_pairwise_scores() -> None:
    assert borda_points([[0, 1, 2], [1, 0, 2]]) == [1.5, 1.5, 0.0]
    scores, judged = pairwise_scores(3, {(0, 1): [1.0, 0.0], (0, 2): [1.0], (1, 2): []})
    assert judged == 2
    assert scores == [0.5 + 1.0, 0.5 + 0.5, 0.0 + 0.5]


def test_permutations_of_an_unbiased_judge_agree(group_of: Any) -> None:
    groups, best_first = groups_with_quality(group_of)
    judge = QualityJudge()
    oracle = LLMJudgeOracle(judge, mode="score", permutations=4, context="none", seed=3)
    rankings = oracle.rank(groups)
    assert [r.order for r in rankings] == best_first
    assert judge.calls == [("score", 3 * 4)]  # one batched call per step
    assert oracle.last_agreement == pytest.approx(1.0)
    assert all(r.rationale.startswith("agreement=1.00") for r in rankings)


def test_permutations_of_a_position_biased_judge_disagree(group_of: Any) -> None:
    groups, _ = groups_with_quality(group_of, n=2)
    oracle = LLMJudgeOracle(FixedTextJudge("A > B > C > D"), mode="generate", permutations=3, context="none",
                            seed=7)
    rankings = oracle.rank(groups)
    for group, ranking in zip(groups, rankings, strict=True):
        # What the oracle showed: the identity, then two seeded shuffles.
        rng = random.Random(f"7:{group.prompt.prompt_id}")
        shown = [list(range(4))] + [rng.sample(range(4), 4) for _ in range(2)]
        positions = []
        for s in shown:
            pos = [0.0] * 4
            for place, c in enumerate(s):
                pos[c] = float(place)
            positions.append(pos)
        expected = Ranking.from_scores("x", "y", borda_points(positions))
        assert ranking.order == expected.order and ranking.ties == expected.ties
        assert ranking.scores == borda_points(positions)
        agreement = mean_agreement(positions)
        assert agreement is not None and agreement < 1.0
        assert ranking.rationale.startswith(f"agreement={agreement:.2f}")
        assert ranking.raw.count("A > B > C > D") == 3
    assert oracle.last_agreement is not None and oracle.last_agreement < 1.0


def test_pairwise_both_orders_cancel_position_bias(group_of: Any) -> None:
    groups, best_first = groups_with_quality(group_of, n=3, g=4, seed=1)
    # Listwise, a bias of 5 "good"s makes whatever is shown first win.
    listwise = LLMJudgeOracle(QualityJudge(bias=5.0), mode="score", context="none").rank(groups)
    assert all(r.order[0] == 0 for r in listwise)
    judge = QualityJudge(bias=5.0)
    oracle = LLMJudgeOracle(judge, mode="score", pairwise=True, context="none")
    rankings = oracle.rank(groups)
    assert [r.order for r in rankings] == best_first
    assert judge.calls == [("score", 3 * 12)]  # 6 pairs x 2 orders per group, one call
    assert all("pairwise Borda over 6/6 pairs" in r.rationale for r in rankings)


def test_pairwise_generate_and_consistency(group_of: Any) -> None:
    groups, best_first = groups_with_quality(group_of, n=2, g=3)
    oracle = LLMJudgeOracle(QualityJudge(), mode="generate", pairwise=True, context="none")
    rankings = oracle.rank(groups)
    assert [r.order for r in rankings] == best_first
    assert oracle.last_agreement == 1.0  # an unbiased judge says the same in both orders
    biased = LLMJudgeOracle(FixedTextJudge("The better answer is A."), mode="generate", pairwise=True,
                            context="none")
    tied = biased.rank(groups)
    assert biased.last_agreement == 0.0
    assert all(r.ok and r.ties == [[0, 1, 2]] for r in tied)  # always-A cancels out to a draw


# ----------------------------------------------------------------------------- failures
@pytest.mark.parametrize("on_failure", ["skip", "tie"])
def test_unparseable_verdicts_follow_on_failure(group_of: Any, on_failure: str) -> None:
    groups = [group_of(0, ["x", "y", "z"]), group_of(1, ["u", "v"])]
    oracle = LLMJudgeOracle(FixedTextJudge("I cannot decide."), mode="generate", context="none",
                            on_failure=on_failure)
    rankings = oracle.rank(groups)
    for group, ranking in zip(groups, rankings, strict=True):
        assert ranking.raw == "I cannot decide."
        g = len(group.rollouts)
        if on_failure == "skip":
            assert ranking.failure and not ranking.order
        else:
            # all tied, and still recognisable as a failure, so losses leave it out and count it
            assert ranking.failure and not ranking.ok
            assert ranking.order == list(range(g)) and ranking.ties == [list(range(g))]
            assert "judge failed" in ranking.rationale


def test_a_crashing_backend_fails_the_groups_not_the_run(group_of: Any) -> None:
    oracle = LLMJudgeOracle(CrashingJudge(), mode="score", context="none")
    rankings = oracle.rank([group_of(0, ["a", "b"]), group_of(1, ["c", "d"])])
    assert all(r.failure and "out of memory" in r.failure for r in rankings)


def test_trivial_groups(group_of: Any) -> None:
    oracle = LLMJudgeOracle(QualityJudge(), context="none")
    one, empty = oracle.rank([group_of(0, ["only"]), group_of(1, [])])
    assert one.order == [0] and one.ok
    assert empty.failure


def test_bad_options_are_one_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        LLMJudgeOracle(QualityJudge(), mode="vote", context="video", on_failure="retry", permutations=0)
    assert len(info.value.problems) == 4


def test_template_override(group_of: Any) -> None:
    judge = QualityJudge()
    template = "Q={question}\nCTX={context}\nLABELS={labels}\n{candidates}"
    oracle = LLMJudgeOracle(judge, mode="score", context="narrative", template=template)
    ranking = oracle.rank([group_of(0, ["good one", "bad"], question="Why?", context="a red square")])[0]
    user = judge.conversations[0][-1]["content"]
    assert user.startswith("Q=Why?\nCTX=a red square\nLABELS=A, B\nAnswer A: good one\nAnswer B: bad")
    assert user.rstrip().endswith("Reply with its label only.")  # instruction appended
    assert ranking.order == [0, 1]


def test_listwise_score_mode_records_label_logprobs(group_of: Any) -> None:
    oracle = LLMJudgeOracle(QualityJudge(), mode="score", context="none")
    ranking = oracle.rank([group_of(0, ["bad", "good good", "good"])])[0]
    assert ranking.order == [1, 2, 0]
    assert ranking.scores == [0.0, 2.0, 1.0]
    assert "best by label likelihood: candidate 1" in ranking.rationale


# ----------------------------------------------------------------------------- real tiny LM
@pytest.mark.parametrize("mode", ["score", "generate"])
@pytest.mark.parametrize("chat", [False, True])
def test_real_tiny_lm_gives_valid_rankings_or_recorded_failures(
    mode: str, chat: bool, tiny_lm_dir: Path, tiny_chat_lm_dir: Path, group_of: Any
) -> None:
    backend = LocalHFBackend(tiny_chat_lm_dir if chat else tiny_lm_dir, max_batch=4)
    oracle = LLMJudgeOracle(backend, mode=mode, permutations=2, context="narrative", max_new_tokens=12)
    groups = [group_of(b, [f"the square is {c}" for c in ("red", "blue", "green", "yellow")][: 2 + b],
                       context="a red square moves left") for b in range(3)]
    rankings = oracle.rank(groups)
    assert len(rankings) == 3
    for group, ranking in zip(groups, rankings, strict=True):
        g = len(group.rollouts)
        assert ranking.prompt_id == group.prompt.prompt_id and ranking.oracle == "llm-judge"
        if ranking.failure is None:
            assert sorted(ranking.order) == list(range(g))
            assert ranking.positions()  # ties are consistent with the order
        else:
            assert ranking.order == [] and ranking.raw
    if mode == "score":  # label likelihoods always give a ranking
        assert all(r.ok and r.scores is not None for r in rankings)
        assert "A=" in rankings[0].raw


def test_registry_builds_the_judge_from_options(tiny_lm_dir: Path) -> None:
    registry = Registry()
    registry.load_entry_points()
    oracle = registry.build("oracle", "llm-judge", {"judge": str(tiny_lm_dir), "context": "none"},
                            benchmark=None, policy=None, store=None)
    assert oracle.name == "llm-judge" and not oracle.needs_context and not oracle.needs_reference
    with pytest.raises(ConfigError, match="unknown option 'mdoe'"):
        registry.build("oracle", "llm-judge", {"mdoe": "score"})


class TinyTextPolicy:
    """A policy with only the text half (``complete``), backed by the real tiny LM."""

    name = "tiny-text"

    def __init__(self, directory: Path) -> None:
        self.backend = LocalHFBackend(directory)
        self.completions = 0

    def complete(self, texts: Sequence[str], max_new_tokens: int = 48, greedy: bool = True) -> list[str]:
        self.completions += len(texts)
        conversations = [[{"role": "user", "content": t}] for t in texts]
        return [r.text for r in self.backend.generate(conversations, max_new_tokens=max_new_tokens)]


def test_self_judging_uses_the_policy(tiny_lm_dir: Path, group_of: Any, caplog: pytest.LogCaptureFixture) -> None:
    policy = TinyTextPolicy(tiny_lm_dir)
    with caplog.at_level(logging.WARNING):
        oracle = build_llm_judge(judge="self", mode="score", context="none", max_new_tokens=6, policy=policy)
    assert isinstance(oracle.backend, PolicyJudgeBackend)
    assert "falls back to mode='generate'" in caplog.text  # no label_logprobs on this policy
    rankings = oracle.rank([group_of(0, ["red", "blue"]), group_of(1, ["one", "two", "three"])])
    assert policy.completions == 2
    assert all(r.ok or (r.failure and r.raw) for r in rankings)


# ----------------------------------------------------------------------------- narratives
class MeanColourCaptioner:
    """A real, simple captioner: decodes the clip's frames from the benchmark's mp4 and
    names the strongest colour channel and the brightness."""

    name = "mean-colour"

    def __init__(self, benchmark: Any) -> None:
        self.benchmark = benchmark

    def caption(self, video: Any, frame_indices: Sequence[int]) -> str:
        frames = self.benchmark.frames(video)[list(frame_indices)]  # [T, H, W, 3]
        mean = frames.reshape(-1, 3).mean(0)
        channel = ("red", "green", "blue")[int(mean.argmax())]
        return f"frames {frame_indices[0]}-{frame_indices[-1]} are mostly {channel} (brightness {mean.mean():.0f})."


class Counting:
    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.calls = inner, inner.name, 0

    def caption(self, video: Any, frame_indices: Sequence[int]) -> str:
        self.calls += 1
        return str(self.inner.caption(video, frame_indices))


def world_groups(world: Any, n: int = 4) -> list[Group]:
    prompts = world.prompts("rl")[:n]
    return [Group(p, [Rollout(p.prompt_id, i, a) for i, a in enumerate(["good answer", "answer", "good good"])])
            for p in prompts]


def test_narratives_are_cached_in_the_run_store(world: Any, tmp_path: Path) -> None:
    from rlaif.core.store import RunStore

    groups = world_groups(world, n=8)
    videos = {g.prompt.video.video_id for g in groups}
    assert len(videos) >= 2
    captioner = Counting(MeanColourCaptioner(world))
    judge = QualityJudge()
    with RunStore(tmp_path / "store.lmdb") as store:
        oracle = LLMJudgeOracle(judge, context="narrative", n_clips=3, benchmark=world, store=store,
                                captioner=captioner)
        assert oracle.needs_context
        first = oracle.rank(groups)
        assert captioner.calls == 3 * len(videos)  # 3 clips per video, each video once
        oracle.rank(groups)
        assert captioner.calls == 3 * len(videos)  # second step: all from the cache
        resumed = LLMJudgeOracle(QualityJudge(), context="narrative", n_clips=3, benchmark=world, store=store,
                                 captioner=captioner)
        assert [r.order for r in resumed.rank(groups)] == [r.order for r in first]
        assert captioner.calls == 3 * len(videos)  # a resumed run reads the store
        video = groups[0].prompt.video
        text = narrative_for(video, benchmark=world, captioner=captioner, n_clips=3, store=store)
        assert text.count("frames") == 3 and captioner.calls == 3 * len(videos)
    user = judge.conversations[0][-1]["content"]
    assert "What happens in the video" in user and "are mostly" in user
    # Clips are at most 20 frames and cover the video in order.
    clips = [tuple(int(x) for x in m) for m in re.findall(r"frames (\d+)-(\d+)", text)]
    assert all(0 <= a <= b < video.n_frames and b - a < 20 for a, b in clips)
    assert [a for a, _ in clips] == sorted(a for a, _ in clips)


def test_narratives_of_a_captioner_named_by_its_weights_are_shared_across_runs(world: Any, tmp_path: Path) -> None:
    """A second run over the same videos reads the first run's narratives from the shared
    cache (and records them in its own store); a captioner whose name does not identify
    its weights never shares, and the key follows the video's bytes, not its path."""
    from rlaif.core.store import RunStore

    groups = world_groups(world, n=8)
    videos = {g.prompt.video.video_id for g in groups}
    shared = SharedNarratives(tmp_path / "narratives")

    def run(name: str, captioner: PolicyCaptioner) -> tuple[list[str], int]:
        judge = QualityJudge()
        (tmp_path / name).mkdir()
        with RunStore(tmp_path / name / "store.lmdb") as store:
            LLMJudgeOracle(judge, context="narrative", n_clips=3, benchmark=world, store=store, captioner=captioner,
                           shared_narratives=shared).rank(groups)
            assert all(store.get_narrative(narrative_key(v, captioner.name, 3, 20, 50)) for v in videos)
        return [c[-1]["content"] for c in judge.conversations], len(captioner.policy.prompts)

    first, captioned = run("a", PolicyCaptioner(RecordingPolicy(), frozen=False, name="captioner:w1",
                                                names_weights=True))
    assert captioned == 3 * len(videos) and len(list((tmp_path / "narratives").rglob("*.txt"))) == len(videos)
    again, captioned = run("b", PolicyCaptioner(RecordingPolicy(), frozen=False, name="captioner:w1",
                                                names_weights=True))
    assert captioned == 0 and again == first  # nothing captioned, the same narratives judged
    _, captioned = run("c", PolicyCaptioner(RecordingPolicy(), frozen=False, name="captioner:w2",
                                            names_weights=True))
    assert captioned == 3 * len(videos)  # other weights: captioned afresh
    unnamed = PolicyCaptioner(RecordingPolicy())  # "policy:recording:sft" says nothing of its weights
    _, captioned = run("d", unnamed)
    assert captioned == 3 * len(videos) and len(list((tmp_path / "narratives").rglob("*.txt"))) == 2 * len(videos)

    video = groups[0].prompt.video
    copy = tmp_path / "elsewhere.mp4"
    copy.write_bytes(Path(video.path).read_bytes())
    named = PolicyCaptioner(RecordingPolicy(), frozen=False, name="captioner:w1", names_weights=True)
    moved = narrative_for(VideoRef(video_id="renamed", path=str(copy), n_frames=video.n_frames), benchmark=world,
                          captioner=named, n_clips=3, shared=shared)
    assert named.policy.prompts == [] and moved == shared.get(shared.key(video, named, 3, 20, 50))
    assert shared.key(video, unnamed, 3, 20, 50) is None
    longer = PolicyCaptioner(RecordingPolicy(), frozen=False, name="captioner:w1", names_weights=True,
                             max_new_tokens=96)
    assert shared.key(video, longer, 3, 20, 50) != shared.key(video, named, 3, 20, 50)
    broken = SharedNarratives(copy / "not-a-directory")  # cannot be written: costs time, never the run
    text = narrative_for(video, benchmark=world, captioner=named, n_clips=3, shared=broken)
    assert text == moved and len(named.policy.prompts) == 3


def test_narrative_from_a_group_context_is_used_as_is(world: Any) -> None:
    captioner = Counting(MeanColourCaptioner(world))
    judge = QualityJudge()
    oracle = LLMJudgeOracle(judge, context="narrative", benchmark=world, captioner=captioner)
    group = world_groups(world, 1)[0]
    oracle.rank([Group(group.prompt, group.rollouts, context="given by the loop")])
    assert captioner.calls == 0 and "given by the loop" in judge.conversations[0][-1]["content"]


def test_gold_context_is_the_benchmark_narrative(world: Any) -> None:
    judge = QualityJudge()
    oracle = LLMJudgeOracle(judge, context="gold", n_clips=3, benchmark=world)
    assert oracle.needs_reference and not oracle.needs_context
    group = world_groups(world, 1)[0]
    oracle.rank([group])
    gold = world.narrative(group.prompt.video, n_clips=3, n_frames=50)
    assert gold and gold in judge.conversations[0][-1]["content"]


def test_missing_captioner_is_a_recorded_failure(group_of: Any) -> None:
    oracle = LLMJudgeOracle(QualityJudge(), context="narrative")
    ranking = oracle.rank([group_of(0, ["a", "b"])])[0]
    assert ranking.failure and "captioner" in ranking.failure


class RecordingPolicy:
    """Records how the captioner adapter calls ``generate`` (frame ranges, greedy) and
    whether adapters were disabled; answers with a fixed caption per clip."""

    name = "recording"

    def __init__(self) -> None:
        self.prompts: list[Any] = []
        self.kwargs: dict[str, Any] = {}
        self.disabled = 0

    def adapters_disabled(self) -> Any:
        import contextlib

        self.disabled += 1
        return contextlib.nullcontext()

    def generate(self, prompts: Sequence[Any], n: int, *, max_new_tokens: int = 32, temperature: float = 1.0,
                 greedy: bool = False) -> list[list[Rollout]]:
        self.prompts += list(prompts)
        self.kwargs = {"greedy": greedy, "n": n}
        return [[Rollout(p.prompt_id, 0, f"clip {p.meta['frame_range']}")] for p in prompts]


def test_policy_captioner_asks_the_sft_policy_per_clip(world: Any) -> None:
    policy = RecordingPolicy()
    video = world.prompts("rl")[0].video
    text = narrative_for(video, benchmark=world, captioner=PolicyCaptioner(policy), n_clips=3)
    assert policy.disabled == 1 and policy.kwargs == {"greedy": True, "n": 1}
    assert [p.question for p in policy.prompts] == ["Describe this video in detail."] * 3
    ranges = [p.meta["frame_range"] for p in policy.prompts]
    assert ranges[0][0] == 0 and ranges[-1][1] == video.n_frames
    assert text == " ".join(f"clip {r}" for r in ranges)


# ----------------------------------------------------------------------------- secrets
def test_api_key_never_leaks(judge_server: Any, group_of: Any, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-test-" + "".join(random.Random(0).choices("abcdefghijklmnop0123456789", k=24))
    monkeypatch.setenv("RLAIF_TEST_JUDGE_KEY", secret)
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    groups = [group_of(0, ["red", "blue"]), group_of(1, ["one", "two"])]
    with caplog.at_level(logging.DEBUG):
        # /echo is a leaky server: its reply quotes the Authorization header.
        oracle = build_llm_judge(judge_url=judge_server.url + "/echo/v1", model="tiny",
                                 api_key_env="RLAIF_TEST_JUDGE_KEY", mode="generate", context="none")
        rankings = oracle.rank(groups)
        failing = build_llm_judge(judge_url=judge_server.url + "/bad/v1", api_key_env="RLAIF_TEST_JUDGE_KEY",
                                  mode="generate", context="none", retries=0)
        rankings += failing.rank(groups)
        logging.getLogger("rlaif").info("oracle %r backend %r", oracle, oracle.backend)
    assert judge_server.headers[0]["Authorization"] == f"Bearer {secret}"  # it was sent...
    assert all(r.order == [1, 0] for r in rankings[:2])
    assert "[redacted]" in rankings[0].raw
    dumped = json.dumps([r.to_dict() for r in rankings])
    cache_files = "".join(p.read_text() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    for where in (dumped, repr(oracle), repr(oracle.backend), repr(vars(oracle.backend)), caplog.text, cache_files):
        assert secret not in where  # ...and is nowhere else
    assert cache_files  # the cache was written (redacted)


# ----------------------------------------------------------------------------- native self-judging
def test_native_self_judging_asks_in_the_sft_format_with_the_video(world: Any, small_video_policy: Any) -> None:
    """judge='self' on a policy taught to judge: the judging item is the SFT format with
    the group's video, and the scores are the frozen policy's log-probs of each label
    starting its reply; generate mode reads the reply with the ranking parser."""
    policy = small_video_policy
    oracle = build_llm_judge(judge="self", mode="score", context="none", policy=policy, benchmark=world)
    assert oracle.native and oracle.scoring
    groups = world_groups(world, n=2)
    rankings = oracle.rank(groups)
    assert all(r.ok and r.scores is not None and len(r.scores) == 3 for r in rankings)

    group = groups[1]
    item = policy.judge_prompt(group.prompt, [r.text for r in group.rollouts], None)
    assert item.video == group.prompt.video
    assert item.question.startswith(f"rank the answers to: {group.prompt.question} | A: good answer | B: answer")
    with torch.no_grad(), policy.adapters_disabled():
        expected = []
        for i, label in enumerate("ABC"):
            ids = policy.answer_ids(label)[:-1]
            out = policy.forward_responses([item], [Rollout(item.prompt_id, i, label, token_ids=ids)])
            expected.append(float(out["logprobs"].sum()))
    assert rankings[1].scores == pytest.approx(expected, abs=1e-4)

    generating = build_llm_judge(judge="self", mode="generate", context="none", max_new_tokens=6, policy=policy,
                                 benchmark=world)
    assert generating.native and not generating.scoring
    assert all(r.ok or (r.failure and r.raw is not None) for r in generating.rank(groups))
