"""Time per GRPO step (sample, rank, update), ours against TRL's ``GRPOTrainer``.

Both sides train the same tiny random-init Llama (saved once to a temp dir with a
byte-level BPE tokenizer trained here) through the same fresh LoRA adapter (r=16,
alpha=32 on q/k/v/o), on the same text prompts ("count to five:" ...), with the same
group size (8), prompts per step (4, so 32 completions), completion budget (32 tokens),
sampling (temperature 1, no top-k/top-p), KL coefficient (0.04, reference = adapter
off), clip range (0.2), AdamW and gradient clipping at 1.0, one optimizer step per
generation (``inner_epochs`` = ``num_iterations`` = 1), and the same reward on the
decoded completion (distinct words, with a bonus for number words). TRL runs without
gradient checkpointing (its default is on) and with float32 weights, as ours does
(``--mixed-precision bf16`` turns on bf16 autocast on both sides).

Ours is the ``rlaif run`` step: :func:`rlaif.train.rl.sample_step` (``hf-causal-lm``
sampling + an in-script scoring oracle returning ``Ranking.from_scores``) and
:func:`~rlaif.train.rl.update_policy` (reference log-probs, policy log-probs, loss,
backward, AdamW) with the ``grpo`` loss and with ``grpo-rank``. TRL's step is one
``Trainer`` step; its phases are read by wrapping ``_generate`` (tokenise, generate,
decode), ``_calculate_rewards`` and ``_get_per_token_logps_and_entropies`` (no-grad call =
reference, grad call = policy), and its total is the time between consecutive
``on_step_end`` callbacks (so it includes the dataloader and logging, which are part of
its step). Each side warms up for ``--warmup`` steps, then ``--steps`` steps are timed and
the median of each phase is reported, in one process, one side after the other.

After the timed steps each side runs one more step under cProfile, and the time spent
inside torch's C++ calls (kernels, autograd, dispatch: the profile's own time of every
built-in torch function and tensor method) is summed. That is work any Python loop
issuing the same operations pays, so ``TRL step / our torch time`` bounds the ratio a
loop with zero Python overhead could reach on this machine; it is printed as the ceiling.

Usage: ``python benchmarks/grpo_step.py [--steps 5] [--threads 1] [--profile]``; needs
the ``bench`` extra (``pip install 'oracle-rlaif[bench]'`` for TRL). ``--profile`` prints
the top functions of those profiled steps by own time. Target from the RL-engine issue:
ours >= 2x TRL's throughput (completions per second).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NUMBER_WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                "sixteen seventeen eighteen nineteen twenty").split()
TASKS = ("count to {n}:", "count down from {n}:", "list the numbers up to {n}:", "say {n} words:")
LORA: dict[str, Any] = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def prompt_texts() -> list[str]:
    return [t.format(n=w) for w in NUMBER_WORDS[:8] for t in TASKS]  # 32 prompts


def reward(text: str) -> float:
    """Distinct words (at most 8) plus one per distinct number word: the same function
    scores both sides' decoded completions."""
    words = text.lower().split()
    return min(len(set(words)), 8) / 8 + len(set(words) & set(NUMBER_WORDS))


# --------------------------------------------------------------------------- the model
def corpus() -> list[str]:
    """Text for the tokenizer: the rlaif sources and docs plus counting phrases."""
    root = Path(__file__).resolve().parents[1]
    texts = [p.read_text(encoding="utf-8", errors="ignore") for p in sorted(root.glob("rlaif/**/*.py"))]
    texts += [p.read_text(encoding="utf-8", errors="ignore") for p in sorted(root.glob("*.md"))]
    texts += [" ".join(NUMBER_WORDS[:i]) for i in range(1, len(NUMBER_WORDS) + 1)] + prompt_texts()
    return texts


def save_tiny_llama(directory: Path, *, vocab: int, hidden: int, layers: int, seed: int) -> None:
    """A byte-level BPE tokenizer and a random-init Llama, saved like a hub checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=vocab, min_frequency=2, special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>", padding_side="left")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1), num_key_value_heads=max(hidden // 64, 1),
        max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


# --------------------------------------------------------------------------- timing
class PhaseTimer:
    """Seconds per named phase, accumulated within a step and kept per step."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []

    @contextlib.contextmanager
    def time(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.current[phase] += time.perf_counter() - start

    def wrap(self, fn: Callable[..., Any], phase: Callable[[], str] | str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.time(phase() if callable(phase) else phase):
                return fn(*args, **kwargs)

        return timed

    def end_step(self, total: float) -> None:
        self.current["total"] = total
        self.steps.append(dict(self.current))
        self.current = defaultdict(float)

    def medians(self, skip: int) -> dict[str, float]:
        kept = self.steps[skip:]
        keys = {k for s in kept for k in s}
        return {k: statistics.median(s.get(k, 0.0) for s in kept) for k in keys}


def torch_seconds(profiler: cProfile.Profile) -> float:
    """Own time of torch's built-in functions and tensor methods in a profile: the part
    of a step spent in C++ (kernels, autograd engine, dispatcher), not in Python."""
    stats = pstats.Stats(profiler)
    return sum(row[2] for (filename, _, name), row in stats.stats.items()  # type: ignore[attr-defined]
               if filename == "~" and "torch" in name)


def profile_report(profiler: cProfile.Profile, title: str) -> str:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return f"\n--- cProfile of {title} (top 25 by own time) ---\n" + out.getvalue()[:6000]


def logprob_phase() -> str:
    import torch

    return "policy_fwd" if torch.is_grad_enabled() else "ref_fwd"


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


def run_ours(model_dir: Path, loss_name: str, args: argparse.Namespace) -> tuple[dict[str, float], float]:
    """Median phase seconds over the timed steps (plus ``torch_s`` of one profiled step),
    and the mean completion length."""
    from rlaif.core.config import RunConfig
    from rlaif.core.records import Prompt, VideoRef
    from rlaif.plugins.losses.grpo import GRPOLoss
    from rlaif.plugins.losses.grpo_rank import GRPORankLoss
    from rlaif.plugins.policies.hf_causal_lm import build_hf_causal_lm
    from rlaif.train.precision import Precision
    from rlaif.train.rl import Components, make_optimizer, sample_step, select_prompts, update_policy

    policy = build_hf_causal_lm(str(model_dir), lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                                seed=args.seed, device="cpu", dtype="float32")
    loss = GRPOLoss(kl_coef=args.beta) if loss_name == "grpo" else GRPORankLoss(kl_coef=args.beta)
    config = RunConfig()
    run = config.run
    run.seed, run.group_size, run.prompts_per_step = args.seed, args.group_size, args.prompts
    run.max_new_tokens, run.inner_epochs, run.lr, run.temperature = args.max_new_tokens, 1, args.lr, 1.0
    run.mixed_precision = args.mixed_precision
    comp = Components(benchmark=None, policy=policy, oracle=RewardOracle(), loss=loss)
    optimizer = make_optimizer(policy, config)
    precision = Precision.for_policy(run.mixed_precision, policy)
    video = VideoRef(video_id="none", path="")
    pool = [Prompt(prompt_id=f"p{i}", video=video, question=q) for i, q in enumerate(prompt_texts())]

    timer = PhaseTimer()
    forward = policy.forward_responses
    policy.forward_responses = timer.wrap(forward, logprob_phase)  # type: ignore[method-assign]
    lengths: list[float] = []

    def one_step(step: int) -> None:
        start = time.perf_counter()
        data = sample_step(step, select_prompts(pool, step, run.seed, run.prompts_per_step), comp, config,
                           precision=precision)
        with timer.time("update"):
            update_policy(data, comp, optimizer, config, accelerator=None, precision=precision)
        policy.policy_version += 1
        timer.current["sample"] = data.sample_seconds
        timer.current["rank"] = data.rank_seconds
        timer.end_step(time.perf_counter() - start)
        lengths.extend(len(r.token_ids) for g in data.groups for r in g.rollouts)

    total_steps = args.warmup + args.steps
    for step in range(1, total_steps + 1):
        one_step(step)
    profiler = cProfile.Profile()
    profiler.enable()
    one_step(total_steps + 1)
    profiler.disable()
    timer.steps.pop()
    if args.profile:
        print(profile_report(profiler, f"one of our steps (loss {loss_name})"))
    medians = timer.medians(args.warmup)
    medians["torch_s"] = torch_seconds(profiler)
    batch = args.prompts * args.group_size
    return medians, statistics.mean(lengths[-(args.steps + 1) * batch : -batch])


# --------------------------------------------------------------------------- TRL
def run_trl(model_dir: Path, args: argparse.Namespace, out_dir: Path) -> tuple[dict[str, float], float]:
    """Median phase seconds of TRL's GRPOTrainer steps after the warm-up, and the mean
    completion length."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    timer = PhaseTimer()
    lengths: list[float] = []

    def reward_fn(completions: list[str], **_: Any) -> list[float | None]:
        return [reward(c) for c in completions]

    profiled_step = args.warmup + args.steps + 1  # one more step, under cProfile, not timed
    profiler = cProfile.Profile()

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.last = time.perf_counter()

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.last = time.perf_counter()

        def on_step_end(self, _args: Any, state: Any, *a: Any, **k: Any) -> None:
            if state.global_step == profiled_step:
                profiler.disable()
                return
            now = time.perf_counter()
            timer.end_step(now - self.last)
            if state.global_step == profiled_step - 1:
                profiler.enable()  # from here to the end of the next step
            self.last = time.perf_counter()

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    batch = args.prompts * args.group_size
    config = GRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=batch, num_generations=args.group_size,
        max_completion_length=args.max_new_tokens, gradient_accumulation_steps=1, num_iterations=1,
        beta=args.beta, epsilon=0.2, loss_type="grpo", scale_rewards="group", temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
        max_steps=profiled_step, use_cpu=True, bf16=args.mixed_precision == "bf16", fp16=False, gradient_checkpointing=False,
        logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True, seed=args.seed,
        dataloader_num_workers=0, log_completions=False,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward_fn], args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompt_texts()]), processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", bias="none", **LORA), callbacks=[StepClock()],
    )
    trainer.remove_callback(PrinterCallback)  # its per-step log dicts would bury the table
    generate = trainer._generate

    def timed_generate(prompts: list[Any]) -> Any:
        with timer.time("sample"):
            out = generate(prompts)
        lengths.extend(len(ids) for ids in out[1])  # completion_ids
        return out

    trainer._generate = timed_generate  # type: ignore[method-assign]
    trainer._calculate_rewards = timer.wrap(trainer._calculate_rewards, "rank")  # type: ignore[method-assign]
    trainer._get_per_token_logps_and_entropies = timer.wrap(  # type: ignore[method-assign]
        trainer._get_per_token_logps_and_entropies, logprob_phase)
    trainer.train()
    if args.profile:
        print(profile_report(profiler, "one TRL step"))
    timer.current.clear()  # the profiled step's phases
    medians = timer.medians(args.warmup)
    medians["torch_s"] = torch_seconds(profiler)
    return medians, statistics.mean(lengths[-(args.steps + 1) * batch : -batch])


# --------------------------------------------------------------------------- report
def rest(m: dict[str, float]) -> float:
    """Update time outside the two log-prob passes: loss, backward, optimizer, bookkeeping."""
    return m["total"] - m.get("sample", 0.0) - m.get("rank", 0.0) - m.get("ref_fwd", 0.0) - m.get("policy_fwd", 0.0)


def print_table(rows: dict[str, tuple[dict[str, float], float]], completions: int) -> None:
    names = [n for n in rows if n != "trl"] + [n for n in rows if n == "trl"]
    phases = [("sample (generate)", "sample"), ("rank (reward)", "rank"), ("update: ref log-probs", "ref_fwd"),
              ("update: policy log-probs", "policy_fwd"), ("update: loss+bwd+opt+other", None),
              ("update (all)", "update"), ("total per step", "total")]
    width = max(14, *(len(n) + 2 for n in names))
    print(f"\n{'phase (median s/step)':<28}" + "".join(f"{n:>{width}}" for n in names))
    for label, key in phases:
        cells = []
        for n in names:
            m = rows[n][0]
            if key is None:
                value = rest(m)
            elif key == "update":
                value = m["total"] - m.get("sample", 0.0) - m.get("rank", 0.0)
            else:
                value = m.get(key, 0.0)
            cells.append(f"{value:>{width}.4f}")
        print(f"{label:<28}" + "".join(cells))
    print(f"{'mean completion tokens':<28}" + "".join(f"{rows[n][1]:>{width}.1f}" for n in names))
    print(f"{'completions / s':<28}" + "".join(f"{completions / rows[n][0]['total']:>{width}.1f}" for n in names))
    print(f"{'in torch C++ (profiled)':<28}" + "".join(f"{rows[n][0]['torch_s']:>{width}.4f}" for n in names))
    print(f"{'share of step in torch C++':<28}"
          + "".join(f"{rows[n][0]['torch_s'] / rows[n][0]['total']:>{width}.0%}" for n in names))
    if "trl" in rows:
        trl_total = rows["trl"][0]["total"]
        for n in names:
            if n != "trl":
                ratio = trl_total / rows[n][0]["total"]
                ceiling = trl_total / rows[n][0]["torch_s"]
                verdict = "meets" if ratio >= 2.0 else "misses"
                print(f"throughput ratio {n} / trl: {ratio:.2f}x ({verdict} the 2x target); "
                      f"ceiling with zero Python overhead: {ceiling:.2f}x")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first, per side")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient (both sides)")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no",
                        help="bf16 autocast on both sides (float32 weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--losses", default="grpo,grpo-rank", help="our losses to time, comma-separated")
    parser.add_argument("--no-trl", action="store_true", help="time only our side")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra step of ours (grpo)")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rows: dict[str, tuple[dict[str, float], float]] = {}
    with tempfile.TemporaryDirectory(prefix="grpo-step-") as tmp:
        model_dir = Path(tmp) / "tiny-llama"
        save_tiny_llama(model_dir, vocab=args.vocab, hidden=args.hidden, layers=args.layers, seed=args.seed)
        losses = [x.strip() for x in args.losses.split(",") if x.strip()]
        # TRL runs between our first and second loss, so drifting machine load hits both sides.
        for i, loss_name in enumerate(losses):
            rows[f"ours/{loss_name}"] = run_ours(model_dir, loss_name, args)
            if i == 0 and not args.no_trl:
                rows["trl"] = run_trl(model_dir, args, Path(tmp) / "trl-out")
    if not args.no_trl:
        import trl

        print(f"\nTRL {trl.__version__}", end="; ")
    n_params = args.layers * (4 * args.hidden**2 + 3 * 2 * args.hidden**2) + 2 * args.vocab * args.hidden
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.2f}; tiny Llama hidden {args.hidden} x {args.layers} layers, "
          f"vocab ~{args.vocab} (~{n_params / 1e6:.1f}M params), LoRA r={LORA['r']}; "
          f"{args.prompts} prompts x G={args.group_size}, <= {args.max_new_tokens} new tokens; "
          f"mixed precision {args.mixed_precision}; "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print_table(rows, args.prompts * args.group_size)


if __name__ == "__main__":
    main()
