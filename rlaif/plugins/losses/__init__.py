"""Built-in losses, registered through the oracle_rlaif.plugins entry point like any plugin.

Only targets are registered here; the loss modules (and torch) are imported when a loss
is built, so listing plugins stays fast.
"""

from rlaif import hookimpl


@hookimpl
def rlaif_register_losses(register):  # type: ignore[no-untyped-def]
    register(
        "grpo-rank",
        "rlaif.plugins.losses.grpo_rank:GRPORankLoss",
        description="Oracle-RLAIF GRPO_rank: DCG rank-aware advantages, clipped objective, KL to reference",
    )
    register(
        "grpo",
        "rlaif.plugins.losses.grpo:GRPOLoss",
        description="GRPO baseline: group-normalised score advantages, clipped objective, k3 KL to reference",
    )
    register(
        "ppo",
        "rlaif.plugins.losses.ppo:PPOLoss",
        description="VLM-RLAIF PPO: per-token KL-shaped rewards, GAE, whitened advantages, clipped value loss",
    )
    register(
        "dpo",
        "rlaif.plugins.losses.dpo:DPOLoss",
        description="DPO on pairs read off each ranking (best vs worst, or all ordered pairs)",
    )
