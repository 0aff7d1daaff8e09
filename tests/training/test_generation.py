"""Candidate generation (training/generation.py) on tiny models built on the spot."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import GPT2LMHeadModel  # noqa: E402

from training.generation import (  # noqa: E402
    GenerationConfig,
    generate_candidates,
    iter_batches,
    sample_seed,
)
from training.modeling import load_causal_lm  # noqa: E402
from training.tiny import build_tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.ml

TEXTS = [f"what is {a} plus {b}? it is {a + b}." for a in range(12) for b in range(6)] + [
    "hello there friend, the capital of france is paris."
] * 10

PROMPTS = [
    "hi",
    "what is 3 plus 4? please answer with a rather long explanation of how you got it",
    "hello there friend",
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 1 plus 1?"}],
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("plain"), TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def plain(plain_dir):
    return load_causal_lm(plain_dir, device="cpu")


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    path = build_tiny_causal_lm(
        tmp_path_factory.mktemp("chat"), TEXTS, arch="llama", vocab_size=300, chat_template=True
    )
    return load_causal_lm(path, device="cpu")


def texts(candidates) -> list[str]:
    return [c.text for c in candidates]


class ScriptedLM(GPT2LMHeadModel):
    """A GPT-2 whose next token follows a script: after the prompt one of `choices`, then EOS.

    It makes finish reasons and shortfalls exact: there are only len(choices) distinct answers.
    """

    def forward(self, input_ids=None, **kwargs):
        out = super().forward(input_ids=input_ids, **kwargs)  # keeps the KV cache bookkeeping
        logits = torch.full_like(out.logits, -1e9)  # (B, T, V)
        logits[..., self.choices] = 0.0
        if self.empty_rate:
            logits[..., self.eos] = self.empty_rate  # log-odds of ending straight away
        rows, cols = torch.isin(input_ids, torch.tensor(self.choices)).nonzero(as_tuple=True)
        logits[rows, cols] = -1e9
        logits[rows, cols, self.eos] = 0.0
        out.logits = logits
        return out


@pytest.fixture(scope="module")
def scripted(plain_dir):
    model, tokenizer = load_causal_lm(plain_dir, device="cpu")
    choices, seen = [], set()
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id], skip_special_tokens=True).strip()
        if text.isalpha() and text not in seen:
            choices.append(token_id)
            seen.add(text)
        if len(choices) == 5:
            break
    scripted_model = ScriptedLM(model.config)
    scripted_model.load_state_dict(model.state_dict())
    scripted_model.eval()
    scripted_model.generation_config.pad_token_id = tokenizer.pad_token_id
    scripted_model.choices = choices
    scripted_model.eos = tokenizer.eos_token_id
    scripted_model.empty_rate = 0.0
    return scripted_model, tokenizer


# --------------------------------------------------------------------------- basics


def test_k_distinct_nonempty_candidates_with_metadata(plain, plain_dir):
    config = GenerationConfig(num_candidates=4, max_new_tokens=8, seed=3, batch_size=8)
    result = generate_candidates(plain, PROMPTS, config, model_name="tiny-v1", progress=False)
    assert len(result.candidates) == len(PROMPTS)
    assert result.short == {}
    for candidates in result.candidates:
        assert len(candidates) == 4
        assert len(set(texts(candidates))) == 4
        assert all(c.text and c.text == c.text.strip() for c in candidates)
        for c in candidates:
            meta = c.metadata
            assert meta["model"] == "tiny-v1"
            assert (meta["temperature"], meta["top_p"], meta["max_new_tokens"], meta["seed"]) == (
                1.0,
                1.0,
                8,
                3,
            )
            assert meta["finish_reason"] in {"eos", "length"}
            assert 1 <= meta["num_tokens"] <= 8
    assert result.num_candidates == 16
    assert result.num_sampled >= 16


def test_loading_by_path_records_the_path_as_model(plain_dir):
    config = GenerationConfig(num_candidates=2, max_new_tokens=4, device="cpu")
    result = generate_candidates(str(plain_dir), ["hi"], config, progress=False)
    assert result.candidates[0][0].metadata["model"] == str(plain_dir)


def test_same_seed_reproduces_and_another_seed_differs(plain):
    config = GenerationConfig(num_candidates=3, max_new_tokens=8, seed=11)
    first = generate_candidates(plain, PROMPTS, config, progress=False)
    again = generate_candidates(plain, PROMPTS, config, progress=False)
    other = generate_candidates(
        plain,
        PROMPTS,
        GenerationConfig(num_candidates=3, max_new_tokens=8, seed=12),
        progress=False,
    )
    assert [texts(c) for c in first.candidates] == [texts(c) for c in again.candidates]
    assert [texts(c) for c in first.candidates] != [texts(c) for c in other.candidates]


def test_same_output_alone_or_in_any_batch(plain):
    """Left padding and per-sample seeds: batch composition never changes a prompt's samples."""
    config = GenerationConfig(num_candidates=3, max_new_tokens=10, seed=5, batch_size=12)
    together = generate_candidates(plain, PROMPTS, config, progress=False)
    for index, prompt in enumerate(PROMPTS):
        alone = generate_candidates(plain, [prompt], config, progress=False)
        assert texts(alone.candidates[0]) == texts(together.candidates[index])
    # Other batch sizes and a shuffled order give the same candidates per prompt as well.
    small = generate_candidates(
        plain,
        PROMPTS[::-1],
        GenerationConfig(num_candidates=3, max_new_tokens=10, seed=5, batch_size=2),
        progress=False,
    )
    assert [texts(c) for c in small.candidates[::-1]] == [texts(c) for c in together.candidates]


def test_left_padding_layout(plain, monkeypatch):
    model, tokenizer = plain
    seen = {}
    original = model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    generate_candidates(
        plain,
        ["hi", PROMPTS[1]],
        GenerationConfig(num_candidates=1, max_new_tokens=2),
        progress=False,
    )
    ids, mask = seen["input_ids"], seen["attention_mask"]  # (B, T)
    short = 0 if mask[0].sum() < mask[1].sum() else 1
    assert ids[short, 0].item() == tokenizer.pad_token_id
    assert mask[short, 0].item() == 0
    assert (mask[:, -1] == 1).all()  # every prompt ends in the last column
    assert (ids[mask == 0] == tokenizer.pad_token_id).all()


def test_chat_template_is_applied(chat, monkeypatch):
    model, tokenizer = chat
    prompts_seen = []
    original = model.generate

    def spy(**kwargs):
        prompts_seen.extend(
            tokenizer.decode(row[mask.bool()])
            for row, mask in zip(kwargs["input_ids"], kwargs["attention_mask"])
        )
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    config = GenerationConfig(num_candidates=2, max_new_tokens=6)
    as_text = generate_candidates(chat, ["hello there"], config, progress=False)
    as_chat = generate_candidates(
        chat, [[{"role": "user", "content": "hello there"}]], config, progress=False
    )
    assert "<|user|> hello there <eos> <|assistant|> " in prompts_seen
    # A plain string is one user message: the same rendering, hence the same samples.
    assert texts(as_text.candidates[0]) == texts(as_chat.candidates[0])


def test_resume_after_crash_gives_the_same_candidates(plain):
    """A caller that commits per chunk can resume with the missing prompts only."""
    config = GenerationConfig(
        num_candidates=2, max_new_tokens=6, seed=9, batch_size=4
    )  # 2 prompts/chunk
    full = generate_candidates(plain, PROMPTS, config, progress=False)
    committed: dict[int, list[str]] = {}

    def commit_then_crash(indices, candidates):
        assert len(indices) == 2
        committed.update({i: texts(c) for i, c in zip(indices, candidates)})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_candidates(plain, PROMPTS, config, on_batch=commit_then_crash, progress=False)
    assert sorted(committed) == [0, 1]
    missing = [i for i in range(len(PROMPTS)) if i not in committed]
    calls = []
    resumed = generate_candidates(
        plain,
        [PROMPTS[i] for i in missing],
        config,
        on_batch=lambda i, c: calls.append(i),
        progress=False,
    )
    assert calls == [[0, 1]]
    committed.update({i: texts(c) for i, c in zip(missing, resumed.candidates)})
    assert [committed[i] for i in range(len(PROMPTS))] == [texts(c) for c in full.candidates]


# --------------------------------------------------------------------------- EOS, duplicates, shortfalls


def test_eos_stops_and_is_not_in_the_text(scripted):
    model, tokenizer = scripted
    choice_texts = {tokenizer.decode([c]).strip() for c in model.choices}
    result = generate_candidates(
        scripted,
        ["hi", "hello"],
        GenerationConfig(num_candidates=3, max_new_tokens=10),
        progress=False,
    )
    for candidates in result.candidates:
        assert len(candidates) == 3
        for c in candidates:
            assert c.text in choice_texts
            assert c.metadata["finish_reason"] == "eos"
            assert c.metadata["num_tokens"] == 1


def test_length_cap_gives_finish_reason_length(scripted):
    result = generate_candidates(
        scripted, ["hi"], GenerationConfig(num_candidates=2, max_new_tokens=1), progress=False
    )
    assert [c.metadata["finish_reason"] for c in result.candidates[0]] == ["length", "length"]


def test_duplicates_are_resampled_and_shortfalls_reported(scripted):
    # Five possible answers: K=5 needs resampling of duplicates; K=7 cannot be met.
    enough = generate_candidates(
        scripted,
        ["hi"],
        GenerationConfig(num_candidates=5, max_new_tokens=4, max_resample_rounds=6),
        progress=False,
    )
    assert len(set(texts(enough.candidates[0]))) == 5
    assert enough.short == {}
    assert enough.num_rejected > 0
    assert enough.num_sampled == 5 + enough.num_rejected

    short = generate_candidates(
        scripted,
        ["hi", "hello"],
        GenerationConfig(num_candidates=7, max_new_tokens=4, max_resample_rounds=5),
        progress=False,
    )
    assert short.short == {0: 5, 1: 5}
    assert [len(c) for c in short.candidates] == [5, 5]


def test_no_resampling_when_rounds_are_zero(scripted):
    result = generate_candidates(
        scripted,
        ["hi"],
        GenerationConfig(num_candidates=5, max_new_tokens=4, max_resample_rounds=0),
        progress=False,
    )
    # Five draws among five answers are almost surely not all distinct (p = 5!/5^5 ~ 4%),
    # and the seed is fixed, so this is deterministic.
    assert result.num_sampled == 5
    assert result.short == {0: len(result.candidates[0])}
    assert len(result.candidates[0]) < 5


def test_empty_completions_are_rejected(scripted):
    model, _ = scripted
    model.empty_rate = 3.0  # EOS first is likelier than any one answer
    try:
        result = generate_candidates(
            scripted,
            ["hi"],
            GenerationConfig(num_candidates=3, max_new_tokens=4, max_resample_rounds=8),
            progress=False,
        )
    finally:
        model.empty_rate = 0.0
    assert all(c.text for c in result.candidates[0])
    assert result.num_rejected > 0


def test_an_answer_ended_at_once_is_kept_for_the_held_out_kl(scripted):
    # Not a candidate, but what the policy sampled: a policy that learnt to say nothing must
    # not read as KL 0 on those prompts.
    from training.evaluation import sample_answer_sets

    model, tokenizer = scripted
    model.empty_rate = 30.0  # EOS first, always
    try:
        result = generate_candidates(
            scripted, ["hi"], GenerationConfig(num_candidates=1, max_new_tokens=4), progress=False
        )
        sets = sample_answer_sets(scripted, ["hi", "hello"], max_new_tokens=4, seed=3)
    finally:
        model.empty_rate = 0.0
    assert result.candidates == [[]]
    empty = result.first_empty[0]
    assert empty.text == "" and empty.token_ids == (tokenizer.eos_token_id,)
    assert empty.metadata["finish_reason"] == "eos"
    assert sets == [["", ""]]
    assert sets.token_ids == [[(tokenizer.eos_token_id,)] * 2]
    assert sets.finished == [[True, True]]


# --------------------------------------------------------------------------- limits and helpers


def test_long_prompts_are_cut_from_the_left_to_fit(plain):
    config = GenerationConfig(num_candidates=1, max_new_tokens=4, max_prompt_tokens=5)
    result = generate_candidates(plain, ["hi", PROMPTS[1]], config, progress=False)
    assert result.truncated == [1]
    assert len(result.candidates[1]) == 1


def test_max_new_tokens_beyond_the_context_is_refused(plain):
    with pytest.raises(ValueError, match="no room for a prompt"):
        generate_candidates(plain, ["hi"], GenerationConfig(max_new_tokens=256), progress=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.0},
        {"top_p": 0.0},
        {"num_candidates": 0},
        {"batch_size": 0},
        {"max_resample_rounds": -1},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        GenerationConfig(**kwargs)


def test_top_p_and_temperature_still_give_k_distinct(plain):
    config = GenerationConfig(num_candidates=3, max_new_tokens=6, temperature=0.7, top_p=0.9)
    result = generate_candidates(plain, ["hi"], config, progress=False)
    assert len(set(texts(result.candidates[0]))) == 3
    assert result.candidates[0][0].metadata["temperature"] == 0.7


def test_iter_batches():
    assert list(iter_batches(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(iter_batches([], 3)) == []
    with pytest.raises(ValueError):
        list(iter_batches([1], 0))


def test_sample_seed_depends_on_every_input():
    base = sample_seed(0, "hi", 0)
    assert base == sample_seed(0, "hi", 0)
    assert (
        len({base, sample_seed(1, "hi", 0), sample_seed(0, "ho", 0), sample_seed(0, "hi", 1)}) == 4
    )
    assert 0 <= base < 2**63


def test_answer_sets_are_one_seeded_sample_per_prompt_and_set(plain_dir):
    """The loop's held-out answers: set s depends on seed + s alone, so set 0 is the single
    answer older reports used, and answers repeat (they are samples, not candidates)."""
    from training.evaluation import sample_answer_sets

    prompts = ["hi", "hello there friend", "hi"]
    sets = sample_answer_sets(plain_dir, prompts, samples=3, max_new_tokens=6, seed=5)
    assert len(sets) == 3 and all(len(answers) == len(prompts) for answers in sets)
    for s, answers in enumerate(sets):
        alone = sample_answer_sets(plain_dir, prompts, samples=1, max_new_tokens=6, seed=5 + s)
        assert answers == alone[0]
    assert sets[0][0] == sets[0][2]  # the same prompt under the same seed: the same answer
    assert len({tuple(answers) for answers in sets}) > 1  # other seeds, other answers
    with pytest.raises(ValueError, match="samples must be at least 1"):
        sample_answer_sets(plain_dir, prompts, samples=0)
