"""The loop's figures over several seeds: how much of a gain is the method, how much the draw.

One `manage.py loop` run reports gold before → after with a bootstrap interval over its 48
held-out prompts; that interval holds the prompts' noise, not the run's: another `--seed`
draws other candidates, labels, reward-model batches and PPO samples, and moves the figures
about as much again. This runs the loop once per seed (a `manage.py loop` subprocess each,
the same DATA_DIR and cached demo policy, one report folder per seed, replaced when run
again), prints each seed's
figures, then per figure the mean, the standard deviation and a 95% t-interval of the mean
over seeds, and how many seeds met each of issue 18's targets.

    .venv/bin/python bench/loop_seeds.py                       # demo world, seeds 0-4, ~7 min
    .venv/bin/python bench/loop_seeds.py --world second        # the tests' second world
    .venv/bin/python bench/loop_seeds.py --seeds 3 -- --ppo-episodes 2048   # loop options
    # also: --first-seed N, --out DIR (default var/loop-seeds), --json FILE

The start policy is the same for every seed (the cached demo policy, built on one thread);
every loop runs on one torch thread (its default), so a seed repeats exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Two-sided 95% quantiles of Student's t by degrees of freedom (normal beyond 30).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}  # fmt: skip

# (report key, column title); "gold_diff" is gold_after - gold_before.
FIGURES = [
    ("rm_accuracy_vs_labels", "RM acc"),
    ("labeler_agreement", "agree"),
    ("gold_before", "gold0"),
    ("gold_after", "gold1"),
    ("gold_diff", "diff"),
    ("win_rate_vs_start", "win"),
    ("labeler_win_rate", "lab win"),
    ("kl_heldout", "KL"),
]
WIN_TARGET, KL_BUDGET, RM_GAP = 0.75, 10.0, 0.03  # issue 18's targets


def t95(df: int) -> float:
    """The 95% two-sided t quantile for `df` degrees of freedom (the next smaller table row)."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 values")
    return T95[max(k for k in T95 if k <= df)] if df <= 30 else 1.96


def figures_of(report: dict) -> dict[str, float | None]:
    """The figures this benchmark compares, from one loop report.json."""
    row = {key: report.get(key) for key, _ in FIGURES if key != "gold_diff"}
    if report.get("gold_after") is not None and report.get("gold_before") is not None:
        row["gold_diff"] = report["gold_after"] - report["gold_before"]
    return row


def targets_met(report: dict) -> dict[str, bool]:
    """Issue 18's targets for one run: gold interval above zero, win rate at the KL budget,
    reward model within 3 points of the labelers' agreement."""
    low = (report.get("gold_ci") or [None])[0]
    win, kl = report.get("win_rate_vs_start"), report.get("kl_heldout")
    rm, agree = report.get("rm_accuracy_vs_labels"), report.get("labeler_agreement")
    return {
        "gold interval above 0": low is not None and low > 0,
        f"win rate >= {WIN_TARGET} at KL <= {KL_BUDGET:g}": (
            win is not None and kl is not None and win >= WIN_TARGET and kl <= KL_BUDGET
        ),
        f"RM within {RM_GAP:g} of agreement": (
            rm is not None and agree is not None and rm >= agree - RM_GAP
        ),
    }


def summarize(reports: list[dict]) -> dict[str, dict[str, float]]:
    """Per figure over the runs: n, mean, sd and the 95% t-interval of the mean."""
    summary = {}
    for key, _ in FIGURES:
        values = [v for r in reports if (v := figures_of(r).get(key)) is not None]
        if not values:
            continue
        mean = statistics.fmean(values)
        row = {"n": len(values), "mean": mean}
        if len(values) > 1:
            sd = statistics.stdev(values)
            half = t95(len(values) - 1) * sd / math.sqrt(len(values))
            row |= {"sd": sd, "low": mean - half, "high": mean + half}
        summary[key] = row
    return summary


def world_args(world: str, out: Path) -> list[str]:
    """The loop options that select a world (none for the demo world)."""
    if world == "demo":
        return []
    sys.path.insert(0, str(ROOT))
    from tests.training.second_world import write_prompts

    prompts = write_prompts(out / "second-world-prompts.jsonl")
    return ["--judge", "tests.training.second_world:judge", "--prompts", str(prompts)]


def run_seed(seed: int, out: Path, extra: list[str], env: dict[str, str]) -> dict:
    """One `manage.py loop` run in a fresh out/seed-N (a folder of an earlier run is replaced:
    the loop refuses to export into a used one); its report."""
    folder = out / f"seed-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, str(ROOT / "manage.py"), "loop", "--out", str(folder)]
    done = subprocess.run(
        [*command, "--seed", str(seed), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"loop --seed {seed} failed:\n" + "\n".join(tail))
    return json.loads((folder / "report.json").read_text())


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=["demo", "second"], default="demo")
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds (default 5)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "loop-seeds")
    parser.add_argument("--json", type=Path, help="write every report's figures and the summary")
    parser.add_argument("loop_args", nargs="*", help="after --: options passed to every loop")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    out = args.out.resolve() / args.world
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not (env.get("SECRET_KEY") or env.get("DEBUG")):
        env["DEBUG"] = "1"  # a local benchmark: the development key is fine
    migrate = [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"]
    subprocess.run(migrate, env=env, cwd=ROOT, check=True)
    extra = world_args(args.world, out) + list(args.loop_args)

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(f"loop on the {args.world} world, seeds {seeds.start}-{seeds.stop - 1}", flush=True)
    print("seed  " + "  ".join(f"{title:>7}" for _, title in FIGURES) + "  gold diff 95%     secs")
    reports = []
    for seed in seeds:
        started = time.perf_counter()
        report = run_seed(seed, out, extra, env)
        reports.append(report)
        row = figures_of(report)
        low, high = report.get("gold_ci") or (None, None)
        print(
            f"{seed:>4}  "
            + "  ".join(f"{_cell(row.get(key)):>7}" for key, _ in FIGURES)
            + f"  [{_cell(low)}, {_cell(high)}]  {time.perf_counter() - started:5.0f}",
            flush=True,
        )

    summary = summarize(reports)
    print("\nover seeds: mean, sd, 95% t-interval of the mean")
    for key, title in FIGURES:
        if (row := summary.get(key)) is None:
            continue
        spread = (
            f"  sd {row['sd']:.3f}  [{row['low']:.3f}, {row['high']:.3f}]" if "sd" in row else ""
        )
        print(f"  {title:>7} {row['mean']:.3f}{spread}")
    met = [targets_met(r) for r in reports]
    print(f"\nissue 18's targets, seeds that met each (of {len(reports)}):")
    for name in met[0]:
        print(f"  {name}: {sum(m[name] for m in met)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "world": args.world,
                    "seeds": list(seeds),
                    "loop_args": extra,
                    "runs": [
                        {"seed": s, **figures_of(r), "gold_ci": r.get("gold_ci"), "targets": m}
                        for s, r, m in zip(seeds, reports, met)
                    ],
                    "summary": summary,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
