"""Output folders of training runs: refuse, before any work, one that training would damage
or cannot write.

A run writes its model files into `out` and deletes `out/checkpoints` when it starts over,
so a folder that holds an input model, or someone's own files, would be overwritten.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

# Written by every train_* run into its output folder (training/reward/config.py and the
# SFT, DPO and PPO modules use the same name): a folder holding it is a run's output.
RUN_CONFIG_FILE = "training_config.json"


def refuse_unsafe_output(out: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """ValueError naming the problem when `out` is a file, holds one of `inputs` (a local
    model folder or file), is a non-empty folder no training run wrote, or cannot be
    written. `inputs` that are not local paths (hub ids, `module:function`) are skipped."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    resolved = folder.resolve()
    for item in inputs:
        local = Path(str(item)).expanduser()
        if str(item) and local.exists():
            path = local.resolve()
            if path == resolved or resolved in path.parents:
                raise ValueError(
                    f"--out {out} holds the input {item}: training would overwrite it; "
                    "choose another output folder"
                )
    if folder.is_dir() and any(folder.iterdir()) and not (folder / RUN_CONFIG_FILE).is_file():
        raise ValueError(
            f"--out {out} is not empty and no training run wrote it (no {RUN_CONFIG_FILE}): "
            "choose a new or empty folder"
        )
    existing = next(p for p in (resolved, *resolved.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot write to {existing}")
