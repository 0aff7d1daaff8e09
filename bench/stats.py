"""The statistics page, the review filter "disagrees with consensus" and the leaderboard
as the project grows: seconds per call, with Bradley-Terry fits remembered (as served)
against every fit computed afresh (the baseline, as before), in the same process.

Each figure fits one consensus per comparison. The data is `bench/export.py`'s: N
annotations, K=4 strict rankings in random order, overlap 2, 20 labelers, on a throwaway
SQLite database; random rankings are the hard case for remembering fits (real labelers
agree more, so fewer win matrices repeat less often).

    .venv/bin/python bench/stats.py                 # N = 20k
    .venv/bin/python bench/stats.py --n 100000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export import _django, build  # noqa: E402  (bench/export.py: same data)


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="annotations (default 20,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        _django(Path(tmp))
        build(args.n)
        from annotation.models import Project
        from annotation.rules import consensus
        from annotation.selectors.review import annotations_disagreeing
        from annotation.selectors.stats import project_model_leaderboard, project_stats

        project = Project.objects.get(slug="bench")
        figures = {
            "statistics page (project_stats)": lambda: project_stats(project),
            "review filter (annotations_disagreeing)": lambda: annotations_disagreeing(
                project_id=project.pk
            ),
            "leaderboard (project_model_leaderboard)": lambda: project_model_leaderboard(project),
        }
        remembered = consensus._fit_bradley_terry
        print(f"{args.n:,} annotations, {args.n // 2:,} comparisons (K=4, overlap 2)")
        print(f"{'':42} {'afresh':>9} {'remembered':>11} {'ratio':>7}")
        for name, call in figures.items():
            consensus._fit_bradley_terry = remembered.__wrapped__  # the baseline: no memory
            baseline = timed(call)
            consensus._fit_bradley_terry = remembered
            remembered.cache_clear()  # a cold start: the first request after a deploy
            served = timed(call)
            info = remembered.cache_info()
            print(
                f"{name:42} {baseline:8.2f}s {served:10.2f}s {baseline / served:6.1f}x"
                f"   ({info.misses:,} fits for {info.hits + info.misses:,} consensuses)"
            )


if __name__ == "__main__":
    main()
