"""`best_gold`: the policy of the eval step where the judge's held-out score peaked.

With a judge and held-out evals, every eval step's `eval_gold` is compared with the best so
far; a strictly better one (the first eval step after step 0 always is) saves the policy to
`OUT/best_gold/`, a plain model folder like the final output (merged weights under LoRA)
with `best_gold.json`: step, episodes, eval_gold, eval_kl, eval_score and the step-0
baseline `baseline_eval_gold` (the start policy is not saved: it is the input). Ties keep
the earlier step. The final step is an eval step, so a run with a judge always leaves one.

The folder is written under `best_gold.tmp/` and renamed into place; the previous one is
moved aside to `best_gold.old/` first and deleted after, so an interrupted save never
leaves a partial `best_gold/` (a missing one is restored from `best_gold.old/` at start).
A resumed run reads `best_gold.json`, so only a step better than an earlier best replaces
it; a best saved after the checkpoint it resumes from is kept (a complete, evaluated policy).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.ppo.metrics import SAMPLES_FILE

BEST_GOLD_DIR = "best_gold"
BEST_GOLD_FILE = "best_gold.json"


@dataclass(frozen=True)
class BestGold:
    """The best eval step so far: its step and held-out gold score, and where it is saved."""

    step: int
    eval_gold: float
    path: Path


def _paths(out: Path) -> tuple[Path, Path, Path]:
    return out / BEST_GOLD_DIR, out / f"{BEST_GOLD_DIR}.tmp", out / f"{BEST_GOLD_DIR}.old"


def best_gold_start(out: Path, resumed: bool) -> tuple[BestGold | None, float | None]:
    """The best so far and the step-0 baseline gold from `out` (resumed), else clear them.

    Main process only. A fresh start deletes an earlier run's folder: it is another policy.
    """
    final, tmp, old = _paths(out)
    shutil.rmtree(tmp, ignore_errors=True)  # an interrupted save: never complete
    if not final.is_dir() and (old / BEST_GOLD_FILE).is_file():
        old.rename(final)  # interrupted between the two renames of a save
    shutil.rmtree(old, ignore_errors=True)
    if not resumed:
        shutil.rmtree(final, ignore_errors=True)
        return None, None
    try:
        record = json.loads((final / BEST_GOLD_FILE).read_text())
        best = BestGold(int(record["step"]), float(record["eval_gold"]), final)
    except (OSError, ValueError, KeyError, TypeError):
        return None, _step0_gold(out)  # no eval step before the checkpoint
    baseline = record.get("baseline_eval_gold")
    return best, None if baseline is None else float(baseline)


def _step0_gold(out: Path) -> float | None:
    """The step-0 held-out gold from samples.jsonl (kept by a resume), if it has one."""
    path = out / SAMPLES_FILE
    rows = (
        [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    )
    gold = [r["gold"] for r in rows if r.get("step") == 0 and "gold" in r]
    return sum(gold) / len(gold) if gold else None


def save_best_gold(
    policy: Any, tokenizer: Any, out: Path, record: dict[str, Any], *, lora: bool
) -> BestGold:
    """Save `policy` (merged when LoRA, on a copy: the trained adapter is untouched) and
    `record` as `out/best_gold/`, replacing the previous best in one rename."""
    final, tmp, old = _paths(out)
    shutil.rmtree(tmp, ignore_errors=True)
    if lora:
        # merge_and_unload works in place: a deep copy keeps the training model's adapter.
        # Costs one more copy of the policy in memory for the length of the save.
        policy = copy.deepcopy(policy).merge_and_unload()
    policy.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / BEST_GOLD_FILE).write_text(json.dumps(record, indent=2) + "\n")  # last
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return BestGold(int(record["step"]), float(record["eval_gold"]), final)
