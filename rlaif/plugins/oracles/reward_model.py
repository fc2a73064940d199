"""The ``reward-model`` oracle: VLM-RLAIF's trained reward model used as a ranker.

It loads what ``rlaif train-rm RUN_DIR`` saved (``RUN_DIR/reward_model``: a Bradley-Terry
head on the SFT policy with its own LoRA adapter; see :mod:`rlaif.train.reward_model`),
scores every candidate of a step in batched forwards and ranks by score
(:meth:`Ranking.from_scores`; scores are rounded to 6 decimals so identical answers tie).
It reads only the question, the video and the answers: no reference, no narrative.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlaif.core.records import Group, Ranking


class RewardModelOracle:
    name = "reward-model"
    needs_context = False
    needs_reference = False

    def __init__(self, model: Any, *, batch: int = 64, path: str = "") -> None:
        self.model = model
        self.batch = batch
        self.path = path

    def __repr__(self) -> str:
        return f"RewardModelOracle({self.path!r})"

    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        prompts = [g.prompt for g in groups for _ in g.rollouts]
        answers = [r for g in groups for r in g.rollouts]
        scores = self.model.score(prompts, answers, batch=self.batch)
        rankings, at = [], 0
        for group in groups:
            mine = [round(float(s), 6) for s in scores[at : at + len(group.rollouts)]]
            at += len(group.rollouts)
            rankings.append(Ranking.from_scores(group.prompt.prompt_id, self.name, mine,
                                                rationale="reward model score"))
        return rankings


def build_reward_model(path: str, batch: int = 64, benchmark: Any = None, seed: int = 0) -> RewardModelOracle:
    """Build the ``reward-model`` oracle.

    :param path: a reward model saved by ``rlaif train-rm`` (``RUN_DIR/reward_model``,
        or the run directory itself).
    :param batch: answers scored per forward pass.
    """
    from rlaif.train.reward_model import RewardModel

    model = RewardModel.load(path, benchmark=benchmark, seed=seed)
    return RewardModelOracle(model, batch=batch, path=str(path))
