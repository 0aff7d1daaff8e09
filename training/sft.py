"""Supervised fine-tuning on demonstrations with trl's SFTTrainer, loss on assistant turns only (no Django).

Data: `sft.jsonl` as `export_demonstrations` writes it (trl's conversational format, one
`{"messages": [...]}` row per demonstration, `manifest.json` beside it with "format": "sft"),
or such a file anywhere. Every row is validated before anything is written; a bad row fails
with `file:line` and the problem.

Loss on the assistant turns only: each assistant turn is one example, the turns before it
rendered as generation renders a prompt (`training.modeling.encode_prompt`, the chat
template's generation prompt included, or `format_prompt` without a template) and the turn
tokenized on its own with EOS after it (`encode_completion`, as the reward model reads
answers); labels on the turn alone, -100 elsewhere. The model learns exactly the tokens it
is to sample after that prompt, whatever the template: trl's own paths render the whole
conversation (or prompt + answer as one string) and cut it where the prompt's tokens end,
which for a template whose generation prompt ends in a space, or tokens that merge across
the boundary, trains other tokens than generation continues with. It also needs no
`{% generation %}` markers. An example whose prompt alone fills `max_length` is left out
and counted; a longer answer is cut at `max_length` (its start kept).

With LoRA the adapter is trained, then merged into the weights that are saved, so the output
is an ordinary model folder every step loads (the adapter alone is kept under `adapter/`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.cli import TrainConfig, option

logger = logging.getLogger(__name__)

SFT_FILE = "sft.jsonl"
CONFIG_FILE = "training_config.json"
ADAPTER_DIR = "adapter"
ROLES = ("system", "user", "assistant")
OPTION_ALIASES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "gradient_accumulation_steps": "gradient_accumulation",
}


class SFTDataError(ValueError):
    """Demonstrations cannot be trained on; the message names the file (and line) and the problem."""


@dataclass(frozen=True)
class SFTTrainConfig(TrainConfig):
    """Hyperparameters of one SFT run; all of them are logged in training_config.json."""

    NAME = "SFT config"
    DEFAULT_LR = (2e-5, 2e-4)
    ALIASES = OPTION_ALIASES

    lora: bool = option(False, "train LoRA adapters (peft), merged into the saved weights")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = option(0.0, "dropout inside the LoRA layers")
    lora_target_modules: tuple[str, ...] | None = option(
        None, "module names LoRA wraps, comma-separated; None lets peft pick for the architecture"
    )
    epochs: float = option(3.0, "passes over the demonstrations")
    max_steps: int | None = option(None, "stop after this many optimizer steps (overrides epochs)")
    lr: float | None = option(
        None, "AdamW learning rate; None means 2e-5 for full fine-tuning and 2e-4 with LoRA"
    )
    lr_scheduler: str = option(
        "linear", "transformers scheduler name: linear, cosine, constant, ..."
    )
    warmup_steps: float = option(
        0, "warm-up optimizer steps, or the share of all steps when below 1"
    )
    weight_decay: float = option(0.0, "AdamW weight decay")
    batch_size: int = option(8, "sequences per device and micro-batch")
    gradient_accumulation: int = option(1, "micro-batches per optimizer step")
    max_length: int = option(1024, "tokens per sequence; longer ones are cut from the right")
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
            "epochs must be > 0": self.epochs > 0,
            "max_steps must be > 0": self.max_steps is None or self.max_steps > 0,
            "lr must be > 0": self.lr is None or self.lr > 0,
            "batch_size must be >= 1": self.batch_size >= 1,
            "gradient_accumulation must be >= 1": self.gradient_accumulation >= 1,
            "max_length must be >= 4": self.max_length >= 4,
            "lora_r must be >= 1": self.lora_r >= 1,
            "precision must be auto, fp32, bf16 or fp16": self.precision
            in ("auto", "fp32", "bf16", "fp16"),
        }
        self.refuse_failed(checks)


@dataclass
class Demonstrations:
    """Validated demonstrations and where they came from."""

    source: Path
    sha256: str
    conversations: list[list[dict[str, str]]]
    manifest: dict[str, Any] | None = None


@dataclass
class SFTResult:
    output_dir: Path
    mode: str  # "assistant_turns": one example per assistant turn (MASKING)
    num_examples: int
    global_step: int
    train_loss: float | None
    first_loss: float | None
    last_loss: float | None
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def resolve_sft_file(data: str | Path) -> Path:
    """`data` is sft.jsonl itself or a folder holding it (an export folder)."""
    path = Path(data).expanduser()
    if not path.exists():
        raise SFTDataError(f"{path}: no such file or directory")
    if path.is_dir():
        candidate = path / SFT_FILE
        if not candidate.is_file():
            raise SFTDataError(
                f"{path}: no {SFT_FILE} in this folder (write one with export_demonstrations)"
            )
        return candidate
    if path.suffix not in (".jsonl", ".json"):
        raise SFTDataError(f"{path}: unknown format {path.suffix or '(no suffix)'!r}; use .jsonl")
    return path


def parse_conversation(row: Any, where: str) -> list[dict[str, str]]:
    """One row's messages, or SFTDataError naming `where` (file:line)."""
    if not isinstance(row, dict):
        raise SFTDataError(f"{where}: a row must be a JSON object")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SFTDataError(f"{where}: 'messages' must be a non-empty list (found {sorted(row)})")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise SFTDataError(f"{where}: messages[{i}] must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise SFTDataError(
                f"{where}: messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}"
            )
        if not isinstance(content, str):
            raise SFTDataError(f"{where}: messages[{i}].content must be a string")
        out.append({"role": role, "content": content})
    answers = [m for m in out if m["role"] == "assistant"]
    if not answers:
        raise SFTDataError(f"{where}: no assistant message: nothing to train on")
    if not any(m["content"].strip() for m in answers):
        raise SFTDataError(f"{where}: every assistant message is empty")
    if out[0]["role"] == "assistant":
        raise SFTDataError(f"{where}: the conversation starts with the assistant (no prompt)")
    return out


def load_demonstrations(data: str | Path) -> Demonstrations:
    """Load and validate every row; raise SFTDataError (file:line) on the first bad one."""
    from annotation.datafiles.digest import sha256_path
    from annotation.datafiles.jsonl import JsonlError, iter_jsonl

    path = resolve_sft_file(data)
    manifest = None
    manifest_path = path.parent / "manifest.json"
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SFTDataError(f"{manifest_path}: invalid JSON ({exc.msg})") from None
        kind = manifest.get("format") if isinstance(manifest, dict) else None
        if kind not in (None, "sft"):
            raise SFTDataError(
                f"{manifest_path}: format {kind!r}, not a demonstrations export ('sft')"
            )
    conversations = []
    try:
        for number, row in iter_jsonl(path):
            conversations.append(parse_conversation(row, f"{path}:{number}"))
    except JsonlError as exc:
        raise SFTDataError(str(exc)) from None
    if not conversations:
        raise SFTDataError(f"{path}: the file is empty (no rows)")
    return Demonstrations(
        source=path, sha256=sha256_path(path), conversations=conversations, manifest=manifest
    )


# What `run["masking"]` records: one example per assistant turn, labels on the turn.
MASKING = "assistant_turns"


def build_rows(
    conversations: Iterable[list[dict[str, str]]], tokenizer: Any, max_length: int | None
) -> tuple[list[dict[str, list[int]]], int]:
    """Tokenized SFTTrainer rows, one per assistant turn (`input_ids`, `labels`), and how
    many turns were left out because their prompt alone fills `max_length`."""
    from training.modeling import encode_completion, encode_prompt

    rows, dropped = [], 0
    for messages in conversations:
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i == 0:
                continue
            prompt_ids = encode_prompt(tokenizer, messages[:i])
            if max_length is not None and len(prompt_ids) >= max_length:
                dropped += 1
                continue
            answer_ids = encode_completion(tokenizer, message["content"])
            ids = (prompt_ids + answer_ids)[:max_length]
            labels = ([-100] * len(prompt_ids) + answer_ids)[:max_length]
            rows.append({"input_ids": ids, "labels": labels})
    return rows, dropped


# --------------------------------------------------------------------------- training


def trainer_arguments(config: Any, out_dir: Path) -> dict[str, Any]:
    """TrainingArguments fields shared by the SFT and DPO runs (CPU here, accelerate on GPUs)."""
    import torch

    from training.modeling import resolve_device

    use_cpu = resolve_device(config.device).type == "cpu"
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if not use_cpu and torch.cuda.is_bf16_supported() else "fp32"
    return dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=use_cpu,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=config.gradient_checkpointing,
        report_to=[n for n in ("tensorboard",) if importlib.util.find_spec(n) is not None],
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
    )


def lora_config(config: Any, model: Any):
    """peft LoraConfig for a causal LM from the lora_* fields."""
    from peft import LoraConfig

    from training.modeling import lora_fan_in_fan_out

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules) if config.lora_target_modules else None,
        fan_in_fan_out=lora_fan_in_fan_out(model),
    )


def save_policy(trainer: Any, tokenizer: Any, out_dir: Path, lora: bool) -> None:
    """Save a plain model folder; with LoRA the adapter is merged (and also kept under adapter/)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if lora:
        model.save_pretrained(str(out_dir / ADAPTER_DIR))
        model = model.merge_and_unload()
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def loss_summary(history: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    losses = [r["loss"] for r in history if isinstance(r.get("loss"), (int, float))]
    return (losses[0], losses[-1]) if losses else (None, None)


def clamp_max_length(config: Any, model_path: str) -> Any:
    """Cap max_length at the model's position embeddings (longer inputs would index past them)."""
    from training.reward.train import model_max_positions

    limit = model_max_positions(model_path)
    if limit is not None and (config.max_length is None or config.max_length > limit):
        logger.info("max_length %s exceeds %s's %d positions: using %d", config.max_length,
                    model_path, limit, limit)  # fmt: skip
        return dataclasses.replace(config, max_length=limit)
    return config


def build_sft_trainer(
    demos: Demonstrations,
    base_model: str,
    out_dir: Path,
    config: SFTTrainConfig,
    callbacks: list[Any] = (),
):
    """The SFTTrainer with its tokenized dataset (tests read `trainer.train_dataset` labels)."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from training.modeling import load_causal_lm

    set_seed(config.seed)
    config = clamp_max_length(config, base_model)
    model, tokenizer = load_causal_lm(base_model, device="cpu", dtype="float32")
    rows, dropped = build_rows(demos.conversations, tokenizer, config.max_length)
    if dropped:
        logger.warning(
            "%d assistant turns left out: their prompt alone fills max_length %d",
            dropped, config.max_length,
        )  # fmt: skip
    if not rows:
        raise SFTDataError(
            f"{demos.source}: no assistant turn to learn"
            + (f" (every prompt fills max_length {config.max_length})" if dropped else "")
        )
    args = SFTConfig(
        **trainer_arguments(config, out_dir),
        max_length=config.max_length,
        packing=False,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(config, model) if config.lora else None,
        callbacks=list(callbacks),
    )
    return trainer, tokenizer, MASKING


def train_sft(
    data: str | Path | Demonstrations,
    base_model: str,
    out_dir: str | Path,
    config: SFTTrainConfig | None = None,
    *,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
) -> SFTResult:
    """Fine-tune `base_model` on demonstrations and save the policy to out_dir."""
    import peft
    import torch
    import transformers
    import trl

    from training.distributed import refuse_zero3
    from training.modeling import model_reference
    from training.reward.train import MetricsCallback, prepare_out_dir_once

    config = config or SFTTrainConfig()
    out_dir = Path(out_dir).expanduser()
    demos = data if isinstance(data, Demonstrations) else load_demonstrations(data)
    config = clamp_max_length(config, base_model)
    run = {
        "method": "sft",
        "base_model": str(base_model),
        "base_model_path": model_reference(base_model),  # what a resume compares
        "data": str(demos.source),
        "data_sha256": demos.sha256,
        "loss": "sft",
        "lora": config.lora,
        "config": config.to_dict(),
        "manifest": demos.manifest,
        "conversations": len(demos.conversations),
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

    trainer, tokenizer, mode = build_sft_trainer(
        demos, base_model, out_dir, config, [MetricsCallback(out_dir, record)]
    )
    refuse_zero3(trainer.accelerator)
    run["masking"] = mode
    run["num_processes"] = trainer.args.world_size
    checkpoint = prepare_out_dir_once(trainer.args, out_dir, run, config.resume)
    output = trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.is_world_process_zero():
        save_policy(trainer, tokenizer, out_dir, config.lora)
    first, last = loss_summary(history)
    return SFTResult(
        output_dir=out_dir,
        mode=mode,
        num_examples=len(trainer.train_dataset),
        global_step=output.global_step,
        train_loss=output.training_loss,
        first_loss=first,
        last_loss=last,
        metrics=dict(output.metrics),
    )
