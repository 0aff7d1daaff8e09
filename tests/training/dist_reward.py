"""A reward callable for the multi-process tests: it scores, and records what each rank saw.

Imported by every process `torchrun` starts (as `tests.training.dist_reward:score`); each
appends one JSON line per call to `$DIST_REWARD_LOG/rank<RANK>.jsonl`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def score(prompts: list, responses: list[str]) -> list[float]:
    """Response length in characters, plus 10 x rank; logged per rank.

    The rank offset makes a rank-0-only figure differ from the mean over ranks, so a test can
    tell that metrics were averaged across processes.
    """
    rank = int(os.environ.get("RANK", "0"))
    scores = [float(len(r)) + 10.0 * rank for r in responses]
    folder = os.environ.get("DIST_REWARD_LOG")
    if folder:
        record = {"prompts": [str(p) for p in prompts], "scores": scores}
        with (Path(folder) / f"rank{rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
    return scores
