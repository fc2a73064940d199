"""Built-in oracles, registered through the oracle_rlaif.plugins entry point like any plugin."""

from rlaif import hookimpl


@hookimpl
def rlaif_register_oracles(register):  # type: ignore[no-untyped-def]
    register("ground-truth", "rlaif.plugins.oracles.ground_truth:GroundTruthOracle",
             description="Verifier: ranks by correctness against the benchmark's answer (needs ground truth)")
    register("llm-judge", "rlaif.plugins.oracles.llm_judge:build_llm_judge",
             description="LLM judge (SmolLM2 by default, the policy, or an OpenAI-compatible endpoint) ranks "
                         "answers listwise or pairwise, with the video's narrative as context")
    register("embedding-sim", "rlaif.plugins.oracles.embedding_sim:build_embedding_sim",
             description="Baseline: cosine similarity (all-MiniLM-L6-v2) of each answer to the video's "
                         "narrative or the reference answer")
    register("reward-model", "rlaif.plugins.oracles.reward_model:build_reward_model",
             description="VLM-RLAIF reward model (Bradley-Terry head on the SFT policy, `rlaif train-rm`) "
                         "ranks answers by its scalar reward")
