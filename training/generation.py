"""Sample K distinct candidate completions per prompt from a causal LM, for labelers to rank.

Reproducibility is per prompt, not per batch: every sample gets its own seed derived from
(config seed, rendered prompt, sample index), and its tokens are drawn with the Gumbel-max
trick from a generator seeded with it. A prompt therefore gets the same candidates alone, in any
batch, after a crash and resume, or in a resample round, on the same device and dtype.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from training.modeling import (
    Prompt,
    config_max_positions,
    encode_prompt,
    format_prompt,
    load_causal_lm,
)
from training.sampling import effective_settings, generate, neutral_generation_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

T = TypeVar("T")

FINISH_EOS = "eos"
FINISH_LENGTH = "length"


@dataclass(frozen=True)
class GenerationConfig:
    """How candidates are sampled; every field is recorded with the run."""

    num_candidates: int = 4  # K distinct completions wanted per prompt
    max_new_tokens: int = 128  # hard cap on completion length (finish_reason "length")
    temperature: float = 1.0  # logits are divided by this before sampling (> 0)
    top_p: float = 1.0  # nucleus sampling mass; 1.0 disables it
    batch_size: int = 32  # sequences per forward pass (prompts per chunk = batch_size // K)
    seed: int = 0  # base seed; each sample's seed derives from it and the prompt
    max_resample_rounds: int = 3  # extra rounds to replace duplicate or empty completions
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (bf16 on CUDA, else fp32), float32, bfloat16, float16
    max_prompt_tokens: int | None = None  # keep the last N prompt tokens; None: fit the model

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError("num_candidates must be at least 1")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if not self.temperature > 0:
            raise ValueError("temperature must be > 0 (distinct samples need randomness)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.max_resample_rounds < 0:
            raise ValueError("max_resample_rounds must be >= 0")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError("max_prompt_tokens must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    """One sampled completion and how it was made.

    `token_ids` are the tokens sampled, the end-of-sequence token included where the answer
    ended on one: `text` is decoded and stripped, and tokenising it again can give other
    tokens (a leading space after a plain-text prompt), so figures about what the model
    sampled (the held-out KL) read these. They are not stored with the candidate.
    """

    text: str
    metadata: dict[str, Any]
    token_ids: tuple[int, ...] = ()


@dataclass
class GenerationResult:
    """Candidates per prompt (same order as the prompts) and what fell short."""

    candidates: list[list[Candidate]]
    short: dict[int, int] = field(default_factory=dict)  # prompt index -> distinct found (< K)
    truncated: list[int] = field(default_factory=list)  # prompt indices cut to fit the model
    num_sampled: int = 0  # completions sampled, duplicates and empties included
    num_rejected: int = 0  # duplicates, empty completions and surplus resamples thrown away
    # prompt index -> its first empty completion (an EOS straight away, or only whitespace):
    # never a candidate, but what the model sampled (the held-out KL counts it).
    first_empty: dict[int, Candidate] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def num_candidates(self) -> int:
        """Total distinct candidates returned."""
        return sum(len(c) for c in self.candidates)


@dataclass(frozen=True)
class _Sample:
    """A row to generate: which prompt, which sample of it, and its own seed."""

    prompt_index: int
    sample_index: int
    seed: int
    input_ids: list[int]


def iter_batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield consecutive lists of at most `size` items."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def sample_seed(seed: int, prompt_key: str, sample_index: int) -> int:
    """Seed of one sample, derived from the base seed, the rendered prompt and the sample index."""
    digest = hashlib.sha256(f"{seed}\x00{sample_index}\x00{prompt_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class RowSeededSampler:
    """Logits processor that makes greedy decoding draw a sample per row from its own generator.

    Adding Gumbel noise to the (temperature-scaled, top-p filtered) logits and taking the
    argmax is an exact sample from their softmax. Each row's noise comes from a generator
    seeded for that row only, so a row's tokens do not depend on the other rows of the batch.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, vocab = scores.shape  # (B, V)
        if batch != len(self.generators):
            raise RuntimeError(f"expected {len(self.generators)} rows, got {batch}")
        uniform = torch.stack(
            [
                torch.rand(vocab, generator=g, device=scores.device, dtype=torch.float32)
                for g in self.generators
            ]
        )  # (B, V)
        tiny = torch.finfo(torch.float32).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny, max=1.0 - 1e-7)))
        return scores.float() + gumbel


class BanTokens:
    """Logits processor that makes the given token ids impossible to sample."""

    def __init__(self, token_ids: Sequence[int]) -> None:
        self.token_ids = list(token_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[:, self.token_ids] = -float("inf")
        return scores


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and the model's generation EOS list."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    if not ids:
        raise ValueError("the tokenizer has no EOS token, so completions could never finish")
    return sorted(ids)


class _Sampler:
    """Runs batches of `_Sample` rows through `model.generate` and decodes the completions."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: GenerationConfig,
        model_name: str,
    ) -> None:
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.model_name = model_name
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: load the model with load_causal_lm")
        self.pad_id = int(tokenizer.pad_token_id)
        # Sampling is done by RowSeededSampler, so generate() itself runs greedy decoding with
        # every processor off: the checkpoint's own generation_config.json (repetition penalty,
        # no_repeat_ngram_size, min_length...) stays out, see training.sampling.
        self.hf_config = neutral_generation_config(
            max_new_tokens=config.max_new_tokens,
            do_sample=False,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        # The pad token only exists to pad; a model (or a freshly added pad embedding) must never
        # emit it, or the completion would be cut short when padding is stripped.
        self.warpers: list[Any] = [] if self.pad_id in self.eos_ids else [BanTokens([self.pad_id])]
        if config.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(config.top_p))
        self._processors = LogitsProcessorList
        # Every setting the candidates are sampled with, as generation merges them, then what
        # our own processors add on top (they do the sampling): recorded on each candidate.
        self.settings = {
            **effective_settings(model, self.hf_config),
            "do_sample": True,
            "sampler": "gumbel-max, one seeded generator per sample",
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": 0,
            "eos_token_id": self.eos_ids,
            "banned_token_ids": [] if self.pad_id in self.eos_ids else [self.pad_id],
        }

    def run(self, rows: list[_Sample]) -> list[tuple[str, int, str, tuple[int, ...]]]:
        """Generate one batch; return (text, num_tokens, finish_reason, token ids sampled, EOS
        included where it ended on one) per row, in order."""
        width = max(len(r.input_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (B, T)
        attention = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for i, row in enumerate(rows):
            # Left padding: every prompt ends at the last column, where generation continues.
            input_ids[i, width - len(row.input_ids) :] = torch.tensor(row.input_ids)
            attention[i, width - len(row.input_ids) :] = 1
        processors = self._processors(
            [*self.warpers, RowSeededSampler([r.seed for r in rows], self.device)]
        )
        with torch.inference_mode():
            output = generate(
                self.model,
                self.hf_config,
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                logits_processor=processors,
            )
        completions = output[:, width:].tolist()  # (B, new tokens)
        results = []
        for tokens in completions:
            finish, sampled = FINISH_LENGTH, tokens
            for pos, token in enumerate(tokens):
                if token in self.eos_ids:
                    tokens, sampled, finish = tokens[:pos], tokens[: pos + 1], FINISH_EOS
                    break
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            results.append((text, len(tokens), finish, tuple(sampled)))
        return results

    def metadata(self, row: _Sample, num_tokens: int, finish: str) -> dict[str, Any]:
        """Everything needed to reproduce and audit one candidate."""
        return {
            "model": self.model_name,
            "temperature": self.config.temperature,
            "top_p": self.config.top_p,
            "max_new_tokens": self.config.max_new_tokens,
            "seed": self.config.seed,
            "sample_index": row.sample_index,
            "sample_seed": row.seed,
            "num_tokens": num_tokens,
            "finish_reason": finish,
            "generation": dict(self.settings),
        }


def _resolve_model(
    model_path_or_model: str | Path | tuple[PreTrainedModel, PreTrainedTokenizerBase],
    config: GenerationConfig,
    model_name: str | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    if isinstance(model_path_or_model, tuple):
        model, tokenizer = model_path_or_model
        name = model_name or str(getattr(model, "name_or_path", "") or type(model).__name__)
        model.eval()
        return model, tokenizer, name
    model, tokenizer = load_causal_lm(model_path_or_model, device=config.device, dtype=config.dtype)
    return model, tokenizer, model_name or str(model_path_or_model)


def generate_candidates(
    model_path_or_model: str | Path | tuple[PreTrainedModel, PreTrainedTokenizerBase],
    prompts: Sequence[Prompt],
    config: GenerationConfig,
    *,
    model_name: str | None = None,
    on_batch: Callable[[list[int], list[list[Candidate]]], None] | None = None,
    progress: bool = True,
) -> GenerationResult:
    """Sample `config.num_candidates` distinct, non-empty completions for each prompt.

    `model_path_or_model` is a hub id, a local directory (loaded with `load_causal_lm`) or a
    (model, tokenizer) pair already loaded that way. Prompts are strings or chats, rendered
    with `format_prompt`. Duplicates and empty completions are resampled for up to
    `max_resample_rounds` rounds; prompts still short are listed in `result.short`.
    `on_batch(prompt_indices, candidates)` is called after each chunk of prompts is complete,
    so a caller can commit them and resume after a crash by passing only the missing prompts.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    model, tokenizer, name = _resolve_model(model_path_or_model, config, model_name)
    sampler = _Sampler(model, tokenizer, config, name)
    k = config.num_candidates

    limit = config.max_prompt_tokens
    positions = config_max_positions(model.config)
    if positions is not None:
        room = positions - config.max_new_tokens
        if room < 1:
            raise ValueError(
                f"max_new_tokens={config.max_new_tokens} leaves no room for a prompt in this "
                f"model's {positions} positions"
            )
        limit = room if limit is None else min(limit, room)

    result = GenerationResult(candidates=[[] for _ in prompts])
    encoded: list[list[int]] = []
    keys: list[str] = []
    for index, prompt in enumerate(prompts):
        ids = encode_prompt(tokenizer, prompt)
        if not ids:
            raise ValueError(f"prompt {index} renders to no tokens")
        # The seed key is the rendered prompt, so the same prompt samples the same way
        # wherever it sits in the list.
        keys.append(format_prompt(tokenizer, prompt))
        if limit is not None and len(ids) > limit:
            ids = ids[-limit:]  # keep the end: that is where the answer is asked for
            result.truncated.append(index)
        encoded.append(ids)

    prompts_per_chunk = max(1, config.batch_size // k)
    bar = tqdm(total=len(prompts), desc="generating", unit="prompt", disable=not progress)
    try:
        for chunk in iter_batches(range(len(prompts)), prompts_per_chunk):
            _generate_chunk(chunk, encoded, keys, sampler, result)
            if on_batch is not None:
                on_batch(list(chunk), [result.candidates[i] for i in chunk])
            bar.update(len(chunk))
    finally:
        bar.close()
    result.seconds = time.perf_counter() - started
    return result


def _generate_chunk(
    chunk: list[int],
    encoded: list[list[int]],
    keys: list[str],
    sampler: _Sampler,
    result: GenerationResult,
) -> None:
    """Fill `result.candidates` for the prompts of one chunk, resampling duplicates."""
    config = sampler.config
    k = config.num_candidates
    seen: dict[int, set[str]] = {i: set() for i in chunk}
    next_index = dict.fromkeys(chunk, 0)
    for round_ in range(config.max_resample_rounds + 1):
        rows: list[_Sample] = []
        for i in chunk:
            missing = k - len(result.candidates[i])
            if missing <= 0:
                continue
            # Resample rounds draw twice what is missing: a model that repeats itself would
            # otherwise need one round per missing candidate.
            want = missing if round_ == 0 else 2 * missing
            for s in range(next_index[i], next_index[i] + want):
                rows.append(_Sample(i, s, sample_seed(config.seed, keys[i], s), encoded[i]))
            next_index[i] += want
        if not rows:
            break
        # Rows are independent of their neighbours, so group similar lengths to pad less.
        rows.sort(key=lambda r: (len(r.input_ids), r.prompt_index, r.sample_index))
        outputs: dict[tuple[int, int], tuple[str, int, str, tuple[int, ...]]] = {}
        for batch in iter_batches(rows, config.batch_size):
            for row, out in zip(batch, sampler.run(batch)):
                outputs[(row.prompt_index, row.sample_index)] = out
        result.num_sampled += len(rows)
        # Accept in sample order, never in batch order, so the outcome is batch-independent.
        for row in sorted(rows, key=lambda r: (r.prompt_index, r.sample_index)):
            text, num_tokens, finish, sampled = outputs[(row.prompt_index, row.sample_index)]
            bucket = result.candidates[row.prompt_index]
            if not text and row.prompt_index not in result.first_empty:
                metadata = sampler.metadata(row, num_tokens, finish)
                result.first_empty[row.prompt_index] = Candidate("", metadata, sampled)
            if not text or text in seen[row.prompt_index] or len(bucket) >= k:
                result.num_rejected += 1
                continue
            seen[row.prompt_index].add(text)
            bucket.append(Candidate(text, sampler.metadata(row, num_tokens, finish), sampled))
    for i in chunk:
        if len(result.candidates[i]) < k:
            result.short[i] = len(result.candidates[i])
