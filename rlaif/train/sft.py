"""Curriculum supervised fine-tuning of the default policy (VLM-RLAIF stage 1).

Recipe (methods.md §2): train the projector and LoRA adapters (encoder and LM weights
frozen). First the *focus* stages: each skill of ``focus_skills`` alone, in turn, from the
``sft`` split and the fresh videos below (ours: directions, then "what colour is the
<shape>?"; inside the mixture the small policy read them at 0.20 on test, while trained
alone each jumps to 0.72-0.94, and they are then kept through everything after).
Then, where the benchmark offers
``alignment_examples`` (the video world does: captions and short questions of fresh
videos in no split), a grounding stage on them, as
LLaVA's stage 1 aligns features: perception and reference from plentiful generated
videos. Then three kinds of items
built from the benchmark's ``sft`` split:

* **QA**: each question -> its reference answer;
* **clip captions**: "Describe this video in detail." over one clip (frames restricted to
  the clip) -> that clip's gold caption; this is what later writes the judge's narrative;
* **judging**: a question, sometimes the gold narrative, and K = 2..4 candidate answers
  labelled A, B, ... (the gold answer among distractors taken from other items of the same
  type) -> a ranking ``"B > A > C because the answer is <gold>"``.

With ``curriculum=True`` the items are split by answer length (token count, at the
median) into an easy stage (shorter answers) and a hard stage, trained one after the
other, ``epochs_per_stage`` epochs each; the hard stage replays half of the easy items
(ours: without replay the tiny model forgets to stop after one word). ``curriculum=False``
trains on the same items, shuffled together, for the same number of epochs (so the same
number of steps).

Ours: VLM-RLAIF trains one epoch per stage on a large SFT set; ours is small (the ``sft``
split's ~150 videos, ~1.6k items), so the curriculum runs 4 epochs per stage after a
grounding stage of 2 epochs on 2000 fresh videos' captions and short questions (~2700
steps of 16; ~5 min on two CPU cores). The result answers above chance but far from
perfectly, leaving room for RL. ``frame_views > 1`` shows each item with one of that many randomised frame
samplings (augmentation; off by default: it did not help measurably here).

Output: the final policy is saved in ``out_dir`` itself (load it with
``TinyVideoLM.load(out_dir)``, or as ``[policy] path``), plus ``sft.json`` (metrics,
written last: its presence means done) and one checkpoint per finished stage under
``out_dir/stages/``. A rerun with a finished ``out_dir`` returns the saved metrics; an
interrupted run resumes from its last finished stage (optimizer state restarts).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rlaif.core.records import Prompt

SFT_RECIPE = "sft/7"  # bump when the defaults below change (invalidates cached SFT runs)
LABELS = "ABCDEFGH"
LONG_QTYPES = frozenset({"describe", "caption"})


@dataclass(frozen=True)
class SFTItem:
    """One supervised example: what the policy is asked and the answer it should give."""

    prompt: Prompt
    answer: str
    kind: str  # qa | caption | judge


# -- the judging format (shared with any oracle that uses the policy as its judge) -------
def format_judge_question(question: str, candidates: Sequence[str], narrative: str | None = None) -> str:
    """The judging instruction: question, optional narrative, candidates ``A: ...``."""
    parts = [f"rank the answers to: {question}"]
    if narrative:
        parts.append(f"context: {narrative}")
    parts += [f"{LABELS[i]}: {c}" for i, c in enumerate(candidates)]
    return " | ".join(parts)


def format_ranking(order: Sequence[int], reason: str = "") -> str:
    """``[1, 0, 2]`` -> ``"B > A > C"`` (best first), then ``" because ..."`` if given."""
    text = " > ".join(LABELS[i] for i in order)
    return f"{text} because {reason}" if reason else text


def parse_ranking(text: str, k: int) -> list[int] | None:
    """Candidate indices, best first, from a ranking like ``"B > A > C because ..."``;
    ``None`` unless each of the first ``k`` labels appears exactly once before "because"."""
    head = text.split("because", 1)[0]
    found = re.findall(r"\b([A-H])\b", head)
    order = [LABELS.index(c) for c in found]
    if sorted(order) != list(range(k)):
        return None
    return order


# -- data ----------------------------------------------------------------------------------
def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def judge_items(qa: Sequence[Prompt], *, seed: int = 0, fraction: float = 0.5, p_narrative: float = 0.5
                ) -> list[SFTItem]:
    """Judging items for a ``fraction`` of the short-answer questions: the gold answer
    among 1-3 distractors (other answers of the same question type), shuffled; the target
    ranks gold first, then distractors by word overlap with the gold answer."""
    rng = random.Random(f"judge:{seed}")
    pools: dict[str, list[str]] = {}
    for p in qa:
        if p.reference and p.qtype not in LONG_QTYPES:
            pool = pools.setdefault(p.qtype, [])
            if p.reference not in pool:
                pool.append(p.reference)
    items = []
    for p in qa:
        if p.qtype in LONG_QTYPES or not p.reference or rng.random() >= fraction:
            continue
        gold = p.reference
        others = [a for a in pools.get(p.qtype, []) if _normalize(a) != _normalize(gold)]
        if not others:
            continue
        k = rng.randint(2, min(4, len(others) + 1))
        candidates = [gold, *rng.sample(others, k - 1)]
        rng.shuffle(candidates)
        gold_words = set(_normalize(gold).split())
        order = sorted(range(k), key=lambda i: (candidates[i] != gold,
                                                -len(gold_words & set(_normalize(candidates[i]).split())), i))
        narrative = p.meta.get("gold_narrative") if rng.random() < p_narrative else None
        question = format_judge_question(p.question, candidates, narrative)
        prompt = Prompt(prompt_id=f"{p.prompt_id}-judge", video=p.video, question=question, qtype="judge",
                        meta={"candidates": candidates})
        items.append(SFTItem(prompt, format_ranking(order, f"the answer is {gold}"), "judge"))
    return items


def caption_items(benchmark: Any, split: str = "sft") -> list[SFTItem]:
    """One item per clip: "Describe this video in detail." over the clip -> its caption.
    Uses ``benchmark.sft_examples`` when the benchmark has it (clips carry
    ``meta["frame_range"]``), else splits each video into as many equal clips as it has
    captions."""
    from rlaif.plugins.policies.tiny_video_lm import DESCRIBE_QUESTION, clip_ranges

    if callable(getattr(benchmark, "sft_examples", None)):
        return [SFTItem(p, str(p.reference), "caption") for p in benchmark.sft_examples(split)
                if p.qtype == "caption" and p.reference]
    items, seen = [], set()
    for p in benchmark.prompts(split):
        if p.video.video_id in seen:
            continue
        seen.add(p.video.video_id)
        captions = list(benchmark.clip_captions(p.video))
        total = p.video.n_frames or len(benchmark.frames(p.video))
        for k, (r, caption) in enumerate(zip(clip_ranges(total, len(captions)), captions, strict=False)):
            prompt = Prompt(prompt_id=f"{p.video.video_id}-c{k}", video=p.video, question=DESCRIBE_QUESTION,
                            qtype="caption", meta={"frame_range": list(r)})
            items.append(SFTItem(prompt, caption, "caption"))
    return items


def build_sft_items(benchmark: Any, *, seed: int = 0, split: str = "sft", judge_fraction: float = 0.5
                    ) -> list[SFTItem]:
    """QA, clip-caption and judging items from ``split`` (see the module docstring)."""
    qa = [p for p in benchmark.prompts(split) if p.reference]
    items = [SFTItem(p, str(p.reference), "qa") for p in qa]
    items += caption_items(benchmark, split)
    items += judge_items(qa, seed=seed, fraction=judge_fraction)
    return items


def alignment_items(benchmark: Any, n_videos: int, *, questions: bool = True) -> list[SFTItem]:
    """Stage 0, grounding (LLaVA stage 1): the captions and short-answer questions of
    ``n_videos`` fresh videos from ``benchmark.alignment_examples`` (videos in no split),
    before the curriculum. Perception and reference ("the square" is *that* object) are
    learned from plentiful generated videos; the labelled split then teaches the task's
    formats and the long answers. ``questions=False``: captions only, so the only
    question-answer supervision is the labelled split's (a policy with more headroom for
    RL; measured in the README, RL did not gain more from it). Empty when the benchmark
    offers none or ``n_videos`` is 0."""
    from rlaif.core.errors import UsageError
    from rlaif.core.registry import accepts_keyword

    make = getattr(benchmark, "alignment_examples", None)
    if not n_videos or not callable(make):
        return []
    if not questions and not accepts_keyword(make, "questions"):
        name = getattr(benchmark, "name", type(benchmark).__name__)
        raise UsageError(f"benchmark {name!r}: its alignment_examples has no questions option to leave the "
                         "fresh questions out; drop --no-align-questions")
    examples = make(n_videos) if questions else make(n_videos, questions=False)
    items = [SFTItem(p, str(p.reference), "caption" if p.qtype == "caption" else "qa")
             for p in examples if p.reference]
    random.Random("align").shuffle(items)
    return items


@dataclass(frozen=True)
class FocusSkill:
    """A skill the default recipe trains alone, before the mixture: the QA items of
    ``qtype`` whose question starts with ``question_prefix`` (any question when empty),
    ``epochs`` epochs, stage ``focus-<name>``. Why alone: a small model does not pick such
    a skill up inside the mixture (the other items' gradients settle it on the answer
    prior first); learned alone, it is kept while the rest is learned."""

    name: str
    qtype: str
    question_prefix: str = ""
    epochs: int = 6

    def matches(self, prompt: Prompt) -> bool:
        return prompt.qtype == self.qtype and prompt.question.startswith(self.question_prefix)


#: The default recipe's focus stages, in order. Each was read at chance inside every mixed
#: recipe (directions 0.20-0.35 on test; "what colour is the <shape>?" 0.20) and at
#: 0.72-0.78 / 0.89-0.94 when trained alone; colours jump only after ~5 epochs.
FOCUS_SKILLS: tuple[FocusSkill, ...] = (
    FocusSkill("direction", "direction"),
    FocusSkill("colour", "attribute", "What colour is the", epochs=10),
)


def focus_items(items: Sequence[SFTItem], skill: FocusSkill) -> list[SFTItem]:
    """The ``focus-<skill>`` stage: the QA items of one skill (from the ``sft`` split and
    the grounding stage's fresh videos), shuffled."""
    chosen = [it for it in items if it.kind == "qa" and skill.matches(it.prompt)]
    random.Random(f"focus:{skill.name}").shuffle(chosen)
    return chosen


def curriculum_stages(items: Sequence[SFTItem], answer_length: Any, *, curriculum: bool = True, seed: int = 0,
                      replay: float = 0.5) -> list[tuple[str, list[SFTItem]]]:
    """``[("easy", ...), ("hard", ...)]``: items split at the median answer length (items
    at the median go to easy), each stage shuffled. The hard stage also replays a
    ``replay`` fraction of the easy items: without it a small model forgets to stop after
    a short answer once it has only seen long ones. Without curriculum: ``[("all", ...)]``,
    the same items (replayed ones included) in one shuffled stage."""
    rng = random.Random(f"stages:{seed}")
    lengths = [answer_length(it.answer) for it in items]
    median = sorted(lengths)[len(lengths) // 2] if lengths else 0
    easy = [it for it, n in zip(items, lengths, strict=False) if n <= median]
    hard = [it for it, n in zip(items, lengths, strict=False) if n > median]
    hard += rng.sample(easy, round(replay * len(easy)))
    if not curriculum:
        everything = easy + hard
        rng.shuffle(everything)
        return [("all", everything)]
    rng.shuffle(easy)
    rng.shuffle(hard)
    return [("easy", easy), ("hard", hard)]


# -- the recipe ----------------------------------------------------------------------------
#: Seed of the embedded default SFT policy that RL, ``oracle check`` and ``train-rm`` start
#: from unless given ``--policy``: their own ``--seed`` varies the run, not its start.
DEFAULT_SFT_SEED = 0


def default_sft_dir(benchmark: Any, seed: int = 0) -> Path:
    """Where the default SFT policy for ``benchmark`` lives in the cache."""
    from rlaif.core.cache import cache_root
    from rlaif.plugins.encoders.tiny_conv import labelled_fingerprint
    from rlaif.plugins.policies.tiny_video_lm import BASE_RECIPE, encoder_recipe

    recipe = f"{SFT_RECIPE}|{encoder_recipe()}|{BASE_RECIPE}|{labelled_fingerprint(benchmark)}|{seed}"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    return cache_root() / "sft" / key


def run_sft(
    out_dir: str | Path,
    *,
    benchmark: Any,
    seed: int = 0,
    curriculum: bool = True,
    lora_r: int = 32,
    lora_alpha: int = 32,
    lr: float = 2e-3,
    batch_size: int = 16,
    epochs_per_stage: int = 4,
    n_frames: int = 8,
    judge_fraction: float = 0.5,
    replay: float = 0.5,
    frame_views: int = 1,
    align_videos: int = 2000,
    align_epochs: int = 2,
    align_questions: bool = True,
    focus_skills: Sequence[FocusSkill] = FOCUS_SKILLS,
    focus_lr: float = 1e-3,
    max_steps: int | None = None,
    policy: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Curriculum SFT of the default policy; returns metrics (also in ``out_dir/sft.json``).

    ``policy`` overrides the starting policy (default: a fresh ``tiny-video-lm`` on the
    cached pre-trained base of ``benchmark``); ``max_steps`` caps the total optimizer
    steps (tests); ``align_videos`` fresh videos feed the alignment stage (0: none);
    ``align_questions=False`` keeps only their captions (:func:`alignment_items`);
    each of ``focus_skills`` is first trained alone, in turn (:class:`FocusSkill`; ``()``: none)."""
    import torch

    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM, cached_base, from_base

    out = Path(out_dir)
    done_file = out / "sft.json"
    if done_file.exists():
        return dict(json.loads(done_file.read_text()))
    start = time.perf_counter()
    torch.manual_seed(seed)
    if policy is None:
        paths = cached_base(benchmark, seed=seed, n_frames=n_frames, progress=progress)
        policy = from_base(paths, frames=benchmark.frames, n_frames=n_frames, lora_r=lora_r, lora_alpha=lora_alpha,
                           seed=seed)
    items = build_sft_items(benchmark, seed=seed, judge_fraction=judge_fraction)
    stages = curriculum_stages(items, lambda a: len(policy.answer_ids(a)), curriculum=curriculum, seed=seed,
                               replay=replay)
    align = alignment_items(benchmark, align_videos, questions=align_questions)
    if align:
        stages.insert(0, ("align", align))
    focus = [(f"focus-{skill.name}", focus_items(items + align, skill), skill.epochs) for skill in focus_skills]
    focus = [(name, chosen, epochs) for name, chosen, epochs in focus if chosen]
    stages[:0] = [(name, chosen) for name, chosen, _ in focus]
    epochs = {"align": align_epochs, **{name: n for name, _, n in focus}}

    def epochs_of(name: str) -> int:
        return epochs.get(name, epochs_per_stage)

    total_steps = sum(math.ceil(len(s) / batch_size) * epochs_of(n) for n, s in stages)
    if max_steps is not None:
        total_steps = min(max_steps, total_steps)

    # Resume after the last finished stage.
    finished: dict[str, Any] = {}
    for name, _ in stages:
        marker = out / "stages" / name / "stage.json"
        if marker.exists():
            finished[name] = json.loads(marker.read_text())
            policy = TinyVideoLM.load(out / "stages" / name, frames=policy.frames, new_adapter=False)
        else:
            break
    step = sum(m["steps"] for m in finished.values())

    params = policy.trainable_parameters()
    # Each focus stage runs at its own constant rate with its own optimizer state (as it was
    # measured); the warmup and cosine schedule cover the stages after them.
    focus_steps = sum(math.ceil(len(chosen) / batch_size) * n for _, chosen, n in focus)
    optimizers = {name: torch.optim.AdamW(params, lr=focus_lr, weight_decay=0.0) for name, _, _ in focus}
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, (total_steps - focus_steps) // 20)

    def lr_at(i: int, name: str) -> float:
        if name in optimizers:
            return focus_lr
        i -= focus_steps
        if i < warmup:
            return lr * (i + 1) / warmup
        span = max(1, total_steps - focus_steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - warmup) / span)))

    bar = _progress_bar(progress, total_steps, step)
    metrics: dict[str, Any] = {"items": len(items), "steps": total_steps, "curriculum": curriculum,
                               "stages": {n: len(s) for n, s in stages},
                               "kinds": {k: sum(it.kind == k for it in items) for k in ("qa", "caption", "judge")}}
    policy.train()
    for name, stage_items in stages:
        if name in finished:
            metrics[f"loss/{name}"] = finished[name]["loss"]
            metrics[f"loss_first/{name}"] = finished[name]["loss_first"]
            continue
        stage_losses: list[float] = []
        stage_steps = 0
        for epoch in range(epochs_of(name)):
            order = list(stage_items)
            random.Random(f"epoch:{seed}:{name}:{epoch}").shuffle(order)
            jitter = random.Random(f"views:{seed}:{name}:{epoch}")
            for b in range(0, len(order), batch_size):
                if step >= total_steps:
                    break
                batch = order[b : b + batch_size]
                prompts = [it.prompt for it in batch]
                if frame_views > 1:  # augmentation: another sampling of the frames
                    prompts = [replace(p, meta={**p.meta, "frame_jitter": jitter.randrange(frame_views)})
                               for p in prompts]
                stage_optimizer = optimizers.get(name, optimizer)
                for group in stage_optimizer.param_groups:
                    group["lr"] = lr_at(step, name)
                loss = policy.sequence_loss(prompts, [it.answer for it in batch])
                stage_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                stage_optimizer.step()
                step += 1
                stage_steps += 1
                stage_losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(bar.task_ids[0], advance=1, info=f"{name} loss {stage_losses[-1]:.3f}")
        k = max(1, len(stage_losses) // 10)
        summary = {"loss": sum(stage_losses[-k:]) / k if stage_losses else float("nan"),
                   "loss_first": sum(stage_losses[:k]) / k if stage_losses else float("nan"),
                   "steps": stage_steps, "items": len(stage_items)}
        metrics[f"loss/{name}"] = summary["loss"]
        metrics[f"loss_first/{name}"] = summary["loss_first"]
        stage_dir = out / "stages" / name
        policy.save(stage_dir)
        (stage_dir / "stage.json").write_text(json.dumps(summary))
    if bar is not None:
        bar.stop()
    policy.eval()
    policy.save(out)
    metrics["seconds"] = time.perf_counter() - start
    done_file.write_text(json.dumps(metrics, indent=2))
    return metrics


# -- any policy with an SFT loss, any benchmark with answers -----------------------------
#: ``--schedule`` choices: transformers' learning-rate schedules, each after a linear warmup.
SCHEDULES = ("cosine", "linear", "constant", "cosine_with_restarts", "polynomial")
SUPERVISED_RECIPE = "sft-supervised/1"


def supervised_examples(benchmark: Any, split: str = "sft") -> list[Prompt]:
    """What a foreign benchmark teaches: ``benchmark.sft_examples(split)`` where it has
    them (video-qa: questions with answers, then each conversation turn), else the
    split's prompts that carry a reference answer."""
    from rlaif.core.errors import UsageError

    make = getattr(benchmark, "sft_examples", None)
    examples = list(make(split)) if callable(make) else list(benchmark.prompts(split))
    examples = [p for p in examples if p.reference]
    if not examples:
        name = getattr(benchmark, "name", type(benchmark).__name__)
        raise UsageError(f"benchmark {name!r} has no {split!r} items with reference answers to train on; "
                         "give annotations for that split or pass --split")
    return examples


def train_supervised(
    out_dir: str | Path,
    *,
    policy: Any,
    benchmark: Any,
    split: str = "sft",
    examples: Sequence[Prompt] | None = None,
    epochs: int = 1,
    batch_size: int = 4,
    grad_accum: int = 1,
    lr: float = 2e-4,
    schedule: str = "cosine",
    warmup: float = 0.03,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    mixed_precision: str = "no",
    max_steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Supervised fine-tuning of any policy with the ``SupervisedLoss`` capability on
    :func:`supervised_examples` of ``benchmark``'s ``split`` (or on ``examples``, prompts
    whose ``reference`` is the target, e.g. the caption-tuned captioner's): AdamW on the policy's
    ``trainable_parameters()`` (its LoRA adapter), ``batch_size`` examples a micro-batch,
    ``grad_accum`` micro-batches an optimizer step, ``lr`` after a linear warmup over a
    ``warmup`` share of the steps then the ``schedule``, forwards under
    ``mixed_precision`` (:class:`~rlaif.train.precision.Precision`), gradients clipped
    at ``max_grad_norm``. Saves the policy with its own ``save`` in ``out_dir`` (for the
    transformers policies a peft adapter directory: ``[policy] path`` of ``rlaif run``
    and ``rlaif eval``) and ``sft.json`` (metrics, written last: a finished ``out_dir``
    returns them without training again)."""
    import torch
    from transformers import get_scheduler

    from rlaif.core.errors import UsageError
    from rlaif.core.protocols import SupervisedLoss, require_capability
    from rlaif.train.precision import Precision

    require_capability(policy, SupervisedLoss, "rlaif sft")
    if schedule not in SCHEDULES:
        raise UsageError(f"--schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if min(epochs, batch_size, grad_accum) < 1 or lr <= 0 or not 0 <= warmup < 1:
        raise UsageError(f"need epochs, batch size and grad accumulation >= 1, lr > 0 and warmup in [0, 1); got "
                         f"{epochs}, {batch_size}, {grad_accum}, {lr}, {warmup}")
    out = Path(out_dir)
    done_file = out / "sft.json"
    if done_file.exists():
        return dict(json.loads(done_file.read_text()))
    start = time.perf_counter()
    torch.manual_seed(seed)
    examples = list(examples) if examples is not None else supervised_examples(benchmark, split)
    micro_per_epoch = math.ceil(len(examples) / batch_size)
    total_steps = epochs * math.ceil(micro_per_epoch / grad_accum)
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    params = list(policy.trainable_parameters())
    if not params:
        raise UsageError("the policy has no trainable parameters; build it with a fresh adapter (new_adapter = true)")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=round(warmup * total_steps),
                              num_training_steps=total_steps)
    precision = Precision.for_policy(mixed_precision, policy)
    bar = _progress_bar(progress, total_steps, 0)
    losses: list[float] = []
    step, pending, window = 0, 0, 0.0
    train = getattr(policy, "train", None)
    if callable(train):
        train()
    optimizer.zero_grad(set_to_none=True)
    for epoch in range(epochs):
        order = list(examples)
        random.Random(f"sft:{seed}:{epoch}").shuffle(order)
        batches = [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
        for i, batch in enumerate(batches):
            if step >= total_steps:
                break
            # the last window of an epoch may be short: weigh by the micro-batches it has
            in_window = min(grad_accum, len(batches) - (i - i % grad_accum))
            with precision.autocast():
                loss = policy.sequence_loss(batch, [str(p.reference) for p in batch])
            precision.backward(loss / in_window)
            window += float(loss.detach()) / in_window
            pending += 1
            if pending < in_window:
                continue
            precision.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            precision.step(optimizer)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if hasattr(policy, "policy_version"):
                policy.policy_version += 1
            step += 1
            losses.append(window)
            pending, window = 0, 0.0
            if bar is not None:
                bar.update(bar.task_ids[0], advance=1, info=f"epoch {epoch + 1} loss {losses[-1]:.3f}")
    if bar is not None:
        bar.stop()
    evaluate = getattr(policy, "eval", None)
    if callable(evaluate):
        evaluate()
    policy.save(out)
    k = max(1, len(losses) // 10)
    metrics: dict[str, Any] = {
        "recipe": SUPERVISED_RECIPE, "policy": getattr(policy, "name", type(policy).__name__),
        "benchmark": getattr(benchmark, "name", type(benchmark).__name__), "split": split,
        "items": len(examples), "steps": step, "epochs": epochs, "batch_size": batch_size, "grad_accum": grad_accum,
        "lr": lr, "schedule": schedule, "warmup": warmup, "mixed_precision": precision.mode, "seed": seed,
        "loss_first": sum(losses[:k]) / k if losses else None, "loss": sum(losses[-k:]) / k if losses else None,
        "seconds": time.perf_counter() - start,
    }
    done_file.write_text(json.dumps(metrics, indent=2))
    return metrics


def _progress_bar(enabled: bool, total: int, completed: int) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("SFT"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}"))
    bar.add_task("sft", total=total, completed=completed, info="")
    bar.start()
    return bar


__all__ = [
    "SFTItem",
    "build_sft_items",
    "curriculum_stages",
    "DEFAULT_SFT_SEED",
    "default_sft_dir",
    "format_judge_question",
    "format_ranking",
    "parse_ranking",
    "run_sft",
    "supervised_examples",
    "train_supervised",
]
