"""The demo world's instruction prompts, generated deterministically from fixed tables.

Four kinds, each easy to judge without a model: arithmetic, short facts from the tables below,
answers in a required format, and polite replies. Every prompt's text can be parsed back into
its metadata (`parse_prompt`), so the judge works on prompts from anywhere, including the
corpus and PPO rollouts, and not only on the shipped list.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- fixed tables

CAPITALS: dict[str, str] = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Austria": "Vienna",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Ireland": "Dublin",
    "Hungary": "Budapest",
    "Belgium": "Brussels",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Japan": "Tokyo",
    "China": "Beijing",
    "Thailand": "Bangkok",
    "Russia": "Moscow",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Cuba": "Havana",
    "Canada": "Ottawa",
    "Mexico": "Mexico City",
    "Argentina": "Buenos Aires",
    "Iran": "Tehran",
    "Turkey": "Ankara",
    "Australia": "Canberra",
}

COLORS: dict[str, str] = {
    "the sky on a clear day": "blue",
    "fresh grass": "green",
    "snow": "white",
    "coal": "black",
    "a ripe banana": "yellow",
    "a ripe tomato": "red",
    "an orange": "orange",
    "a lemon": "yellow",
    "chocolate": "brown",
    "a polar bear": "white",
}

SOUNDS: dict[str, str] = {
    "cow": "moo",
    "dog": "woof",
    "cat": "meow",
    "duck": "quack",
    "sheep": "baa",
    "owl": "hoot",
    "pig": "oink",
    "lion": "roar",
    "snake": "hiss",
    "bee": "buzz",
}

OPPOSITES: dict[str, str] = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "up": "down",
    "light": "dark",
    "happy": "sad",
    "early": "late",
    "open": "closed",
    "full": "empty",
    "old": "new",
    "wet": "dry",
    "loud": "quiet",
}

TOPICS = [
    "the sea",
    "a sunny day",
    "your breakfast",
    "a cat",
    "winter",
    "a busy city",
    "a good friend",
    "the moon",
    "a forest",
    "your weekend",
]

THANKS = [
    ("a colleague", "helping with the report"),
    ("your neighbour", "watering the plants"),
    ("a friend", "the birthday gift"),
    ("your teacher", "the extra lesson"),
    ("a stranger", "returning your wallet"),
    ("your sister", "the ride to the station"),
]
APOLOGIES = [
    ("a colleague", "missing the meeting"),
    ("a friend", "being late"),
    ("your neighbour", "the loud music"),
    ("a customer", "the delayed order"),
    ("your manager", "the typo in the email"),
    ("a friend", "forgetting the book"),
]
EVENTS = [
    "a party on Friday",
    "a dinner next week",
    "a hiking trip",
    "a wedding in June",
    "a board game night",
    "a conference talk",
]
REQUESTS = [
    ("a colleague", "send the slides"),
    ("your neighbour", "move the car"),
    ("a friend", "call you back"),
    ("the waiter", "bring the bill"),
    ("your roommate", "close the window"),
    ("a student", "hand in the homework"),
]

TABLES: dict[str, dict[str, str]] = {
    "capitals": CAPITALS,
    "colors": COLORS,
    "sounds": SOUNDS,
    "opposites": OPPOSITES,
}

KINDS = ("arithmetic", "fact", "format", "polite")
FORMATS = ("uppercase", "one_word", "three_words", "number_only")
INTENTS = ("thank", "apologize", "decline", "request")

# How many words a good answer needs at most; longer answers lose brevity points.
MAX_WORDS = {"arithmetic": 8, "fact": 10, "format": 8, "polite": 25}

# --------------------------------------------------------------------------- templates

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "times": lambda a, b: a * b}

_ARITH = re.compile(r"^(?:What is|Compute) (\d+) (\+|-|times) (\d+)[?.]$")
_CAPITAL = re.compile(
    r"^(?:(?:What|Which city) is the capital of (.+)\?|Name the capital city of (.+)\.)$"
)
_COLOR = re.compile(r"^What color is (.+)\?$")
_SOUND = re.compile(r"^What sound does a (\w+) make\?$")
_OPPOSITE = re.compile(r"^What is the opposite of (\w+)\?$")
_UPPER = re.compile(r"^Answer in uppercase: (.+)$")
_ONE_WORD = re.compile(r"^Answer in one word: (.+)$")
_NUMBER = re.compile(r"^Answer with a number only: (.+)$")
_THREE = re.compile(r"^Reply with exactly three words: describe (.+)\.$")
_THANK = re.compile(r"^Write a short reply thanking (.+) for (.+)\.$")
_APOLOGY = re.compile(r"^Apologize briefly to (.+) for (.+)\.$")
_DECLINE = re.compile(r"^Politely decline an invitation to (.+)\.$")
_REQUEST = re.compile(r"^Ask (.+) politely to (.+)\.$")


def arithmetic_text(a: int, op: str, b: int, *, style: int = 0) -> str:
    """Render an arithmetic question."""
    return f"What is {a} {op} {b}?" if style == 0 else f"Compute {a} {op} {b}."


def _question_answer(question: str) -> dict[str, Any] | None:
    """Metadata of a plain question (arithmetic or fact), or None when it is not one."""
    if m := _ARITH.match(question):
        a, op, b = int(m[1]), m[2], int(m[3])
        return {"kind": "arithmetic", "answer": str(OPS[op](a, b)), "operands": [a, op, b]}
    if (m := _CAPITAL.match(question)) and (country := m[1] or m[2]) in CAPITALS:
        return {
            "kind": "fact",
            "answer": CAPITALS[country],
            "table": "capitals",
            "subject": country,
        }
    if (m := _COLOR.match(question)) and m[1] in COLORS:
        return {"kind": "fact", "answer": COLORS[m[1]], "table": "colors", "subject": m[1]}
    if (m := _SOUND.match(question)) and m[1] in SOUNDS:
        return {"kind": "fact", "answer": SOUNDS[m[1]], "table": "sounds", "subject": m[1]}
    if (m := _OPPOSITE.match(question)) and m[1] in OPPOSITES:
        return {"kind": "fact", "answer": OPPOSITES[m[1]], "table": "opposites", "subject": m[1]}
    return None


def parse_prompt(text: str) -> dict[str, Any] | None:
    """Recover the judge's metadata from a prompt written by this module's templates."""
    text = text.strip()
    meta: dict[str, Any] | None
    if (meta := _question_answer(text)) is not None:
        meta["max_words"] = MAX_WORDS[meta["kind"]]
        return meta
    for fmt, pattern in (("uppercase", _UPPER), ("one_word", _ONE_WORD), ("number_only", _NUMBER)):
        if (m := pattern.match(text)) and (inner := _question_answer(m[1])) is not None:
            return {
                "kind": "format",
                "format": fmt,
                "answer": inner["answer"],
                "table": inner.get("table"),
                "question": m[1],
                "max_words": MAX_WORDS["format"],
            }
    if m := _THREE.match(text):
        return {"kind": "format", "format": "three_words", "topic": m[1], "max_words": 3}
    for intent, pattern in (
        ("thank", _THANK),
        ("apologize", _APOLOGY),
        ("decline", _DECLINE),
        ("request", _REQUEST),
    ):
        if m := pattern.match(text):
            return {"kind": "polite", "intent": intent, "max_words": MAX_WORDS["polite"]}
    return None


# --------------------------------------------------------------------------- generation


def _arithmetic_questions(rng: random.Random) -> list[str]:
    questions = []
    for a in range(2, 21):
        for b in range(1, 11):
            questions.append(arithmetic_text(a, "+", b, style=(a + b) % 2))
            if a >= b:
                questions.append(arithmetic_text(a, "-", b, style=(a * b) % 2))
    for a in range(2, 10):
        for b in range(2, 10):
            questions.append(arithmetic_text(a, "times", b, style=(a + b) % 2))
    rng.shuffle(questions)
    return questions


def _fact_questions(rng: random.Random) -> list[str]:
    questions = [f"What is the capital of {c}?" for c in CAPITALS]
    questions += [f"Name the capital city of {c}." for c in list(CAPITALS)[::3]]
    questions += [f"Which city is the capital of {c}?" for c in list(CAPITALS)[1::3]]
    questions += [f"What color is {thing}?" for thing in COLORS]
    questions += [f"What sound does a {animal} make?" for animal in SOUNDS]
    questions += [f"What is the opposite of {word}?" for word in OPPOSITES]
    rng.shuffle(questions)
    return questions


def _format_prompts(rng: random.Random, arithmetic: list[str], facts: list[str]) -> list[str]:
    short_facts = [q for q in facts if q.startswith("What")]
    prompts = [f"Answer in uppercase: {q}" for q in short_facts[:24]]
    prompts += [f"Answer in one word: {q}" for q in short_facts if "opposite" in q or "color" in q]
    prompts += [f"Answer with a number only: {q}" for q in arithmetic[:24]]
    prompts += [f"Reply with exactly three words: describe {topic}." for topic in TOPICS]
    rng.shuffle(prompts)
    return prompts


def _polite_prompts(rng: random.Random) -> list[str]:
    prompts = [f"Write a short reply thanking {who} for {what}." for who, what in THANKS]
    prompts += [f"Apologize briefly to {who} for {what}." for who, what in APOLOGIES]
    prompts += [f"Politely decline an invitation to {event}." for event in EVENTS]
    prompts += [f"Ask {who} politely to {what}." for who, what in REQUESTS]
    rng.shuffle(prompts)
    return prompts


def prompt_texts_by_kind(seed: int = 0) -> dict[str, list[str]]:
    """Every prompt the templates produce, per kind, in a fixed shuffled order."""
    rng = random.Random(seed)
    arithmetic = _arithmetic_questions(rng)
    facts = _fact_questions(rng)
    return {
        "arithmetic": arithmetic,
        "fact": facts,
        "format": _format_prompts(rng, arithmetic[100:], facts),
        "polite": _polite_prompts(rng),
    }


# Prompts shipped per kind: about 300 in all, enough for a few rounds of the demo loop.
SHIPPED = {"arithmetic": 100, "fact": 80, "format": 80, "polite": 24}
_PREFIX = {"arithmetic": "arith", "fact": "fact", "format": "format", "polite": "polite"}


def load_prompts(n: int | None = None) -> list[dict[str, Any]]:
    """The demo prompts as `{"external_id", "text", "metadata"}` records, kinds interleaved.

    The first `n` records mix all kinds, so a small demo still shows each of them.
    """
    by_kind = prompt_texts_by_kind(seed=0)
    queues = {
        kind: [
            {
                "external_id": f"{_PREFIX[kind]}-{i:03d}",
                "text": text,
                "metadata": parse_prompt(text),
            }
            for i, text in enumerate(by_kind[kind][: SHIPPED[kind]])
        ]
        for kind in KINDS
    }
    records: list[dict[str, Any]] = []
    # Round-robin weighted by size, so any prefix keeps roughly the overall proportions.
    taken = dict.fromkeys(KINDS, 0)
    total = sum(len(q) for q in queues.values())
    while len(records) < total:
        kind = min(
            (k for k in KINDS if taken[k] < len(queues[k])),
            key=lambda k: ((taken[k] + 1) / len(queues[k]), KINDS.index(k)),
        )
        records.append(queues[kind][taken[kind]])
        taken[kind] += 1
    return records if n is None else records[:n]


def write_prompts_jsonl(path: str | Path, records: Iterable[dict[str, Any]] | None = None) -> Path:
    """Write prompt records as JSONL for `import_prompts` (all demo prompts by default)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = load_prompts() if records is None else records
    with out.open("w", encoding="utf-8") as fh:
        for record in rows:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out
