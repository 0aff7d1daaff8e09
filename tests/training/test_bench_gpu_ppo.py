"""bench/gpu_ppo.py: the tiny version runs end to end on CPU; the 0.5B shapes are Qwen2.5's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.ml


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_ppo", ROOT / "bench" / "gpu_ppo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_prints_every_figure(bench, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torch.set_num_threads(1)
    report = bench.main(["--steps", "2", "--peak-tflops", "1"])
    out = capsys.readouterr().out
    assert "no CUDA device: running the tiny version" in out
    assert json.loads(out.splitlines()[-1].removeprefix("RESULT ")) == report
    assert report["model"] == "qwen2-tiny" and report["steps_measured"] == 1  # step 1 warms up
    # Full fine-tune: the policy and the critic (the reward model's copy: trunk + scalar head).
    hidden = bench.TINY["hidden_size"]
    assert report["trainable_params"] == 2 * report["params"] + hidden
    parts = [report[k] for k in ("generation_s", "scoring_s", "update_s")]
    assert all(p > 0 for p in parts) and sum(parts) <= report["step_s"]
    assert report["episodes_per_s"] == pytest.approx(report["batch_size"] / report["step_s"])
    assert report["update_tokens"] == report["ppo_epochs"] * report["batch_size"] * (
        report["context_length"] + report["response_length"]
    )
    flops = 6 * report["trainable_params"] * report["update_tokens"] / report["update_s"]
    assert report["mfu_update"] == pytest.approx(flops / 1e12)  # --peak-tflops 1
    assert report["peak_gpu_memory_gib"] is None and "peak GPU memory  n/a (CPU)" in out
    for label in ("episodes/s", "tokens/s", "generation", "MFU", "targets"):
        assert label in out


def test_full_size_shapes_tokenizer_and_peaks(bench):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = bench.wide_tokenizer(bench.QWEN2_0_5B["vocab_size"])
    assert len(tokenizer) == bench.QWEN2_0_5B["vocab_size"]
    text = bench.PROMPTS[7]
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text and len(ids) < len(text.encode())  # real merges
    assert isinstance(tokenizer.decode([len(tokenizer) - 1, 1234]), str)  # every id decodes
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**bench.QWEN2_0_5B))
    assert sum(p.numel() for p in model.parameters()) == 494_032_768  # Qwen2.5-0.5B's count
    assert bench.peak_tflops("NVIDIA H200") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops("NVIDIA L4") == 121.0
    assert bench.peak_tflops("Some Future GPU") is None
