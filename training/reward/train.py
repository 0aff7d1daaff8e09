"""Reward-model training from a preference export (no Django).

Two losses, one model (`AutoModelForSequenceClassification` with one label):

- `pairwise`: Bradley-Terry per pair, -log σ(r_chosen - r_rejected - margin), through trl's
  RewardTrainer. trl cannot weight rows, so `PairwiseRewardTrainer` overrides `compute_loss`
  only to apply the export's `weight` (each annotation then counts once).
- `kwise`: the InstructGPT loss. One batch element is one ranking: its K completions are
  forwarded once and the loss is the mean over its pairs across tiers (C(K,2) for a strict
  ranking; ties give no pair), so a ranking costs K forwards instead of 2 * C(K,2).

Both read inputs rendered by `render_reward_input` (the function PPO scores with), evaluate
on the export's test split, store a bias so reference rewards have mean 0, and write
`training_config.json`, `metrics.jsonl`, `reward_normalization.json` and a `README.md` model
card beside the model. (`training_config.json` rather than `config.json`: the output
directory is a transformers model directory whose `config.json` is the model's.)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from training.modeling import load_tokenizer, lora_fan_in_fan_out, resolve_device
from training.reward.data import (
    PreferenceData,
    PreferencePair,
    RewardDataError,
    load_preferences,
    ranking_pair_indexes,
)
from training.reward.scoring import (
    NORMALIZATION_FILE,
    RewardModelScorer,
    load_reward_model,
    load_sequence_classifier,
    pad_right,
    render_reward_input,
    reward_statistics,
    score_token_ids,
    write_normalization,
)

__all__ = [
    "RewardConfig",
    "RewardDataError",
    "RewardModelScorer",
    "RewardResult",
    "kwise_loss",
    "load_reward_model",
    "pairwise_loss",
    "render_reward_input",
    "train_reward_model",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
# Fields that define what a run trains; a checkpoint of another run must not be resumed.
RUN_IDENTITY = ("base_model", "data_sha256", "loss", "lora")


# --------------------------------------------------------------------------- config and result


@dataclass(frozen=True)
class RewardConfig:
    """Hyperparameters of one reward-model run; all of them are logged in training_config.json."""

    loss: str = "pairwise"
    """"pairwise" (Bradley-Terry per pair, trl's RewardTrainer) or "kwise" (InstructGPT, per ranking)"""
    lora: bool = False
    """train LoRA adapters (peft task_type SEQ_CLS, so the score head is trained and saved in full)"""
    lora_r: int = 16
    """LoRA rank"""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)"""
    lora_dropout: float = 0.0
    """dropout inside the LoRA layers"""
    lora_target_modules: tuple[str, ...] | None = None
    """module names LoRA wraps; None lets peft pick its default for the architecture"""
    epochs: float = 1.0
    """passes over the training split"""
    max_steps: int | None = None
    """stop after this many optimizer steps (overrides epochs)"""
    lr: float | None = None
    """AdamW learning rate; None means 1e-5 for full fine-tuning and 1e-4 with LoRA"""
    lr_scheduler: str = "linear"
    """transformers scheduler name: linear, cosine, constant, ..."""
    warmup_steps: float = 0
    """warm-up optimizer steps, or the share of all steps when below 1"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    batch_size: int = 8
    """pairs (pairwise) or rankings (kwise) per device and micro-batch"""
    eval_batch_size: int | None = None
    """per device at evaluation; None means batch_size"""
    gradient_accumulation: int = 1
    """micro-batches per optimizer step"""
    max_length: int = 512
    """tokens of prompt + response + EOS; longer responses are cut from the right (and counted)"""
    margin_scale: float = 1.0
    """m = margin_scale * the export's tier gap in -log σ(r_c - r_r - m); 0 is plain Bradley-Terry"""
    seed: int = 0
    """seeds the new score head, LoRA init and data order"""
    eval_fraction: float = 0.0
    """share of prompts held out (stable hash) when the export has no test split"""
    eval_each_epoch: bool = True
    """also evaluate on the test split after every epoch (logged to metrics.jsonl)"""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu" or "cuda"; under accelerate launch the launcher decides"""
    precision: str = "auto"
    """"auto" (bf16 on CUDA that supports it, else fp32), "fp32", "bf16" or "fp16" mixed precision"""
    gradient_checkpointing: bool = False
    """recompute activations to save memory (off by default: a loss of time on small models and CPUs)"""
    logging_steps: int = 10
    """optimizer steps between metric lines"""
    save_steps: int = 200
    """optimizer steps between checkpoints (under out_dir/checkpoints)"""
    save_total_limit: int | None = 2
    """checkpoints kept; older ones are deleted"""
    resume: bool = True
    """continue from the last checkpoint of the same run in out_dir; False starts over"""
    dataloader_workers: int = 0
    """DataLoader worker processes"""

    def __post_init__(self) -> None:
        checks = {
            "loss must be 'pairwise' or 'kwise'": self.loss in ("pairwise", "kwise"),
            "precision must be auto, fp32, bf16 or fp16": self.precision
            in ("auto", "fp32", "bf16", "fp16"),
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
            "lora_r must be >= 1": self.lora_r >= 1,
            "save_steps must be >= 1": self.save_steps >= 1,
            "logging_steps must be >= 1": self.logging_steps >= 1,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("invalid RewardConfig: " + "; ".join(failed))

    @property
    def learning_rate(self) -> float:
        """The learning rate actually used."""
        if self.lr is not None:
            return self.lr
        return 1e-4 if self.lora else 1e-5

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RewardConfig:
        """Build from command options: unknown keys (verbosity, out, ...) and None values are ignored."""
        aliases = {
            "learning_rate": "lr",
            "num_train_epochs": "epochs",
            "gradient_accumulation_steps": "gradient_accumulation",
        }
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in options.items():
            name = aliases.get(key.replace("-", "_"), key.replace("-", "_"))
            if name in names and value is not None:
                values[name] = value
        if isinstance(values.get("lora_target_modules"), str):
            values["lora_target_modules"] = tuple(
                m.strip() for m in values["lora_target_modules"].split(",") if m.strip()
            )
        elif values.get("lora_target_modules") is not None:
            values["lora_target_modules"] = tuple(values["lora_target_modules"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field, plus the resolved learning rate."""
        data = dataclasses.asdict(self)
        data["learning_rate"] = self.learning_rate
        return data


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


# --------------------------------------------------------------------------- losses (pure)


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum()


def pairwise_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bradley-Terry loss -log σ(r_c - r_r - m), averaged with weights (sum w·l / sum w); all (B,)."""
    logits = chosen - rejected  # (B,)
    if margin is not None:
        logits = logits - margin.to(logits.dtype)
    return _weighted_mean(-F.logsigmoid(logits), weight)


def kwise_loss(
    rewards: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    group: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """InstructGPT K-wise loss: mean over each ranking's pairs, then weighted mean over rankings.

    rewards (N,) one per completion of the batch; better, worse (P,) index rewards, group (P,)
    is the ranking of each pair, margin (P,); weight (G,) per ranking.
    """
    logits = rewards[better] - rewards[worse]  # (P,)
    if margin is not None:
        logits = logits - margin.to(logits.dtype)
    losses = -F.logsigmoid(logits)  # (P,)
    num_groups = weight.shape[0] if weight is not None else int(group.max()) + 1
    sums = losses.new_zeros(num_groups).index_add(0, group, losses)  # (G,)
    counts = torch.bincount(group, minlength=num_groups)  # (G,)
    has_pairs = counts > 0  # a ranking that is one tie has no pair and no say
    per_group = sums[has_pairs] / counts[has_pairs].to(sums.dtype)
    return _weighted_mean(per_group, None if weight is None else weight[has_pairs])


# --------------------------------------------------------------------------- collators and trainers


@dataclass
class WeightedPreferenceCollator(DataCollatorForPreference):
    """trl's preference collator (chosen rows then rejected rows), plus each pair's weight."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        batch["weight"] = torch.tensor([e["weight"] for e in examples], dtype=torch.float)
        return batch


@dataclass
class RankingCollator:
    """Flattens rankings into one padded batch of completions plus the pair indexes between them."""

    pad_token_id: int
    margin_scale: float = 1.0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences: list[list[int]] = []
        better, worse, group, gap = [], [], [], []
        for g, example in enumerate(examples):
            offset = len(sequences)
            for i, j, tier_gap in ranking_pair_indexes(example["tier_of"]):
                better.append(offset + i)
                worse.append(offset + j)
                group.append(g)
                gap.append(tier_gap)
            sequences.extend(example["completion_ids"])
        input_ids, attention_mask = pad_right(sequences, self.pad_token_id)  # (N, T)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "better": torch.tensor(better, dtype=torch.long),  # (P,)
            "worse": torch.tensor(worse, dtype=torch.long),  # (P,)
            "group": torch.tensor(group, dtype=torch.long),  # (P,)
            "weight": torch.tensor([e["weight"] for e in examples], dtype=torch.float),  # (G,)
        }
        if self.margin_scale:
            batch["margin"] = torch.tensor(gap, dtype=torch.float) * self.margin_scale  # (P,)
        return batch


class _PretokenizedRewardTrainer(RewardTrainer):
    """RewardTrainer on rows already rendered by `render_reward_input`.

    trl's own preprocessing would render differently from PPO's scoring and silently drop
    rows over max_length; ours truncates and counts them instead.
    """

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # noqa: ANN001
        return dataset


class PairwiseRewardTrainer(_PretokenizedRewardTrainer):
    """trl's RewardTrainer with the export's per-pair weights (the only change to its loss)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        weight = inputs.pop("weight")  # (B,)
        # trl's pass computes the rewards and logs accuracy/margins; its unweighted loss is replaced.
        _, outputs = super().compute_loss(model, inputs, return_outputs=True)
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)  # (B,), (B,)
        loss = pairwise_loss(chosen, rejected, margin=inputs.get("margin"), weight=weight)
        return (loss, outputs) if return_outputs else loss


class KwiseRewardTrainer(_PretokenizedRewardTrainer):
    """RewardTrainer whose batch elements are whole rankings (InstructGPT's K-wise loss)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        mode = "train" if self.model.training else "eval"
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        )
        rewards = outputs.logits.squeeze(-1)  # (N,)
        better, worse = inputs["better"], inputs["worse"]
        loss = kwise_loss(
            rewards,
            better,
            worse,
            inputs["group"],
            margin=inputs.get("margin"),
            weight=inputs["weight"],
        )
        # The same figures trl logs for pairwise runs, so both losses read alike in metrics.jsonl.
        if mode == "train":
            tokens = (
                self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            )
            self._total_train_tokens += tokens
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            diff = rewards[better] - rewards[worse]
            for name, value in (
                ("accuracy", (diff > 0).float().mean()),
                ("margin", diff.mean()),
                ("mean_reward", rewards.mean()),
            ):
                self._metrics[mode][name].append(
                    self.accelerator.gather_for_metrics(value).mean().item()
                )
        return (loss, outputs) if return_outputs else loss


class _MetricsCallback(TrainerCallback):
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


# --------------------------------------------------------------------------- data preparation


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def _held_out(prompt: Any, fraction: float) -> bool:
    """Stable per-prompt assignment to the test split (same prompt, same side, every run)."""
    import hashlib

    digest = hashlib.sha256(_prompt_key(prompt).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _apply_eval_fraction(data: PreferenceData, fraction: float) -> None:
    if fraction <= 0 or data.split_pairs("test"):
        return
    for row in data.rankings or data.pairs:
        if _held_out(row.prompt, fraction):
            row.split = "test"
    if not data.split_pairs("train"):
        raise RewardDataError(f"{data.source}: eval_fraction={fraction} left no training rows")


class _Renderer:
    """Renders each distinct (prompt, response) once and counts truncations."""

    def __init__(self, tokenizer, max_length: int) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cache: dict[tuple[str, str], list[int]] = {}
        self.truncated = 0

    def __call__(self, prompt: Any, response: str) -> list[int]:
        key = (_prompt_key(prompt), response)
        if key not in self.cache:
            ids, truncated = render_reward_input(
                self.tokenizer, prompt, response, max_length=self.max_length
            )
            self.truncated += truncated
            self.cache[key] = ids
        return self.cache[key]


def _build_dataset(data: PreferenceData, split: str, config: RewardConfig, render: _Renderer):
    """The rows the trainer consumes for `split` (None when the split is empty)."""
    from datasets import Dataset

    if config.loss == "kwise":
        rows = [
            {
                "completion_ids": [render(r.prompt, c) for c in r.completions],
                "tier_of": r.tier_of(),
                "weight": r.weight,
            }
            for r in data.split_rankings(split)
        ]
    else:
        rows = [
            {
                "chosen_ids": render(p.prompt, p.chosen),
                "rejected_ids": render(p.prompt, p.rejected),
                "weight": p.weight,
                **({"margin": p.margin * config.margin_scale} if config.margin_scale else {}),
            }
            for p in data.split_pairs(split)
        ]
    return Dataset.from_list(rows) if rows else None


# --------------------------------------------------------------------------- evaluation


def evaluate_pairs(
    model: Any,
    pairs: list[PreferencePair],
    render: _Renderer,
    *,
    margin_scale: float,
    batch_size: int,
) -> dict[str, Any]:
    """Accuracy, weighted loss and accuracy by margin of `model` on `pairs`, each text scored once."""
    if not pairs:
        return {"accuracy": None, "eval_loss": None, "accuracy_by_margin": {}}
    inputs: dict[tuple[str, str], list[int]] = {}
    for p in pairs:
        for response in (p.chosen, p.rejected):
            key = (_prompt_key(p.prompt), response)
            if key not in inputs:
                inputs[key] = render(p.prompt, response)
    scores = score_token_ids(
        model, list(inputs.values()), render.tokenizer.pad_token_id, batch_size=batch_size
    )
    by_key = dict(zip(inputs, scores))
    chosen = torch.tensor([by_key[(_prompt_key(p.prompt), p.chosen)] for p in pairs])  # (P,)
    rejected = torch.tensor([by_key[(_prompt_key(p.prompt), p.rejected)] for p in pairs])  # (P,)
    margin = torch.tensor([p.margin * margin_scale for p in pairs])
    weight = torch.tensor([p.weight for p in pairs])
    correct = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    groups: dict[str, list[float]] = defaultdict(list)
    for p, c in zip(pairs, correct.tolist()):
        groups[f"{p.margin:g}"].append(c)
    return {
        "accuracy": correct.mean().item(),
        "eval_loss": pairwise_loss(chosen, rejected, margin=margin, weight=weight).item(),
        "accuracy_by_margin": {m: sum(v) / len(v) for m, v in sorted(groups.items())},
    }


# --------------------------------------------------------------------------- the run


def _training_arguments(config: RewardConfig, out_dir: Path, *, has_eval: bool):
    from trl import RewardConfig as TrlRewardConfig

    device = resolve_device(config.device)
    use_cpu = device.type == "cpu"
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if not use_cpu and torch.cuda.is_bf16_supported() else "fp32"
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
        eval_strategy="epoch" if has_eval and config.eval_each_epoch else "no",
        prediction_loss_only=True,
        remove_unused_columns=False,  # the collators read "weight", which trl would drop
        max_length=None,  # rows are already truncated; trl would drop the long ones
        disable_dropout=True,
        dataloader_num_workers=config.dataloader_workers,
    )


def _prepare_out_dir(out_dir: Path, run: dict[str, Any], resume: bool) -> str | None:
    """Create out_dir; return the checkpoint to resume from, refusing one from a different run."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = out_dir / CHECKPOINTS_DIR
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last is not None and resume:
        previous = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        changed = [k for k in RUN_IDENTITY if previous.get(k) != run.get(k)]
        if changed:
            raise ValueError(
                f"{out_dir} holds a checkpoint of a different run ({', '.join(changed)} changed): "
                "choose another output directory or pass resume=False to start over"
            )
        step = int(Path(last).name.rsplit("-", 1)[1])
        metrics = out_dir / METRICS_FILE
        if metrics.is_file():  # drop lines logged after the checkpoint: they will be logged again
            lines = metrics.read_text(encoding="utf-8").splitlines()
            kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
            metrics.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
        return last
    if checkpoints.is_dir():
        shutil.rmtree(checkpoints)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).write_text("", encoding="utf-8")
    return None


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


def train_reward_model(
    data: str | Path,
    base_model: str,
    out_dir: str | Path,
    config: RewardConfig | None = None,
    *,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
) -> RewardResult:
    """Fit a reward model on an export (directory or pairs/rankings file) and save it to out_dir."""
    from peft import LoraConfig
    from transformers import set_seed

    config = config or RewardConfig()
    out_dir = Path(out_dir).expanduser()

    # Validate everything before writing anything.
    prefs = load_preferences(data, loss=config.loss)
    _apply_eval_fraction(prefs, config.eval_fraction)
    tokenizer = load_tokenizer(base_model)
    tokenizer.padding_side = "right"  # what the collators do; saved with the model
    render = _Renderer(tokenizer, config.max_length)
    train_dataset = _build_dataset(prefs, "train", config, render)
    eval_dataset = _build_dataset(prefs, "test", config, render)
    train_pairs, eval_pairs = prefs.split_pairs("train"), prefs.split_pairs("test")
    if render.truncated:
        logger.warning(
            "%d reward inputs were truncated to %d tokens", render.truncated, config.max_length
        )

    import peft
    import transformers
    import trl

    run = {
        "base_model": str(base_model),
        "data": str(prefs.source),
        "data_sha256": prefs.sha256,
        "loss": config.loss,
        "lora": config.lora,
        "config": config.to_dict(),
        "manifest": prefs.manifest,
        "num_train_pairs": len(train_pairs),
        "num_eval_pairs": len(eval_pairs),
        "num_train_rankings": len(prefs.split_rankings("train")),
        "skipped_ties": prefs.skipped_ties,
        "truncated_count": render.truncated,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
    }
    checkpoint = _prepare_out_dir(out_dir, run, config.resume)
    (out_dir / CONFIG_FILE).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")

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
    trainer = trainer_cls(
        model=model,
        args=_training_arguments(config, out_dir, has_eval=eval_dataset is not None),
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_MetricsCallback(out_dir, on_metrics)],
    )
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out_dir))

    # Held-out figures and the normalization bias, from the in-memory model.
    eval_batch = config.eval_batch_size or config.batch_size * 2
    figures = evaluate_pairs(
        trainer.model, eval_pairs, render, margin_scale=config.margin_scale, batch_size=eval_batch
    )
    references = list(render.cache.values())  # every distinct (prompt, response) of the export
    raw = score_token_ids(trainer.model, references, tokenizer.pad_token_id, batch_size=eval_batch)
    bias, std = reward_statistics(raw)
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
    )
    if trainer.is_world_process_zero():
        write_normalization(
            out_dir, bias=bias, std=std, max_length=config.max_length, count=len(references)
        )
        final = {
            "step": result.global_step,
            "final": True,
            "accuracy": result.accuracy,
            "eval_loss": result.eval_loss,
            "accuracy_by_margin": result.accuracy_by_margin,
            "bias": bias,
            "std": std,
            "truncated_count": result.truncated_count,
        }
        with (out_dir / METRICS_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(final) + "\n")
        if on_metrics is not None:
            on_metrics(final)
        _write_model_card(out_dir, run, result)
    return result
