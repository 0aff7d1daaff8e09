"""Checkpoints and exact resumption: what is saved, when a checkpoint may be resumed, and how.

A checkpoint is accelerate's state (models as safetensors; optimizer and every RNG, which
accelerate reads back with `weights_only=True`) plus our own JSON: the LR schedule, the
config and `trainer_state.json` (step, KL coefficient). Last comes `checkpoint_manifest.json`,
the sha256 of every file: its presence marks a complete checkpoint, and resuming loads
nothing from a folder whose files differ from it (a planted or edited file is refused, so
it is never unpickled). Resuming restores all of it and drops log rows past the checkpoint.

The scheduler is not registered with accelerate: accelerate would pickle it to
`custom_checkpoint_0.pkl` and load that with `weights_only=False`, which runs any code a
file planted there holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotation.datafiles.digest import sha256_file
from training.ppo.config import PPOConfig
from training.ppo.math import AdaptiveKLController
from training.ppo.metrics import METRICS_FILE, SAMPLES_FILE

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step-"
# Not config.json: out_dir is a transformers model directory whose config.json is the model's.
CONFIG_FILE = "training_config.json"
STATE_FILE = "trainer_state.json"
SCHEDULER_FILE = "scheduler.json"
MANIFEST_FILE = "checkpoint_manifest.json"
MANIFEST_FORMAT = 1
# What the run trains from and against (policy, reward, judge, prompts): resuming needs the same.
IDENTITY_FILE = "run_identity.json"


class CheckpointError(ValueError):
    """A checkpoint folder holds files train_ppo did not write (or they changed): not loaded."""


# Fields that may change between a run and its resumption without changing the maths.
RESUME_FREE_FIELDS = {
    "eval_every",
    "num_eval_prompts",  # the held-out split is checked through the identity instead
    "eval_fraction",
    "save_every",
    "keep_checkpoints",
    "resume",
    "device",
    "progress",
    "gradient_checkpointing",  # recomputes the same activations: same gradients
}


def _step_folders(out_dir: Path) -> list[tuple[int, Path]]:
    root = out_dir / "checkpoints"
    found = []
    if root.is_dir():
        for path in root.iterdir():
            number = path.name[len(CHECKPOINT_PREFIX) :]
            if path.name.startswith(CHECKPOINT_PREFIX) and number.isdigit() and path.is_dir():
                found.append((int(number), path))
    return sorted(found)


def checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (the manifest is written last) sorted by step."""
    return [(n, p) for n, p in _step_folders(out_dir) if (p / MANIFEST_FILE).is_file()]


def write_manifest(ckpt: Path) -> None:
    """Record the sha256 of every file of a checkpoint; written last, it marks it complete."""
    files = {
        p.relative_to(ckpt).as_posix(): sha256_file(p)
        for p in sorted(ckpt.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    tmp = ckpt / f"{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1) + "\n")
    tmp.replace(ckpt / MANIFEST_FILE)


def verify_checkpoint(ckpt: Path) -> None:
    """Refuse a checkpoint unless its files are exactly the ones its manifest lists, unchanged."""
    advice = "delete that checkpoint folder, or start over with resume=False (--no-resume)"
    try:
        manifest = json.loads((ckpt / MANIFEST_FILE).read_text())
        listed = manifest["files"]
        if not isinstance(listed, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"cannot resume from {ckpt}: {MANIFEST_FILE} is missing or unreadable; {advice}"
        ) from None
    present = {
        p.relative_to(ckpt).as_posix(): p
        for p in sorted(ckpt.rglob("*"))
        if not p.is_dir() and p.name != MANIFEST_FILE
    }
    if planted := sorted(set(present) - set(listed)):
        raise CheckpointError(
            f"cannot resume from {ckpt}: {planted[0]} is not a file train_ppo wrote there "
            f"(not in {MANIFEST_FILE}), so nothing is loaded; {advice}"
        )
    if missing := sorted(set(listed) - set(present)):
        raise CheckpointError(f"cannot resume from {ckpt}: {missing[0]} is missing; {advice}")
    for name, digest in listed.items():
        if present[name].is_symlink() or sha256_file(present[name]) != digest:
            raise CheckpointError(
                f"cannot resume from {ckpt}: {name} was modified after it was saved "
                f"(its sha256 differs from {MANIFEST_FILE}), so nothing is loaded; {advice}"
            )


def model_identity(source: Any) -> dict[str, Any]:
    """{"path", "sha256"} of a model directory (its top-level files, logs left out), or of a
    callable's name / a hub id (sha256 None: nothing on disk to hash)."""
    path = Path(str(source)).expanduser()
    if not path.is_dir():
        return {"path": str(source), "sha256": None}
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.is_file() and file.name not in (METRICS_FILE, SAMPLES_FILE, CONFIG_FILE):
            digest.update(f"{file.name} {sha256_file(file)}\n".encode())
    return {"path": str(path.resolve()), "sha256": digest.hexdigest()}


def prompts_sha256(prompts: Sequence[Any]) -> str:
    """sha256 of the prompt list, in order (order decides which prompts each step draws)."""
    return hashlib.sha256(json.dumps(list(prompts), sort_keys=True).encode()).hexdigest()


def run_identity(policy: Any, reward: Any, judge: Any, prompts: Sequence[Any]) -> dict[str, Any]:
    """What a checkpoint must have been trained from to be resumed: `reward`/`judge` are a
    directory, a hub id or a callable's "module:name"."""
    return {
        "policy": model_identity(policy),
        "reward": model_identity(reward),
        "judge": None if judge is None else model_identity(judge),
        "prompts": {"count": len(prompts), "sha256": prompts_sha256(prompts)},
    }


def _describe(value: Any) -> str:
    if not isinstance(value, dict):
        return "none"
    if "count" in value:
        return f"{value['count']} prompts, sha256 {value['sha256'][:12]}"
    digest = f" (sha256 {value['sha256'][:12]})" if value.get("sha256") else ""
    return f"{value['path']}{digest}"


LABELS = {
    "policy": "policy",
    "reward": "reward",
    "judge": "judge",
    "prompts": "prompt set",
    "ptx_data": "ptx_data",
}


def check_identity(ckpt: Path, identity: dict[str, Any]) -> None:
    """Refuse a checkpoint trained from another policy, reward, judge, prompt set or ptx data."""
    saved_file = ckpt / IDENTITY_FILE
    if not saved_file.is_file():
        raise ValueError(
            f"cannot resume from {ckpt}: it records no policy/reward/prompts identity ({IDENTITY_FILE}, "
            "written by an older version); use another output directory or resume=False (--no-resume)"
        )
    saved = json.loads(saved_file.read_text())
    for what in LABELS:
        old, new = saved.get(what), identity.get(what)
        if (
            isinstance(old, dict)
            and isinstance(new, dict)
            and old.get("sha256")
            and new.get("sha256")
        ):
            same = old["sha256"] == new["sha256"]  # content decides: a moved copy is the same
        else:
            same = old == new
        if not same:
            raise ValueError(
                f"cannot resume from {ckpt}: the {LABELS[what]} differs (checkpoint: {_describe(old)}; "
                f"now: {_describe(new)}); use another output directory or resume=False (--no-resume)"
            )


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
            "use another output directory or resume=False (--no-resume) to start over"
        )


def save_checkpoint(
    accelerator: Any,
    out: Path,
    step: int,
    kl_coef: float,
    config: PPOConfig,
    scheduler: Any,
    identity: dict[str, Any],
) -> None:
    """Save models, optimizer and every RNG (accelerate), our own JSON state, then the manifest."""
    path = out / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process and path.exists():
        shutil.rmtree(path)  # a stale or partial folder: none of its files may be kept
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()  # every process's random_states_<i>.pkl is on disk
    if accelerator.is_main_process:
        (path / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict()) + "\n")
        (path / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (path / STATE_FILE).write_text(json.dumps({"step": step, "kl_coef": kl_coef}) + "\n")
        (path / IDENTITY_FILE).write_text(json.dumps(identity, indent=2) + "\n")
        write_manifest(path)  # last: its presence marks the checkpoint complete
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
    accelerator: Any,
    out: Path,
    config: PPOConfig,
    kl_ctl: AdaptiveKLController,
    scheduler: Any,
    identity: dict[str, Any],
) -> Start:
    """Restore the latest checkpoint (config.resume) or clear out_dir's logs to start over."""
    metrics_path, samples_path = out / METRICS_FILE, out / SAMPLES_FILE
    start = Start()
    found = checkpoints(out) if config.resume else []
    if config.resume:
        # The newest folder that claims to be a checkpoint but has no manifest: an older
        # version's, one interrupted between its last two files, or planted. Never loaded.
        claimed = [(n, p) for n, p in _step_folders(out) if (p / STATE_FILE).is_file()]
        if claimed and (not found or claimed[-1][0] > found[-1][0]):
            raise CheckpointError(
                f"cannot resume from {claimed[-1][1]}: it has no {MANIFEST_FILE} (written by an "
                "older version, interrupted, or not by train_ppo), so nothing is loaded; delete "
                "that checkpoint folder, or start over with resume=False (--no-resume)"
            )
    if not config.resume and accelerator.is_main_process:
        # Starting over: a stale checkpoint must never be picked up by a later resume.
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if found:
        start.resumed_from, ckpt = found[-1]
        verify_checkpoint(ckpt)  # before anything in the folder is read
        check_resumable(ckpt, config)
        check_identity(ckpt, identity)
        # Tensors only: weights_only=True refuses any pickled object that is not plain data.
        accelerator.load_state(str(ckpt), load_kwargs={"weights_only": True})
        scheduler.load_state_dict(json.loads((ckpt / SCHEDULER_FILE).read_text()))
        state = json.loads((ckpt / STATE_FILE).read_text())
        start.step, kl_ctl.value = state["step"], state["kl_coef"]
        if accelerator.is_main_process:
            logger.info("resuming from %s (step %d of %d)", ckpt, start.step, config.num_steps)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            start.history = _truncate_jsonl(metrics_path, start.step)
            _truncate_jsonl(samples_path, start.step)
    elif accelerator.is_main_process:
        for path in (metrics_path, samples_path):
            path.unlink(missing_ok=True)
    return start
