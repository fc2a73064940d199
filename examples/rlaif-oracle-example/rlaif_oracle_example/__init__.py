"""An example rlaif plugin: registers the ``keyword-overlap`` oracle.

This module is what the ``oracle_rlaif.plugins`` entry point names, so rlaif imports it
to list plugins: it registers a target string and imports nothing else. The oracle's own
module is imported when a run builds it.
"""

from __future__ import annotations

from rlaif import hookimpl
from rlaif.core.hookspecs import Register

__version__ = "0.1.0"


@hookimpl
def rlaif_register_oracles(register: Register) -> None:
    register(
        "keyword-overlap",
        "rlaif_oracle_example.keyword_overlap:KeywordOverlapOracle",
        description="Ranks answers by words shared with the question and the video narrative",
    )
