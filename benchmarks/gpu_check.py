"""GPU check: one video GRPO step at a small real scale, ours against TRL's ``GRPOTrainer``.

A random-init Qwen2.5-VL of about 0.5B parameters (a Qwen2.5-0.5B-shaped language model,
24 layers of width 896, and a 12-block vision tower of width 768) in bf16, with bf16
autocast on both sides; 2 prompts per step over 16-frame 224x224 videos, G = 8
candidates of up to 64 tokens; LoRA r=16 on the language model's q/k/v/o. The step is
:mod:`video_grpo_step`'s, on both sides (TRL gets the frames as a list of images).

Reported per side, medians over ``--steps`` steps after ``--warmup``:

- rollout tokens/s: completion tokens generated per second of the sample phase;
- update step time: reference and policy log-probs, loss, backward, optimizer step;
- MFU, the model FLOPs per second over the GPU's peak dense bf16 rate: the estimate is
  2 x N x tokens for generation (prefill and decode) and 6 x N x tokens for the update
  (forward and backward), with N the language model's parameters (its embedding table
  left out) and tokens every prompt and completion token of the step's rows. It leaves
  out attention's quadratic term, the vision tower and the update's no-grad reference
  pass, so it is a floor; peak rates come from :data:`PEAK_BF16_TFLOPS` by device name;
- peak memory: ``torch.cuda.max_memory_allocated`` over the side's steps.

It finishes in a few minutes on one H100/H200/A100. ``--dry-run`` runs the same code on
the CPU at a tiny size in seconds (a test runs it so this script cannot rot). Without
TRL installed (the ``bench`` extra) only our side is measured.

Usage: ``python benchmarks/gpu_check.py [--dry-run] [--no-trl] [--steps 2]``. Not a test:
no thresholds.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from video_grpo_step import run_ours, run_trl, save_tiny_qwen2_5_vl, update_seconds  # noqa: E402

#: Dense bf16 tensor-core peak per GPU, TFLOP/s (vendor datasheets, without sparsity);
#: the first name found in ``torch.cuda.get_device_name()`` wins.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM
    "A100": 312.0,
}

SIZES: dict[str, dict[str, Any]] = {
    # ~0.5B: Qwen2.5-0.5B's language model shape (its 151k vocabulary aside) and a
    # smaller vision tower than Qwen2.5-VL's 32 x 1280.
    "gpu": dict(vocab=4096, hidden=896, layers=24, intermediate=4864, heads=14, kv_heads=2, vision_hidden=768,
                vision_depth=12, vision_intermediate=3072, side=224, max_new_tokens=64, prompts=2),
    "dry-run": dict(vocab=512, hidden=64, layers=2, intermediate=128, heads=2, kv_heads=2, vision_hidden=64,
                    vision_depth=1, vision_intermediate=128, side=56, max_new_tokens=8, prompts=1),
}


def peak_tflops(device: str) -> tuple[str, float | None]:
    """(device name, its peak dense bf16 TFLOP/s or None where unknown)."""
    if not device.startswith("cuda"):
        return "cpu", None
    import torch

    name = torch.cuda.get_device_name()
    return name, next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def language_model_parameters(model_dir: Path) -> tuple[int, int]:
    """(parameters of the language model without its input embeddings, all parameters),
    counted on the meta device."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(AutoConfig.from_pretrained(model_dir))
    decoder = model.get_decoder()
    lm = sum(p.numel() for p in decoder.parameters()) - decoder.get_input_embeddings().weight.numel()
    lm += sum(p.numel() for p in model.get_output_embeddings().parameters())
    return lm, sum(p.numel() for p in model.parameters())


def summarise(m: dict[str, float], rows: int, n_lm: int, peak: float | None) -> dict[str, float | None]:
    """Rollout tokens/s, update time, MFU of both phases and peak memory of one side."""
    tokens = rows * (m["prompt_tokens"] + m["completion_tokens"])
    update = update_seconds(m)
    out: dict[str, float | None] = {
        "rollout tokens/s": rows * m["completion_tokens"] / m["sample"],
        "sample s/step": m["sample"],
        "update s/step": update,
        "total s/step": m["total"],
        "MFU generation": None,
        "MFU update": None,
        "peak memory GiB": m["peak_mem_gib"],
        "prompt tokens/row": m["prompt_tokens"],
        "completion tokens/row": m["completion_tokens"],
    }
    if peak:
        out["MFU generation"] = 2 * n_lm * tokens / m["sample"] / (peak * 1e12)
        out["MFU update"] = 6 * n_lm * tokens / update / (peak * 1e12)
    return out


def print_report(columns: dict[str, dict[str, float | None]]) -> None:
    names = list(columns)
    print(f"\n{'':<24}" + "".join(f"{n:>14}" for n in names))
    for key in columns[names[0]]:
        cells = []
        for n in names:
            value = columns[n][key]
            if value is None:
                cells.append(f"{'n/a':>14}")
            elif key.startswith("MFU"):
                cells.append(f"{value:>14.1%}")
            else:
                cells.append(f"{value:>14.2f}")
        print(f"{key:<24}" + "".join(cells))
    if "ours" in columns and "trl" in columns:
        ours, trl = columns["ours"], columns["trl"]
        print(f"\nthroughput ours / trl: rollout {ours['rollout tokens/s'] / trl['rollout tokens/s']:.2f}x, "  # type: ignore[operator]
              f"step {trl['total s/step'] / ours['total s/step']:.2f}x")  # type: ignore[operator]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at a tiny size")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per side (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--no-trl", action="store_true", help="measure only our side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    size = SIZES["dry-run" if args.dry_run else "gpu"]
    if args.dry_run:
        args.device, args.steps = "cpu", 1
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device; use --dry-run to check the script on the CPU")
        args.device = "cuda"
    # What video_grpo_step's runners read.
    args.side, args.max_new_tokens, args.prompts = size["side"], size["max_new_tokens"], size["prompts"]
    args.dtype, args.mixed_precision, args.beta, args.lr = "bfloat16", "bf16", 0.04, 1e-5
    trl_missing = importlib.util.find_spec("trl") is None
    if trl_missing and not args.no_trl:
        print("TRL is not installed (pip install 'oracle-rlaif[bench]'): measuring our side only")
        args.no_trl = True

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    device_name, peak = peak_tflops(args.device)
    columns: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        model_dir = Path(tmp) / "qwen2.5-vl"
        shape = {k: v for k, v in size.items() if k not in ("side", "max_new_tokens", "prompts")}
        save_tiny_qwen2_5_vl(model_dir, seed=args.seed, dtype=args.dtype, device=args.device, **shape)
        n_lm, n_all = language_model_parameters(model_dir)
        rows = args.prompts * args.group_size
        ours = run_ours(model_dir, args, args.frames, args.group_size)
        columns["ours"] = summarise(ours, rows, n_lm, peak)
        if not args.no_trl:
            trl = run_trl(model_dir, args, args.frames, args.group_size, Path(tmp) / "trl-out")
            columns["trl"] = summarise(trl, rows, n_lm, peak)
    print(f"\n{device_name}" + (f" (peak {peak:.0f} bf16 TFLOP/s)" if peak else " (peak unknown: no MFU)")
          + f"; torch {torch.__version__}; random-init Qwen2.5-VL, {n_all / 1e6:.1f}M parameters "
          f"({n_lm / 1e6:.1f}M in the language model without embeddings), bf16; {args.prompts} prompts x "
          f"G={args.group_size}, {args.frames} frames of {args.side}x{args.side}, <= {args.max_new_tokens} new tokens; "
          f"median of {args.steps} step(s) after {args.warmup} warm-up; {time.perf_counter() - start:.0f} s in all")
    print_report(columns)


if __name__ == "__main__":
    main()
