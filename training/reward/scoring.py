"""Reward-model input rendering, loading and scoring, shared by training, evaluation and PPO.

`render_reward_input` is THE way a (prompt, response) becomes reward-model tokens: the prompt
rendered by `format_prompt` (its chat template when the tokenizer has one), the response,
then one EOS, whose position is where the sequence-classification head reads the reward.
Training, evaluation, the normalization bias and PPO all go through it, and all pad on the
right (positions then match training for models without explicit position ids).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training.modeling import (
    Prompt,
    encode_prompt,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    set_pad_token_id,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

NORMALIZATION_FILE = "reward_normalization.json"
DEFAULT_MAX_LENGTH = 512


def normalize_response(response: str) -> str:
    """The response as the reward model reads it: surrounding whitespace removed.

    Candidates are stripped before they are stored (so the reward model trains on stripped
    text), while a PPO response is decoded as sampled, often with a leading space: unstripped,
    the reward model would see other tokens after a plain-text prompt (`Ġ1` instead of `1`).
    """
    return response.strip()


def render_reward_input(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str, *, max_length: int
) -> tuple[list[int], bool]:
    """Token ids of prompt + response + EOS for the reward model, and whether anything was cut.

    The response is normalised first (`normalize_response`), the same for training and PPO.

    A response too long for `max_length` is truncated from the right (its EOS is kept, so the
    reward is always read at an EOS). A prompt so long that fewer than max_length // 4 response
    tokens would fit is cut from the left, keeping the end of the prompt next to the response.
    """
    if max_length < 4:
        raise ValueError(f"max_length must be at least 4, got {max_length}")
    if tokenizer.eos_token_id is None:
        raise ValueError("the reward tokenizer has no EOS token")
    prompt_ids = encode_prompt(tokenizer, prompt)
    response_ids = list(
        tokenizer(normalize_response(response), add_special_tokens=False)["input_ids"]
    )
    budget = max_length - 1  # room for the EOS
    if len(prompt_ids) + len(response_ids) <= budget:
        return [*prompt_ids, *response_ids, tokenizer.eos_token_id], False
    keep_response = min(len(response_ids), max_length // 4)
    if len(prompt_ids) > budget - keep_response:
        prompt_ids = prompt_ids[len(prompt_ids) - (budget - keep_response) :]
    response_ids = response_ids[: budget - len(prompt_ids)]
    return [*prompt_ids, *response_ids, tokenizer.eos_token_id], True


def pad_right(
    sequences: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into (input_ids, attention_mask), both (B, T)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


@torch.no_grad()
def score_token_ids(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    pad_token_id: int,
    *,
    batch_size: int = 16,
) -> list[float]:
    """Raw rewards (B,) of already rendered sequences, batched by similar length."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    rewards = [0.0] * len(sequences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        input_ids, attention_mask = pad_right([sequences[i] for i in chunk], pad_token_id)
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            use_cache=False,
        ).logits  # (b, 1)
        for i, value in zip(chunk, logits[:, 0].float().cpu().tolist()):
            rewards[i] = value
    model.train(was_training)
    return rewards


class RewardModelScorer:
    """A trained reward model plus its tokenizer and normalization: text in, rewards out.

    `model` and `tokenizer` are public so PPO can initialise its value model from them.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        bias: float = 0.0,
        std: float = 1.0,
        batch_size: int = 16,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.bias = bias
        self.std = std
        self.batch_size = batch_size
        self.truncated_count = 0  # inputs cut to max_length since this scorer was made

    @property
    def device(self) -> torch.device:
        """Device of the model's weights."""
        return next(self.model.parameters()).device

    def encode(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[list[int]]:
        """Render (prompt, response) pairs exactly as in training."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        sequences = []
        for prompt, response in zip(prompts, responses):
            ids, truncated = render_reward_input(
                self.tokenizer, prompt, response, max_length=self.max_length
            )
            self.truncated_count += truncated
            sequences.append(ids)
        return sequences

    def score(
        self, prompts: Sequence[Prompt], responses: Sequence[str], *, normalize: bool = True
    ) -> list[float]:
        """Rewards of each response to its prompt; `normalize` subtracts the stored bias (mean 0)."""
        if not prompts:
            return []
        raw = score_token_ids(
            self.model,
            self.encode(prompts, responses),
            self.tokenizer.pad_token_id,
            batch_size=self.batch_size,
        )
        return [r - self.bias for r in raw] if normalize else raw


def reward_statistics(rewards: Sequence[float]) -> tuple[float, float]:
    """(mean, population std) of rewards; std falls back to 1.0 when it is zero or undefined."""
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    return mean, (std if std > 0 else 1.0)


def write_normalization(
    out_dir: Path, *, bias: float, std: float, max_length: int, count: int
) -> None:
    """Store what the loader needs to turn raw scores into normalized rewards."""
    payload = {
        "bias": bias,
        "std": std,
        "max_length": max_length,
        "reference_count": count,
        "note": "score - bias has mean 0 over the reference responses (InstructGPT)",
    }
    (out_dir / NORMALIZATION_FILE).write_text(
        json.dumps(payload, indent=2) + "\n", encoding="utf-8"
    )


@contextlib.contextmanager
def _quiet_head_swap(path: str) -> Iterator[None]:
    """Silence the load report of a causal LM checkpoint loaded with a new score head.

    Its lm_head is unused and its score head missing: both expected, so transformers' report
    (a warning) would only alarm. Other checkpoints keep their report.
    """
    from transformers import AutoConfig
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    architectures = getattr(AutoConfig.from_pretrained(path), "architectures", None) or []
    if not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        yield
        return
    hf_logger = logging.getLogger("transformers.modeling_utils")
    # A filter, not a higher level: transformers checks tensor-parallel plans (and warns)
    # whenever this logger's level is WARNING or above.
    report_filter = _DropLoadReport()
    hf_logger.addFilter(report_filter)
    try:
        with suppress_seqcls_warning():
            yield
    finally:
        hf_logger.removeFilter(report_filter)


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def _load_sequence_classifier(path: str, **kwargs: Any) -> PreTrainedModel:
    """AutoModelForSequenceClassification.from_pretrained, quiet about the expected head keys."""
    from transformers import AutoModelForSequenceClassification

    with _quiet_head_swap(path):
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)


def load_sequence_classifier(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, *, dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """A one-label sequence classifier from any checkpoint, matched to `tokenizer`'s pad token."""
    model = _load_sequence_classifier(str(path), num_labels=1, dtype=dtype)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        # load_tokenizer added a pad token distinct from EOS: give it an embedding row.
        model.resize_token_embeddings(len(tokenizer))
    # The head reads the last non-pad token, so the model must know which id is padding.
    set_pad_token_id(model, tokenizer.pad_token_id)
    return model


def load_reward_model(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    merged: bool = False,
    batch_size: int = 16,
) -> RewardModelScorer:
    """Load a reward model saved by `train_reward_model` (full or LoRA) or any one-label classifier.

    `merged=True` folds a LoRA adapter into the base weights and returns a plain model (what
    PPO wants to copy into its value model). `dtype` defaults to bf16 on CUDA, else fp32.
    """
    directory = Path(path).expanduser()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(torch_device, dtype)
    tokenizer = load_tokenizer(directory)
    adapter_config = directory / "adapter_config.json"
    if adapter_config.is_file():
        from peft import PeftModel

        base = json.loads(adapter_config.read_text(encoding="utf-8"))["base_model_name_or_path"]
        base_model = load_sequence_classifier(base, tokenizer, dtype=torch_dtype)
        model = PeftModel.from_pretrained(base_model, str(directory))
        if merged:
            model = model.merge_and_unload()
    else:
        model = load_sequence_classifier(directory, tokenizer, dtype=torch_dtype)
    norm_file = directory / NORMALIZATION_FILE
    norm = json.loads(norm_file.read_text(encoding="utf-8")) if norm_file.is_file() else {}
    model.to(torch_device)
    model.eval()
    return RewardModelScorer(
        model,
        tokenizer,
        max_length=int(norm.get("max_length", DEFAULT_MAX_LENGTH)),
        bias=float(norm.get("bias", 0.0)),
        std=float(norm.get("std", 1.0)),
        batch_size=batch_size,
    )
