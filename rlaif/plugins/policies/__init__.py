"""Built-in policies, registered through the oracle_rlaif.plugins entry point like any plugin."""

from rlaif import hookimpl


@hookimpl
def rlaif_register_policies(register):  # type: ignore[no-untyped-def]
    register("tiny-video-lm", "rlaif.plugins.policies.tiny_video_lm:build_tiny_video_lm",
             description="Embedded default: frozen tiny-conv encoder -> MLP projector -> tiny Llama with LoRA")
    register("hf-vlm", "rlaif.plugins.policies.hf_vlm:build_hf_vlm", description="Any transformers video VLM (Qwen2.5-VL, LLaVA-OneVision, SmolVLM2) with LoRA")
    register("hf-causal-lm", "rlaif.plugins.policies.hf_causal_lm:build_hf_causal_lm", description="Any transformers text causal LM with LoRA (text-only prompts; baselines and judges)")
