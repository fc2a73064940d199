"""The ``ground-truth`` oracle: a verifier that ranks candidates against the benchmark's
answer. It exists so learning can be shown without any AI judge, and it is the upper
bound an AI judge is compared with in ``rlaif oracle check``.

Order: higher ``benchmark.item_score`` first; among equal scores, well-formed answers
(the policy emitted end-of-sequence) before truncated ones, then shorter before longer
(a correct short answer beats a correct rambling one). Candidates equal on all three keys
are reported as ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlaif.core.errors import OracleError
from rlaif.core.records import Group, Ranking


class GroundTruthOracle:
    name = "ground-truth"
    needs_context = False
    needs_reference = True

    def __init__(self, benchmark: Any = None) -> None:
        if benchmark is None or not getattr(benchmark, "has_ground_truth", False):
            which = getattr(benchmark, "name", "this benchmark")
            raise OracleError(
                f"the ground-truth oracle needs a benchmark with ground truth, and {which} has none; "
                "use --oracle llm-judge or embedding-sim"
            )
        self.benchmark = benchmark

    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        rankings = []
        for group in groups:
            if group.prompt.reference is None:
                rankings.append(Ranking(group.prompt.prompt_id, self.name, failure="prompt has no reference answer"))
                continue
            keys = [
                (
                    float(self.benchmark.item_score(group.prompt, r.text)),
                    1.0 if r.finished else 0.0,
                    -float(len(r.token_ids) or len(r.text.split())),
                )
                for r in group.rollouts
            ]
            order = sorted(range(len(keys)), key=lambda i: (tuple(-k for k in keys[i]), i))
            ties: list[list[int]] = []
            start = 0
            for pos in range(1, len(order) + 1):
                if pos == len(order) or keys[order[pos]] != keys[order[start]]:
                    if pos - start > 1:
                        ties.append(order[start:pos])
                    start = pos
            rankings.append(
                Ranking(group.prompt.prompt_id, self.name, order=order, ties=ties,
                        scores=[k[0] for k in keys], rationale="score, then well-formed, then shorter")
            )
        return rankings
