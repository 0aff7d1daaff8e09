"""The demo world's gold judge: scores an answer in [0, 1] without any model.

score = 0.45 correctness + 0.25 instruction following + 0.15 brevity + 0.15 politeness.

Correctness and instruction following depend on the prompt's kind (parsed from its text by
`prompts.parse_prompt`); brevity compares the word count with the kind's budget; politeness
is lost to rude phrases. An empty answer scores 0. Prompts the demo world did not write get a
neutral 0.5 for correctness and are judged on the rest.

`judge(prompts, responses)` has the SPEC's `module:function` signature, e.g.
`--judge training.demo_world.judge:judge`.
"""

from __future__ import annotations

import re
from typing import Any

from training.demo_world.prompts import TABLES, parse_prompt

WEIGHTS = {"correct": 0.45, "follow": 0.25, "brevity": 0.15, "polite": 0.15}
DEFAULT_MAX_WORDS = 30

RUDE = re.compile(
    r"\b(stupid|idiot|dumb|shut up|whatever|obviously|ugh|annoying|lazy|go away|leave me alone|"
    r"do it yourself|figure it out|look it up yourself|your problem|deal with it|not my fault|"
    r"don't make me|do your own|stop asking|who cares|no way|took you long enough|just do it|"
    r"\w+ it yourself)\b",
    re.IGNORECASE,
)
POLITE = re.compile(
    r"\b(please|thank|thanks|sorry|appreciate|kind|kindly|glad|happy to|apologi[sz]e)\w*",
    re.IGNORECASE,
)
DODGE = re.compile(r"\b(i don't know|not sure|no idea|can't answer|cannot answer)\b", re.IGNORECASE)
INTENT = {
    "thank": re.compile(r"\bthank", re.IGNORECASE),
    "apologize": re.compile(r"\b(sorry|apologi[sz]e|apologies)", re.IGNORECASE),
    "decline": re.compile(
        r"\b(can't|cannot|can not|won't be able|unable|unfortunately|not be able|"
        r"have to decline|must decline|will not make it|won't make it)",
        re.IGNORECASE,
    ),
    "request": re.compile(r"\b(please|could you|would you|would you mind)\b", re.IGNORECASE),
}

_WORD = re.compile(r"[A-Za-z0-9']+")
_NUMBER = re.compile(r"-?\d+")


def words(text: str) -> list[str]:
    """The words of `text` (letters, digits, apostrophes)."""
    return _WORD.findall(text)


def _mentions(text: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", text, re.IGNORECASE) is not None


def _fact_correct(response: str, answer: str, table: str | None) -> float:
    """1 for the right answer, 0.5 when hedged with other answers of its table, else 0."""
    if not _mentions(response, answer):
        return 0.0
    known = {v.lower() for v in TABLES.get(table or "", {}).values()}
    others = {a for a in known if a != answer.lower() and _mentions(response, a)}
    return 0.5 if others else 1.0


def _number_correct(response: str, answer: str) -> float:
    """1 when the last number is the answer (working shown first is fine), 0.25 if only inside."""
    numbers = _NUMBER.findall(response)
    if not numbers:
        return 0.0
    if numbers[-1] == answer:
        return 1.0
    return 0.25 if answer in numbers else 0.0


def _brevity(n_words: int, max_words: int) -> float:
    if n_words <= max_words:
        return 1.0
    return max(0.0, 1.0 - (n_words - max_words) / (2 * max_words))


def components(prompt_text: str, response: str) -> dict[str, float]:
    """Each part of the score for one answer, each in [0, 1]."""
    meta = parse_prompt(prompt_text) or {}
    response = response.strip()
    tokens = words(response)
    kind = meta.get("kind")
    answer = meta.get("answer")
    polite = 0.0 if RUDE.search(response) else 1.0
    follow = 0.0 if DODGE.search(response) else 1.0
    if kind == "arithmetic":
        correct = _number_correct(response, answer)
        follow = follow if _NUMBER.search(response) else 0.0
    elif kind == "fact":
        correct = _fact_correct(response, answer, meta.get("table"))
    elif kind == "format":
        fmt = meta["format"]
        if fmt == "uppercase":
            letters = [c for c in response if c.isalpha()]
            follow = 1.0 if letters and all(c.isupper() for c in letters) else 0.0
        elif fmt == "one_word":
            follow = 1.0 if len(tokens) == 1 else 0.0
        elif fmt == "number_only":
            follow = 1.0 if re.fullmatch(r"-?\d+\.?", response) else 0.0
        elif fmt == "three_words":
            follow = {0: 1.0, 1: 0.5}.get(abs(len(tokens) - 3), 0.0)
        if answer is None:
            # "Describe X in three words" has no right answer: following it is the task.
            correct = follow
        elif fmt == "number_only":
            correct = _number_correct(response, answer)
        else:
            correct = _fact_correct(response, answer, meta.get("table"))
    elif kind == "polite":
        correct = 1.0 if INTENT[meta["intent"]].search(response) else 0.0
        # A reply is only fully polite when it says so, not merely when it avoids insults.
        polite = polite * (1.0 if POLITE.search(response) else 0.5)
    else:
        correct = 0.5
    max_words = meta.get("max_words", DEFAULT_MAX_WORDS)
    return {
        "correct": correct,
        "follow": follow,
        "brevity": _brevity(len(tokens), max_words),
        "polite": polite,
    }


def prompt_text(prompt: str | list[dict[str, Any]] | dict[str, Any]) -> str:
    """The instruction to judge: the text itself, a chat's last user message, or a record's text."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        if "text" in prompt:
            return str(prompt["text"])
        prompt = prompt.get("messages", [])
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return str(users[-1]) if users else ""


def score(prompt: str | list[dict[str, Any]] | dict[str, Any], response: str) -> float:
    """Gold score of `response` to `prompt`, in [0, 1]; higher is better."""
    if not response.strip():
        return 0.0
    parts = components(prompt_text(prompt), response)
    return round(sum(WEIGHTS[k] * v for k, v in parts.items()), 6)


def judge(prompts: list[Any], responses: list[str]) -> list[float]:
    """SPEC `module:function` judge: one gold score per (prompt, response)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    return [score(p, r) for p, r in zip(prompts, responses)]
