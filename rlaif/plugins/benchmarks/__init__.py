"""Built-in benchmarks, registered through the oracle_rlaif.plugins entry point like any plugin."""

from rlaif import hookimpl


@hookimpl
def rlaif_register_benchmarks(register):
    register(
        "video-world",
        "rlaif.plugins.benchmarks.video_world:VideoWorld",
        description="Procedural videos of moving shapes with ground-truth QA (offline default)",
    )
    register(
        "video-qa",
        "rlaif.plugins.benchmarks.video_qa:VideoQA",
        description="Your own videos with Video-ChatGPT / Video-LLaVA, VCGBench, JSONL or VLM-RLAIF annotations",
    )
