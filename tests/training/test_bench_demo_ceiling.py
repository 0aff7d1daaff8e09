"""bench/demo_ceiling.py: the per-kind breakdown, the style fix and the oracle line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "demo_ceiling", ROOT / "bench" / "demo_ceiling.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_style_fix_removes_every_rude_tail_and_nothing_else(bench):
    assert bench.without_rude_tails("5. Do your own homework next time.") == "5."
    assert bench.without_rude_tails("IT IS PARIS. THAT WAS A STUPID QUESTION.") == "IT IS PARIS."
    assert (
        bench.without_rude_tails("The capital of Peru is Lima.") == "The capital of Peru is Lima."
    )


def test_breakdown_averages_the_judge_components_per_kind(bench):
    prompts = ["What is 2 + 3?", "What is 2 + 3?", "What is the capital of France?"]
    answers = ["5", "7. Look it up yourself next time.", "The capital of France is Paris."]
    rows = bench.breakdown(prompts, answers)
    assert rows["arithmetic"]["n"] == 2 and rows["fact"]["n"] == 1 and rows["all"]["n"] == 3
    assert rows["arithmetic"]["correct"] == pytest.approx(0.5)
    assert rows["arithmetic"]["polite"] == pytest.approx(0.5)
    assert rows["arithmetic"]["perfect"] == pytest.approx(0.5)
    assert rows["fact"]["gold"] == pytest.approx(1.0)
    assert rows["all"]["perfect"] == pytest.approx(2 / 3)


@pytest.mark.ml
def test_the_script_prints_both_policies_and_the_ceilings(bench, tmp_path, capsys):
    from training.demo_world.policy import DemoPolicyConfig, build_demo_policy

    policy = build_demo_policy(
        tmp_path / "policy", config=DemoPolicyConfig(steps=5, corpus_size=64), progress=False
    )
    assert bench.main([str(policy), str(policy), "--max-new-tokens", "6", "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("kind ") == 2 and "arithmetic" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # The same policy against itself: the same answers, every prompt a tie.
    assert lines["policy"][-1] == "0.500"
    assert "style fix (no rude tails)" in out and "oracle (all perfect)" in out
