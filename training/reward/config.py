"""What a reward-model run is told (RewardConfig), what it returns (RewardResult), and its files.

Every field carries its one-line doc in `option(default, help)`: `train_reward_model --help`
shows it, and `training_config.json` beside the model records every value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.cli import TrainConfig, option

# training_config.json rather than config.json: the output directory is a transformers model
# directory whose config.json is the model's.
CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"

# trl / transformers names a caller may use for our fields.
OPTION_ALIASES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "gradient_accumulation_steps": "gradient_accumulation",
    "precision": "mixed_precision",  # this field's name before the commands took --mixed-precision
}


@dataclass(frozen=True)
class RewardConfig(TrainConfig):
    """Hyperparameters of one reward-model run; all of them are logged in training_config.json."""

    NAME = "RewardConfig"
    DEFAULT_LR = (1e-5, 1e-4)
    ALIASES = OPTION_ALIASES

    loss: Literal["pairwise", "kwise"] = option(
        "pairwise",
        "pairwise (Bradley-Terry per pair, trl's RewardTrainer) or kwise (InstructGPT, per ranking)",
    )
    lora: bool = option(
        False,
        "train LoRA adapters (peft task_type SEQ_CLS, so the score head is trained and saved in full)",
    )
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = option(0.0, "dropout inside the LoRA layers")
    lora_target_modules: tuple[str, ...] | None = option(
        None, "module names LoRA wraps, comma-separated; None lets peft pick for the architecture"
    )
    epochs: float = option(1.0, "passes over the training split")
    max_steps: int | None = option(None, "stop after this many optimizer steps (overrides epochs)")
    lr: float | None = option(
        None, "AdamW learning rate; None means 1e-5 for full fine-tuning and 1e-4 with LoRA"
    )
    lr_scheduler: str = option(
        "linear", "transformers scheduler name: linear, cosine, constant, ..."
    )
    warmup_steps: float = option(
        0, "warm-up optimizer steps, or the share of all steps when below 1"
    )
    weight_decay: float = option(0.0, "AdamW weight decay")
    batch_size: int = option(8, "pairs (pairwise) or rankings (kwise) per device and micro-batch")
    eval_batch_size: int | None = option(None, "per device at evaluation; None means batch_size")
    gradient_accumulation: int = option(1, "micro-batches per optimizer step")
    max_length: int = option(
        512,
        "tokens of prompt + response + EOS; longer responses are cut from the right (and counted)",
    )
    margin_scale: float = option(
        1.0,
        "m = margin_scale * the export's tier gap in -log σ(r_c - r_r - m); 0 is plain Bradley-Terry",
    )
    seed: int = option(0, "seeds the new score head, LoRA init and data order")
    eval_fraction: float = option(
        0.0, "share of prompts held out (stable hash) when the export has no test split"
    )
    eval_each_epoch: bool = option(
        True, "also evaluate on the test split after every epoch (logged to metrics.jsonl)"
    )
    early_stopping_patience: int = option(
        2,
        "with a test split: evaluate after every epoch, keep the best epoch's weights (validation "
        "accuracy, then loss) and stop after this many epochs without improvement; 0 keeps the last",
    )
    validation_fraction: float = option(
        0.1,
        "share of the training prompts (stable hash, drawn apart from the test split's) held out "
        "for early stopping to pick the epoch on, so the test split only reports; 0, or too few "
        "pairs to spare, picks on the test split (its accuracy is then optimistic)",
    )
    device: str = option(
        "auto",
        "auto (CUDA when present), cpu, cuda or cuda:N; under accelerate launch the launcher decides",
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = option(
        "auto",
        "fp32 master weights with bf16/fp16 compute, or no (fp32); auto: bf16 on CUDA that "
        "supports it, else no",
    )
    gradient_checkpointing: bool = option(
        False,
        "recompute activations to save memory (off by default: a loss of time on small models and CPUs)",
    )
    logging_steps: int = option(10, "optimizer steps between metric lines")
    save_steps: int = option(200, "optimizer steps between checkpoints (under out_dir/checkpoints)")
    save_total_limit: int | None = option(2, "checkpoints kept; older ones are deleted")
    resume: bool = option(
        True, "continue from the last checkpoint of the same run in out_dir; False starts over"
    )
    dataloader_workers: int = option(0, "DataLoader worker processes")

    def __post_init__(self) -> None:
        if self.mixed_precision == "fp32":  # the old spelling of "no"
            object.__setattr__(self, "mixed_precision", "no")
        checks = {
            "loss must be 'pairwise' or 'kwise'": self.loss in ("pairwise", "kwise"),
            "mixed_precision must be auto, no, bf16 or fp16": self.mixed_precision
            in ("auto", "no", "bf16", "fp16"),
            "epochs must be > 0": self.epochs > 0,
            "max_steps must be > 0": self.max_steps is None or self.max_steps > 0,
            "lr must be > 0": self.lr is None or self.lr > 0,
            "batch_size must be >= 1": self.batch_size >= 1,
            "eval_batch_size must be >= 1": self.eval_batch_size is None
            or self.eval_batch_size >= 1,
            "gradient_accumulation must be >= 1": self.gradient_accumulation >= 1,
            "max_length must be >= 4": self.max_length >= 4,
            "margin_scale must be >= 0": self.margin_scale >= 0,
            "eval_fraction must be in [0, 1)": 0 <= self.eval_fraction < 1,
            "validation_fraction must be in [0, 1)": 0 <= self.validation_fraction < 1,
            "lora_r must be >= 1": self.lora_r >= 1,
            "save_steps must be >= 1": self.save_steps >= 1,
            "logging_steps must be >= 1": self.logging_steps >= 1,
            "early_stopping_patience must be >= 0": self.early_stopping_patience >= 0,
        }
        self.refuse_failed(checks)


@dataclass
class RewardResult:
    """What a run produced and how good it is on the held-out split."""

    output_dir: Path
    accuracy: float | None
    """pairwise accuracy on the test split (labeled ties excluded; equal rewards count 1/2)"""
    eval_loss: float | None
    """weighted loss on the test split (for kwise, the same pairs: equal to the K-wise loss)"""
    accuracy_by_margin: dict[str, float]
    bias: float
    std: float
    truncated_count: int
    num_train_pairs: int
    num_eval_pairs: int
    data_sha256: str
    global_step: int = 0
    train_loss: float | None = None
    train_runtime_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None
    """1-based epoch whose weights were kept (early stopping); None without it"""
    epoch_evaluations: list[dict[str, Any]] = field(default_factory=list)
    """selection accuracy and loss after each epoch (early stopping)"""
    selection_split: str | None = None
    """the pairs early stopping picked the epoch on: validation (carved from the training
    prompts) or test (too few to spare; then `accuracy` is optimistic); None without it"""
    num_validation_pairs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data
