"""Built-in oracles, registered through the oracle_rlaif.plugins entry point like any plugin."""

from rlaif import hookimpl


@hookimpl
def rlaif_register_oracles(register):  # type: ignore[no-untyped-def]
    pass
