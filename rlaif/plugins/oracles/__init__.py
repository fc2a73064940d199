"""Built-in oracles, registered through the oracle_rlaif.plugins entry point like any plugin."""

from rlaif import hookimpl


@hookimpl
def rlaif_register_oracles(register):  # type: ignore[no-untyped-def]
    register("ground-truth", "rlaif.plugins.oracles.ground_truth:GroundTruthOracle",
             description="Verifier: ranks by correctness against the benchmark's answer (needs ground truth)")
