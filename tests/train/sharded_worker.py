"""One process of the sharded-RL test (``tests/train/test_sharding.py``): ``rlaif run``'s
loop on the conftest's tiny Llama through hf-causal-lm, on a text-only benchmark
registered here. Launched by torchrun (2 processes) or alone.

    python sharded_worker.py RUN_DIR LLAMA_DIR SHARDING [--steps N] [--resume]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from rlaif import hookimpl
from rlaif.core.records import Prompt, VideoRef

NUMBERS = frozenset("one two three four five six seven eight nine ten".split())


class CountWorld:
    """Counting questions in the tiny Llama's words; an answer is right when it starts
    with a number word."""

    name = "count-world"
    has_ground_truth = True

    def __init__(self) -> None:
        pass

    def prompts(self, split: str) -> list[Prompt]:
        return [Prompt(f"{split}-{i}", VideoRef("none", ""), q, "one", "counting")
                for i, q in enumerate(["please count to ten :", "count to five now :", "go and count :",
                                       "stop then count :"])]

    def item_score(self, prompt: Prompt, answer: str) -> float:
        words = answer.split()
        return float(bool(words) and words[0] in NUMBERS)

    def score(self, prompts: Sequence[Prompt], answers: Sequence[str]) -> dict[str, float]:
        ok = [self.item_score(p, a) for p, a in zip(prompts, answers, strict=True)]
        return {"acc/all": sum(ok) / len(ok), "n/all": float(len(ok))}


class CountWorldPlugin:
    @hookimpl
    def rlaif_register_benchmarks(self, register):  # type: ignore[no-untyped-def]
        register("count-world", "__main__:CountWorld", description="test benchmark")


def config(llama_dir: str, sharding: str, steps: int = 2):  # type: ignore[no-untyped-def]
    from rlaif.core.config import ComponentChoice, RunConfig

    cfg = RunConfig()
    run = cfg.run
    run.steps, run.prompts_per_step, run.group_size, run.max_new_tokens = steps, 2, 2, 4
    run.eval_items, run.checkpoint_every, run.lr, run.sharding = 2, 1, 0.05, sharding
    cfg.components["benchmark"] = ComponentChoice("count-world", {})
    cfg.components["policy"] = ComponentChoice("hf-causal-lm", {"path": llama_dir, "lora_r": 4, "lora_alpha": 8,
                                                                "device": "cpu", "dtype": "float32"})
    cfg.components["oracle"] = ComponentChoice("ground-truth", {})
    cfg.components["loss"] = ComponentChoice("grpo", {})
    return cfg


def registry():  # type: ignore[no-untyped-def]
    from rlaif.core.registry import load_plugins

    reg = load_plugins()
    reg.add_plugin(CountWorldPlugin(), "count-world-test")
    return reg


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    from rlaif.train.rl import run_rl

    run_dir, llama_dir, sharding = sys.argv[1:4]
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 2
    summary = run_rl(run_dir, config(llama_dir, sharding, steps), registry(), resume="--resume" in sys.argv,
                     progress=False)
    print(json.dumps({"processes": summary.processes, "checksums": summary.param_checksums,
                      "oracle_calls": summary.oracle_calls}), flush=True)
