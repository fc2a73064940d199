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


def write_config(path: Path, model: str, data: dict[str, str], n_frames: int, *, fmt: str = "qa-pairs",
                 benchmark: str | None = None, oracle: str = 'name = "ground-truth"') -> Path:
    """A run config; ``benchmark`` (TOML lines) replaces the qa-pairs ``annotations`` table
    of ``data``, ``oracle`` the ground-truth oracle section."""
    if benchmark is None:
        benchmark = f"annotations = {{ sft = \"{data['sft']}\", rl = \"{data['rl']}\", test = \"{data['test']}\" }}"
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
format = "{fmt}"
{benchmark}

[oracle]
{oracle}
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


def _judge_eval_helpers():  # type: ignore[no-untyped-def]
    """The scripted OpenAI-compatible judge server of tests/train/test_judge_eval.py and its
    VCGBench verdicts (tests are not a package)."""
    import importlib.util

    path = Path(__file__).parents[2] / "train" / "test_judge_eval.py"
    spec = importlib.util.spec_from_file_location("_judge_eval_helpers", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def write_json(path: Path, rows: list[dict]) -> str:
    path.write_text(json.dumps(rows))
    return str(path)


def write_jsonl_qa(root: Path) -> str:
    """``SPLITS`` as one JSONL file whose ``split`` field places each item."""
    rows = [{"id": f"{split}{i}", "video": v, "question": q, "answer": a, "split": split,
             "type": "yes_no" if a in ("yes", "no") else "action"}
            for split, items in SPLITS.items() for i, (v, q, a) in enumerate(items)]
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(root / "qa.jsonl")


#: split -> VCGBench generic, temporal and consistency items; every answer is long (a judge's)
VCG = {
    "sft": ([("clip_a", "describe the video ?", "the man is running on the road")],
            [("clip_b", "what is the man doing ?", "he is cooking then he sits")], []),
    "rl": ([("clip_b", "describe the video ?", "the man is cooking a red car")],
           [("clip_a", "what is the man doing ?", "he is running then he sits")], []),
    "test": ([("clip_c", "describe the video ?", "the man is running on the road")],
             [("clip_b", "what is the cat doing ?", "the cat is jumping on the car")],
             [("clip_a", "what is the man doing ?", "what is he doing in this video ?", "he is running on the road")]),
}


def write_vcgbench(root: Path) -> str:
    """Video-ChatGPT's generic / temporal (``Q``, ``A``, ``video_name``) and consistency
    (``Q1``, ``Q2``, ``A``) files per split, as a TOML ``annotations`` table."""
    table = {}
    for split, (generic, temporal, consistency) in VCG.items():
        files = [write_json(root / f"{split}_generic.json", [{"video_name": v, "Q": q, "A": a} for v, q, a in generic]),
                 write_json(root / f"{split}_temporal.json", [{"video_name": v, "Q": q, "A": a} for v, q, a in temporal])]
        if consistency:
            files.append(write_json(root / f"{split}_consistency.json",
                                    [{"video_name": v, "Q1": q1, "Q2": q2, "A": a} for v, q1, q2, a in consistency]))
        table[split] = files
    return "annotations = { " + ", ".join(f"{s} = {json.dumps(f)}" for s, f in table.items()) + " }"


def write_sft_conversations(root: Path) -> str:
    """VLM-RLAIF SFT data: ``conversations`` of human / gpt turns about a ``video``, the
    first question tagged ``<video>``; the first record has two rounds."""
    return write_json(root / "sft_conversations.json", [
        {"id": "conv0", "src_data": "anet", "video": "clip_a", "conversations": [
            {"from": "human", "value": "<video>\nwhat is the man doing ?"}, {"from": "gpt", "value": "running"},
            {"from": "human", "value": "is the dog red ?"}, {"from": "gpt", "value": "no"}]},
        {"id": "conv1", "video": "clip_b.mp4", "conversations": [
            {"from": "human", "value": "<video>\ndescribe the video ?"},
            {"from": "gpt", "value": "the man is cooking on the road"}]},
    ])


def ranking_or_vcg_verdict(vcg_judge):  # type: ignore[no-untyped-def]
    """A scripted judge for both halves of the pipeline: the llm-judge oracle's listwise
    prompt ("Answer A: ...") gets a ranking on its first line ("B > A") and a reason, as
    its generate mode asks, and a pointwise one ("Answer: ...") a yes / no; Video-ChatGPT's per-criterion
    prompts of judge-scored eval get ``vcg_judge``'s ``{'score': N}``."""
    import re

    from rlaif.plugins.oracles.llm_judge import SYSTEM_PROMPT

    def respond(messages: list[dict[str, str]], n: int) -> str:
        if messages[0]["content"] != SYSTEM_PROMPT:
            return vcg_judge(messages, n)
        user = messages[-1]["content"]
        labels = re.findall(r"^Answer ([A-Z]):", user, re.M)
        if labels:
            return " > ".join(reversed(labels)) + "\nReason: the later answer is more complete."
        answer = re.search(r"^Answer: (.*)$", user, re.M)
        assert answer is not None, user
        return "yes" if len(answer.group(1)) % 2 == 0 else "no"  # pointwise: a verdict per answer

    return respond


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["jsonl", "vcgbench", "vcgbench-pointwise", "sft_conversations"])
def test_sft_run_eval_on_an_hf_vlm_in_every_format(fmt: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The remaining video-qa formats through ``rlaif sft`` -> ``run`` -> ``eval`` on the tiny
    Qwen2.5-VL (qa-pairs: the test above). ``jsonl``: short answers, the ground-truth oracle
    and exact match. ``vcgbench``: long answers, so the run ranks with ``llm-judge``
    (listwise; pointwise in ``vcgbench-pointwise``) and the eval scores them with
    ``--judge-url``, both against the scripted OpenAI-compatible server of
    test_judge_eval.py on 127.0.0.1. ``sft_conversations``: VLM-RLAIF SFT conversations
    (multi-turn) feed ``rlaif sft``, the QA comes from jsonl. VLM-RLAIF preference files
    feed ``rlaif train-rm`` in test_train_rm_on_benchmark_preference_pairs_with_an_hf_vlm
    below, so they are not repeated here."""
    from rlaif.plugins.oracles import llm_judge

    h = _hf_vlm_helpers()
    torch.set_num_threads(1)
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    model = h.save_qwen2_5_vl(str(tmp_path / "model"))
    data = write_video_qa(tmp_path / "data")  # the clips (and qa-pairs files, unused here)
    root = tmp_path / "data"
    server = None
    if fmt.startswith("vcgbench"):
        je = _judge_eval_helpers()
        server = je.ScriptedJudge(ranking_or_vcg_verdict(je.vcg_judge)).__enter__()
        cfg = write_config(tmp_path / "cfg.toml", model, data, n_frames=2, fmt="vcgbench",
                           benchmark=write_vcgbench(root),
                           oracle=f'name = "llm-judge"\njudge_url = "{server.url}"\nmodel = "tiny-judge"\n'
                                  'mode = "generate"\ncontext = "none"\nretries = 0'
                                  + ("\npointwise = true" if fmt == "vcgbench-pointwise" else ""))
        sft_items = 2
    else:
        bench = f"annotations = \"{write_jsonl_qa(root)}\""
        sft_items = 2
        if fmt == "sft_conversations":
            bench += f"\nsft_conversations = \"{write_sft_conversations(root)}\""
            sft_items = 2 + 3  # the sft split's QA, then one example per gpt turn
        cfg = write_config(tmp_path / "cfg.toml", model, data, n_frames=2, fmt="jsonl", benchmark=bench)
    try:
        sft = invoke("sft", "--config", str(cfg), "--out", str(tmp_path / "sft"), "--epochs", "1", "--batch-size",
                     "1", "--lr", "1e-3")
        assert sft["items"] == sft_items and (tmp_path / "sft" / "adapter_config.json").exists()

        run_dir = tmp_path / "run"
        ran = invoke("run", "--config", str(cfg), "--policy", str(tmp_path / "sft"), "--run-dir", str(run_dir),
                     "--no-progress")
        assert ran["steps"] == 2 and ran["groups_failed"] == 0
        saved = run_dir / "policy"
        assert (saved / "adapter_config.json").exists()

        judge = [] if server is None else ["--judge-url", server.url, "--judge-model", "tiny-judge"]
        report = invoke("eval", "--config", str(cfg), "--policy", str(saved), "--k", "0", "--no-baselines", *judge)
        m = report["policy"]
        assert not m.get("n/unscored") and not m.get("n/judge_failed")
        if server is not None:
            assert ran["oracle"] == "llm-judge" and m["n/judged"] == 3.0 and m["n/all"] == 0.0
            assert {"vcg/correctness", "vcg/detail", "vcg/context", "vcg/temporal", "vcg/consistency",
                    "vcg/average"} <= set(m)
            asked = [b for b in server.bodies if b["messages"][0]["content"] == llm_judge.SYSTEM_PROMPT]
            # two steps of two groups of two: one listwise request per group, or one per answer
            assert len(asked) == (8 if fmt == "vcgbench-pointwise" else 4)
        else:
            assert ran["oracle"] == "ground-truth" and m["n/all"] == 2.0 and 0.0 <= m["acc/all"] <= 1.0
            assert "acc/yes_no" in m and "acc/action" in m  # the jsonl ``type`` is the qtype
    finally:
        if server is not None:
            server.__exit__()
    # nothing of the embedded stack was built; the judge's verdicts are cached
    assert sorted(p.name for p in tmp_path.glob("cache/*")) == (["judge-eval"] if server is not None else [])


def test_ground_truth_run_on_a_split_with_free_text_answers_is_refused_up_front(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An rl split mixing short answers with a free-text one: the ground-truth oracle
    cannot score the latter, so ``rlaif run`` refuses before its first step, in one line
    naming how many items and the first, not at the step that first draws one."""
    torch.set_num_threads(1)
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    model = _hf_vlm_helpers().save_llava_onevision(str(tmp_path / "model"))
    data = write_video_qa(tmp_path / "data")
    rows = [{"id": "rl0", "video": "clip_a", "question": "what is the man doing ?", "answer": "running"},
            {"id": "rl1", "video": "clip_b", "question": "describe the video ?",
             "answer": "the man is cooking then he sits on the road"},
            {"id": "rl2", "video": "clip_c", "question": "is the dog red ?", "answer": "no"},
            {"id": "rl3", "video": "clip_a", "question": "what is the cat doing ?", "answer": "it is jumping",
             "needs_judge": True}]
    qa = tmp_path / "data" / "mixed.jsonl"
    qa.write_text("".join(json.dumps({**r, "split": "rl"}) + "\n" for r in rows))
    cfg = write_config(tmp_path / "cfg.toml", model, data, n_frames=2, fmt="jsonl", benchmark=f'annotations = "{qa}"')
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--run-dir", str(run_dir), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if "Loading weights" not in line]
    assert len(lines) == 1, result.output
    assert "oracle ground-truth cannot score 2 of the 4 rl items of video-qa (first: 'rl1')" in lines[0]
    assert "judge oracle" in lines[0] and "split without free-text answers" in lines[0]
    from rlaif.train.rl import RUN_ID
    from rlaif.train.run_dir import last_committed_step

    # no step ran, so the same directory takes the run again once the config is fixed
    assert not (run_dir / "checkpoints").exists() and last_committed_step(run_dir, RUN_ID) is None


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
