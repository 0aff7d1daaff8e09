"""The reward-model run: validate and render the data, train with the trainer of the chosen
loss, then evaluate, calibrate the bias and write the model card (no Django).

Files beside the model: `training_config.json`, `metrics.jsonl`, `reward_normalization.json`
and a `README.md` model card; checkpoints under `checkpoints/` resume exactly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from training.modeling import (
    config_max_positions,
    load_tokenizer,
    lora_fan_in_fan_out,
    model_reference,
    resolve_device,
)
from training.reward.calibrate import evaluate_pairs, reward_bias
from training.reward.collators import RankingCollator, WeightedPreferenceCollator
from training.reward.config import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    RewardConfig,
    RewardResult,
)
from training.reward.data import PreferenceData, load_preferences
from training.reward.dataset import (
    VALIDATION,
    Renderer,
    apply_eval_fraction,
    build_dataset,
    hold_out_validation,
)
from training.reward.kwise import KwiseRewardTrainer
from training.reward.pairwise import PairwiseRewardTrainer
from training.reward.schedule import early_stopping
from training.reward.scoring import (
    NORMALIZATION_FILE,
    load_sequence_classifier,
    write_normalization,
)

logger = logging.getLogger(__name__)

# Fields that define what a run trains; a checkpoint of another run must not be resumed. The
# data compares by its sha256, the base model by `identity_value` (a local folder by its path).
RUN_IDENTITY = ("base_model", "data_sha256", "loss", "lora")
# Early stopping's state in a checkpoint: the epochs evaluated so far and the best one's
# weights (unless the checkpoint was saved at the end of that very epoch).
EARLY_STOPPING_FILE = "early_stopping.json"
BEST_STATE_FILE = "early_stopping_best.pt"


class MetricsCallback(TrainerCallback):
    """Appends every log to metrics.jsonl, forwards it to `on_metrics`, snapshots files per checkpoint."""

    def __init__(self, out_dir: Path, on_metrics: Callable[[dict[str, Any]], None] | None) -> None:
        self.out_dir = out_dir
        self.on_metrics = on_metrics

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        with (self.out_dir / METRICS_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.on_metrics is not None:
            self.on_metrics(record)

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        for name in (CONFIG_FILE, METRICS_FILE):
            if (self.out_dir / name).is_file() and checkpoint.is_dir():
                shutil.copy2(self.out_dir / name, checkpoint / name)


class EarlyStoppingCallback(TrainerCallback):
    """After every epoch: accuracy and loss on the selection pairs, the best epoch's weights
    kept in memory, training stopped after `patience` epochs without improvement; the best
    weights restored when training ends (before the model is saved).

    The selection pairs are a validation split carved from the training prompts, so the test
    split's accuracy (the model card's) is not the maximum of several looks at it. Weights
    live on the CPU: a copy of the model's trainable state. A checkpoint holds this state too
    (`EARLY_STOPPING_FILE`, and the best weights when they are not the checkpoint's own), so
    a resumed run remembers the epochs before the crash.
    """

    def __init__(
        self,
        evaluate: Callable[[Any], dict[str, Any]],
        patience: int,
        out_dir: Path,
        on_metrics: Callable[[dict[str, Any]], None] | None = None,
        *,
        split: str = VALIDATION,
    ):
        self.evaluate = evaluate
        self.on_metrics = on_metrics
        self.patience = patience
        self.out_dir = out_dir
        self.split = split
        self.evaluations: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None

    def _best_step(self) -> int | None:
        """The optimizer step at which the best epoch's weights were evaluated."""
        return None if self.best_epoch is None else self.evaluations[self.best_epoch - 1]["step"]

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        # Resuming: the Trainer has loaded the checkpoint's weights and state; ours lies beside.
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        saved = folder / EARLY_STOPPING_FILE
        if state.global_step == 0 or not saved.is_file():
            return
        record = json.loads(saved.read_text(encoding="utf-8"))
        self.evaluations = record["evaluations"]
        self.best_epoch = record["best_epoch"]
        weights = folder / BEST_STATE_FILE
        if weights.is_file():
            self.best_state = torch.load(weights, map_location="cpu")
        elif self._best_step() == state.global_step:  # saved at the end of the best epoch
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }

    def on_save(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        record = {"evaluations": self.evaluations, "best_epoch": self.best_epoch}
        (folder / EARLY_STOPPING_FILE).write_text(json.dumps(record), encoding="utf-8")
        if self.best_state is not None and self._best_step() != state.global_step:
            torch.save(self.best_state, folder / BEST_STATE_FILE)  # else: the checkpoint's own

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        # The step that completes an epoch, before the Trainer saves a checkpoint there
        # (on_epoch_end comes after that save, which would then lack this epoch's figures).
        if state.epoch is not None and state.epoch >= len(self.evaluations) + 1 - 1e-6:
            self._evaluate_epoch(state, control, model)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        # Only a last, partial epoch (`max_steps` within an epoch) is still to evaluate here.
        if state.epoch is not None and math.ceil(state.epoch - 1e-6) > len(self.evaluations):
            self._evaluate_epoch(state, control, model)
        return control

    def _evaluate_epoch(self, state, control, model) -> None:  # noqa: ANN001
        with torch.no_grad():
            figures = self.evaluate(model)
        epoch = len(self.evaluations) + 1
        record = {
            "step": state.global_step,
            "epoch": epoch,
            "selection_split": self.split,
            "selection_accuracy": figures["accuracy"],
            "selection_loss": figures["eval_loss"],
        }
        self.evaluations.append(record)
        decision = early_stopping(
            [(e["selection_accuracy"], e["selection_loss"]) for e in self.evaluations],
            patience=self.patience,
        )
        if decision.is_best:
            self.best_epoch = epoch
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        if state.is_world_process_zero:
            line = {**record, "best_epoch": self.best_epoch}
            with (self.out_dir / METRICS_FILE).open("a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            if self.on_metrics is not None:
                self.on_metrics(line)
        if decision.stop:
            logger.info(
                "early stopping after epoch %d: no improvement since epoch %d",
                epoch,
                self.best_epoch,
            )
            control.should_training_stop = True

    def on_train_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if self.best_state is not None and self.best_epoch != len(self.evaluations):
            model.load_state_dict(self.best_state)
            logger.info(
                "kept the weights of epoch %d (best %s accuracy)", self.best_epoch, self.split
            )
        self.best_state = None


def _training_arguments(
    config: RewardConfig, out_dir: Path, *, has_eval: bool, early_stop: bool = False
):
    from trl import RewardConfig as TrlRewardConfig

    device = resolve_device(config.device)
    use_cpu = device.type == "cpu"
    # The model is loaded in fp32 (master weights); bf16/fp16 is the Trainer's autocast.
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if not use_cpu and torch.cuda.is_bf16_supported() else "no"
    report_to = [n for n in ("tensorboard",) if importlib.util.find_spec(n) is not None]
    return TrlRewardConfig(
        output_dir=str(out_dir / CHECKPOINTS_DIR),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=use_cpu,
        # trl defaults to bf16 and gradient checkpointing, both slow or unsupported on CPUs.
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=config.gradient_checkpointing,
        report_to=report_to,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        # Early stopping evaluates each epoch itself (the accuracy it selects on).
        eval_strategy="epoch" if has_eval and config.eval_each_epoch and not early_stop else "no",
        prediction_loss_only=True,
        remove_unused_columns=False,  # the collators read "weight", which trl would drop
        max_length=None,  # rows are already truncated; trl would drop the long ones
        disable_dropout=True,
        dataloader_num_workers=config.dataloader_workers,
    )


def identity_value(run: dict[str, Any], key: str) -> Any:
    """What a RUN_IDENTITY field of a run compares by. The base model: its `model_reference`,
    so `./m`, `m` and `/abs/m` are one base model; a training_config.json written before
    `base_model_path` was recorded holds it only as typed, resolved here from this directory."""
    if key != "base_model":
        return run.get(key)
    if run.get("base_model_path"):
        return run["base_model_path"]
    return model_reference(run["base_model"]) if run.get("base_model") else None


def refuse_foreign_checkpoint(
    out_dir: str | Path,
    identity: dict[str, Any],
    resume: bool,
    *,
    flags: dict[str, str] | None = None,
) -> None:
    """Raise ValueError now for an out_dir training would refuse later: one that holds a
    checkpoint of a different run (`identity` holds the RUN_IDENTITY fields; `flags` names
    them as the command's flags, for the message). Writes nothing, so a command can check
    before it records a run."""
    missing = sorted(set(RUN_IDENTITY) - set(identity))
    if missing:
        raise TypeError(f"identity lacks {', '.join(missing)}")
    _prepare_out_dir(Path(out_dir).expanduser(), identity, resume, write=False, flags=flags)


def prepare_out_dir_once(args, out_dir: Path, run: dict[str, Any], resume: bool) -> str | None:
    """`_prepare_out_dir` for every process of a job; returns the checkpoint to resume from.

    Under torchrun / accelerate launch, rank 0 (of `args`, the trainer's arguments) checks
    and prepares out_dir and writes the run's config first; the other ranks then find the
    same checkpoint without writing (one writer, no half-written files).
    """
    with args.main_process_first(local=False, desc="preparing the output directory"):
        main = args.process_index == 0
        checkpoint = _prepare_out_dir(out_dir, run, resume, write=main)
        if main:
            (out_dir / CONFIG_FILE).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    return checkpoint


def _prepare_out_dir(
    out_dir: Path,
    run: dict[str, Any],
    resume: bool,
    *,
    write: bool = True,
    flags: dict[str, str] | None = None,
) -> str | None:
    """Create out_dir; return the checkpoint to resume from, refusing one from a different run.

    `write=False` (ranks other than 0, after rank 0 prepared it) only finds the checkpoint.
    """
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = out_dir / CHECKPOINTS_DIR
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last is not None and resume:
        previous = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        changed = [k for k in RUN_IDENTITY if identity_value(previous, k) != identity_value(run, k)]
        if changed:
            names = ", ".join((flags or {}).get(k, k) for k in changed) + " changed"
            if "base_model" in changed:
                names += f"; it was trained from {identity_value(previous, 'base_model')}"
            raise ValueError(
                f"{out_dir} holds a checkpoint of a different run ({names}): choose another "
                "output directory or pass resume=False (--no-resume) to start over"
            )
        step = int(Path(last).name.rsplit("-", 1)[1])
        if write:
            logger.info("resuming from %s (optimizer step %d)", last, step)
        metrics = out_dir / METRICS_FILE
        # Drop lines logged after the checkpoint: they will be logged again.
        if write and metrics.is_file():
            lines = metrics.read_text(encoding="utf-8").splitlines()
            kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
            metrics.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
        return last
    if not write:
        return None
    if checkpoints.is_dir():
        shutil.rmtree(checkpoints)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).write_text("", encoding="utf-8")
    return None


def _epoch_kept(result: RewardResult) -> str:
    if result.best_epoch is None:
        return "n/a"
    kept = f"{result.best_epoch} of {len(result.epoch_evaluations)}"
    if result.selection_split == VALIDATION:
        return f"{kept}, picked on {result.num_validation_pairs} validation pairs"
    return f"{kept}, picked on the test split (too few pairs for a validation split)"


def _write_model_card(out_dir: Path, run: dict[str, Any], result: RewardResult) -> None:
    accuracy = "n/a (no test split)" if result.accuracy is None else f"{result.accuracy:.3f}"
    by_margin = (
        ", ".join(f"gap {m}: {a:.3f}" for m, a in result.accuracy_by_margin.items()) or "n/a"
    )
    text = f"""# Reward model

Trained by rlhf-studio (`train_reward_model`) with the {run["loss"]} loss{" and LoRA" if run["lora"] else ""}.

| | |
|---|---|
| base model | `{run["base_model"]}` |
| data | `{run["data"]}` |
| data sha256 | `{run["data_sha256"]}` |
| training pairs | {result.num_train_pairs} |
| held-out pairs | {result.num_eval_pairs} |
| held-out pairwise accuracy | {accuracy} |
| accuracy by tier gap | {by_margin} |
| epoch kept (early stopping) | {_epoch_kept(result)} |
| held-out loss | {"n/a" if result.eval_loss is None else f"{result.eval_loss:.4f}"} |
| responses truncated to {run["config"]["max_length"]} tokens | {result.truncated_count} |
| reward bias / std | {result.bias:.4f} / {result.std:.4f} |

Inputs are rendered by `training.reward.render_reward_input` (prompt with the chat template
when there is one, then the response, then EOS). Load with
`training.reward.load_reward_model(path)`: its `score(prompts, responses)` subtracts the bias
stored in `{NORMALIZATION_FILE}`, so rewards of the reference responses have mean 0.
Hyperparameters are in `{CONFIG_FILE}`, the training log in `{METRICS_FILE}`.
"""
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def model_max_positions(base_model: str | Path) -> int | None:
    """The longest input the base model's position embeddings allow, when its config says."""
    from transformers import AutoConfig

    return config_max_positions(AutoConfig.from_pretrained(str(base_model)))


def train_reward_model(
    data: str | Path | PreferenceData,
    base_model: str,
    out_dir: str | Path,
    config: RewardConfig | None = None,
    *,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    allow_modified: bool = False,
) -> RewardResult:
    """Fit a reward model on an export (directory or pairs/rankings file) and save it to out_dir.

    `data` may also be what `load_preferences` returned (a command validates before it records
    a run). A table whose sha256 differs from its manifest's is refused unless `allow_modified`.
    """
    from peft import LoraConfig
    from transformers import set_seed

    config = config or RewardConfig()
    out_dir = Path(out_dir).expanduser()

    # Validate everything before writing anything.
    if isinstance(data, PreferenceData):
        prefs = data
    else:
        prefs = load_preferences(data, loss=config.loss, allow_modified=allow_modified)
    apply_eval_fraction(prefs, config.eval_fraction)
    early_stop = bool(config.early_stopping_patience and prefs.split_pairs("test"))
    selection = None
    if early_stop:
        carved = hold_out_validation(prefs, config.validation_fraction)
        selection = VALIDATION if carved else "test"
        if not carved:
            logger.warning(
                "early stopping picks the epoch on the test split (validation_fraction=%s "
                "left no validation pairs): its accuracy is optimistic",
                config.validation_fraction,
            )
    tokenizer = load_tokenizer(base_model)
    requested_length = config.max_length
    limit = model_max_positions(base_model)
    if limit is not None and config.max_length > limit:
        # Longer inputs would index past the position embeddings (an IndexError mid-training).
        logger.warning(
            "max_length %d exceeds %s's %d positions: using %d",
            config.max_length,
            base_model,
            limit,
            limit,
        )
        config = dataclasses.replace(config, max_length=limit)
    tokenizer.padding_side = "right"  # what the collators do; saved with the model
    render = Renderer(tokenizer, config.max_length)
    train_dataset = build_dataset(prefs, "train", config, render)
    eval_dataset = build_dataset(prefs, "test", config, render)
    train_pairs, eval_pairs = prefs.split_pairs("train"), prefs.split_pairs("test")
    selection_pairs = prefs.split_pairs(selection) if selection else []
    if render.truncated:
        logger.warning(
            "%d reward inputs were truncated to %d tokens", render.truncated, config.max_length
        )

    import peft
    import transformers
    import trl

    run = {
        "base_model": str(base_model),  # as given; what a resume compares (identity_value):
        "base_model_path": model_reference(base_model),
        "data": str(prefs.source),
        "data_sha256": prefs.sha256,
        "data_modified": prefs.modified,  # digests that disagreed, trained on by allow_modified
        "loss": config.loss,
        "lora": config.lora,
        "config": config.to_dict(),
        "max_length_requested": requested_length,
        "manifest": prefs.manifest,
        "num_train_pairs": len(train_pairs),
        "num_eval_pairs": len(eval_pairs),
        "num_train_rankings": len(prefs.split_rankings("train")),
        "selection_split": selection,
        "num_validation_pairs": len(prefs.split_pairs(VALIDATION)),
        "skipped_ties": prefs.skipped_ties,
        "truncated_count": render.truncated,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
    }
    args = _training_arguments(
        config, out_dir, has_eval=eval_dataset is not None, early_stop=early_stop
    )
    run["num_processes"] = args.world_size
    checkpoint = prepare_out_dir_once(args, out_dir, run, config.resume)

    set_seed(config.seed)  # before the model: the score head is freshly initialised
    model = load_sequence_classifier(base_model, tokenizer)
    peft_config = None
    if config.lora:
        peft_config = LoraConfig(
            task_type="SEQ_CLS",  # puts the score head in modules_to_save: trained and saved
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules) if config.lora_target_modules else None,
            fan_in_fan_out=lora_fan_in_fan_out(model),
        )
    if config.loss == "kwise":
        trainer_cls, collator = (
            KwiseRewardTrainer,
            RankingCollator(tokenizer.pad_token_id, config.margin_scale),
        )
    else:
        trainer_cls, collator = (
            PairwiseRewardTrainer,
            WeightedPreferenceCollator(tokenizer.pad_token_id),
        )
    eval_batch = config.eval_batch_size or config.batch_size * 2
    stopper = None
    if early_stop:
        stopper = EarlyStoppingCallback(
            lambda m: evaluate_pairs(
                m, selection_pairs, render, margin_scale=config.margin_scale, batch_size=eval_batch
            ),
            config.early_stopping_patience,
            out_dir,
            on_metrics,
            split=selection,
        )
    trainer = trainer_cls(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsCallback(out_dir, on_metrics), *([stopper] if stopper else [])],
    )
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out_dir))

    # Held-out figures and the normalization bias, from the in-memory model (the best epoch's).
    figures = evaluate_pairs(
        trainer.model, eval_pairs, render, margin_scale=config.margin_scale, batch_size=eval_batch
    )
    bias, std, count = reward_bias(trainer.model, render, batch_size=eval_batch)
    result = RewardResult(
        output_dir=out_dir,
        accuracy=figures["accuracy"],
        eval_loss=figures["eval_loss"],
        accuracy_by_margin=figures["accuracy_by_margin"],
        bias=bias,
        std=std,
        truncated_count=render.truncated,
        num_train_pairs=len(train_pairs),
        num_eval_pairs=len(eval_pairs),
        data_sha256=prefs.sha256,
        global_step=train_output.global_step,
        train_loss=train_output.training_loss,
        train_runtime_s=float(train_output.metrics.get("train_runtime", 0.0)),
        metrics=dict(train_output.metrics),
        best_epoch=stopper.best_epoch if stopper else None,
        epoch_evaluations=list(stopper.evaluations) if stopper else [],
        selection_split=selection,
        num_validation_pairs=len(prefs.split_pairs(VALIDATION)),
    )
    if trainer.is_world_process_zero():
        write_normalization(out_dir, bias=bias, std=std, max_length=config.max_length, count=count)
        final = {
            "step": result.global_step,
            "final": True,
            "accuracy": result.accuracy,
            "eval_loss": result.eval_loss,
            "accuracy_by_margin": result.accuracy_by_margin,
            "bias": bias,
            "std": std,
            "truncated_count": result.truncated_count,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.epoch_evaluations) or None,
            "selection_split": selection,
        }
        with (out_dir / METRICS_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(final) + "\n")
        if on_metrics is not None:
            on_metrics(final)
        _write_model_card(out_dir, run, result)
    return result
