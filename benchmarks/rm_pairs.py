"""T5 (VLM-RLAIF Fig. 5): reward-model preference pairs -> RM held-out accuracy and PPO gain.

    python benchmarks/rm_pairs.py --out studies/t5-rm-pairs [--pairs 1000 2000 4000 8000]
        [--source RUN_DIR | --oracle llm-judge] [--base RUN.toml] [--seeds 0 1 2] [--jobs N]

1. The preferences: the stored rankings of one run, ``--source RUN_DIR`` (a T1 cell, say),
   or, by default, a run made here as the cell ``OUT/source``: the ``--base`` run config
   with ``--oracle`` (default ``llm-judge``: the world judge reading a 3-clip narrative,
   VLM-RLAIF's context-aware AI feedback).
2. For each N of ``--pairs``, a reward model (``rlaif train-rm``'s recipe) trained on N
   pairs of that run's rankings, in ``OUT/rm-N``: 20 % of the prompts are held out first,
   the same at every N, and the N training pairs nest (the 1k among the 2k); its held-out
   pairwise accuracy is the table's first number.
3. A study (``OUT/study.toml``, run by ``rlaif study``'s code in ``OUT``): one arm per N,
   PPO against that reward model with its value head initialised from the RM's head (as
   VLM-RLAIF does), ``--seeds`` seeds each, every cell paired with its own starting policy
   (``baseline = "sft"``): the PPO gain in accuracy is the table's second number.
4. Oracle-RLAIF's headline pairing on the same preferences: one more arm, ``ranker-N``
   for the largest N, where that reward model is used as a *ranker* (only the order of
   its scores reaches the loss) with ``grpo-rank``, against ``pairs-N``'s reward model
   with PPO. Both learned from exactly the same N pairs; only the way the feedback is
   used differs.

Everything resumes: a finished source, reward model or cell is kept. The study writes
``results.json`` as any study does, and this script ``reward_models.json`` next to it
(the source run, and each arm's RM: pairs, held-out accuracy, seconds);
``python benchmarks/results.py`` reads both.
``--tiny`` is a seconds-long check that the script works (a tiny world and policy, 2
sizes, 1 seed), not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

STUDY_NAME = "t5-rm-pairs"
RM_FILE = "reward_models.json"  # read by benchmarks/results.py
SOURCE = "source"


def arm_name(n: int) -> str:
    return f"pairs-{n}"


def ranker_arm_name(n: int) -> str:
    return f"ranker-{n}"


def run_source(out: Path, base: dict[str, Any], oracle: str, registry: Any, progress: bool) -> Path:
    """The run whose rankings are the preference data: a study cell, so a killed one resumes."""
    from rlaif.core.errors import UsageError
    from rlaif.train.study import Cell, apply_overrides, prepare_cell, read_cell_state, run_cell

    data = apply_overrides(base, [("oracle", "name", oracle)])
    cell = Cell(SOURCE, SOURCE, int(data.get("run", {}).get("seed", 0)), "live", data)
    cell_dir = prepare_cell(out, cell)
    state = read_cell_state(cell_dir) or {}
    if state.get("digest") != cell.digest:
        raise UsageError(f"{cell_dir} was run with another config; give another --out, or delete it to run it again")
    print(f"source: {'finished earlier, kept' if state['finished'] else 'running'} ({oracle})", file=sys.stderr)
    run_cell(cell_dir, registry, progress=progress)
    return cell_dir.resolve()


def train_rms(source: Path, out: Path, sizes: list[int], progress: bool) -> dict[str, dict[str, Any]]:
    """One reward model per size in ``OUT/rm-N`` (kept when its rm.json is this one's)."""
    from rlaif.train.reward_model import read_info, train_reward_model

    rms = {}
    for n in sizes:
        target = out / f"rm-{n}"
        info = read_info(target) if (target / "rm.json").exists() else {}
        if info.get("train_pairs") != n or info.get("run_dir") != str(source):
            print(f"reward model on {n} pairs", file=sys.stderr)
            info = train_reward_model(source, train_pairs=n, seed=0, out_dir=target, progress=progress)
        keep = ("train_pairs", "heldout_pairs", "heldout_prompts", "heldout_accuracy", "heldout_accuracy_before",
                "train_accuracy", "pairs_mode", "oracle", "run_dir", "seconds")
        rms[arm_name(n)] = {"path": str(target), **{k: info.get(k) for k in keep}}
        print(f"reward model on {n} pairs: held-out accuracy {info['heldout_accuracy']:.3f} "
              f"({info['heldout_pairs']} pairs)", file=sys.stderr)
    return rms


def study_text(sizes: list[int], seeds: list[int], base: Path | None, out: Path, ranker: bool = True) -> str:
    """The PPO study: one arm per size, against its reward model; with ``ranker``, one more
    arm using the largest size's reward model as a ranker for ``grpo-rank``."""
    lines = [f'name = "{STUDY_NAME}"', 'mode = "live"', f"seeds = {json.dumps(seeds)}", 'baseline = "sft"']
    if base is not None:
        lines.append(f"base = {json.dumps(str(base.resolve()))}")
    for n in sizes:
        rm = json.dumps(str((out / f"rm-{n}").resolve()))
        lines += ["", "[[arms]]", f'name = "{arm_name(n)}"', 'oracle = "reward-model"', f'"oracle.path" = {rm}',
                  'loss = "ppo"', f'"loss.value_init" = {rm}']
    if ranker:
        rm = json.dumps(str((out / f"rm-{max(sizes)}").resolve()))
        lines += ["", "[[arms]]", f'name = "{ranker_arm_name(max(sizes))}"', 'oracle = "reward-model"',
                  f'"oracle.path" = {rm}', 'loss = "grpo-rank"']
    return "\n".join(lines) + "\n"


def tiny_setup(root: Path) -> Path:
    """A tiny world and a small tiny-video-lm saved as a checkpoint (seconds: no cached
    pre-training), and a run config using them: the base of a ``--tiny`` check. Made once."""
    base = root / "base.toml"
    if base.exists():
        return base
    from rlaif.plugins.benchmarks.video_world import VideoWorld
    from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
    from rlaif.plugins.policies.tiny_lm import (
        load_tiny_lm,
        pretrain_tiny_lm,
        tiny_lm_config,
        train_world_tokenizer,
    )
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM, world_texts

    # Every labelled question (label_lean 0): from 4 videos, a leaning split leaves too few reward-model pairs.
    world_options = {"n_sft": 4, "n_rl": 16, "n_test": 12, "min_frames": 16, "max_frames": 24, "label_lean": 0.0,
                     "progress": False}
    world = VideoWorld(root=str(root / "world"), seed=0, **world_options)
    texts = world_texts(world)
    tokenizer = train_world_tokenizer(texts, root / "base" / "tokenizer.json", vocab_size=512)
    config = tiny_lm_config(len(tokenizer), hidden_size=64, layers=2, heads=2, intermediate_size=128)
    pretrain_tiny_lm(texts, tokenizer, root / "base" / "lm", steps=30, seq_len=64, config=config)
    TinyVideoLM(TinyConvEncoder(feature_dim=32, width=8, n_frames=4), load_tiny_lm(root / "base" / "lm"),
                tokenizer, frames=world.frames, n_frames=4, lora_r=8, lora_alpha=8).save(root / "policy")
    bench = "\n".join(f"{k} = {json.dumps(v)}" for k, v in world_options.items())
    base.write_text("[run]\nsteps = 3\nprompts_per_step = 8\ngroup_size = 4\nmax_new_tokens = 8\neval_items = 12\n"
                    "checkpoint_every = 3\nlr = 0.01\n"
                    f'[benchmark]\nname = "video-world"\nroot = "{root / "world"}"\n{bench}\n'
                    f'[policy]\nname = "tiny-video-lm"\npath = "{root / "policy"}"\n')
    return base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("studies") / STUDY_NAME)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 2000, 4000, 8000],
                        help="Training-pair counts, one reward model and one PPO arm each.")
    parser.add_argument("--source", type=Path, help="A run directory whose rankings are the preferences "
                        "(default: a run made here, OUT/source).")
    parser.add_argument("--oracle", default="llm-judge", help="The oracle of the source made here.")
    parser.add_argument("--base", type=Path, help="Run TOML of the source made here and of every PPO cell "
                        "(default: the built-in defaults).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="PPO cells side by side (rlaif study --jobs).")
    parser.add_argument("--no-ranker", dest="ranker", action="store_false",
                        help="Leave out the ranker arm (the largest reward model ranking for grpo-rank).")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long check that the script runs")
    args = parser.parse_args(argv)
    from rlaif.core.errors import RlaifError

    try:
        run(args)
    except RlaifError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def run(args: argparse.Namespace) -> None:
    from rlaif.cli.run import known_components
    from rlaif.core.registry import load_plugins
    from rlaif.train.study import load_study, read_cell_state, run_study, write_outputs

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        os.environ.setdefault("RLAIF_CACHE", tempfile.mkdtemp(prefix="rm-pairs-cache-"))
        args.base = args.base or tiny_setup(out / "tiny")
        args.pairs, args.seeds, args.oracle, args.progress = [2, 4], [0], "ground-truth", False
    registry = load_plugins()
    base: dict[str, Any] = {}
    if args.base is not None:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib

        base = tomllib.loads(args.base.read_text())
    source = args.source.resolve() if args.source else run_source(out, base, args.oracle, registry, args.progress)
    sizes = sorted(set(args.pairs))
    rms = train_rms(source, out, sizes, args.progress)
    if args.ranker:  # the same reward model, read as a ranker
        rms[ranker_arm_name(max(sizes))] = {**rms[arm_name(max(sizes))], "used_as": "ranker"}
    made_here = (read_cell_state(source) or {}).get("wall_s") if not args.source else None
    (out / RM_FILE).write_text(json.dumps({"source": {"run_dir": str(source), "wall_s": made_here},
                                           "reward_models": rms}, indent=1, sort_keys=True))
    path = out / "study.toml"
    path.write_text(study_text(sizes, args.seeds, args.base, out, args.ranker))
    study = load_study(path, known_components=known_components(), registry=registry)
    report = run_study(study, out, jobs=args.jobs, registry=registry, progress=args.progress)
    written = write_outputs(report, plots=not args.tiny)
    for arm in report.to_json()["arms"]:
        rm = rms[arm["arm"]]
        gain = arm["gain_over_sft"]["acc/all"]
        loss = "grpo-rank" if rm.get("used_as") == "ranker" else "PPO"
        print(f"{arm['arm']}: RM held-out accuracy {rm['heldout_accuracy']:.3f}, {loss} Δ acc/all {gain['mean']:+.3f}"
              + (f" ± {gain['std']:.3f}" if gain["std"] is not None else ""))
    print("wrote " + ", ".join(str(p) for p in [out / RM_FILE, *written]), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
