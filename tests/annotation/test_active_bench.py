"""bench/active.py --quick runs end to end: the table, the verdict lines and the PNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
