"""The per-prompt train/test split: a pure, stable function of the prompt (no database)."""

from __future__ import annotations

import hashlib

import pytest

from annotation.rules.splits import prompt_digest, split_for_prompt


def test_prompt_digest_is_sha256_of_canonical_messages():
    expected = hashlib.sha256(b'[{"content":"hi","role":"user"}]').digest()
    assert prompt_digest("hi") == expected
    # Plain text hashes like the one user message it is stored as; extra keys are ignored.
    assert prompt_digest([{"role": "user", "content": "hi", "name": "x"}]) == expected


def test_split_is_stable_and_close_to_the_fraction():
    prompts = [f"prompt number {i}" for i in range(3000)]
    splits = [split_for_prompt(p, test_fraction=0.1) for p in prompts]
    assert splits == [split_for_prompt(p, test_fraction=0.1) for p in prompts]
    assert 210 <= splits.count("test") <= 390  # 300 expected, sd ~16
    assert split_for_prompt("x", test_fraction=0.0) == "train"
    assert split_for_prompt("x", test_fraction=1.0) == "test"
    # A larger fraction only moves prompts from train to test, never back.
    wider = [split_for_prompt(p, test_fraction=0.3) for p in prompts]
    assert all(w == "test" for s, w in zip(splits, wider) if s == "test")
    with pytest.raises(ValueError):
        split_for_prompt("x", test_fraction=1.5)
