"""One rendering of (prompt, response) for the reward model, in RM training and in PPO scoring.

Candidates are stored stripped; PPO decodes its responses as sampled, often with a leading
space. Both must reach the reward model as the same token ids.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.ppo import models as ppo_models  # noqa: E402
from training.ppo.math import truncate_after_eos  # noqa: E402
from training.reward import normalize_response, scoring  # noqa: E402
from training.reward.dataset import Renderer  # noqa: E402
from training.tiny import build_tokenizer  # noqa: E402

TEXTS = [f"what is {a} plus {b}? it is {a + b}." for a in range(12) for b in range(6)]
CASES = [
    ("what is 3 plus 9?", " 12"),
    ("what is 3 plus 9? it is", " 12.\n"),
    ([{"role": "user", "content": "what is 1 plus 1?"}], " it is 2. "),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TEXTS, vocab_size=300, chat_template=True)


def _ppo_texts(tokenizer, responses: list[str]) -> list[str]:
    """What PPO's rollout hands the reward: the sampled ids, EOS dropped, decoded as they are."""
    texts = []
    for response in responses:
        ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        sampled = torch.tensor([[*ids, tokenizer.eos_token_id]])
        kept, lengths, _ = truncate_after_eos(
            sampled, [tokenizer.eos_token_id], tokenizer.pad_token_id
        )
        texts.append(tokenizer.decode(kept[0, : int(lengths[0]) - 1], skip_special_tokens=True))
    return texts


def test_rm_training_and_ppo_scoring_render_the_same_token_ids(tokenizer, monkeypatch):
    prompts = [p for p, _ in CASES]
    ppo_texts = _ppo_texts(tokenizer, [r for _, r in CASES])
    assert ppo_texts[0] == " 12"  # decoded as sampled: the leading space is there
    stored = [t.strip() for t in ppo_texts]  # what candidate generation stores

    # Without normalisation these really are other tokens (the bug this guards against).
    raw = tokenizer(ppo_texts[0], add_special_tokens=False)["input_ids"]
    assert raw != tokenizer(stored[0], add_special_tokens=False)["input_ids"]

    # RM training: the dataset renderer on stored candidates.
    render = Renderer(tokenizer, max_length=64)
    training_ids = [render(p, c) for p, c in zip(prompts, stored)]

    # PPO scoring: the Reward wrapper around a reward model, on the decoded responses.
    captured: list[list[int]] = []

    def fake_score(model, sequences, pad_token_id, *, batch_size=16):
        captured.extend(list(s) for s in sequences)
        return [0.0] * len(sequences)

    monkeypatch.setattr(scoring, "score_token_ids", fake_score)
    reward = ppo_models.Reward(lambda p, r: [0.0] * len(r), torch.device("cpu"), torch.float32, 4)
    reward.fn, reward.scorer = None, scoring.RewardModelScorer(None, tokenizer, max_length=64)
    reward(prompts, ppo_texts)
    assert captured == training_ids


def test_normalize_response():
    assert normalize_response("  hello world \n") == "hello world"
    assert normalize_response("a\n\nb") == "a\n\nb"  # inner whitespace is content


def test_answers_that_differ_only_in_surrounding_whitespace_are_one_input(tokenizer, monkeypatch):
    """The reward's bias is the mean over distinct inputs: an answer stored twice, once with a
    trailing newline (an outside export), counts once and is rendered once."""
    from training.reward import calibrate

    render = Renderer(tokenizer, max_length=64)
    first = render("what is 3 plus 9?", "it is 12.")
    again = render("what is 3 plus 9?", " it is 12.\n")
    render("what is 3 plus 9?", "it is 11.")
    assert first is again
    assert len(render.cache) == 2

    monkeypatch.setattr(
        calibrate,
        "score_token_ids",
        lambda model, seqs, pad, *, batch_size: [1.0, 3.0][: len(seqs)],
    )
    bias, _, count = calibrate.reward_bias(None, render, batch_size=4)
    assert (bias, count) == (2.0, 2)
