"""Video encoders, plain modules that policies embed: ``tiny_conv`` (tiny-video-lm's
encoder, saved in its checkpoints) and ``clip`` (a frozen CLIP vision tower). Encoders are
not a registry kind: a policy owns its encoder, so there is nothing to choose per run."""
