"""A synthetic SFT corpus for the demo policy: good answers mixed with typical flaws.

A policy fine-tuned on it answers in the demo world's style but with mixed quality (wrong
sums, ignored formats, rude or rambling replies), which gives labelers, the reward model and
PPO something real to separate. Fixed seed: the same call gives the same corpus.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from training.demo_world.prompts import TABLES, TOPICS, parse_prompt, prompt_texts_by_kind

# Share of each answer quality in the corpus; "ignores_format" only applies to format prompts
# (elsewhere it falls back to "wrong").
# Style flaws (rude, rambling, ignored formats) are what a small reward model can learn to
# see, so they are common enough for one round of RLHF to show; "wrong" needs knowledge.
QUALITIES = {"good": 0.45, "wrong": 0.1, "ignores_format": 0.1, "rude": 0.175, "rambling": 0.175}
KIND_WEIGHTS = {"arithmetic": 0.3, "fact": 0.3, "format": 0.25, "polite": 0.15}

THREE_WORDS = {
    "the sea": ["Blue and endless.", "Deep, wide, calm.", "Salty waves everywhere."],
    "a sunny day": ["Warm bright sunshine.", "Clear and hot.", "Blue sky everywhere."],
    "your breakfast": ["Eggs and toast.", "Coffee with bread.", "Simple but tasty."],
    "a cat": ["Soft and curious.", "Sleepy furry friend.", "Quiet, proud, playful."],
    "winter": ["Cold and dark.", "Snow everywhere, beautiful.", "Short frosty days."],
    "a busy city": ["Loud and crowded.", "Traffic never stops.", "Bright lights everywhere."],
    "a good friend": ["Kind and loyal.", "Always there, honest.", "Funny, warm, patient."],
    "the moon": ["Bright and round.", "Pale night light.", "Silent silver glow."],
    "a forest": ["Green and quiet.", "Tall old trees.", "Dark, cool, peaceful."],
    "your weekend": ["Calm and restful.", "Long slow mornings.", "Family, food, rest."],
}
RAMBLE_OPENERS = [
    "Well, that is a really interesting question and I have thought about it for a while.",
    "Let me think about this carefully, step by step, because it deserves a full answer.",
    "Great question! There is a lot one could say here, and people often disagree about it.",
]
RAMBLE_CLOSERS = [
    "I hope this long explanation helps you, and feel free to ask me anything else at all.",
    "Of course there is much more to say, but that is the short version of a long story.",
    "Anyway, that is what I think after considering everything, though I could be wrong.",
]
RUDE_TAILS = [
    "Do your own homework next time.",
    "That was a stupid question.",
    "Look it up yourself next time.",
    "Obviously. Stop asking.",
]


def _wrong_value(rng: random.Random, answer: str, table: str | None) -> str:
    """A plausible wrong answer: off by a little for numbers, another table entry for facts."""
    if answer.lstrip("-").isdigit():
        return str(int(answer) + rng.choice([-3, -2, -1, 1, 2, 3, 10]))
    values = sorted({v for v in TABLES.get(table or "", {}).values() if v != answer})
    return rng.choice(values) if values else answer[::-1]


def _ramble(rng: random.Random, core: str) -> str:
    return f"{rng.choice(RAMBLE_OPENERS)} {core} {rng.choice(RAMBLE_CLOSERS)}"


def _arithmetic_answer(rng: random.Random, meta: dict[str, Any], quality: str) -> str:
    a, op, b = meta["operands"]
    answer = meta["answer"]
    if quality in {"wrong", "ignores_format"}:
        answer = _wrong_value(rng, answer, None)
    forms = [
        f"{answer}",
        f"{a} {op} {b} = {answer}.",
        f"The answer is {answer}.",
        f"It is {answer}.",
    ]
    if quality == "rambling":
        return _ramble(rng, f"I take {a}, then {b}, and after some thought the result is {answer}.")
    if quality == "rude":
        return f"{answer}. {rng.choice(RUDE_TAILS)}"
    return rng.choice(forms)


def _fact_sentence(meta: dict[str, Any], answer: str) -> str:
    table, subject = meta.get("table"), meta.get("subject", "")
    if table == "capitals":
        return f"The capital of {subject} is {answer}."
    if table == "colors":
        return f"It is {answer}."
    if table == "sounds":
        return f"A {subject} says {answer}."
    return f"The opposite is {answer}."


def _fact_answer(rng: random.Random, meta: dict[str, Any], quality: str) -> str:
    answer = meta["answer"]
    if quality in {"wrong", "ignores_format"}:
        answer = _wrong_value(rng, answer, meta.get("table"))
    if quality == "rambling":
        return _ramble(rng, f"Many people ask about this, and I believe it is {answer}.")
    if quality == "rude":
        return f"{answer}. {rng.choice(RUDE_TAILS)}"
    return rng.choice([f"{answer}.", _fact_sentence(meta, answer), answer])


def _format_answer(rng: random.Random, meta: dict[str, Any], quality: str) -> str:
    fmt = meta["format"]
    if fmt == "three_words":
        good = rng.choice(THREE_WORDS[meta["topic"]])
        if quality == "good":
            return good
        if quality == "rude":
            return "Describe it yourself."
        if quality == "rambling":
            return _ramble(rng, f"To describe {meta['topic']}, I would say: {good.lower()}")
        return f"I would describe {meta['topic']} as {good.lower().rstrip('.')} and more."
    answer = meta["answer"]
    if quality == "wrong":
        answer = _wrong_value(rng, answer, meta.get("table"))
    if quality == "ignores_format":
        return f"I think the answer is {answer}, as you can see."
    if quality == "rambling":
        return _ramble(rng, f"The answer you are looking for is {answer}.")
    if fmt == "uppercase":
        text = rng.choice([answer, f"It is {answer}.", f"{answer}."]).upper()
        return f"{text} {rng.choice(RUDE_TAILS).upper()}" if quality == "rude" else text
    if fmt == "one_word":
        return f"{answer}. {rng.choice(RUDE_TAILS)}" if quality == "rude" else answer.capitalize()
    # number_only
    return f"{answer}. {rng.choice(RUDE_TAILS)}" if quality == "rude" else answer


POLITE_GOOD = {
    "thank": [
        "Thank you so much, I really appreciate it.",
        "Thanks a lot for your help, that was very kind.",
        "Thank you! That means a lot to me.",
    ],
    "apologize": [
        "I am sorry about that. It will not happen again.",
        "Sorry for the trouble, I will fix it right away.",
        "Please accept my apologies, that was my mistake.",
    ],
    "decline": [
        "Thank you for the invitation, but unfortunately I cannot come.",
        "That is very kind, but I won't be able to make it. Sorry!",
        "Thanks for asking! Unfortunately I am busy then.",
    ],
    "request": [
        "Could you please do that when you have a moment? Thank you.",
        "Would you mind doing that, please? Thanks a lot.",
        "Please could you take care of it today? Thank you!",
    ],
}
POLITE_RUDE = {
    "thank": ["Whatever, it was your job anyway.", "Fine. Took you long enough."],
    "apologize": ["Not my fault. Deal with it.", "Ugh, who cares about that."],
    "decline": ["No. I do not want to go.", "No way, that sounds boring. Go away."],
    "request": ["Do it now. Don't make me ask twice.", "Just do it, you lazy person."],
}
POLITE_WRONG = {
    "thank": ["Please help me again tomorrow.", "See you next week."],
    "apologize": ["It was a great day today.", "Thank you for your patience."],
    "decline": ["Yes, I will be there, see you soon!", "Sounds great, count me in."],
    "request": ["I will do it myself.", "Thanks, that is all for today."],
}


def _polite_answer(rng: random.Random, meta: dict[str, Any], quality: str) -> str:
    intent = meta["intent"]
    if quality == "rude":
        return rng.choice(POLITE_RUDE[intent])
    if quality in {"wrong", "ignores_format"}:
        return rng.choice(POLITE_WRONG[intent])
    if quality == "rambling":
        return _ramble(rng, rng.choice(POLITE_GOOD[intent]))
    return rng.choice(POLITE_GOOD[intent])


ANSWERERS = {
    "arithmetic": _arithmetic_answer,
    "fact": _fact_answer,
    "format": _format_answer,
    "polite": _polite_answer,
}


def prompt_pool(seed: int = 0) -> dict[str, list[str]]:
    """Every prompt the corpus draws from, per kind: the shipped templates and format variants."""
    pool = {kind: list(texts) for kind, texts in prompt_texts_by_kind(seed).items()}
    questions = [q for q in pool["fact"] if q.startswith("What")]
    extra = [f"Answer in uppercase: {q}" for q in questions]
    extra += [f"Answer in one word: {q}" for q in questions if "opposite" in q or "color" in q]
    extra += [f"Answer with a number only: {q}" for q in pool["arithmetic"]]
    extra += [f"Reply with exactly three words: describe {t}." for t in TOPICS]
    pool["format"] = sorted(set(pool["format"]) | set(extra))
    return pool


def build_corpus(n: int = 4000, *, seed: int = 0) -> list[dict[str, str]]:
    """`n` examples `{"prompt", "response", "quality"}` mixing good and flawed answers."""
    rng = random.Random(seed)
    pool = prompt_pool()
    kinds, kind_weights = zip(*KIND_WEIGHTS.items())
    qualities, quality_weights = zip(*QUALITIES.items())
    # Format prompts are drawn per format, else "number only" variants of the many sums
    # would crowd out the other formats.
    groups = {kind: [texts] for kind, texts in pool.items() if kind != "format"}
    by_format: dict[str, list[str]] = {}
    for text in pool["format"]:
        by_format.setdefault(parse_prompt(text)["format"], []).append(text)
    groups["format"] = [by_format[f] for f in sorted(by_format)]
    examples = []
    for _ in range(n):
        kind = rng.choices(kinds, kind_weights)[0]
        prompt = rng.choice(rng.choice(groups[kind]))
        meta = parse_prompt(prompt)
        assert meta is not None, prompt  # every pooled prompt comes from our own templates
        quality = rng.choices(qualities, quality_weights)[0]
        if quality == "ignores_format" and kind != "format":
            quality = "wrong"
        response = ANSWERERS[kind](rng, meta, quality)
        examples.append({"prompt": prompt, "response": response, "quality": quality})
    return examples


def write_corpus_jsonl(path: str | Path, n: int = 4000, *, seed: int = 0) -> Path:
    """`build_corpus(n, seed)` as JSON lines of `{"prompt", "response"}`: the data the demo
    policy learned from, in the shape `train_ppo --ptx-data` and SFT read."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for example in build_corpus(n, seed=seed):
            row = {"prompt": example["prompt"], "response": example["response"]}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out
