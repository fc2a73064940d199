"""Tests a plugin should ship. ``test_plugin_is_installed`` is the one to copy: it fails
when the entry point is missing from the installed metadata or the plugin does not load,
which is what goes wrong when packaging changes. Run after ``pip install -e .``."""

from __future__ import annotations

from rlaif.core.protocols import Oracle
from rlaif.core.records import Group, Prompt, Rollout, VideoRef
from rlaif.core.registry import Registry


def test_plugin_is_installed() -> None:
    registry = Registry()  # a fresh one: reads the installed entry points, nothing cached
    registry.load_entry_points()
    assert not [p.error for p in registry.failures() if p.dist == "rlaif-oracle-example"]
    spec = registry.get("oracle", "keyword-overlap")
    assert spec.dist == "rlaif-oracle-example"
    assert spec.version


def make_group(question: str, answers: list[str], context: str | None = None) -> Group:
    prompt = Prompt("p0", VideoRef("v0", "v0.mp4"), question)
    return Group(prompt, [Rollout("p0", i, text) for i, text in enumerate(answers)], context=context)


def test_ranks_by_overlap_with_question_and_context() -> None:
    from rlaif_oracle_example.keyword_overlap import KeywordOverlapOracle

    oracle = KeywordOverlapOracle()
    assert isinstance(oracle, Oracle)
    group = make_group(
        "What is the dog chasing in the park?",
        ["A cat.", "The dog is chasing a red ball.", "The dog runs.", "A dog."],
        context="A dog chases a red ball across a park.",
    )
    (ranking,) = oracle.rank([group])
    # question overlap + narrative overlap: 2+3, 0+0, 1+1, 1+1
    assert ranking.scores == [0.0, 5.0, 2.0, 2.0]
    assert ranking.order == [1, 2, 3, 0]
    assert ranking.ties == [[2, 3]]


def test_without_context_only_the_question_counts() -> None:
    from rlaif_oracle_example.keyword_overlap import KeywordOverlapOracle

    group = make_group("Where is the dog?", ["In the park.", "The dog sleeps."])
    (ranking,) = KeywordOverlapOracle(context_weight=5.0).rank([group])
    assert ranking.scores == [0.0, 1.0] and ranking.order == [1, 0] and ranking.ties == []
