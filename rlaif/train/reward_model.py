"""VLM-RLAIF's reward model (methods.md §2), trained from a run's stored rankings
(``rlaif train-rm RUN_DIR``).

The model: the run's SFT policy with its SFT adapter merged and a *fresh* LoRA adapter
(r = 64, alpha = r, as in the paper), plus a scalar head -- a ``Linear(H, 1)`` without
bias ("zero bias") -- on the hidden state of the response's last token (the ``<eos>`` of
a finished answer). Only the new adapter and the head train; the encoder, projector and
LM weights stay frozen.

The data: every committed ranking shard of one oracle in ``RUN_DIR``'s store, turned
into pairwise preferences: ``pairs="all"`` (default) takes every ordered pair of
candidates from different tie blocks (the better block's member is ``chosen``);
``pairs="best-worst"`` only the best block against the worst; ``pairs="scored"`` the
pairs of ``all`` whose oracle *scores* differ (a verifier's tie-break order, e.g. the
ground-truth oracle ordering two wrong answers by length, is then not learnt as a
preference; rankings without scores give all their pairs). 20 % of the *prompts* (not
pairs: a prompt's pairs share everything but the answers) are held out, and the
pairwise accuracy on their pairs is the model's headline number.

The loss (paper code): ``-log sigmoid(r_chosen - r_rejected) + 1e-3 * |mean(r_chosen +
r_rejected)|``, the second term keeping rewards centred at zero; AdamW, gradients
clipped at 1.

One default differs from the paper: lr = 1e-3 instead of 2e-5, for the 1 M-parameter
embedded model. Measured on 960 ground-truth-ranked groups of SFT samples (3357 training
pairs, 791 held-out pairs from 147 prompts, 1 epoch), held-out pairwise accuracy was
0.74 at r = 64, lr = 1e-3; 0.72 at the paper's r = 64, lr = 2e-5; 0.60 at r = 16,
lr = 2e-5 (0.47 before training). All are options.

Output, ``RUN_DIR/reward_model/`` (written to a temporary folder and renamed):
``policy/`` (the backbone as a ``tiny-video-lm`` checkpoint: merged LM, the RM adapter as
a peft ``adapter/``, projector, encoder, tokenizer), ``head.safetensors`` and ``rm.json``
(configuration, data counts and metrics). :class:`RewardModel` loads it back; the
``reward-model`` oracle ranks with it; :func:`load_value_head_init` hands its head to PPO.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif.core.errors import StoreError, UsageError
from rlaif.core.records import Prompt, Ranking, Rollout

RM_FORMAT = "reward-model/1"
RM_DIRNAME = "reward_model"
PAIR_MODES = ("all", "best-worst", "scored")


# --------------------------------------------------------------------------- the loss
def bradley_terry_loss(chosen: Any, rejected: Any, center_coef: float = 1e-3) -> tuple[Any, dict[str, float]]:
    """Bradley-Terry reward-model loss of VLM-RLAIF (Ahn et al., 2024, paper code):

        L = -mean log sigmoid(r_c - r_r) + center_coef * |mean(r_c + r_r)|

    ``chosen`` and ``rejected`` are rewards ``[B]`` of the preferred and the other answer
    of B pairs. Returns the loss and detached metrics (``accuracy`` counts a tie as a
    half)."""
    import torch.nn.functional as F

    margin = chosen - rejected  # [B]
    bt = -F.logsigmoid(margin).mean()
    center = (chosen + rejected).mean().abs()
    loss = bt + center_coef * center
    with_ties = (margin > 0).float() + 0.5 * (margin == 0).float()  # [B]
    metrics = {
        "loss": float(loss.detach()),
        "bt_loss": float(bt.detach()),
        "center": float(center.detach()),
        "accuracy": float(with_ties.mean().detach()),
        "margin": float(margin.mean().detach()),
    }
    return loss, metrics


# --------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class PreferencePair:
    """One preference: for ``prompt_id``, ``chosen`` was ranked above ``rejected``."""

    prompt_id: str
    chosen: Rollout
    rejected: Rollout
    step: int = 0


def ranking_pairs(ranking: Ranking, mode: str = "all") -> list[tuple[int, int]]:
    """``(chosen, rejected)`` candidate indices from one ranking: every pair across
    different tie blocks (``all``), the best block against the worst (``best-worst``),
    or the pairs of ``all`` whose scores differ (``scored``). A failed or all-tied
    ranking gives none."""
    if mode not in PAIR_MODES:
        raise UsageError(f"pairs must be one of {', '.join(PAIR_MODES)}, got {mode!r}")
    if not ranking.ok:
        return []
    blocks = ranking.tie_groups()
    if len(blocks) < 2:
        return []
    if mode == "best-worst":
        return [(a, b) for a in blocks[0] for b in blocks[-1]]
    pairs = [(a, b) for i, better in enumerate(blocks) for worse in blocks[i + 1 :] for a in better for b in worse]
    if mode == "scored" and ranking.scores is not None:
        scores = ranking.scores
        pairs = [(a, b) for a, b in pairs if scores[a] > scores[b]]
    return pairs


def group_pairs(ranking: Ranking, rollouts: Sequence[Rollout], mode: str = "all", step: int = 0
                ) -> list[PreferencePair]:
    """Preference pairs of one ranked group; pairs of identical answers are dropped (they
    carry no preference, only the oracle's tie-breaking)."""
    out = []
    for a, b in ranking_pairs(ranking, mode):
        if a >= len(rollouts) or b >= len(rollouts):
            raise StoreError(f"ranking of {ranking.prompt_id!r} names candidate {max(a, b)} of a group of "
                             f"{len(rollouts)}")
        if rollouts[a].text.strip() == rollouts[b].text.strip():
            continue
        out.append(PreferencePair(ranking.prompt_id, rollouts[a], rollouts[b], step))
    return out


def stored_pairs(store: Any, oracle: str, mode: str = "all", run_id: str = "main") -> list[PreferencePair]:
    """Preference pairs from every committed ranking shard of ``oracle`` in ``store``."""
    pairs: list[PreferencePair] = []
    for step in store.steps(run_id, kind="rankings", oracle=oracle):
        by_prompt: dict[str, list[Rollout]] = {}
        for r in store.iter_shard("rollouts", run_id, step):
            by_prompt.setdefault(r.prompt_id, []).append(r)
        for ranking in store.iter_shard("rankings", run_id, step, oracle=oracle):
            rollouts = sorted(by_prompt.get(ranking.prompt_id, []), key=lambda r: r.index)
            pairs += group_pairs(ranking, rollouts, mode, step)
    return pairs


def split_prompts(pairs: Sequence[PreferencePair], holdout: float = 0.2, seed: int = 0
                  ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) pairs, holding out a seeded ``holdout`` share of the prompts
    (at least one when there are two or more and ``holdout > 0``)."""
    if not 0.0 <= holdout < 1.0:
        raise UsageError(f"holdout must be in [0, 1), got {holdout}")
    ids = sorted({p.prompt_id for p in pairs})
    random.Random(f"rm-holdout:{seed}").shuffle(ids)
    n_held = round(holdout * len(ids))
    if holdout > 0 and n_held == 0 and len(ids) >= 2:
        n_held = 1
    held = set(ids[:n_held])
    return [p for p in pairs if p.prompt_id not in held], [p for p in pairs if p.prompt_id in held]


def take_train_pairs(train: Sequence[PreferencePair], n: int | None, seed: int = 0) -> list[PreferencePair]:
    """The first ``n`` of a seeded shuffle of ``train`` (all with ``n=None``): for a
    preference-data scaling study (VLM-RLAIF Fig. 5) the held-out pairs stay the same at
    every ``n``, and the training sets nest (the 1k pairs are among the 2k)."""
    if n is None:
        return list(train)
    if n < 1 or n > len(train):
        raise UsageError(f"train_pairs {n}: the data gives {len(train)} training pairs (after holding out "
                         "prompts); ask for 1 to that many, or use more data")
    order = list(train)
    random.Random(f"rm-train-pairs:{seed}").shuffle(order)
    return order[:n]


# --------------------------------------------------------------------------- the model
class RewardModel:
    """A scalar reward on a policy's last-token hidden state (see the module docstring).

    ``policy`` must have the :class:`~rlaif.core.protocols.LastHiddenState` capability
    (the built-in policies do): the reward reads the same inputs the policy reads."""

    def __init__(self, policy: Any, head: Any = None, *, seed: int = 0) -> None:
        import torch
        from torch import nn

        from rlaif.core.protocols import LastHiddenState, require_capability

        require_capability(policy, LastHiddenState, "the reward model (rlaif train-rm)")
        self.policy = policy
        if head is None:
            gen = torch.Generator().manual_seed(seed)
            head = nn.Linear(int(policy.hidden_size), 1, bias=False)
            with torch.no_grad():  # as AlpacaFarm / LLaVA-RLHF initialise their reward heads
                head.weight.copy_(torch.randn(head.weight.shape, generator=gen) / math.sqrt(policy.hidden_size + 1))
        self.head = head.to(getattr(policy, "device", "cpu"))

    def trainable_parameters(self) -> list[Any]:
        return [*self.policy.trainable_parameters(), *self.head.parameters()]

    def response_ids(self, rollout: Rollout | str) -> list[int]:
        """The tokens scored: the rollout's own tokens when it has them (as sampled, so a
        truncated answer stays truncated), else the text as the policy would end it."""
        if isinstance(rollout, Rollout) and rollout.token_ids:
            return list(rollout.token_ids)
        text = rollout.text if isinstance(rollout, Rollout) else str(rollout)
        return list(self.policy.answer_ids(text))

    def rewards(self, prompts: Sequence[Prompt], answers: Sequence[Rollout | str]) -> Any:
        """Rewards ``[N]`` of ``answers[i]`` to ``prompts[i]`` (with grad)."""
        import torch

        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts for {len(answers)} answers")
        if not prompts:
            return torch.zeros(0)
        states = self.policy.last_hidden_states(prompts, [self.response_ids(a) for a in answers])  # [N, H]
        return self.head(states.to(self.head.weight.dtype)).squeeze(-1)  # [N]

    def score(self, prompts: Sequence[Prompt], answers: Sequence[Rollout | str], batch: int = 64) -> list[float]:
        """Rewards as floats, without grad, ``batch`` answers per forward."""
        import torch

        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(prompts), batch):
                out += self.rewards(prompts[start : start + batch], answers[start : start + batch]).tolist()
        return out

    def pairwise_accuracy(self, pairs: Sequence[PreferencePair], prompts: dict[str, Prompt], batch: int = 32
                          ) -> float | None:
        """Share of ``pairs`` with ``r(chosen) > r(rejected)`` (a tie counts a half)."""
        if not pairs:
            return None
        rows = [prompts[p.prompt_id] for p in pairs]
        chosen = self.score(rows, [p.chosen for p in pairs], batch)
        rejected = self.score(rows, [p.rejected for p in pairs], batch)
        hits = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)]
        return sum(hits) / len(hits)

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: str | Path, info: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.policy.save(directory / "policy")
        save_file({"weight": self.head.weight.detach().cpu().contiguous()}, str(directory / "head.safetensors"))
        meta = {"format": RM_FORMAT, "hidden_size": int(self.policy.hidden_size), **info}
        (directory / "rm.json").write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def load(cls, directory: str | Path, *, benchmark: Any = None, seed: int = 0, registry: Any = None) -> RewardModel:
        """Load a reward model saved by ``rlaif train-rm`` (frozen, for scoring).
        ``benchmark`` supplies the video frames; default: rebuilt from ``rm.json``."""
        from safetensors.torch import load_file
        from torch import nn

        directory = Path(directory)
        if directory.is_dir() and not (directory / "rm.json").exists() and (directory / RM_DIRNAME).is_dir():
            directory = directory / RM_DIRNAME  # a run directory
        info = read_info(directory)
        if benchmark is None:
            spec = info.get("benchmark") or {}
            if not spec.get("name"):
                raise UsageError(f"{directory}: rm.json names no benchmark; pass benchmark=")
            from rlaif.core.registry import load_plugins

            benchmark = load_plugins().build("benchmark", spec["name"], dict(spec.get("options") or {}))
        policy = _load_backbone(directory / "policy", info, benchmark, seed, registry)
        for p in policy.trainable_parameters():
            p.requires_grad_(False)
        head = nn.Linear(int(info["hidden_size"]), 1, bias=False)
        head.load_state_dict(load_file(str(directory / "head.safetensors")))
        head.requires_grad_(False)
        return cls(policy, head)


def read_info(directory: str | Path) -> dict[str, Any]:
    """``rm.json`` of a saved reward model, checked."""
    path = Path(directory) / "rm.json"
    if not path.exists():
        raise UsageError(f"{directory} holds no reward model (no rm.json); train one with `rlaif train-rm RUN_DIR`")
    info = dict(json.loads(path.read_text()))
    if str(info.get("format", "")).partition("/")[0] != RM_FORMAT.partition("/")[0]:
        raise UsageError(f"{path} is not a reward model description (format {info.get('format')!r})")
    return info


def _load_backbone(path: Path, info: dict[str, Any], benchmark: Any, seed: int, registry: Any = None) -> Any:
    """The saved backbone, built by the policy ``rm.json`` names (reward models saved
    before it named one sat on the default policy) with its adapter as trained."""
    from rlaif.core.config import DEFAULT_COMPONENTS
    from rlaif.core.registry import load_plugins

    name = info.get("policy") or DEFAULT_COMPONENTS["policy"]
    # RewardModel checks the LastHiddenState capability.
    return (registry or load_plugins()).build("policy", name, {"path": str(path), "new_adapter": False},
                                              benchmark=benchmark, seed=seed)


def load_value_head_init(path: str | Path) -> dict[str, Any]:
    """A state dict for the policy's value head (``policy.add_value_head()``, a
    ``Linear(H, 1)`` with bias) taken from the reward model at ``path`` (its directory
    or the run directory): the reward head's weight and a zero bias.

    Use: ``policy.add_value_head().load_state_dict(load_value_head_init(path))`` before
    building the optimizer. The policy's hidden size must match the reward model's
    (both start from the same SFT checkpoint)."""
    import torch
    from safetensors.torch import load_file

    directory = Path(path)
    if not (directory / "rm.json").exists() and (directory / RM_DIRNAME / "rm.json").exists():
        directory = directory / RM_DIRNAME
    info = read_info(directory)
    weight = load_file(str(directory / "head.safetensors"))["weight"]  # [1, H]
    if tuple(weight.shape) != (1, int(info["hidden_size"])):
        raise UsageError(f"{directory}: reward head has shape {tuple(weight.shape)}, expected (1, H)")
    return {"weight": weight.clone(), "bias": torch.zeros(1, dtype=weight.dtype)}


# --------------------------------------------------------------------------- training
def _prompt_index(benchmark: Any, store: Any, run_id: str) -> dict[str, Prompt]:
    prompts: dict[str, Prompt] = {}
    for split in getattr(benchmark, "splits", ("sft", "rl", "test")):
        try:
            prompts.update({p.prompt_id: p for p in benchmark.prompts(split)})
        except Exception:  # a benchmark without this split
            continue
    if store is not None:
        prompts.update({p.prompt_id: p for p in store.iter_prompts(run_id)})
    return prompts


def _choose_oracle(store: Any, run_id: str, oracle: str | None, configured: str | None) -> str:
    stored = store.oracles(run_id)
    if oracle is not None:
        if oracle not in stored:
            raise StoreError(f"no rankings by oracle {oracle!r}; stored oracles: {', '.join(stored) or 'none'}")
        return oracle
    if configured in stored:
        return str(configured)
    if len(stored) == 1:
        return str(stored[0])
    if not stored:
        raise StoreError("the run holds no rankings to learn preferences from; run `rlaif run` first")
    raise UsageError(f"the run holds rankings by several oracles ({', '.join(stored)}); pass --oracle")


def train_reward_model(
    run_dir: str | Path | None,
    *,
    preference_split: str = "sft",
    benchmark_spec: dict[str, Any] | None = None,
    oracle: str | None = None,
    pairs: str = "all",
    lora_r: int = 64,
    lora_alpha: int | None = None,
    lr: float = 1e-3,
    epochs: int = 1,
    batch_size: int = 16,
    holdout: float = 0.2,
    center_coef: float = 1e-3,
    max_pairs: int | None = None,
    train_pairs: int | None = None,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    policy: Any = None,
    benchmark: Any = None,
    registry: Any = None,
    progress: bool = True,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train a reward model on the stored rankings of ``run_dir`` and save it to
    ``out_dir`` (default ``RUN_DIR/reward_model``); returns ``rm.json``'s contents.
    With ``run_dir=None`` the pairs are ``benchmark.preference_pairs(preference_split)``
    instead (e.g. VLM-RLAIF's preference files given to ``video-qa``), on the given
    ``policy`` (built with a fresh adapter), saved to ``out_dir``.
    ``options`` (kind -> options) are set over the stored config's ``[benchmark]`` and
    ``[policy]`` options (the videos moved, another checkpoint dir).
    ``max_pairs`` samples the pairs before prompts are held out; ``train_pairs`` trains on
    that many of the training pairs after (:func:`take_train_pairs`), the held-out pairs
    unchanged: what a study of preference-data size needs.

    ``policy``/``benchmark`` override what the run's config builds (tests); a given
    ``policy`` is trained as is (its trainable parameters are the RM's adapter)."""

    from rlaif.core.config import config_from_dict
    from rlaif.core.store import RunStore
    from rlaif.train.rl import RUN_ID, default_policy_path, seed_everything

    if epochs < 1 or batch_size < 1 or lora_r < 1:
        raise UsageError(f"need epochs, batch_size and lora_r >= 1, got {epochs}, {batch_size}, {lora_r}")
    if pairs not in PAIR_MODES:
        raise UsageError(f"--pairs must be one of {', '.join(PAIR_MODES)}, got {pairs!r}")
    started = time.perf_counter()
    if run_dir is None:
        return _train_on_benchmark_pairs(
            policy=policy, benchmark=benchmark, split=preference_split, pairs_mode=pairs, lora_r=lora_r,
            lora_alpha=lora_alpha, lr=lr, epochs=epochs, batch_size=batch_size, holdout=holdout,
            center_coef=center_coef, max_pairs=max_pairs, train_pairs=train_pairs, seed=seed or 0, out_dir=out_dir,
            progress=progress, spec=benchmark_spec)
    run_dir = Path(run_dir)
    with RunStore(run_dir, readonly=True) as store:
        info = store.get_run(RUN_ID)
        if info is None:
            raise StoreError(f"{run_dir}: no run recorded in this store; check the path")
        config = config_from_dict(info.config, source=str(run_dir))
        for kind, given in (options or {}).items():
            config.components[kind].options.update(given)
        seed = config.run.seed if seed is None else seed
        oracle_name = _choose_oracle(store, RUN_ID, oracle, config.choice("oracle").name)
        all_pairs = stored_pairs(store, oracle_name, pairs, RUN_ID)
        if registry is None and (benchmark is None or policy is None):
            from rlaif.core.registry import load_plugins

            registry = load_plugins()
        if benchmark is None:
            benchmark = registry.build("benchmark", config.choice("benchmark").name,
                                       config.choice("benchmark").options)
        prompts = _prompt_index(benchmark, store, RUN_ID)
    missing = sorted({p.prompt_id for p in all_pairs} - set(prompts))
    if missing:
        raise StoreError(f"{len(missing)} stored prompt(s) are not in the benchmark (e.g. {missing[0]!r}); "
                         "train with the benchmark options the run used")
    if not all_pairs:
        raise StoreError(f"the rankings by {oracle_name!r} give no preference pairs (all failed or tied)")
    seed_everything(seed)
    if max_pairs is not None and len(all_pairs) > max_pairs:
        all_pairs = random.Random(f"rm-pairs:{seed}").sample(all_pairs, max_pairs)
    train, held = split_prompts(all_pairs, holdout, seed)
    train = take_train_pairs(train, train_pairs, seed)

    policy_name = getattr(policy, "name", type(policy).__name__)
    if policy is None:
        policy_name = config.choice("policy").name
        options = dict(config.choice("policy").options)
        path = default_policy_path(config, benchmark, progress, registry, role="rlaif train-rm")
        if path is not None:
            options["path"] = path
        options.update(lora_r=lora_r, lora_alpha=lora_alpha or lora_r, new_adapter=True, value_head=False)
        policy = registry.build("policy", policy_name, options, benchmark=benchmark, seed=seed)
    result = _fit(policy, train, held, prompts, lr=lr, epochs=epochs, batch_size=batch_size, center_coef=center_coef,
                  seed=seed, progress=progress)
    result = {
        "run_dir": str(run_dir),
        "oracle": oracle_name,
        "policy": policy_name,
        "benchmark": {"name": config.choice("benchmark").name, "options": dict(config.choice("benchmark").options)},
        "pairs_mode": pairs,
        "pairs": len(all_pairs),
        "lora_r": int(getattr(policy, "lora_r", lora_r)),
        "lora_alpha": int(getattr(policy, "lora_alpha", lora_alpha or lora_r)),
        **result,
    }
    return _finish(result["model"], result, started, Path(out_dir) if out_dir is not None else run_dir / RM_DIRNAME)


def _train_on_benchmark_pairs(*, policy: Any, benchmark: Any, split: str, pairs_mode: str, lora_r: int,
                              lora_alpha: int | None, lr: float, epochs: int, batch_size: int, holdout: float,
                              center_coef: float, max_pairs: int | None, seed: int, out_dir: str | Path | None,
                              progress: bool, spec: dict[str, Any] | None = None,
                              train_pairs: int | None = None) -> dict[str, Any]:
    """The reward model on a benchmark's own preference pairs (no run store)."""
    from rlaif.train.rl import seed_everything

    started = time.perf_counter()
    make = getattr(benchmark, "preference_pairs", None)
    name = getattr(benchmark, "name", type(benchmark).__name__)
    if not callable(make):
        raise UsageError(f"benchmark {name!r} has no preference_pairs; give a run directory, or a benchmark with "
                         "preference files (video-qa: preferences = ...)")
    if policy is None or out_dir is None:
        raise UsageError("training on a benchmark's preference pairs needs a [policy] and --out DIR")
    examples = list(make(split))
    if not examples:
        raise UsageError(f"benchmark {name!r} has no {split!r} preference pairs")
    prompts = {ex.prompt.prompt_id: ex.prompt for ex in examples}
    all_pairs = [PreferencePair(ex.prompt_id, ex.chosen, ex.rejected) for ex in examples
                 if ex.chosen.text.strip() != ex.rejected.text.strip()]
    seed_everything(seed)
    if max_pairs is not None and len(all_pairs) > max_pairs:
        all_pairs = random.Random(f"rm-pairs:{seed}").sample(all_pairs, max_pairs)
    train, held = split_prompts(all_pairs, holdout, seed)
    train = take_train_pairs(train, train_pairs, seed)
    result = _fit(policy, train, held, prompts, lr=lr, epochs=epochs, batch_size=batch_size, center_coef=center_coef,
                  seed=seed, progress=progress)
    result = {"run_dir": None, "source": f"{name}:{split}", "policy": getattr(policy, "name", type(policy).__name__),
              "benchmark": spec or {"name": name}, "pairs_mode": pairs_mode, "pairs": len(all_pairs),
              "lora_r": int(getattr(policy, "lora_r", lora_r)),
              "lora_alpha": int(getattr(policy, "lora_alpha", lora_alpha or lora_r)), **result}
    return _finish(result["model"], result, started, Path(out_dir))


def _finish(model: RewardModel, result: dict[str, Any], started: float, target: Path) -> dict[str, Any]:
    result = {k: v for k, v in result.items() if k != "model"}
    result["seconds"] = round(time.perf_counter() - started, 3)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, result)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return result


def _fit(policy: Any, train: list[PreferencePair], held: list[PreferencePair], prompts: dict[str, Prompt], *,
         lr: float, epochs: int, batch_size: int, center_coef: float, seed: int, progress: bool) -> dict[str, Any]:
    """Bradley-Terry training of a reward head (and the policy's fresh adapter) on
    ``train``; the metrics of ``rm.json`` plus ``model``."""
    import torch

    if torch.cuda.is_available() and hasattr(policy, "to"):
        policy.to("cuda")
    model = RewardModel(policy, seed=seed)
    params = model.trainable_parameters()
    if not params:
        raise UsageError("the reward model has no trainable parameters; load the policy with a fresh adapter")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    heldout_before = model.pairwise_accuracy(held, prompts)
    losses: list[float] = []
    accs: list[float] = []
    total = epochs * math.ceil(len(train) / batch_size)
    bar = _Bar(progress, total)
    for epoch in range(epochs):
        order = list(train)
        random.Random(f"rm-epoch:{seed}:{epoch}").shuffle(order)
        for b in range(0, len(order), batch_size):
            batch = order[b : b + batch_size]
            rows = [prompts[p.prompt_id] for p in batch]
            rewards = model.rewards(rows + rows, [p.chosen for p in batch] + [p.rejected for p in batch])  # [2B]
            loss, metrics = bradley_terry_loss(rewards[: len(batch)], rewards[len(batch) :], center_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(metrics["loss"])
            accs.append(metrics["accuracy"])
            bar.advance(f"epoch {epoch + 1} loss {metrics['loss']:.3f} acc {metrics['accuracy']:.2f}")
    bar.close()
    k = max(1, len(losses) // 10)
    sample = random.Random(f"rm-train-eval:{seed}").sample(train, min(len(train), 512))
    return {
        "model": model,
        "train_pairs": len(train),
        "heldout_pairs": len(held),
        "heldout_prompts": len({p.prompt_id for p in held}),
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "center_coef": center_coef,
        "seed": seed,
        "steps": len(losses),
        "loss_first": sum(losses[:k]) / k if losses else None,
        "loss_last": sum(losses[-k:]) / k if losses else None,
        "train_accuracy_running": sum(accs[-k:]) / k if accs else None,
        "train_accuracy": model.pairwise_accuracy(sample, prompts),
        "heldout_accuracy_before": heldout_before,
        "heldout_accuracy": model.pairwise_accuracy(held, prompts),
        "seconds": 0.0,
    }


class _Bar:
    """A rich progress bar that does nothing when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar: Any = None
        if enabled and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("reward model"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.fields[info]}"))
            self.bar.start()
            self.task = self.bar.add_task("rm", total=total, info="")

    def advance(self, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
