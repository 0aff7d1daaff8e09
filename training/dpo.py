"""Direct preference optimisation on a pairs export with trl's DPOTrainer (no Django).

The data is the same export the reward model trains on (SPEC section 5), read and validated by
`training.reward.data.load_preferences`: a bad row fails with `file:line` before anything is
written; ties (margin 0) are left out, as for the reward model; rows with split "test" are the
evaluation set (trl's `rewards/accuracies` on it is reported as `eval_accuracy`).

The pairs reach trl tokenized (`preference_rows`): the prompt as `encode_prompt` renders it
for generation and PPO, each response as the reward model reads it (stripped, then EOS).
trl's own path tokenizes prompt + response as one string and cuts it where the prompt's
tokens end, so a response glued to its prompt ("?4"), a merge across the boundary, or a
template whose generation prompt ends in a space (the first answer token then absorbs it)
trained the policy on tokens it never samples there.

Reference model: a frozen copy of the starting policy; with LoRA, the same weights with the
adapter disabled (trl's PEFT path: no second copy in memory). The LoRA adapter is merged into
the saved weights, and also kept under `adapter/`.

Weights and margins: trl 1.16's DPOTrainer has no per-pair weight or margin input (its
`use_weighting` is WPO, a weight from the policy's own probabilities, not the export's), so
the export's `weight` and `margin` columns are not used; `training_config.json` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.cli import TrainConfig, option
from training.sft import OPTION_ALIASES, lora_config, loss_summary, save_policy

logger = logging.getLogger(__name__)

LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
)


@dataclass(frozen=True)
class DPOTrainConfig(TrainConfig):
    """Hyperparameters of one DPO run; all of them are logged in training_config.json."""

    NAME = "DPO config"
    DEFAULT_LR = (5e-7, 5e-6)
    ALIASES = OPTION_ALIASES

    beta: float = option(0.1, "strength of the implicit KL to the reference (higher: stay closer)")
    loss_type: Literal[LOSS_TYPES] = option(  # type: ignore[valid-type]
        "sigmoid", "trl loss: sigmoid (DPO), ipo, hinge, robust, apo_zero, ..."
    )
    label_smoothing: float = option(0.0, "assumed label noise in [0, 0.5) (robust/cDPO losses)")
    lora: bool = option(
        False, "train LoRA adapters; the reference is the model with the adapter disabled"
    )
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = option(0.0, "dropout inside the LoRA layers")
    lora_target_modules: tuple[str, ...] | None = option(
        None, "module names LoRA wraps, comma-separated; None lets peft pick for the architecture"
    )
    epochs: float = option(1.0, "passes over the training pairs")
    max_steps: int | None = option(None, "stop after this many optimizer steps (overrides epochs)")
    lr: float | None = option(
        None, "AdamW learning rate; None means 5e-7 for full fine-tuning and 5e-6 with LoRA"
    )
    lr_scheduler: str = option(
        "linear", "transformers scheduler name: linear, cosine, constant, ..."
    )
    warmup_steps: float = option(
        0, "warm-up optimizer steps, or the share of all steps when below 1"
    )
    weight_decay: float = option(0.0, "AdamW weight decay")
    batch_size: int = option(8, "pairs per device and micro-batch")
    gradient_accumulation: int = option(1, "micro-batches per optimizer step")
    max_length: int | None = option(
        1024, "tokens of prompt + response; longer ones are cut from the right (none: no limit)"
    )
    seed: int = option(0, "seeds LoRA init and data order")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "auto (bf16 on CUDA that supports it, else fp32), fp32, bf16 or fp16"
    )
    gradient_checkpointing: bool = option(False, "recompute activations to save memory")
    logging_steps: int = option(10, "optimizer steps between metric lines")
    save_steps: int = option(500, "optimizer steps between checkpoints (under out_dir/checkpoints)")
    save_total_limit: int | None = option(2, "checkpoints kept; older ones are deleted")
    resume: bool = option(
        True, "continue from the last checkpoint of the same run in out_dir; False starts over"
    )

    def __post_init__(self) -> None:
        checks = {
            "beta must be > 0": self.beta > 0,
            f"loss_type must be one of {', '.join(LOSS_TYPES)}": self.loss_type in LOSS_TYPES,
            "label_smoothing must be in [0, 0.5)": 0 <= self.label_smoothing < 0.5,
            "epochs must be > 0": self.epochs > 0,
            "max_steps must be > 0": self.max_steps is None or self.max_steps > 0,
            "lr must be > 0": self.lr is None or self.lr > 0,
            "batch_size must be >= 1": self.batch_size >= 1,
            "gradient_accumulation must be >= 1": self.gradient_accumulation >= 1,
            "max_length must be >= 4": self.max_length is None or self.max_length >= 4,
            "lora_r must be >= 1": self.lora_r >= 1,
            "precision must be auto, fp32, bf16 or fp16": self.precision
            in ("auto", "fp32", "bf16", "fp16"),
        }
        self.refuse_failed(checks)


@dataclass
class DPOResult:
    output_dir: Path
    num_train_pairs: int
    num_eval_pairs: int
    global_step: int
    train_loss: float | None
    first_loss: float | None
    last_loss: float | None
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    eval_margin: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def preference_rows(
    pairs: list, tokenizer: Any, max_length: int | None
) -> tuple[list[dict[str, list[int]]], int]:
    """trl's tokenized preference rows (`prompt_ids`, `chosen_ids`, `rejected_ids`), and how
    many pairs were left out because their prompt alone fills `max_length` (trl would drop
    them too: its collator keeps the start, so no response token would be left)."""
    from training.modeling import encode_completion, encode_prompt

    rows, dropped = [], 0
    for pair in pairs:
        prompt_ids = encode_prompt(tokenizer, pair.prompt)
        if max_length is not None and len(prompt_ids) >= max_length:
            dropped += 1
            continue
        rows.append(
            {
                "prompt_ids": prompt_ids,
                "chosen_ids": encode_completion(tokenizer, pair.chosen),
                "rejected_ids": encode_completion(tokenizer, pair.rejected),
            }
        )
    return rows, dropped


def _pretokenized_dpo_trainer():
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer on rows `preference_rows` tokenized: trl's preparation is skipped."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # noqa: ANN001
            return dataset

    return PretokenizedDPOTrainer


def build_dpo_trainer(prefs: Any, policy: str, out_dir: Path, config: DPOTrainConfig, callbacks=()):
    """The DPOTrainer on the export's train split (test split as eval set)."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig

    from training.modeling import load_causal_lm
    from training.sft import clamp_max_length, trainer_arguments

    set_seed(config.seed)
    config = clamp_max_length(config, policy)
    model, tokenizer = load_causal_lm(policy, device="cpu", dtype="float32")
    ref_model = None
    if not config.lora:
        ref_model, _ = load_causal_lm(policy, device="cpu", dtype="float32")
    train, dropped_train = preference_rows(prefs.split_pairs("train"), tokenizer, config.max_length)
    test, dropped_test = preference_rows(prefs.split_pairs("test"), tokenizer, config.max_length)
    if dropped_train or dropped_test:
        logger.warning(
            "%d train and %d test pairs left out: their prompt alone fills max_length %d",
            dropped_train, dropped_test, config.max_length,
        )  # fmt: skip
    if not train:
        raise ValueError(
            f"no train pairs left: every prompt fills max_length {config.max_length}"
            if dropped_train
            else "the export has no train pairs"
        )
    args = DPOConfig(
        **trainer_arguments(config, out_dir),
        beta=config.beta,
        loss_type=[config.loss_type],
        label_smoothing=config.label_smoothing,
        max_length=config.max_length,
        per_device_eval_batch_size=config.batch_size,
        eval_strategy="epoch" if test else "no",
        dataset_num_proc=None,
    )
    trainer = _pretokenized_dpo_trainer()(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(test) if test else None,
        processing_class=tokenizer,
        peft_config=lora_config(config, model) if config.lora else None,
        callbacks=list(callbacks),
    )
    return trainer, tokenizer, len(train), len(test)


def train_dpo(
    data: Any,
    policy: str,
    out_dir: str | Path,
    config: DPOTrainConfig | None = None,
    *,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    allow_modified: bool = False,
) -> DPOResult:
    """DPO from `policy` on a pairs export (folder, file, or `load_preferences` data)."""
    import peft
    import torch
    import transformers
    import trl

    from training.distributed import refuse_zero3
    from training.modeling import model_reference
    from training.reward.data import PreferenceData, load_preferences
    from training.reward.train import MetricsCallback, prepare_out_dir_once
    from training.sft import clamp_max_length

    config = config or DPOTrainConfig()
    out_dir = Path(out_dir).expanduser()
    if isinstance(data, PreferenceData):
        prefs = data
    else:
        prefs = load_preferences(data, loss="pairwise", allow_modified=allow_modified)
    config = clamp_max_length(config, policy)
    run = {
        "method": "dpo",
        "base_model": str(policy),
        "base_model_path": model_reference(policy),  # what a resume compares
        "data": str(prefs.source),
        "data_sha256": prefs.sha256,
        "data_modified": prefs.modified,
        "loss": f"dpo-{config.loss_type}",
        "lora": config.lora,
        "config": config.to_dict(),
        "reference": "policy with the LoRA adapter disabled" if config.lora else "frozen copy",
        "weights_and_margins": "not used: trl's DPOTrainer has no per-pair weight or margin",
        "skipped_ties": prefs.skipped_ties,
        "manifest": prefs.manifest,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
    }
    history: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        history.append(row)
        if on_metrics is not None:
            on_metrics(row)

    trainer, tokenizer, n_train, n_test = build_dpo_trainer(
        prefs, policy, out_dir, config, [MetricsCallback(out_dir, record)]
    )
    refuse_zero3(trainer.accelerator)
    run.update(
        num_train_pairs=n_train, num_eval_pairs=n_test, num_processes=trainer.args.world_size
    )
    checkpoint = prepare_out_dir_once(trainer.args, out_dir, run, config.resume)
    output = trainer.train(resume_from_checkpoint=checkpoint)
    evaluation = trainer.evaluate() if n_test else {}
    if trainer.is_world_process_zero():
        save_policy(trainer, tokenizer, out_dir, config.lora)
    first, last = loss_summary(history)
    return DPOResult(
        output_dir=out_dir,
        num_train_pairs=n_train,
        num_eval_pairs=n_test,
        global_step=output.global_step,
        train_loss=output.training_loss,
        first_loss=first,
        last_loss=last,
        eval_loss=evaluation.get("eval_loss"),
        eval_accuracy=evaluation.get("eval_rewards/accuracies"),
        eval_margin=evaluation.get("eval_rewards/margins"),
        metrics=dict(output.metrics),
    )
