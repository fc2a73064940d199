"""The ``keyword-overlap`` oracle: rank candidates by the words they share with the
question and, when the group has one, with the narrative of the video.

It needs no model and no ground truth, which makes it a cheap baseline and a stand-in
oracle for smoke tests. A candidate's score is the number of distinct content words it
shares with the question plus ``context_weight`` times the number it shares with the
narrative; candidates with equal scores are tied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rlaif.core.records import Group, Ranking

# Words too common to say anything about an answer's relevance.
STOP_WORDS = frozenset(
    "a an and are as at be but by did do does for from had has have he her his how i in is it its "
    "of on or she that the their them they this to was were what when where which who why will "
    "with you".split()
)


def content_words(text: str) -> set[str]:
    """Lower-cased words and numbers of ``text``, stop words removed."""
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP_WORDS}


class KeywordOverlapOracle:
    """Scores each answer by word overlap; uses the narrative when the group has one."""

    name = "keyword-overlap"
    needs_context = False  # a narrative helps but is not required
    needs_reference = False

    def __init__(self, context_weight: float = 1.0) -> None:
        self.context_weight = context_weight

    def score(self, group: Group, answer: str) -> float:
        words = content_words(answer)
        score = float(len(words & content_words(group.prompt.question)))
        if group.context:
            score += self.context_weight * len(words & content_words(group.context))
        return score

    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        rankings = []
        for group in groups:
            scores = [self.score(group, rollout.text) for rollout in group.rollouts]
            rankings.append(
                Ranking.from_scores(
                    group.prompt.prompt_id,
                    self.name,
                    scores,
                    rationale="shared content words with the question"
                    + (" and the narrative" if group.context else ""),
                )
            )
        return rankings
