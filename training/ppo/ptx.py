"""PPO-ptx (Ouyang et al. 2022, eq. 2): a language-model loss on other data in every PPO update.

PPO only sees what the reward model scores. Where the reward model cannot tell answers
apart, the policy drifts away from what it knew: the demo world's policy, trained against a
reward model that cannot check facts, named the wrong capitals more often after PPO than
before. InstructGPT's fix (the "alignment tax") adds gamma * E_x~D[log pi(x)] to the RL
objective. Here every PPO micro-batch adds `ptx_coef` times the mean token NLL of as many
examples of `ptx_data` to its loss, through the same forward and backward.

`ptx_data` is JSON lines, one example per line, in any of three shapes:

- `{"text": "..."}`: plain text, every token in the loss (pretraining data);
- `{"prompt": P, "response": R}` (or `"completion"`): P, a string or a chat, rendered as
  generation renders it (`encode_prompt`), and R after it, the loss on R and the EOS token
  (SFT data; the demo policy's corpus is in this shape);
- `{"messages": [...]}` ending with an assistant message: the messages before it are the
  prompt, its content the response (the `export_demonstrations` shape).

Batches are drawn with replacement from a generator seeded by (seed, process, PPO step), so
a resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from annotation.datafiles.digest import sha256_file
from annotation.datafiles.jsonl import JsonlError, iter_jsonl
from training.modeling import encode_prompt


@dataclass(frozen=True)
class PtxExample:
    """Token ids of one example and where its loss starts (0 for plain text)."""

    ids: list[int]
    loss_from: int


def _prompt_and_response(record: Any) -> tuple[Any, str] | None:
    """(prompt, response) of an SFT-shaped record, None for plain text; ValueError otherwise."""
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    if "text" in record:
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise ValueError("'text' must be a non-empty string")
        return None
    if "messages" in record:
        messages = record["messages"]
        if (
            not isinstance(messages, list)
            or len(messages) < 2
            or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages)
        ):
            raise ValueError("'messages' must be a list of {'role', 'content'}, at least 2")
        if messages[-1]["role"] != "assistant":
            raise ValueError("the last of 'messages' must be the assistant's")
        return messages[:-1], str(messages[-1]["content"])
    response = record.get("response", record.get("completion"))
    if "prompt" not in record or not isinstance(response, str):
        raise ValueError(
            "a line needs 'text', 'messages', or 'prompt' with 'response' (or 'completion')"
        )
    return record["prompt"], response


def check_ptx_data(path: str | Path) -> None:
    """Check the shape of every line of `path` before anything is recorded; ValueError (a
    JsonlError naming file and line) on a bad one. `load_ptx_data` checks lengths later."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ptx data {path} is not a file")
    lines = 0
    for number, record in iter_jsonl(path):
        try:
            _prompt_and_response(record)
        except ValueError as exc:
            raise JsonlError(path, number, str(exc)) from None
        lines += 1
    if not lines:
        raise ValueError(f"ptx data {path} holds no examples")


def load_ptx_data(path: str | Path, tokenizer: Any, max_length: int) -> list[PtxExample]:
    """Tokenize every example of `path`; ValueError naming file and line on a bad one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ptx data {path} is not a file")
    eos = tokenizer.eos_token_id
    examples = []
    for number, record in iter_jsonl(path):
        try:
            pair = _prompt_and_response(record)
            if pair is None:
                ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"] + [eos]
                example = PtxExample(ids[:max_length], 0)
            else:
                prompt = encode_prompt(tokenizer, pair[0])
                answer = tokenizer(pair[1], add_special_tokens=False)["input_ids"] + [eos]
                example = PtxExample((prompt + answer)[:max_length], len(prompt))
        except ValueError as exc:
            raise JsonlError(path, number, str(exc)) from None
        if pair is not None and example.loss_from >= len(example.ids):
            raise JsonlError(
                path, number, f"the prompt fills all {max_length} tokens: no response left"
            )
        examples.append(example)
    if not examples:
        raise ValueError(f"ptx data {path} holds no examples")
    return examples


class PtxBatches:
    """Right-padded language-model batches of ptx examples, reproducible per PPO step."""

    def __init__(self, examples: list[PtxExample], pad_id: int, seed: int, rank: int) -> None:
        self.examples, self.pad_id = examples, pad_id
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator()

    def start_step(self, step: int) -> None:
        """Reseed for PPO step `step` (so a resumed run draws the same batches)."""
        self.generator.manual_seed((self.seed * 1_000_003 + self.rank * 10_007 + step) % 2**63)

    def next(self, size: int, device: torch.device) -> dict[str, torch.Tensor]:
        """`size` examples drawn with replacement: input_ids, attention_mask and labels."""
        picks = torch.randint(len(self.examples), (size,), generator=self.generator).tolist()
        rows = [self.examples[i] for i in picks]
        width = max(len(r.ids) for r in rows)
        input_ids = torch.full((size, width), self.pad_id, dtype=torch.long)  # (B, T)
        attention = torch.zeros((size, width), dtype=torch.long)  # (B, T)
        labels = torch.full((size, width), -100, dtype=torch.long)  # (B, T)
        for i, row in enumerate(rows):
            input_ids[i, : len(row.ids)] = torch.tensor(row.ids)
            attention[i, : len(row.ids)] = 1
            labels[i, row.loss_from : len(row.ids)] = torch.tensor(row.ids[row.loss_from :])
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": attention.to(device),
            "labels": labels.to(device),
        }


def ptx_identity(path: str | Path) -> dict[str, str]:
    """What a resumed run must train on again: the file and its sha256."""
    return {"path": str(path), "sha256": sha256_file(path)}
