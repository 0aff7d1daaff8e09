"""The demo world: prompts, gold judge, SFT corpus and the tiny policy build."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from training.demo_world import judge, load_prompts, parse_prompt, score, write_prompts_jsonl
from training.demo_world.corpus import QUALITIES, build_corpus
from training.demo_world.judge import components

# --------------------------------------------------------------------------- prompts


def test_a_few_hundred_prompts_of_every_kind_with_unique_ids():
    records = load_prompts()
    assert 250 <= len(records) <= 400
    assert len({r["external_id"] for r in records}) == len(records)
    assert len({r["text"] for r in records}) == len(records)
    kinds = Counter(r["metadata"]["kind"] for r in records)
    assert set(kinds) == {"arithmetic", "fact", "format", "polite"}
    formats = Counter(r["metadata"]["format"] for r in records if r["metadata"]["kind"] == "format")
    assert set(formats) == {"uppercase", "one_word", "three_words", "number_only"}


def test_prompts_are_deterministic_and_any_prefix_mixes_kinds():
    assert load_prompts() == load_prompts()
    assert load_prompts(12) == load_prompts()[:12]
    assert {r["metadata"]["kind"] for r in load_prompts(12)} == {
        "arithmetic",
        "fact",
        "format",
        "polite",
    }


def test_metadata_is_recoverable_from_the_text():
    for record in load_prompts():
        assert parse_prompt(record["text"]) == record["metadata"]
    assert parse_prompt("Tell me a joke.") is None
    assert parse_prompt("What is the capital of Atlantis?") is None


def test_metadata_carries_what_the_judge_needs():
    assert parse_prompt("What is 7 times 8?")["answer"] == "56"
    assert parse_prompt("Compute 12 - 5.")["answer"] == "7"
    assert parse_prompt("Name the capital city of Peru.")["answer"] == "Lima"
    meta = parse_prompt("Answer in uppercase: What is the capital of Japan?")
    assert (meta["kind"], meta["format"], meta["answer"]) == ("format", "uppercase", "Tokyo")
    assert (
        parse_prompt("Politely decline an invitation to a party on Friday.")["intent"] == "decline"
    )


def test_write_prompts_jsonl_for_import_prompts(tmp_path):
    path = write_prompts_jsonl(tmp_path / "sub" / "prompts.jsonl", load_prompts(5))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5
    assert all(set(row) == {"external_id", "text", "metadata"} for row in rows)
    assert rows == load_prompts(5)
    everything = write_prompts_jsonl(tmp_path / "all.jsonl")
    assert len(everything.read_text().splitlines()) == len(load_prompts())


# --------------------------------------------------------------------------- judge

# (prompt, better answer, worse answer): each pair differs in one respect the judge must see.
ORDERED = [
    ("What is 17 + 25?", "42", "41"),
    ("What is 17 + 25?", "17 + 25 = 42.", "I think it is 43."),
    ("What is 17 + 25?", "42", "42. Do your own homework next time."),
    (
        "What is 17 + 25?",
        "The answer is 42.",
        "Well, that is a really interesting question and I have thought about it for a long "
        "while, step by step, and after all that careful thinking I believe it is 42, maybe.",
    ),
    ("What is the capital of France?", "Paris.", "London."),
    ("What is the capital of France?", "Paris.", "Paris or maybe Berlin."),
    ("What is the capital of France?", "The capital of France is Paris.", "I don't know."),
    ("What sound does a cow make?", "Moo.", "Woof."),
    ("Answer in uppercase: What is the capital of Italy?", "ROME", "Rome"),
    ("Answer in uppercase: What is the capital of Italy?", "ROME", "MILAN"),
    ("Answer in one word: What is the opposite of hot?", "Cold", "It is cold."),
    ("Answer with a number only: What is 6 times 7?", "42", "The answer is 42."),
    (
        "Reply with exactly three words: describe the sea.",
        "Blue and endless.",
        "The sea is blue and endless.",
    ),
    (
        "Write a short reply thanking a friend for the birthday gift.",
        "Thank you so much, I love it!",
        "Whatever.",
    ),
    (
        "Write a short reply thanking a friend for the birthday gift.",
        "Thank you so much!",
        "See you next week.",
    ),
    (
        "Apologize briefly to a friend for being late.",
        "I am sorry I was late.",
        "Not my fault. Deal with it.",
    ),
    (
        "Politely decline an invitation to a hiking trip.",
        "Thanks, but unfortunately I cannot come.",
        "No way.",
    ),
    (
        "Ask your roommate politely to close the window.",
        "Could you please close the window?",
        "Close the window now.",
    ),
]


@pytest.mark.parametrize(("prompt", "better", "worse"), ORDERED)
def test_judge_prefers_the_better_answer(prompt, better, worse):
    assert score(prompt, better) > score(prompt, worse)


def test_hand_computed_scores():
    # 0.45 correct + 0.25 follow + 0.15 brevity + 0.15 polite
    assert score("What is 2 + 2?", "4") == 1.0
    assert score("What is 2 + 2?", "5") == pytest.approx(0.55)
    assert score("What is 2 + 2?", "4. That was a stupid question.") == pytest.approx(0.85)
    assert score("What is 2 + 2?", "") == 0.0
    assert score("What is 2 + 2?", "   ") == 0.0
    # 24 words against a budget of 8: brevity 1 - 16/16 = 0.
    assert score("What is 2 + 2?", " ".join(["word"] * 23) + " 4") == pytest.approx(0.85)
    # Half the words over budget: brevity 0.5.
    assert components("What is 2 + 2?", " ".join(["word"] * 15) + " 4")["brevity"] == 0.5
    # A three-word reply that is one word off gets half the instruction points.
    parts = components(
        "Reply with exactly three words: describe the moon.", "Bright round moon glow."
    )
    assert parts["follow"] == 0.5
    # Prompts from elsewhere are judged on manners and length, with neutral correctness.
    assert score("Tell me a joke.", "Why not.") == pytest.approx(0.45 * 0.5 + 0.25 + 0.15 + 0.15)


def test_judge_spec_signature_with_text_and_chat_prompts():
    chat = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the capital of Spain?"},
        {"role": "assistant", "content": "Madrid."},
        {"role": "user", "content": "What is 3 + 4?"},
    ]
    # The last user message is the instruction being answered.
    assert judge(["What is 3 + 4?", chat, chat], ["7", "7", "Madrid"]) == [1.0, 1.0, 0.3]
    assert score({"text": "What is 3 + 4?", "metadata": {}}, "7") == 1.0
    with pytest.raises(ValueError):
        judge(["What is 3 + 4?"], [])


# --------------------------------------------------------------------------- corpus


def test_corpus_is_deterministic_and_mixes_qualities():
    corpus = build_corpus(2000, seed=1)
    assert corpus == build_corpus(2000, seed=1)
    assert corpus != build_corpus(2000, seed=2)
    shares = Counter(e["quality"] for e in corpus)
    assert set(shares) == set(QUALITIES)
    assert 0.4 < shares["good"] / len(corpus) < 0.6
    assert all(e["response"].strip() for e in corpus)
    assert all(parse_prompt(e["prompt"]) is not None for e in corpus)


def test_judge_scores_good_corpus_answers_above_every_flawed_kind():
    corpus = build_corpus(2000, seed=0)
    means = {
        quality: sum(score(e["prompt"], e["response"]) for e in rows) / len(rows)
        for quality in QUALITIES
        if (rows := [e for e in corpus if e["quality"] == quality])
    }
    assert means["good"] > 0.95
    assert all(means["good"] > means[q] + 0.15 for q in QUALITIES if q != "good")


# --------------------------------------------------------------------------- policy


@pytest.mark.ml
def test_short_policy_build_produces_text_and_is_cached(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from training.demo_world.policy import (
        MARKER,
        DemoPolicyConfig,
        build_demo_policy,
        demo_policy_ready,
    )
    from training.generation import GenerationConfig, generate_candidates

    config = DemoPolicyConfig(
        steps=40,
        corpus_size=400,
        batch_size=16,
        n_embd=32,
        n_head=2,
        vocab_size=400,
        warmup_steps=5,
    )
    logged = []
    out = build_demo_policy(
        tmp_path / "policy", config=config, progress=False, on_metrics=logged.append
    )
    assert (out / MARKER).is_file() and (out / "metrics.jsonl").is_file()
    assert demo_policy_ready(out, config)
    assert not demo_policy_ready(out, DemoPolicyConfig())
    assert not list(tmp_path.glob(".*building"))
    # The loss went down: the model learned something from the corpus.
    assert logged[-1]["step"] == 39
    assert logged[-1]["loss"] < logged[0]["loss"] - 1.0

    # Cached: a second call returns without touching the directory.
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert build_demo_policy(tmp_path / "policy", config=config, progress=False) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp

    records = load_prompts(6)
    result = generate_candidates(
        str(out),
        [r["text"] for r in records],
        GenerationConfig(num_candidates=2, max_new_tokens=24),
        progress=False,
    )
    assert all(c.text for cands in result.candidates for c in cands)
    scores = judge(
        [r["text"] for r in records for _ in range(2)],
        [c.text for cs in result.candidates for c in cs],
    )
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.ml
def test_policy_build_is_deterministic(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from safetensors.torch import load_file

    from training.demo_world.policy import DemoPolicyConfig, build_demo_policy

    config = DemoPolicyConfig(
        steps=5, corpus_size=100, batch_size=8, n_embd=32, n_head=2, vocab_size=300, warmup_steps=2
    )
    first = load_file(
        build_demo_policy(tmp_path / "a", config=config, progress=False) / "model.safetensors"
    )
    second = load_file(
        build_demo_policy(tmp_path / "b", config=config, progress=False) / "model.safetensors"
    )
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.ml
def test_policy_build_gives_the_same_weights_on_any_thread_count(tmp_path):
    """A 2-core and an 8-core machine build the same demo policy (so the same loop figures):
    the build runs on one thread whatever torch's setting, and leaves the setting as it was."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from training.demo_world.policy import DemoPolicyConfig, build_demo_policy

    # Wide enough that torch splits the matrix products over threads.
    config = DemoPolicyConfig(steps=8, corpus_size=200, vocab_size=400, warmup_steps=2)
    weights = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out = build_demo_policy(tmp_path / str(threads), config=config, progress=False)
        assert torch.get_num_threads() == threads
        weights[threads] = load_file(out / "model.safetensors")
    torch.set_num_threads(1)
    assert all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])
