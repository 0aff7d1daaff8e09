"""bench/loop_seeds.py: the loop over seeds, the summary over them, and a seed that repeats."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("loop_seeds", ROOT / "bench" / "loop_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(before, after, win, kl=1.0, rm=0.75, agree=0.93, ci=(0.01, 0.1)):
    return {
        "gold_before": before,
        "gold_after": after,
        "gold_ci": list(ci),
        "win_rate_vs_start": win,
        "kl_heldout": kl,
        "rm_accuracy_vs_labels": rm,
        "labeler_agreement": agree,
    }


def test_summary_gives_mean_sd_and_a_t_interval_over_seeds(bench):
    reports = [_report(0.6, 0.7, 0.6), _report(0.6, 0.65, 0.7), _report(0.6, 0.72, 0.8)]
    summary = bench.summarize(reports)
    diff = summary["gold_diff"]
    assert diff["n"] == 3 and diff["mean"] == pytest.approx((0.1 + 0.05 + 0.12) / 3)
    assert diff["sd"] == pytest.approx(0.036055, abs=1e-5)
    # 3 seeds: t with 2 degrees of freedom, 4.303.
    assert diff["high"] - diff["mean"] == pytest.approx(4.303 * 0.036055 / 3**0.5, abs=1e-5)
    assert summary["win_rate_vs_start"]["mean"] == pytest.approx(0.7)
    assert "labeler_win_rate" not in summary  # no report had it
    one = bench.summarize(reports[:1])["gold_diff"]
    assert one == {"n": 1, "mean": pytest.approx(0.1)}  # no spread from one seed


def test_t_quantiles(bench):
    assert bench.t95(4) == 2.776
    assert bench.t95(11) == 2.228  # between table rows: the next smaller row, wider
    assert bench.t95(100) == 1.96
    with pytest.raises(ValueError, match="at least 2 values"):
        bench.t95(0)


def test_targets_per_run(bench):
    good = bench.targets_met(_report(0.6, 0.8, 0.8, kl=2.0, rm=0.91, agree=0.93))
    assert all(good.values())
    bad = bench.targets_met(_report(0.6, 0.62, 0.8, kl=12.0, rm=0.8, ci=(-0.01, 0.05)))
    assert not any(bad.values())  # interval crosses 0; KL over budget; RM 13 points short


@pytest.mark.ml
@pytest.mark.slow
def test_two_seeds_end_to_end_and_a_seed_repeats_on_another_thread_count(tmp_path):
    tiny = ["--num-prompts", "24", "--eval-prompts", "8", "--policy-steps", "30"]
    tiny += ["--ppo-episodes", "32", "--ppo-batch-size", "16", "--rm-epochs", "1"]
    tiny += ["--labelers", "2", "--max-new-tokens", "16"]
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "DEBUG": "1"}

    def run(seeds, threads, name):
        command = [sys.executable, str(ROOT / "bench" / "loop_seeds.py"), "--seeds", str(seeds)]
        command += ["--out", str(tmp_path / "runs"), "--json", str(tmp_path / f"{name}.json")]
        done = subprocess.run(
            [*command, "--", *tiny],
            capture_output=True,
            text=True,
            timeout=600,
            env={**env, "OMP_NUM_THREADS": str(threads)},
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout, json.loads((tmp_path / f"{name}.json").read_text())

    printed, figures = run(2, 1, "first")
    rows = [line.split() for line in printed.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert [row[0] for row in rows] == ["0", "1"]
    assert "over seeds: mean, sd, 95% t-interval of the mean" in printed
    assert "seeds that met each (of 2)" in printed
    assert [run["seed"] for run in figures["runs"]] == [0, 1]
    summary = figures["summary"]["gold_diff"]
    diffs = [run["gold_diff"] for run in figures["runs"]]
    assert summary["mean"] == pytest.approx(sum(diffs) / 2)
    assert summary["low"] <= summary["mean"] <= summary["high"]
    assert (tmp_path / "runs" / "demo" / "seed-1" / "report.json").is_file()

    # The same seed again, into the same folder (replaced), on 2 ambient threads: the loop
    # runs on its own 1 thread and the figures repeat.
    _, again = run(1, 2, "again")
    assert again["runs"][0] == figures["runs"][0]
