"""Bring your own videos and model: ``rlaif sft`` -> ``rlaif run`` -> ``rlaif eval`` through
the CLI on a tiny random-init Qwen2.5-VL with video-qa annotations in Video-ChatGPT's
QA-pairs format; and the one-line errors for a missing capability or a foreign
benchmark under the embedded default policy."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
av = pytest.importorskip("av")

from typer.testing import CliRunner  # noqa: E402

from rlaif.cli.main import app  # noqa: E402
from rlaif.core.errors import UsageError  # noqa: E402


def _hf_vlm_helpers():  # type: ignore[no-untyped-def]
    """The tiny-model builders of test_hf_vlm.py (tests are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_hf_vlm_helpers", Path(__file__).with_name("test_hf_vlm.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module

#: video name -> (question, answer) per split; every word is in the tiny tokenizer's vocabulary
SPLITS = {
    "sft": [("clip_a", "what is the man doing ?", "running"), ("clip_b", "what is the man doing ?", "cooking")],
    "rl": [("clip_a", "what is the man doing ?", "running"), ("clip_b", "what is the cat doing ?", "jumping")],
    "test": [("clip_c", "what is the man doing ?", "running"), ("clip_b", "is the dog red ?", "no")],
}


def write_clip(path: Path, n: int = 8, seed: int = 0) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("h264", rate=Fraction(8))
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        for i in range(n):
            frame = np.full((32, 32, 3), (i * 20 + seed * 60) % 250, np.uint8)
            frame[(i * 3) % 32, :, 1] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video_qa(root: Path) -> dict[str, str]:
    """mp4s and Video-ChatGPT ``*_q.json`` / ``*_a.json`` files, one pair per split."""
    videos = root / "videos"
    videos.mkdir(parents=True)
    for k, name in enumerate(("clip_a", "clip_b", "clip_c")):
        write_clip(videos / f"{name}.mp4", seed=k)
    files = {}
    for split, rows in SPLITS.items():
        qs = [{"video_name": v, "question": q, "question_id": f"{split}{i}"} for i, (v, q, _) in enumerate(rows)]
        ans = [{"answer": a, "type": 0, "question_id": f"{split}{i}"} for i, (_, _, a) in enumerate(rows)]
        (root / f"{split}_q.json").write_text(json.dumps(qs))
        (root / f"{split}_a.json").write_text(json.dumps(ans))
        files[split] = str(root / f"{split}_q.json")
    return {"videos": str(videos), **files}


def write_config(path: Path, model: str, data: dict[str, str], n_frames: int) -> Path:
    path.write_text(f"""
[run]
steps = 2
group_size = 2
prompts_per_step = 2
max_new_tokens = 4
eval_items = 2

[policy]
name = "hf-vlm"
path = "{model}"
lora_r = 4
lora_alpha = 8
n_frames = {n_frames}
device = "cpu"
dtype = "float32"

[benchmark]
name = "video-qa"
videos = "{data['videos']}"
format = "qa-pairs"
annotations = {{ sft = "{data['sft']}", rl = "{data['rl']}", test = "{data['test']}" }}

[oracle]
name = "ground-truth"
""")
    return path


def invoke(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    return json.loads(last[last.index("{"):])  # after any progress bar transformers draws on that line


@pytest.mark.integration
@pytest.mark.parametrize("family", ["qwen2.5-vl", "llava-onevision"])
def test_sft_run_eval_on_an_hf_vlm_with_qa_pairs(family: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    h = _hf_vlm_helpers()
    torch.set_num_threads(1)
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    save = h.save_qwen2_5_vl if family == "qwen2.5-vl" else h.save_llava_onevision
    model = save(str(tmp_path / "model"))
    cfg = write_config(tmp_path / "cfg.toml", model, write_video_qa(tmp_path / "data"), n_frames=2)

    sft = invoke("sft", "--config", str(cfg), "--out", str(tmp_path / "sft"), "--epochs", "2", "--batch-size", "1",
                 "--grad-accum", "2", "--lr", "1e-3", "--schedule", "linear")
    assert sft["items"] == 2 and sft["steps"] == 2 and sft["grad_accum"] == 2
    assert (tmp_path / "sft" / "adapter_config.json").exists()  # an HF-native peft adapter

    run_dir = tmp_path / "run"
    invoke("run", "--config", str(cfg), "--policy", str(tmp_path / "sft"), "--run-dir", str(run_dir),
           "--no-progress")
    saved = run_dir / "policy"
    assert (saved / "adapter_config.json").exists() and (saved / "merged" / "00" / "adapter_model.safetensors").exists()

    report = invoke("eval", "--config", str(cfg), "--policy", str(saved), "--k", "0", "--no-baselines")
    assert report["policy"]["n/all"] == 2.0 and 0.0 <= report["policy"]["acc/all"] <= 1.0
    assert not (tmp_path / "cache").exists()  # nothing of the embedded stack was built


def test_rl_policy_keeps_its_sft_adapter(tmp_path: Path) -> None:
    """A policy built on an SFT adapter (merged) saves a copy of it, and loading the save
    gives the same log-probs: the RL result evaluates on top of its SFT, not the base."""
    h = _hf_vlm_helpers()
    FakeBenchmark, build_cpu, perturb_lora, prompts, word_rollouts = (
        h.FakeBenchmark, h.build_cpu, h.perturb_lora, h.prompts, h.word_rollouts)
    torch.set_num_threads(1)
    base = h.save_llava_onevision(str(tmp_path / "base"))
    sft = build_cpu(base, lora_r=4, lora_alpha=8, n_frames=2, benchmark=FakeBenchmark())
    perturb_lora(sft.model, seed=1)
    sft.save(tmp_path / "sft")
    rl = build_cpu(str(tmp_path / "sft"), lora_r=4, lora_alpha=8, n_frames=2, benchmark=FakeBenchmark())
    perturb_lora(rl.model, seed=2)
    rl.save(tmp_path / "rl")
    again = build_cpu(str(tmp_path / "rl"), new_adapter=False, n_frames=2, benchmark=FakeBenchmark())
    rollouts = word_rollouts(rl)
    torch.testing.assert_close(again.logprobs(prompts(), rollouts)[0], rl.logprobs(prompts(), rollouts)[0])


# -- the one-line errors ---------------------------------------------------------------------
def test_missing_capability_is_one_line_naming_it() -> None:
    from rlaif.core.protocols import SupervisedLoss, require_capability
    from rlaif.train.reward_model import RewardModel

    class Sampler:
        name = "sampler"

    with pytest.raises(UsageError) as info:
        require_capability(Sampler(), SupervisedLoss, "rlaif sft")
    assert str(info.value) == ("rlaif sft needs a component with the SupervisedLoss capability; 'sampler' lacks "
                               "sequence_loss")
    with pytest.raises(UsageError, match="LastHiddenState capability; 'sampler' lacks answer_ids, hidden_size, "
                                         "last_hidden_states$"):
        RewardModel(Sampler())
    assert require_capability(type("Ok", (), {"sequence_loss": None})(), SupervisedLoss, "rlaif sft") is None


def test_sft_refuses_a_policy_without_an_sft_loss(tmp_path: Path) -> None:
    from rlaif.train.sft import train_supervised

    class Sampler:
        name = "sampler"

    with pytest.raises(UsageError, match="'sampler' lacks sequence_loss"):
        train_supervised(tmp_path / "out", policy=Sampler(), benchmark=object())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["sft"], ["eval"], ["sft", "--out", "OUT"]])
def test_foreign_benchmark_with_default_policy_says_choose_a_policy(command: list[str], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    data = write_video_qa(tmp_path / "data")
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    result = CliRunner().invoke(app, [*args, "--benchmark", "video-qa", "--set", f"benchmark.videos={data['videos']}",
                                      "--set", "benchmark.format=qa-pairs", "--set", f"benchmark.annotations={data['test']}"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "benchmark 'video-qa' has no clip_captions" in lines[0]
    assert "--policy" in lines[0] and "policy.name=hf-vlm" in lines[0]
    assert not (tmp_path / "cache").exists()  # refused before pre-training anything


def test_generic_sft_flags_without_a_policy_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sft", "--grad-accum", "4"])
    assert result.exit_code == 2 and "--grad-accum: options for a chosen policy's SFT" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.integration
def test_train_rm_on_benchmark_preference_pairs_with_an_hf_vlm(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.train.reward_model import RewardModel

    torch.set_num_threads(1)
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    model = _hf_vlm_helpers().save_llava_onevision(str(tmp_path / "model"))
    data = write_video_qa(tmp_path / "data")
    prefs = [{"id": f"pref{i}", "video": f"{v}.mp4", "question": "what is the man doing ?",
              "output_1": good, "output_2": bad, "preference": 1 + i % 2}
             for i, (v, good, bad) in enumerate([("clip_a", "running", "cooking"), ("clip_b", "cooking", "cat"),
                                                  ("clip_c", "jumping", "dog sits")])]
    (tmp_path / "prefs.json").write_text(json.dumps(prefs))
    cfg = write_config(tmp_path / "cfg.toml", model, data, n_frames=2)
    result = invoke("train-rm", "--config", str(cfg), "--set", f"benchmark.preferences={tmp_path / 'prefs.json'}",
                    "--out", str(tmp_path / "rm"), "--lora-r", "4", "--batch-size", "2", "--holdout", "0.34")
    assert result["pairs"] == 3 and result["train_pairs"] == 2 and result["heldout_pairs"] == 1
    assert result["source"] == "video-qa:sft" and result["policy"] == "hf-vlm"
    rm = RewardModel.load(tmp_path / "rm")  # rebuilt from rm.json's benchmark and the saved adapter
    prompt = rm.policy.benchmark.preference_pairs()[0].prompt
    assert len(rm.score([prompt, prompt], ["running", "cat"])) == 2
