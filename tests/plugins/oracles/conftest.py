"""Fixtures for the oracle tests: a real tiny causal LM (random init, tokenizer trained
here), a small real video world, and a real OpenAI-compatible HTTP server on 127.0.0.1
backed by the tiny LM."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from rlaif.core.records import Group, Prompt, Rollout, VideoRef

torch.set_num_threads(1)

CORPUS = [
    "a small red square moves left. the blue circle stays still.",
    "Answer A: the square is red. Answer B: the square is blue. Ranking: A > B > C > D",
    "Which answer is better? The better answer is A. Reason: it names the colour.",
    "Question: what happens in the video? Candidate answers: Answer C: two circles appear.",
    "The best answer is B. The best answer is D. Rank all answers from best to worst.",
    "What happens in the video (described clip by clip): a yellow triangle moves up then stops.",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_lm(directory: Path, *, chat_template: bool = False, seed: int = 0) -> Path:
    """A random-init Llama with a byte-level BPE tokenizer trained on ``CORPUS``, saved
    with ``save_pretrained`` so it loads like any hub model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_chat_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-chat-lm"), chat_template=True, seed=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from rlaif.plugins.benchmarks.video_world import VideoWorld

    return VideoWorld(root=str(tmp_path_factory.mktemp("world")), seed=0, n_sft=1, n_rl=3, n_test=0, progress=False)


def make_group(b: int, answers: list[str], *, question: str = "What colour is the square?",
               video: VideoRef | None = None, context: str | None = None) -> Group:
    video = video or VideoRef(f"v{b}", f"v{b}.mp4", n_frames=40)
    prompt = Prompt(prompt_id=f"p{b}", video=video, question=question)
    return Group(prompt, [Rollout(f"p{b}", i, a) for i, a in enumerate(answers)], context=context)


# ----------------------------------------------------------------------------- server
class JudgeServer:
    """``POST <prefix>/v1/chat/completions`` served by a tiny real LM; the prefix picks a
    behaviour: ``""`` the model, ``/slow`` sleeps ``slow_seconds`` first, ``/bad`` invalid
    JSON, ``/nochoices`` JSON without ``choices``, ``/flaky`` HTTP 500 on the first
    ``flaky_failures`` requests, ``/echo`` a reply quoting the request's Authorization
    header (a leaky server). Counts requests per path and keeps their headers."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.slow_seconds = 2.0
        self.flaky_failures = 1
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with server.lock:
                    server.counts[self.path] = server.counts.get(self.path, 0) + 1
                    count = server.counts[self.path]
                    server.headers.append(dict(self.headers.items()))
                try:
                    request = json.loads(body)
                except ValueError:
                    self._send(400, b'{"error": "bad request"}')
                    return
                server.bodies.append(request)
                prefix = self.path.split("/v1/")[0]
                if not self.path.endswith("/v1/chat/completions"):
                    self._send(404, b'{"error": "not found"}')
                elif prefix == "/slow":
                    time.sleep(server.slow_seconds)
                    self._send(200, server.reply(request))
                elif prefix == "/bad":
                    self._send(200, b"this is { not json")
                elif prefix == "/nochoices":
                    self._send(200, b'{"id": "x", "object": "chat.completion"}')
                elif prefix == "/flaky" and count <= server.flaky_failures:
                    self._send(500, b'{"error": "overloaded"}')
                elif prefix == "/echo":
                    text = f"B > A. I saw header {self.headers.get('Authorization')}"
                    self._send(200, server.wrap(text, None))
                else:
                    self._send(200, server.reply(request))

            def _send(self, code: int, payload: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def requests(self, prefix: str = "") -> int:
        return self.counts.get(f"{prefix}/v1/chat/completions", 0)

    def wrap(self, text: str, top: list[dict[str, Any]] | None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}
        if top is not None:
            choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
        return json.dumps({"id": "chatcmpl-test", "object": "chat.completion", "model": "tiny",
                           "choices": [choice]}).encode("utf-8")

    def reply(self, request: dict[str, Any]) -> bytes:
        """Greedy continuation of the rendered conversation by the tiny LM."""
        text = "\n\n".join(m["content"] for m in request["messages"]) + "\n\n"
        ids = self.tokenizer(text, return_tensors="pt")
        max_tokens = min(int(request.get("max_tokens") or 8), 8)
        with self.lock, torch.inference_mode():
            out = self.model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            top = None
            if request.get("logprobs"):
                logits = self.model(**ids).logits[0, -1].float()
                logp = torch.log_softmax(logits, -1)
                k = min(int(request.get("top_logprobs") or 1), logp.numel())
                values, indices = logp.topk(k)
                top = [{"token": self.tokenizer.decode([int(i)]), "logprob": float(v)}
                       for v, i in zip(values, indices, strict=True)]
        content = self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        return self.wrap(content, top)

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def judge_server(tiny_lm_dir: Path) -> Iterator[JudgeServer]:
    with JudgeServer(tiny_lm_dir) as server:
        yield server


@pytest.fixture
def group_of() -> Any:
    """``group_of(b, answers, question=..., video=..., context=...)`` -> a real Group."""
    return make_group


@pytest.fixture
def small_video_policy(world: Any, tmp_path: Path) -> Any:
    """A real, small tiny-video-lm: world tokenizer, a 2-layer LM briefly pre-trained on
    the world's text, a random frozen encoder, a fresh LoRA."""
    from rlaif.plugins.encoders.tiny_conv import TinyConvEncoder
    from rlaif.plugins.policies.tiny_lm import (
        load_tiny_lm,
        pretrain_tiny_lm,
        tiny_lm_config,
        train_world_tokenizer,
    )
    from rlaif.plugins.policies.tiny_video_lm import TinyVideoLM, world_texts

    directory = tmp_path
    torch.manual_seed(0)
    texts = world_texts(world)
    tokenizer = train_world_tokenizer(texts, directory / "tokenizer.json", vocab_size=384)
    config = tiny_lm_config(len(tokenizer), hidden_size=32, layers=1, heads=2, intermediate_size=64)
    pretrain_tiny_lm(texts, tokenizer, directory / "lm", steps=10, seq_len=32, config=config)
    return TinyVideoLM(TinyConvEncoder(feature_dim=16, width=4, n_frames=4), load_tiny_lm(directory / "lm"),
                       tokenizer, frames=world.frames, n_frames=4, lora_r=4, lora_alpha=4)
