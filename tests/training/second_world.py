"""A second world for the loop, built by the tests: its own prompts and a judge with its own
rule, on the demo world's base policy (so the loop's defaults are not only tuned to one world).

The users of this world want warm, short answers: score = 0.45 warmth (a polite word, none
rude) + 0.35 brevity (6 words or fewer score 1, falling to 0 at 24) + 0.20 relevance (the
right number for sums, a word of the request's object otherwise). The demo judge weighs
correctness first; here a correct but curt answer loses to a warm short one.

`--judge tests.training.second_world:judge --prompts <write_prompts(path)>`.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

PEOPLE = [
    "your cousin",
    "a coworker",
    "the landlord",
    "your aunt",
    "a classmate",
    "the librarian",
    "your coach",
    "a neighbour",
]
THINGS = [
    "the postcard",
    "the umbrella",
    "fixing the door",
    "the recipe",
    "the concert tickets",
    "lending the bike",
    "the advice",
    "the warm soup",
]
MISTAKES = [
    "the broken vase",
    "the wrong address",
    "the missed call",
    "the late reply",
    "the spilled coffee",
    "the lost keys",
    "the double booking",
    "the noisy dog",
]
EVENTS = [
    "a picnic on Sunday",
    "a karaoke night",
    "a cooking class",
    "a chess tournament",
    "a film festival",
    "a garden party",
    "a charity run",
    "a book club meeting",
]
TASKS = [
    "water the garden",
    "return the ladder",
    "sign the form",
    "feed the cat",
    "lower the music",
    "share the notes",
    "check the oven",
    "lock the gate",
]

POLITE = re.compile(
    r"\b(please|thank|thanks|sorry|appreciate|kind|kindly|glad|happy to|apologi[sz]e)\w*",
    re.IGNORECASE,
)
RUDE = re.compile(
    r"\b(stupid|idiot|dumb|shut up|whatever|obviously|ugh|annoying|lazy|go away|your problem|"
    r"deal with it|who cares|no way|just do it|\w+ it yourself)\b",
    re.IGNORECASE,
)
SUM = re.compile(r"^What is (\d+) \+ (\d+)\?$")
WORD = re.compile(r"[A-Za-z0-9']+")
STOP = {"the", "a", "an", "your", "to", "for", "on", "of"}


def prompt_texts(seed: int = 7) -> list[str]:
    """About 300 prompts of this world, shuffled with a fixed seed."""
    rng = random.Random(seed)
    texts = [f"Write a short reply thanking {p} for {t}." for p in PEOPLE for t in THINGS]
    texts += [f"Apologize briefly to {p} for {m}." for p in PEOPLE for m in MISTAKES]
    texts += [f"Politely decline an invitation to {e}." for e in EVENTS]
    texts += [f"Ask {p} politely to {t}." for p in PEOPLE for t in TASKS]
    texts += [f"What is {rng.randint(11, 49)} + {rng.randint(11, 49)}?" for _ in range(100)]
    rng.shuffle(texts)
    return texts


def write_prompts(path: str | Path, n: int | None = None) -> Path:
    """The world's prompts as an `import_prompts` JSONL file (the first `n`)."""
    out = Path(path)
    texts = prompt_texts()[:n]
    with out.open("w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"external_id": f"w2-{i}", "text": text}) + "\n")
    return out


def _prompt_text(prompt) -> str:
    if isinstance(prompt, list):
        return " ".join(m.get("content", "") for m in prompt if m.get("role") == "user")
    return str(prompt)


def score(prompt, response: str) -> float:
    text = _prompt_text(prompt).strip()
    words = WORD.findall(response)
    if not words:
        return 0.0
    warm = 0.0 if RUDE.search(response) else 1.0 if POLITE.search(response) else 0.0
    brevity = min(1.0, max(0.0, (24 - len(words)) / 18))
    match = SUM.match(text)
    if match:
        answer = str(int(match[1]) + int(match[2]))
        relevant = 1.0 if answer in words else 0.0
    else:
        tail = text.rsplit(" for ", 1)[-1] if " for " in text else text.rsplit(" to ", 1)[-1]
        keys = {w.lower() for w in WORD.findall(tail)} - STOP
        relevant = 1.0 if keys & {w.lower() for w in words} else 0.0
    return 0.45 * warm + 0.35 * brevity + 0.20 * relevant


def judge(prompts, responses) -> list[float]:
    """The second world's gold judge (`module:function`)."""
    return [score(p, r) for p, r in zip(prompts, responses)]
