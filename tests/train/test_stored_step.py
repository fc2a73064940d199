"""Rebuilding a stored step (resume, replay) from a real LMDB store: prompts come from the
store, and a store written before prompts were kept still loads through the benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlaif.core.errors import StoreError
from rlaif.core.records import Group, Prompt, Ranking, Rollout, VideoRef
from rlaif.core.store import RunStore
from rlaif.train.rl import RUN_ID, StepData, commit_sampled_step, stored_step

ORACLE = "ground-truth"


def sampled_step(step: int) -> StepData:
    prompts = [Prompt(f"p{g}", VideoRef(f"v{g}", f"v{g}.mp4"), f"how many shapes in video {g}?", reference="two")
               for g in range(2)]
    groups = [Group(p, [Rollout(p.prompt_id, i, f"{i} shapes", [i], [-0.1]) for i in range(3)]) for p in prompts]
    rankings = [Ranking.from_scores(p.prompt_id, ORACLE, [0.0, 1.0, 0.0]) for p in prompts]
    return StepData(step, groups, rankings)


def test_stored_step_reads_its_prompts_from_the_store(tmp_path: Path) -> None:
    data = sampled_step(1)
    with RunStore(tmp_path) as store:
        commit_sampled_step(store, data, ORACLE)
        again = stored_step(store, 1, ORACLE)  # no benchmark at all
        assert again.groups == data.groups and again.rankings == data.rankings
        # The stored record wins over a benchmark whose prompt has since changed.
        edited = {g.prompt.prompt_id: Prompt(g.prompt.prompt_id, g.prompt.video, "edited?") for g in data.groups}
        assert stored_step(store, 1, ORACLE, edited).groups == data.groups


def test_a_store_without_prompts_still_replays_through_the_benchmark(tmp_path: Path) -> None:
    data = sampled_step(1)
    with RunStore(tmp_path) as store:
        # What `rlaif run` wrote before prompts were committed with their step.
        store.commit_step(RUN_ID, 1, rollouts=[r for g in data.groups for r in g.rollouts],
                          rankings={ORACLE: data.rankings})
        benchmark_rl_split = {g.prompt.prompt_id: g.prompt for g in data.groups}
        assert stored_step(store, 1, ORACLE, benchmark_rl_split).groups == data.groups
        with pytest.raises(StoreError, match="neither in the store nor in the benchmark"):
            stored_step(store, 1, ORACLE, {})
