"""bench/active.py --quick runs end to end: the table, the verdict lines and the PNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def test_active_benchmark_quick_mode_prints_curves_and_writes_a_png(tmp_path):
    png = tmp_path / "curves.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "active.py"), "--quick", "--png", str(png)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines if line.split()[:1] in (["demo"], ["lexicon"])]
    assert [r[:2] for r in rows] == [
        ["demo", "random"],
        ["demo", "uncertainty"],
        ["lexicon", "random"],
        ["lexicon", "uncertainty"],
    ]
    for row in rows:
        accuracies = [float(v) for v in row[2:]]
        assert len(accuracies) == 10 and all(0.0 <= a <= 1.0 for a in accuracies)
    assert sum("of the labels" in line or "n/a" in line for line in lines) == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.ml
def test_active_benchmark_with_the_real_reward_model_at_tiny_size(tmp_path):
    """--rm transformer: the demo policy built (few steps) under DATA_DIR, real candidates,
    train_reward_model per budget, one table row per world and budget, the verdicts, a PNG."""
    png = tmp_path / "real.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "active.py"), "--rm", "transformer", "--quick",
            "--policy-steps", "30", "--png", str(png),
        ],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    # 2 worlds x 2 strategies x 2 budgets, plus the one extra ensemble member uncertainty
    # trains to pick its second batch, per world.
    assert "10 reward models" in lines[0], lines[0]
    assert lines[1].split() == ["world", "labels", "random", "uncertainty", "diff"]
    rows = [line.split() for line in lines if line.split()[:1] in (["demo"], ["second"])]
    assert [r[:2] for r in rows] == [
        ["demo", "8"],
        ["demo", "16"],
        ["second", "8"],
        ["second", "16"],
    ]
    for row in rows:
        (rand, _), (unc, _), (diff, sd) = ([float(v) for v in c.split("±")] for c in row[2:])
        assert 0.0 <= rand <= 1.0 and 0.0 <= unc <= 1.0
        assert abs(diff - (unc - rand)) <= 0.0015 and sd == 0.0  # one seed: no spread
    # The first batch is random for both strategies, same seed: same labels, same model.
    assert rows[0][2] == rows[0][3] and rows[2][2] == rows[2][3]
    assert sum("of the labels" in line or "-> n/a" in line for line in lines) == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The short build got its own folder: the full demo policy is never replaced by it.
    assert (tmp_path / "data" / "models" / "demo-policy-30steps" / "demo_policy.json").is_file()
    assert not (tmp_path / "data" / "models" / "demo-policy").exists()


def test_active_benchmark_refuses_an_empty_ensemble():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "active.py"), "--rm", "transformer", "--ensemble", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--ensemble and --points must be at least 1" in done.stderr
