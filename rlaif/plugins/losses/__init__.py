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
    register(
        "gopo",
        "rlaif.plugins.losses.gopo:GOPOLoss",
        description="GOPO (arXiv 2602.03876): linear rank advantages +2..-2, clipped objective, k3 KL",
    )
    register(
        "plackett-luce",
        "rlaif.plugins.losses.plackett_luce:PlackettLuceLoss",
        description="Listwise Plackett-Luce NLL of each ranking under DPO's implicit reward (= dpo at G = 2)",
    )
    register(
        "corpo",
        "rlaif.plugins.losses.corpo:CoRPOLoss",
        description="CoRPO (arXiv 2511.04439): GRPO with the baseline clipped at a correctness threshold",
    )
