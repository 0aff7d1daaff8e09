"""Build the demo world's tiny policy: a small GPT-2 fine-tuned on the synthetic corpus on CPU.

The result is an ordinary Hugging Face model directory (with a chat template) that every
pipeline step loads like any hub model. A marker file records the config it was built
with, so callers can build it once and reuse it: `build_demo_policy` returns at once when the
marker matches.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from training.demo_world.corpus import build_corpus
from training.modeling import encode_prompt, load_causal_lm, torch_threads

MARKER = "demo_policy.json"
METRICS = "metrics.jsonl"
# Bump when the corpus, the tokenizer or the training code change what gets built.
# 3: built on one CPU thread, so the same config gives the same weights on any core count.
DEMO_POLICY_VERSION = 3
# Threads the build runs on: one is the fastest for this model and fixes the order of float
# sums (with torch's default, a 2-core and an 8-core machine build different policies).
BUILD_THREADS = 1


@dataclass(frozen=True)
class DemoPolicyConfig:
    """Everything that decides the demo policy; the cache is keyed on it."""

    steps: int = 1000  # optimizer steps: about 3 min on 2 CPU cores; tests use a few dozen
    seed: int = 0  # corpus, initialisation and batch order
    corpus_size: int = 4000  # synthetic examples, good and flawed
    batch_size: int = 32  # examples per step
    lr: float = 3e-3  # peak AdamW learning rate (linear warmup, cosine decay to 10%)
    warmup_steps: int = 30
    weight_decay: float = 0.01
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    vocab_size: int = 1024  # BPE vocabulary trained on the corpus
    max_length: int = 96  # tokens per example; longer ones are cut
    max_positions: int = 160  # model context: prompt plus completion

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.corpus_size < 1:
            raise ValueError("steps, batch_size and corpus_size must be at least 1")
        if self.max_length > self.max_positions:
            raise ValueError("max_length cannot exceed max_positions")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return asdict(self)


def demo_policy_ready(out_dir: str | Path, config: DemoPolicyConfig | None = None) -> bool:
    """True when `out_dir` holds a demo policy built with `config` by this code version."""
    marker = Path(out_dir) / MARKER
    if not marker.is_file():
        return False
    try:
        built = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    expected = (config or DemoPolicyConfig()).to_dict()
    return built.get("version") == DEMO_POLICY_VERSION and built.get("config") == expected


def _lr_factor(step: int, config: DemoPolicyConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _encode(
    tokenizer: Any, corpus: list[dict[str, str]], max_length: int
) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per example: the prompt as generation renders it, then the answer.

    Prompt and answer are tokenized apart, exactly as at generation time, where the model
    continues the tokens of the rendered prompt alone.
    """
    eos = tokenizer.eos_token_id
    encoded = []
    for example in corpus:
        prompt = encode_prompt(tokenizer, example["prompt"])
        answer = tokenizer(example["response"], add_special_tokens=False)["input_ids"] + [eos]
        ids = (prompt + answer)[:max_length]
        encoded.append((ids, len(prompt)))
    return encoded


def _batch(rows: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with the loss on answer tokens only."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)  # (B, T)
    for i, (ids, prompt_len) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _length_bucketed_batches(
    examples: list[tuple[list[int], int]], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """One epoch of batches of similar lengths, in random order (a few times less padding).

    Examples are shuffled, sorted by length within windows of 16 batches, cut into batches,
    and the batches shuffled again, all from `generator` so the order is reproducible.
    """
    permutation = torch.randperm(len(examples), generator=generator).tolist()
    window = batch_size * 16
    batches = []
    for start in range(0, len(permutation), window):
        chunk = sorted(permutation[start : start + window], key=lambda i: len(examples[i][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def _disable_dropout(model: torch.nn.Module) -> None:
    """Zero dropout in the modules and the saved config (RLHF code expects none)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"):
        if hasattr(model.config, name):
            setattr(model.config, name, 0.0)


def build_demo_policy(
    out_dir: str | Path,
    *,
    steps: int | None = None,
    seed: int | None = None,
    config: DemoPolicyConfig | None = None,
    force: bool = False,
    progress: bool = True,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Build (or reuse) the demo policy in `out_dir` and return that directory.

    `steps` and `seed` override the same fields of `config`. Nothing is rebuilt when the
    marker in `out_dir` matches, unless `force`. The model is written to a temporary sibling
    directory and moved into place at the end, so an interrupted build never looks complete.
    The build runs on `BUILD_THREADS` CPU threads whatever torch's setting, so the same
    config gives the same weights on any machine of the same CPU kind and torch build.
    """
    config = config or DemoPolicyConfig()
    overrides = {k: v for k, v in {"steps": steps, "seed": seed}.items() if v is not None}
    config = replace(config, **overrides)
    out = Path(out_dir)
    if not force and demo_policy_ready(out, config):
        return out
    with torch_threads(BUILD_THREADS):
        _train_and_save(out, config, progress=progress, on_metrics=on_metrics)
    return out


def _train_and_save(
    out: Path,
    config: DemoPolicyConfig,
    *,
    progress: bool,
    on_metrics: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Train the demo policy from scratch and move it into `out` when complete."""
    from tqdm.auto import tqdm

    from training.tiny import build_tiny_causal_lm

    started = time.perf_counter()
    corpus = build_corpus(config.corpus_size, seed=config.seed)
    tmp = out.parent / f".{out.name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    texts = [e["prompt"] for e in corpus] + [e["response"] for e in corpus]
    build_tiny_causal_lm(
        tmp,
        texts,
        arch="gpt2",
        n_layer=config.n_layer,
        n_embd=config.n_embd,
        n_head=config.n_head,
        max_positions=config.max_positions,
        vocab_size=config.vocab_size,
        chat_template=True,
        seed=config.seed,
    )
    model, tokenizer = load_causal_lm(tmp, device="cpu", dtype="float32")
    _disable_dropout(model)
    examples = _encode(tokenizer, corpus, config.max_length)

    # ------------------------------------------------------------------ training loop
    torch.manual_seed(config.seed)
    order = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    model.train()
    metrics: list[dict[str, Any]] = []
    batches: list[list[int]] = []
    running = 0.0
    bar = tqdm(range(config.steps), desc="demo policy", unit="step", disable=not progress)
    for step in bar:
        if not batches:
            batches = _length_bucketed_batches(examples, config.batch_size, order)
        batch = _batch([examples[i] for i in batches.pop()], tokenizer.pad_token_id)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if step == 0 else 0.95 * running + 0.05 * loss.item()
        if step % 25 == 0 or step == config.steps - 1:
            row = {"step": step, "loss": round(loss.item(), 5), "lr": scheduler.get_last_lr()[0]}
            metrics.append(row)
            if on_metrics is not None:
                on_metrics(row)
            bar.set_postfix(loss=f"{running:.3f}")
    bar.close()
    model.eval()

    # ------------------------------------------------------------------ save
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    with (tmp / METRICS).open("w") as fh:
        for row in metrics:
            fh.write(json.dumps(row) + "\n")
    marker = {
        "version": DEMO_POLICY_VERSION,
        "config": config.to_dict(),
        "final_loss": round(running, 5),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
