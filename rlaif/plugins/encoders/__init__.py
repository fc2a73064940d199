"""Built-in encoders, registered through the oracle_rlaif.plugins entry point like any plugin."""

from rlaif import hookimpl


@hookimpl
def rlaif_register_encoders(register):  # type: ignore[no-untyped-def]
    register("tiny-conv", "rlaif.plugins.encoders.tiny_conv:build_tiny_conv",
             description="Small CNN pre-trained CLIP-style on the video world, frozen, Video-ChatGPT pooling")
    register("clip", "rlaif.plugins.encoders.clip:build_clip", description="Frozen CLIP vision tower (local path or hub id) with Video-ChatGPT pooling")
