"""The ``ground-truth`` oracle: a verifier that ranks candidates against the benchmark's
answer. It exists so learning can be shown without any AI judge, and it is the upper
bound an AI judge is compared with in ``rlaif oracle check``.

Order: higher ``benchmark.item_score`` first; among equal scores, the tie-break
(option ``tie_break``):

- ``none`` (default): equal scores stay tied, so the ranking carries exactly what the
  scores carry and every loss -- rank losses (``grpo-rank``, ``dpo``) and score losses
  (``grpo``, ``ppo``) alike -- gets the same preference information;
- ``formed``: well-formed answers (the policy emitted end-of-sequence) before truncated
  ones;
- ``formed-length``: well-formed first, then shorter before longer.

Candidates equal on every key in use are reported as ties (they share a rank gain in
``grpo-rank``). The finer tie-breaks are opt-in because only the rank losses see them: in
an all-wrong group ``formed-length`` tells ``grpo-rank`` and ``dpo`` that a shorter wrong
answer is better, a length prior that ``grpo`` and ``ppo`` (reading the scores) never get.

Free-text answers (a benchmark's ``needs_judge`` items) cannot be scored this way:
:meth:`GroundTruthOracle.can_score` says so per prompt, and ``rlaif run`` checks its
``rl`` split with it when it builds the oracle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlaif.core.errors import OracleError
from rlaif.core.records import Group, Ranking

TIE_BREAKS = ("none", "formed", "formed-length")
RATIONALES = {"formed-length": "score, then well-formed, then shorter", "formed": "score, then well-formed",
              "none": "score"}


class GroundTruthOracle:
    name = "ground-truth"
    needs_context = False
    needs_reference = True
    score_range = (0.0, 1.0)  # benchmark.item_score: 1 = correct

    def __init__(self, benchmark: Any = None, tie_break: str = "none") -> None:
        if tie_break not in TIE_BREAKS:
            raise OracleError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
        if benchmark is None or not getattr(benchmark, "has_ground_truth", False):
            which = getattr(benchmark, "name", "this benchmark")
            raise OracleError(
                f"the ground-truth oracle needs a benchmark with ground truth, and {which} has none; "
                "use --oracle llm-judge or embedding-sim"
            )
        self.benchmark = benchmark
        self.tie_break = tie_break

    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        rankings = []
        for group in groups:
            if group.prompt.reference is None:
                rankings.append(Ranking(group.prompt.prompt_id, self.name, failure="prompt has no reference answer"))
                continue
            keys = [self._key(group.prompt, r) for r in group.rollouts]
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
                        scores=[k[0] for k in keys], rationale=RATIONALES[self.tie_break])
            )
        return rankings

    def can_score(self, prompt: Any) -> bool:
        """Whether :meth:`rank` can score candidates to ``prompt`` by exact match: not
        when the benchmark marks its answer as free text that needs a judge (video-qa's
        ``needs_judge``; ``item_score`` refuses those), so a run can refuse such items
        before it starts rather than stop at the first one."""
        from rlaif.train.judge_eval import needs_judge

        return not needs_judge(self.benchmark, prompt)

    def _key(self, prompt: Any, rollout: Any) -> tuple[float, ...]:
        """Sort key, larger is better: (score,) plus the tie-break's keys."""
        key: tuple[float, ...] = (float(self.benchmark.item_score(prompt, rollout.text)),)
        if self.tie_break != "none":
            key += (1.0 if rollout.finished else 0.0,)
        if self.tie_break == "formed-length":
            key += (-float(len(rollout.token_ids) or len(rollout.text.split())),)
        return key
