"""The per-prompt train/test split: one pure function of the prompt (SPEC section 5).

The export writes each row's `split` with it, and reward training falls back to it when an
export has no test rows, so one prompt can never land in different splits. Pure Python: no
Django, torch or numpy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Literal

Split = Literal["train", "test"]

DEFAULT_TEST_FRACTION = 0.1


def prompt_messages(prompt: str | Sequence[Mapping]) -> list[dict[str, str]]:
    """The prompt as chat messages: a plain string is one user message (as Prompt stores it)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def prompt_digest(prompt: str | Sequence[Mapping]) -> bytes:
    """sha256 of the canonical JSON of the prompt's role/content messages."""
    canonical = json.dumps(
        prompt_messages(prompt), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def split_for_prompt(
    prompt: str | Sequence[Mapping], *, test_fraction: float = DEFAULT_TEST_FRACTION
) -> Split:
    """`train` or `test`, a pure function of the prompt so one prompt never straddles splits.

    The first 8 bytes of the prompt digest give a uniform bucket in [0, 1); the prompt is in
    test when the bucket falls below `test_fraction`. The same prompt lands in the same split
    in every export and every project, and a text prompt and the one-user-message chat it is
    stored as hash alike, which keeps evaluation sets stable over rounds.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be within [0, 1], got {test_fraction}")
    bucket = int.from_bytes(prompt_digest(prompt)[:8], "big") / 2**64
    return "test" if bucket < test_fraction else "train"
