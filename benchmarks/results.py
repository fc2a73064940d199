"""``benchmarks/RESULTS.md`` from the studies' stored results: one command, no hand edits.

    python benchmarks/results.py --studies studies [--out benchmarks/RESULTS.md]

For each table (T1 .. T5, T3 live and replay) it looks for the study's directory under
``--studies``: ``STUDIES/NAME`` (NAME is the study's ``name``, as ``rlaif study`` names its
default ``--out``), or any ``STUDIES/*/results.json`` written for that study. From that
``results.json`` (what :func:`rlaif.train.study.write_outputs` stores: mean ± std over
seeds, every seed's value, the paired bootstrap against the baseline, the costs and the
evaluation curves) it writes one section: the command that regenerates the table, the
wall time it took (every cell's, sources included), the paper's claim it tests, and the
table. Nothing is computed again here: the numbers are the study's own. A table whose
study has no results is listed as not run yet. A ``notes.md`` in a study directory (what
the numbers mean, written by whoever ran it) is copied under its table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
#: What ``benchmarks/rm_pairs.py`` stores next to T5's results.json: the source run of the
#: preferences (its wall time when made there) and each arm's reward model.
RM_FILE = "reward_models.json"
#: ``benchmarks/oracle_table.py --json`` output a study directory may hold (T2): the judges'
#: Kendall τ per context, shown under the study's table.
ORACLE_TABLE = "oracle_table.json"


@dataclass(frozen=True)
class Table:
    key: str  # T1, T3 live, ...
    name: str  # the study's name, and its file's stem under examples/studies/
    title: str
    claim: str  # the paper's claim the table tests, one sentence (../shared/methods.md)
    script: str = ""  # set when a benchmarks/ script, not `rlaif study`, makes the table
    script_args: str = ""  # what the script is given besides --out
    wall_curves: bool = False  # add accuracy against wall time

    def command(self, studies: str, directory: str = "") -> str:
        out = f"{studies}/{directory or self.name}"
        if self.script:
            return " ".join(filter(None, ["python", self.script, "--out", out, self.script_args]))
        return f"rlaif study examples/studies/{self.name}.toml --out {out}"


TABLES = (
    Table("T1", "t1-oracles", "what RL adds over the SFT policy, per oracle",
          "VLM-RLAIF (Ahn et al., ACL 2024) and Oracle-RLAIF (Shi et al., 2025): RL from AI feedback raises "
          "zero-shot video-QA accuracy over the SFT policy (MSVD-QA 67.2 → 76.4), and a drop-in ranker can "
          "stand in for the trained reward model."),
    Table("T2", "t2-context", "the judge's context (VLM-RLAIF Table 5)",
          "VLM-RLAIF Table 5: the judge needs the video's narrative; correctness after RLAIF rises from no "
          "context (3.26) to 1 clip (3.44) to 3 clips (3.63), SFT 2.79."),
    Table("T3 live", "t3-losses-live", "the rank-based losses at equal oracle calls, live",
          "Oracle-RLAIF: GRPO_rank's rank-aware advantages beat score-based GRPO and PPO at equal oracle calls "
          "(MSVD-QA 72.9 against VLM-RLAIF's PPO 68.5)."),
    Table("T3 replay", "t3-losses-replay", "the rank-based losses on identical data, replay",
          "Oracle-RLAIF: GRPO_rank's rank-aware advantages beat score-based GRPO and PPO; here every loss "
          "learns from the same stored rollouts and rankings, so only the loss differs."),
    Table("T4", "t4-veripo", "VerIPO's GRPO → verifier → DPO loop against GRPO alone",
          "VerIPO (Li et al., 2025): the loop reaches GRPO's accuracy in less wall time, a DPO step being "
          "about 7× cheaper per sample than a GRPO step (training time 63 h → 49 h).",
          wall_curves=True),
    Table("T5", "t5-rm-pairs", "reward-model preference pairs → RM accuracy and PPO gain (VLM-RLAIF Fig. 5)",
          "VLM-RLAIF Fig. 5: quality after PPO rises monotonically with the reward model's preference data "
          "(10k to 40k pairs). The `ranker-N` arm is Oracle-RLAIF's headline pairing on the same N pairs: "
          "the reward model used as a ranker with GRPO_rank, against it as a scalar reward with PPO "
          "(`pairs-N`).", script="benchmarks/rm_pairs.py",
          script_args="--base examples/studies/t5-rm-pairs.toml --jobs 2"),
)


# --------------------------------------------------------------------------- finding results
def find_results(studies: Path, name: str) -> tuple[Path | None, dict[str, Any] | None]:
    """``(study dir, results.json)`` of study ``name`` under ``studies``: ``studies/name``
    first, else any directory whose results.json names that study; ``(dir, None)`` for a
    directory without results yet, ``(None, None)`` for none."""
    own = studies / name
    candidates = [own] + sorted(p for p in studies.glob("*") if p.is_dir() and p != own)
    for directory in candidates:
        path = directory / "results.json"
        if not path.exists():
            continue
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(results, dict) and results.get("study") == name and isinstance(results.get("arms"), list):
            return directory, results
    return (own, None) if own.is_dir() else (None, None)


def total_wall_s(study_dir: Path, results: dict[str, Any]) -> float:
    """Every cell's wall seconds: as stored in results.json, or (results written before it
    was stored) read from the cells the study's manifest lists, or the arms' cells only."""
    from rlaif.train.study import MANIFEST, read_cell_state

    if "wall_s_total" in results:
        return float(results["wall_s_total"])
    manifest = study_dir / MANIFEST
    if manifest.exists():
        states = [read_cell_state(study_dir / cell) for cell in json.loads(manifest.read_text()).get("cells", {})]
        if states and all(s is not None for s in states):
            return sum(float(s["wall_s"]) for s in states if s is not None)
    return sum(sum(arm["wall_s"]["values"]) for arm in results["arms"])


# --------------------------------------------------------------------------- formatting
def num(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:{'+' if signed else ''}.{digits}f}"


def mean_pm_std(stats: dict[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    """``0.320 ± 0.012`` from a results.json ``{mean, std, values}`` (``0.320`` for one seed)."""
    if not stats or stats.get("mean") is None:
        return "-"
    text = num(stats["mean"], digits, signed)
    return text + (f" ± {stats['std']:.{digits}f}" if stats.get("std") is not None else "")


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def per_seed(values: Sequence[float]) -> str:
    return ", ".join(num(v, signed=True) for v in values)


def example_seeds(name: str) -> list[int] | None:
    path = REPO / "examples" / "studies" / f"{name}.toml"
    if not path.exists():
        return None
    seeds = tomllib.loads(path.read_text()).get("seeds")
    return list(seeds) if isinstance(seeds, list) else None


def arms_table(results: dict[str, Any], rms: dict[str, Any]) -> list[str]:
    """One row per arm: each metric's mean ± std over seeds, the gain over SFT (mean ± std,
    then each seed's), the paired difference against the baseline (pooled, 95% interval,
    then each seed's), oracle calls and wall time."""
    metrics = list(results["metrics"])
    first, baseline = metrics[0], results["baseline"]
    versus = "SFT (each cell's step 0)" if baseline == "sft" else f"`{baseline}`"
    head = ["arm", *metrics, f"Δ {first} vs SFT; per seed", f"vs {versus}, paired [95%]; per seed"]
    if rms:
        head += ["RM train pairs", "RM held-out acc"]
    head += ["oracle calls", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for arm in results["arms"]:
        gain = arm["gain_over_sft"].get(first)
        gain_text = mean_pm_std(gain, signed=True)
        if gain and len(gain["values"]) > 1:
            gain_text += f"; {per_seed(gain['values'])}"
        paired = arm.get("paired")
        if paired is None:
            paired_text = "-"
        else:
            paired_text = f"{num(paired['diff'], signed=True)} [{num(paired['lo'], signed=True)}, " \
                          f"{num(paired['hi'], signed=True)}]"
            seeds = paired.get("per_seed", {})
            if len(seeds) > 1:
                paired_text += f"; {per_seed([seeds[s]['diff'] for s in sorted(seeds, key=int)])}"
        row = [f"`{arm['arm']}`", *(mean_pm_std(arm["metrics"].get(m)) for m in metrics), gain_text, paired_text]
        if rms:
            rm = rms.get(arm["arm"], {})
            row += [str(rm.get("train_pairs", "-")), num(rm.get("heldout_accuracy"))]
        row += [mean_pm_std(arm["oracle_calls"], 0), mean_pm_std(arm["wall_s"], 0)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def judge_table(table: dict[str, Any], path: str) -> list[str]:
    """The judges' ranking quality by context (``benchmarks/oracle_table.py --json``, stored
    in the study directory): what each arm's oracle could see, next to what RL made of it."""
    lines = [f"Judge quality on the same contexts: `rlaif oracle check` on test-split groups of G = 4 SFT "
             f"candidates, Kendall τ against the ground truth (`python benchmarks/oracle_table.py --groups 128 "
             f"--json {path}`).", "",
             "| judge | context | Kendall τ | top-1 | position bias | groups used |", "|---|---|---|---|---|---|"]
    for row in table.get("rows", []):
        lines.append(f"| {row['judge']} | {row['context']} | {num(row['kendall_tau'], signed=True)} | "
                     f"{num(row['top1'])} | {num(row['position_bias'])} | {row.get('groups_used', '-')} |")
    if table.get("caption_score") is not None:
        lines += ["", f"The SFT policy's clip captions (the generated narratives) score "
                      f"{num(table['caption_score'], 2)} / 5 against the gold captions."]
    return lines


def wall_curves(results: dict[str, Any]) -> list[str]:
    """Each arm's evaluations against wall time (mean over seeds), and every arm's accuracy
    at the wall time the fastest arm took in all (its last evaluation done by then)."""
    from rlaif.train.study import mean_std

    metric = results["metrics"][0]
    arms = [a for a in results["arms"] if a.get("curves") and all(
        any("wall_s" in point for point in curve) for curve in a["curves"])]
    if not arms:
        return ["(the cells recorded no wall time per step: results from before it was recorded)"]
    lines = [f"Accuracy against wall time: {metric} at each evaluation, wall seconds since the cell began "
             "(evaluations included), mean over seeds.", "",
             f"| arm | step | wall s | {metric} |", "|---|---|---|---|"]
    for arm in arms:
        steps = sorted(set.intersection(*({int(p["step"]) for p in c if "wall_s" in p and metric in p}
                                          for c in arm["curves"])))
        for step in steps:
            points = [next(p for p in c if int(p["step"]) == step) for c in arm["curves"]]
            wall, _ = mean_std([p["wall_s"] for p in points])
            acc, std = mean_std([p[metric] for p in points])
            lines.append(f"| `{arm['arm']}` | {step} | {num(wall, 0)} | "
                         f"{mean_pm_std({'mean': acc, 'std': std})} |")
    budget = min(float(a["wall_s"]["mean"]) for a in arms)
    at_budget = []
    for arm in arms:
        values = []
        for curve in arm["curves"]:
            done = [p[metric] for p in sorted(curve, key=lambda p: p["step"])
                    if metric in p and "wall_s" in p and p["wall_s"] <= budget + 1e-9]
            values.append(done[-1] if done else curve[0][metric])
        mean, std = mean_std(values)
        at_budget.append(f"`{arm['arm']}` {mean_pm_std({'mean': mean, 'std': std})}")
    lines += ["", f"At equal wall time ({num(budget, 0)} s, the fastest arm's whole run): "
              + ", ".join(at_budget) + "."]
    return lines


def section(table: Table, studies: str, study_dir: Path, results: dict[str, Any]) -> list[str]:
    seeds = results["seeds"]
    given = example_seeds(table.name)
    note = f" (here with seeds = {seeds})" if given is not None and given != seeds else ""
    cells = results.get("cells")
    wall = total_wall_s(study_dir, results)
    rm_path = study_dir / RM_FILE
    rm_data = json.loads(rm_path.read_text()) if rm_path.exists() else {}
    rms = rm_data.get("reward_models", {})
    extra = ""
    if rm_data:  # T5's cost: the preference run and the reward models too
        made = rm_data.get("source", {}).get("wall_s")
        trained = {rm.get("path"): rm for rm in rms.values()}  # a ranker arm reuses a reward model
        wall += (made or 0.0) + sum(float(rm.get("seconds") or 0.0) for rm in trained.values())
        extra = (" (the preference run and " if made is not None else " (the given preference run not included; ") \
            + "the reward models included)"
    against = "each cell's starting policy" if results["baseline"] == "sft" else f"`{results['baseline']}`"
    lines = [f"## {table.key}: {table.title}", "",
             f"**Claim tested.** {table.claim}", "",
             f"`{table.command(studies, study_dir.name)}`{note}: {duration(wall)} of cell wall time"
             + (f" over {cells} cells" if cells else "") + extra
             + f"; {results['mode']}, seeds {', '.join(map(str, seeds))}.", "",
             f"Mean ± std over seeds of the final evaluation. Δ vs SFT: the gain over each cell's starting policy. "
             f"Paired: mean per-item difference in `{results['paired_metric']}` against {against}, "
             "items paired within each seed and seeds pooled, 95% bootstrap interval."
             + (" A replay arm's oracle calls are its source run's." if results["mode"] == "replay" else "")
             + (" RM: the arm's reward model, its training pairs and its pairwise accuracy on the held-out "
                "prompts' pairs (the same pairs for every arm)." if rms else ""), ""]
    lines += arms_table(results, rms)
    judged = study_dir / ORACLE_TABLE
    if judged.exists():
        lines += [""] + judge_table(json.loads(judged.read_text()), f"{studies}/{study_dir.name}/{ORACLE_TABLE}")
    if table.wall_curves:
        lines += [""] + wall_curves(results)
    notes = study_dir / "notes.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    return lines + [""]


def render(studies: Path, label: str | None = None) -> str:
    """RESULTS.md's text for the study directories under ``studies`` (named ``label`` in
    the commands it prints; default: ``studies`` as given)."""
    label = label or str(studies)
    lines = ["# Results", "",
             f"Generated by `python benchmarks/results.py --studies {label}` from each study's `results.json`; "
             "do not edit by hand (a study directory's `notes.md` is copied under its table). Each table says "
             "the command that regenerates it and the paper's claim it tests; the study directory also holds "
             "`results.csv` and the plots.", ""]
    missing = []
    for table in TABLES:
        study_dir, results = find_results(studies, table.name)
        if study_dir is None or results is None:
            started = " (started: rerun its command to finish and summarise it)" if study_dir is not None else ""
            missing.append(f"- {table.key}, {table.title}: not run yet{started}. `{table.command(label)}`")
            continue
        lines += section(table, label, study_dir, results)
    if missing:
        lines += ["## Not run yet", "", *missing, ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=Path, default=Path("studies"),
                        help="Directory holding the study directories (default: studies, `rlaif study`'s).")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    if not args.studies.is_dir():
        print(f"error: {args.studies} is not a directory of studies", file=sys.stderr)
        return 2
    args.out.write_text(render(args.studies))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
