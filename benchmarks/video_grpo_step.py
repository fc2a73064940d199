"""Time per video GRPO step (sample, score, update), ours against TRL's ``GRPOTrainer``.

Both sides train the same tiny random-init Qwen2.5-VL (saved once to a temp dir with a
byte-level BPE tokenizer trained here) through the same fresh LoRA adapter (r=16,
alpha=32 on the language model's q/k/v/o; Qwen's vision attention has no such names, so
TRL's adapter lands in the same places), on the same prompts over the same synthetic
videos, with the same group size, prompts per step, completion budget, sampling
(temperature 1, no top-k/top-p), KL coefficient (0.04, reference = adapter off), clip
range (0.2), AdamW with gradient clipping at 1.0, one optimizer step per generation, and
the same deterministic reward on the decoded completion (:func:`reward`). Float32
weights on both sides, no gradient checkpointing.

The video: ``--frames`` uint8 frames per prompt, drawn once per video id. Ours feeds them
to ``hf-vlm`` as a video (Qwen's temporal patches merge frame pairs, and the policy
encodes each video once per step and reuses the embeddings for all G candidates and
every log-prob pass). TRL has no video path in ``GRPOTrainer``: it gets the same frames
as a list of images (Qwen's image processor; each image is its own temporal patch, so
its language model sees twice the visual tokens and its tower twice the patches; that
is what "frames as images" costs, and part of what is measured).

Ours is the ``rlaif run`` step: :func:`rlaif.train.rl.sample_step` (``hf-vlm`` sampling +
an in-script oracle scoring with :func:`reward`) and :func:`~rlaif.train.rl.update_policy`
(reference log-probs, policy log-probs, ``grpo`` loss, backward, AdamW). TRL's phases are
read by wrapping ``_generate`` (sample) and ``_calculate_rewards`` (score); its total is
the time between consecutive ``on_step_end`` callbacks, and update = total - sample -
score. Each side warms up for ``--warmup`` steps, then the median of ``--steps`` steps is
reported, and ours once more with the visual feature cache off ("ours, no reuse": the
tower re-encodes every row in every pass). A second table repeats the step for frames in
(4, 8, 16) and G in (4, 8).

Usage: ``python benchmarks/video_grpo_step.py [--quick] [--no-grid] [--no-trl]``; needs
the ``bench`` extra (TRL). Not a test: no thresholds.
"""

from __future__ import annotations

import argparse
import os
import statistics
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

from grpo_step import LORA, PhaseTimer  # noqa: E402  (the text benchmark's timer and LoRA)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
COLOURS = "red green blue yellow black white orange purple".split()
ACTIONS = "running jumping cooking sitting walking dancing swimming reading".split()
QUESTIONS = ("what is the person doing ?", "what colour is the car ?", "describe the video .",
             "where does this happen ?")
#: Both sides render prompts with this template: a user turn, visual content first.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PATCH, MERGE = 14, 2  # Qwen2.5-VL's patch and merge sizes: 28-pixel merged patches


def reward(text: str) -> float:
    """Distinct words (at most 8) plus one per distinct colour or action word: the same
    function scores both sides' decoded completions."""
    words = set(text.lower().split())
    return min(len(words), 8) / 8 + len(words & set(COLOURS + ACTIONS))


# --------------------------------------------------------------------------- the model
def corpus() -> list[str]:
    root = Path(__file__).resolve().parents[1]
    texts = [p.read_text(encoding="utf-8", errors="ignore") for p in sorted(root.glob("rlaif/plugins/**/*.py"))]
    texts += [f"the person is {a} near the {c} car ." for a in ACTIONS for c in COLOURS] + list(QUESTIONS)
    return texts


def save_tiny_qwen2_5_vl(directory: Path, *, vocab: int, hidden: int, layers: int, vision_hidden: int,
                         vision_depth: int, seed: int, intermediate: int | None = None, heads: int | None = None,
                         kv_heads: int | None = None, vision_intermediate: int | None = None,
                         dtype: str = "float32", device: str = "cpu") -> None:
    """A byte-level BPE tokenizer with Qwen's special tokens, a chat template and a
    random-init Qwen2.5-VL (initialised on ``device``), saved like a hub checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=vocab, min_frequency=2, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        padding_side="left", extra_special_tokens=SPECIALS[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    heads = heads or max(hidden // 64, 2)
    half = hidden // heads // 2
    side = half * 3 // 8  # mrope sections (t, h, w) sum to head_dim / 2, as Qwen's 16/24/24 of 64
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads or heads,
            max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [half - 2 * side, side, side]},
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_intermediate or 2 * vision_hidden,
            num_heads=max(vision_hidden // 64, 1), out_hidden_size=hidden, patch_size=PATCH,
            spatial_merge_size=MERGE, temporal_patch_size=2, window_size=112,
            fullatt_block_indexes=[vision_depth - 1], tokens_per_second=2,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(getattr(torch, dtype))
    model.save_pretrained(directory)
    del model
    tokenizer.save_pretrained(directory)
    (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")


class SyntheticVideos:
    """The benchmark side of ``hf-vlm``: ``side x side`` random frames per video id,
    the same for both trainers."""

    def __init__(self, side: int, length: int = 32) -> None:
        self.side, self.length = side, length

    def frames(self, video: Any, n_frames: int | None = None, **_: Any) -> Any:
        import numpy as np

        rng = np.random.default_rng(sum(map(ord, video.video_id)))
        every = rng.integers(0, 256, size=(self.length, self.side, self.side, 3), dtype=np.uint8)
        if n_frames is None:
            return every
        return every[np.linspace(0, self.length - 1, n_frames).round().astype(int)]


def prompt_pool(n: int) -> list[Any]:
    from rlaif.core.records import Prompt, VideoRef

    return [Prompt(prompt_id=f"p{i}", video=VideoRef(video_id=f"v{i}", path=f"v{i}.mp4", n_frames=32, fps=8.0),
                   question=QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]


# --------------------------------------------------------------------------- ours
class RewardOracle:
    """Scores each candidate with :func:`reward` and ranks by score (ties kept)."""

    name = "reward"
    needs_context = False
    needs_reference = False

    def rank(self, groups: Sequence[Any]) -> list[Any]:
        from rlaif.core.records import Ranking

        return [Ranking.from_scores(g.prompt.prompt_id, self.name, [reward(r.text) for r in g.rollouts])
                for g in groups]


def run_ours(model_dir: Path, args: argparse.Namespace, frames: int, group: int, reuse: bool = True
             ) -> dict[str, float]:
    """Median phase seconds over the timed steps, mean prompt and completion tokens, the
    feature cache's size and the peak accelerator memory."""
    from rlaif.core.config import RunConfig
    from rlaif.plugins.losses.grpo import GRPOLoss
    from rlaif.plugins.policies.hf_vlm import build_hf_vlm
    from rlaif.train.precision import Precision
    from rlaif.train.rl import Components, make_optimizer, sample_step, update_policy

    policy = build_hf_vlm(str(model_dir), lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"], n_frames=frames,
                          seed=args.seed, device=args.device, dtype=args.dtype, benchmark=SyntheticVideos(args.side),
                          max_frame_pixels=args.side * args.side, feature_cache_mb=512 if reuse else 0)
    config = RunConfig()
    run = config.run
    run.seed, run.group_size, run.prompts_per_step = args.seed, group, args.prompts
    run.max_new_tokens, run.inner_epochs, run.lr, run.temperature = args.max_new_tokens, 1, args.lr, 1.0
    comp = Components(benchmark=None, policy=policy, oracle=RewardOracle(), loss=GRPOLoss(kl_coef=args.beta))
    optimizer = make_optimizer(policy, config)
    run.mixed_precision = args.mixed_precision
    precision = Precision.for_policy(run.mixed_precision, policy)
    pool = prompt_pool(args.prompts * (args.warmup + args.steps))
    timer = PhaseTimer()
    cache_bytes = 0
    reset_peak_memory(args.device)
    for step in range(1, args.warmup + args.steps + 1):
        policy.clear_feature_cache()  # each step encodes its own videos
        sync(args.device)
        start = time.perf_counter()
        prompts = pool[(step - 1) * args.prompts : step * args.prompts]  # fresh videos, in TRL's order
        data = sample_step(step, prompts, comp, config, precision=precision)
        with timer.time("update"):
            update_policy(data, comp, optimizer, config, accelerator=None, precision=precision)
            sync(args.device)
        timer.current["sample"] = data.sample_seconds
        timer.current["score"] = data.rank_seconds
        timer.end_step(time.perf_counter() - start)
        rollouts = [r for g in data.groups for r in g.rollouts]
        timer.steps[-1]["completion_tokens"] = statistics.mean(len(r.token_ids) for r in rollouts)
        timer.steps[-1]["prompt_tokens"] = statistics.mean(len(policy._encode(g.prompt).ids) for g in data.groups)
        cache_bytes = policy.feature_cache_bytes()
    medians = timer.medians(args.warmup)
    medians["cache_mb"] = cache_bytes / 2**20
    medians["peak_mem_gib"] = peak_memory_gib(args.device)
    return medians


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> None:
    """Free what the previous side left and restart the accelerator's peak counter."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float:
    """Peak accelerator memory allocated since :func:`reset_peak_memory`; on the CPU the
    process's peak resident size (shared by both sides: read it as an upper bound)."""
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_allocated()) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# --------------------------------------------------------------------------- TRL
def trl_processor(model_dir: Path, side: int) -> Any:
    """Qwen2.5-VL's processor built without torchvision: the PIL image processor with
    the frames' resolution kept (min/max pixels around ``side x side``), no video part."""
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class ImageOnlyProcessor(Qwen2_5_VLProcessor):  # type: ignore[misc]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            # The video processor's base class is a torchvision placeholder here; there is none.
            return None if argument is None else super().check_argument_for_proper_class(argument_name, argument)

    images = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2,
                                      size={"shortest_edge": side * side // 2, "longest_edge": side * side})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return ImageOnlyProcessor(image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def run_trl(model_dir: Path, args: argparse.Namespace, frames: int, group: int, out_dir: Path) -> dict[str, float]:
    """Median phase seconds of TRL's GRPOTrainer steps after the warm-up."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from PIL import Image
    from transformers import PrinterCallback, Qwen2_5_VLForConditionalGeneration, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    timer = PhaseTimer()

    def reward_fn(completions: list[Any], **_: Any) -> list[float | None]:
        # Conversational prompts give completions as [{"role": "assistant", "content": text}].
        return [reward(c if isinstance(c, str) else str(c[0]["content"])) for c in completions]

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.last = time.perf_counter()

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.last = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            sync(args.device)
            now = time.perf_counter()
            timer.end_step(now - self.last)
            self.last = time.perf_counter()

    videos = SyntheticVideos(args.side)
    rows = [{"prompt": [{"role": "user", "content": p.question}],
             "images": [Image.fromarray(f) for f in videos.frames(p.video, frames)]}
            for p in prompt_pool(args.prompts * (args.warmup + args.steps))]
    reset_peak_memory(args.device)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=getattr(torch, args.dtype))
    model.generation_config.top_k = None  # sampling settings come from GRPOConfig only, as on our side
    config = GRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=args.prompts * group, num_generations=group,
        max_completion_length=args.max_new_tokens, gradient_accumulation_steps=1, num_iterations=1,
        beta=args.beta, epsilon=0.2, loss_type="grpo", scale_rewards="group", temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
        max_steps=args.warmup + args.steps, use_cpu=args.device == "cpu", bf16=args.mixed_precision == "bf16",
        fp16=False,
        gradient_checkpointing=False, logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True,
        seed=args.seed, dataloader_num_workers=0, log_completions=False, shuffle_dataset=False,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward_fn], args=config, train_dataset=Dataset.from_list(rows),
        processing_class=trl_processor(model_dir, args.side),
        peft_config=LoraConfig(task_type="CAUSAL_LM", bias="none", **LORA), callbacks=[StepClock()],
    )
    trainer.remove_callback(PrinterCallback)
    generate = trainer._generate

    def timed_generate(prompts: list[Any]) -> Any:
        with timer.time("sample"):
            out = generate(prompts)
        timer.current["prompt_tokens"] = statistics.mean(len(ids) for ids in out[0])
        timer.current["completion_tokens"] = statistics.mean(len(ids) for ids in out[1])
        return out

    trainer._generate = timed_generate  # type: ignore[method-assign]
    trainer._calculate_rewards = timer.wrap(trainer._calculate_rewards, "score")  # type: ignore[method-assign]
    trainer.train()
    medians = timer.medians(args.warmup)
    medians["peak_mem_gib"] = peak_memory_gib(args.device)
    return medians


# --------------------------------------------------------------------------- report
def update_seconds(m: dict[str, float]) -> float:
    return m["total"] - m.get("sample", 0.0) - m.get("score", 0.0)


def print_phases(columns: dict[str, dict[str, float]]) -> None:
    """Phase medians per side, then TRL's time over ours (above 1: ours is faster)."""
    names = list(columns)
    ratio = "trl" in columns and "ours" in columns
    print(f"\n{'phase (median s/step)':<26}" + "".join(f"{n:>16}" for n in names)
          + (f"{'trl / ours':>12}" if ratio else ""))
    for label, value in (("sample (generate)", lambda m: m.get("sample", 0.0)),
                         ("score (reward)", lambda m: m.get("score", 0.0)),
                         ("update", update_seconds), ("total per step", lambda m: m["total"])):
        cells = [f"{value(columns[n]):>16.3f}" for n in names]
        if ratio:
            cells.append(f"{value(columns['trl']) / max(value(columns['ours']), 1e-9):>11.2f}x")
        print(f"{label:<26}" + "".join(cells))
    for label, key, fmt in (("prompt tokens (mean)", "prompt_tokens", ".1f"),
                            ("completion tokens (mean)", "completion_tokens", ".1f"),
                            ("feature cache (MB)", "cache_mb", ".2f")):
        print(f"{label:<26}" + "".join(f"{columns[n][key]:>16{fmt}}" if key in columns[n] else f"{'-':>16}"
                                       for n in names))


def print_grid(rows: list[tuple[int, int, dict[str, float], dict[str, float] | None]]) -> None:
    print(f"\n{'frames':>6} {'G':>3} {'ours s/step':>12} {'trl s/step':>11} {'trl / ours':>11}"
          f" {'ours sample':>12} {'trl sample':>11} {'ours update':>12} {'trl update':>11}")
    for frames, group, ours, trl in rows:
        t_total = f"{trl['total']:>11.3f}" if trl else f"{'-':>11}"
        ratio = f"{trl['total'] / ours['total']:>10.2f}x" if trl else f"{'-':>11}"
        t_sample = f"{trl.get('sample', 0.0):>11.3f}" if trl else f"{'-':>11}"
        t_update = f"{update_seconds(trl):>11.3f}" if trl else f"{'-':>11}"
        print(f"{frames:>6} {group:>3} {ours['total']:>12.3f} {t_total} {ratio} {ours.get('sample', 0.0):>12.3f}"
              f" {t_sample} {update_seconds(ours):>12.3f} {t_update}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run: 1 timed step, smaller model and frames, a reduced grid")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first, per side")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--side", type=int, default=112, help="frame side in pixels (a multiple of 28)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vision-hidden", type=int, default=64)
    parser.add_argument("--vision-depth", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient (both sides)")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-trl", action="store_true", help="time only our side")
    parser.add_argument("--no-grid", action="store_true", help="skip the frames x G table")
    parser.add_argument("--dtype", default="float32", help="weights on both sides")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no", help="autocast on both sides")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.side, args.max_new_tokens, args.hidden = 1, 56, 8, 64
    grid = [(f, g) for f in (4, 8, 16) for g in (4, 8)]
    if args.quick:
        grid = [(4, 4), (16, 8)]

    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="video-grpo-step-") as tmp:
        model_dir = Path(tmp) / "tiny-qwen2.5-vl"
        save_tiny_qwen2_5_vl(model_dir, vocab=args.vocab, hidden=args.hidden, layers=args.layers,
                             vision_hidden=args.vision_hidden, vision_depth=args.vision_depth, seed=args.seed)

        def both(frames: int, group: int) -> tuple[dict[str, float], dict[str, float] | None]:
            ours = run_ours(model_dir, args, frames, group)
            trl = None if args.no_trl else run_trl(model_dir, args, frames, group, Path(tmp) / "trl-out")
            return ours, trl

        main_ours, main_trl = both(args.frames, args.group_size)
        columns = {"ours": main_ours,
                   "ours, no reuse": run_ours(model_dir, args, args.frames, args.group_size, reuse=False)}
        if main_trl is not None:
            columns["trl"] = main_trl
        rows = [] if args.no_grid else [(f, g, *both(f, g)) for f, g in grid]
    if not args.no_trl:
        import trl

        print(f"\nTRL {trl.__version__}", end="; ")
    print(f"torch {torch.__version__} on {args.device}, {args.threads} thread(s), {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.2f}; tiny Qwen2.5-VL: LM hidden {args.hidden} x {args.layers} layers, "
          f"vision {args.vision_hidden} x {args.vision_depth}; {args.side}x{args.side} frames; LoRA r={LORA['r']}; "
          f"{args.prompts} prompts x G={args.group_size}, {args.frames} frames, <= {args.max_new_tokens} new tokens; "
          f"median of {args.steps} step(s) after {args.warmup} warm-up")
    print_phases(columns)
    if rows:
        print_grid(rows)


if __name__ == "__main__":
    main()
