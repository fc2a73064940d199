"""Builders for RankedBatch fixtures made of real records (Group/Prompt/Rollout/Ranking)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from rlaif.core.protocols import RankedBatch
from rlaif.core.records import Group, Prompt, Ranking, Rollout, VideoRef

torch.set_num_threads(1)


class Build:
    """Namespace of small record builders; prompt ids are ``p0, p1, ...`` by group."""

    @staticmethod
    def ranking(
        b: int,
        order: Sequence[int],
        ties: Sequence[Sequence[int]] = (),
        scores: Sequence[float] | None = None,
    ) -> Ranking:
        return Ranking(
            prompt_id=f"p{b}",
            oracle="test",
            order=list(order),
            ties=[list(t) for t in ties],
            scores=list(scores) if scores is not None else None,
        )

    @staticmethod
    def from_scores(b: int, scores: Sequence[float], score_range: Sequence[float] | None = None) -> Ranking:
        """A scoring oracle's ranking; ``score_range`` declares the scale (None: an order only)."""
        return Ranking.from_scores(f"p{b}", "test", scores,
                                   score_range=list(score_range) if score_range is not None else None)

    @staticmethod
    def failed(b: int) -> Ranking:
        return Ranking(prompt_id=f"p{b}", oracle="test", failure="unparseable", raw="??")

    @staticmethod
    def group(b: int, size: int, finished: Sequence[bool] | None = None) -> Group:
        prompt = Prompt(
            prompt_id=f"p{b}", video=VideoRef(video_id=f"v{b}", path=f"v{b}.mp4"), question="What happens?"
        )
        done = list(finished) if finished is not None else [True] * size
        rollouts = [
            Rollout(prompt_id=f"p{b}", index=i, text=f"answer {i}", finished=done[i]) for i in range(size)
        ]
        return Group(prompt=prompt, rollouts=rollouts)

    @classmethod
    def batch(
        cls,
        rankings: Sequence[Ranking],
        sizes: Sequence[int],
        tensors: dict[str, Any],
        finished: Sequence[Sequence[bool]] | None = None,
    ) -> RankedBatch:
        groups = [
            cls.group(b, size, finished[b] if finished is not None else None) for b, size in enumerate(sizes)
        ]
        return RankedBatch(groups=groups, rankings=list(rankings), tensors=dict(tensors))


@pytest.fixture
def build() -> type[Build]:
    return Build
