"""Checkpoints and exact resumption: what is saved, when a checkpoint may be resumed, and how.

A checkpoint is accelerate's state (models, optimizer, scheduler, every RNG) plus the config
and `trainer_state.json` (step, KL coefficient), written last so its presence marks a
complete checkpoint. Resuming restores all of it and drops log rows past the checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.ppo.config import PPOConfig
from training.ppo.math import AdaptiveKLController
from training.ppo.metrics import METRICS_FILE, SAMPLES_FILE

CHECKPOINT_PREFIX = "step-"
# Not config.json: out_dir is a transformers model directory whose config.json is the model's.
CONFIG_FILE = "training_config.json"

# Fields that may change between a run and its resumption without changing the maths.
RESUME_FREE_FIELDS = {
    "eval_every",
    "num_eval_prompts",
    "save_every",
    "keep_checkpoints",
    "resume",
    "device",
    "progress",
}


def checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (trainer_state.json is written last) sorted by step."""
    root = out_dir / "checkpoints"
    found = []
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(CHECKPOINT_PREFIX) and (path / "trainer_state.json").is_file():
                found.append((int(path.name[len(CHECKPOINT_PREFIX) :]), path))
    return sorted(found)


def check_resumable(ckpt: Path, config: PPOConfig) -> None:
    """Refuse to resume a checkpoint written with different hyperparameters."""
    saved_file = ckpt / CONFIG_FILE
    if not saved_file.is_file():
        return
    saved, current = json.loads(saved_file.read_text()), config.to_dict()
    changed = sorted(
        k for k in current if k not in RESUME_FREE_FIELDS and k in saved and saved[k] != current[k]
    )
    if changed:
        raise ValueError(
            f"cannot resume from {ckpt}: it was trained with different {', '.join(changed)}; "
            "use another output directory or resume=False to start over"
        )


def save_checkpoint(
    accelerator: Any, out: Path, step: int, kl_coef: float, config: PPOConfig
) -> None:
    """Save models, optimizer, scheduler and every RNG (accelerate), then our own counters."""
    path = out / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        # Written last: its presence marks the checkpoint complete.
        (path / "trainer_state.json").write_text(
            json.dumps({"step": step, "kl_coef": kl_coef}) + "\n"
        )
        for _, old in checkpoints(out)[: -config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _truncate_jsonl(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Drop rows logged after `last_step` (work lost with the crash) and return the rest."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if r.get("step", 0) <= last_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


@dataclass
class Start:
    """Where a call starts: step 0, or the latest checkpoint's step and the history up to it."""

    step: int = 0
    resumed_from: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def resume_or_start(
    accelerator: Any, out: Path, config: PPOConfig, kl_ctl: AdaptiveKLController
) -> Start:
    """Restore the latest checkpoint (config.resume) or clear out_dir's logs to start over."""
    metrics_path, samples_path = out / METRICS_FILE, out / SAMPLES_FILE
    start = Start()
    found = checkpoints(out) if config.resume else []
    if not config.resume and accelerator.is_main_process:
        # Starting over: a stale checkpoint must never be picked up by a later resume.
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if found:
        start.resumed_from, ckpt = found[-1]
        check_resumable(ckpt, config)
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "trainer_state.json").read_text())
        start.step, kl_ctl.value = state["step"], state["kl_coef"]
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            start.history = _truncate_jsonl(metrics_path, start.step)
            _truncate_jsonl(samples_path, start.step)
    elif accelerator.is_main_process:
        for path in (metrics_path, samples_path):
            path.unlink(missing_ok=True)
    return start
