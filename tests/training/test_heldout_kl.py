"""The loop's held-out KL: k1 between the distributions the answers were sampled from."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ml

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the sun is warm today"] * 4


@pytest.fixture(scope="module")
def two_policies(tmp_path_factory):
    from training.tiny import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("kl")
    first = build_tiny_causal_lm(root / "a", TEXTS, vocab_size=120, seed=0)
    second = build_tiny_causal_lm(root / "b", TEXTS, vocab_size=120, seed=1)
    return str(first), str(second)


def by_hand(policy, reference, prompt, answer, *, temperature, eos):
    """sum_t log softmax(logits / T) of each model at the answer's tokens, the difference."""
    from training.modeling import load_tokenizer

    tok = load_tokenizer(policy)
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
    answer_ids += [tok.eos_token_id] if eos else []
    return by_hand_ids(policy, reference, prompt, answer_ids, temperature=temperature)


def by_hand_ids(policy, reference, prompt, answer_ids, *, temperature):
    import torch

    from training.modeling import encode_prompt, load_causal_lm

    answer_ids = list(answer_ids)
    totals = []
    for path in (policy, reference):
        model, tok = load_causal_lm(path, device="cpu")
        prompt_ids = encode_prompt(tok, prompt)
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double() / temperature
        logp = torch.log_softmax(logits, dim=-1)
        totals.append(
            sum(float(logp[len(prompt_ids) + t - 1, i]) for t, i in enumerate(answer_ids))
        )
    return totals[0] - totals[1]


def test_the_kl_scores_at_the_sampling_temperature_and_counts_eos_only_where_sampled(
    two_policies,
):
    from training.evaluation import heldout_kl

    policy, reference = two_policies
    prompts, answers = ["the cat", "a dog"], ["sat on the mat", "ran in"]
    finished = [True, False]  # the second was cut by the token limit: no EOS was sampled
    got = heldout_kl(
        policy, reference, prompts, answers, finished=finished, temperature=0.7, device="cpu"
    )
    want = [
        by_hand(policy, reference, p, a, temperature=0.7, eos=f)
        for p, a, f in zip(prompts, answers, finished)
    ]
    assert got == pytest.approx(sum(want) / 2, abs=1e-4)
    # Scored at T=1 (the figure the loop used to report) it is another number.
    at_one = heldout_kl(
        policy, reference, prompts, answers, finished=finished, temperature=1.0, device="cpu"
    )
    assert abs(at_one - got) > 1e-3
    assert heldout_kl(policy, policy, prompts, answers, device="cpu") == pytest.approx(0.0)


def test_answer_sets_say_which_answers_ended_on_eos(two_policies, monkeypatch):
    import training.generation as generation
    from training.evaluation import sample_answer_sets
    from training.generation import Candidate, GenerationResult

    reasons = iter([["eos", "length", None], ["length", "eos", "eos"]])

    def fake(policy, prompts, config, progress):
        rows = [
            [Candidate(f"answer {config.seed}", {"finish_reason": r})] if r else []
            for r in next(reasons)
        ]
        return GenerationResult(candidates=rows)

    monkeypatch.setattr(generation, "generate_candidates", fake)
    policy, _ = two_policies
    sets = sample_answer_sets(policy, ["a", "b", "c"], samples=2, seed=5)
    assert sets == [["answer 5", "answer 5", ""], ["answer 6", "answer 6", "answer 6"]]
    assert sets.finished == [[True, False, False], [False, True, True]]


def test_the_kl_is_measured_on_the_tokens_the_policy_sampled(two_policies):
    # The answers are stored decoded and stripped: tokenised again, a plain-text prompt's
    # answer loses the leading space token the policy sampled, and the k1 estimate was taken
    # over sequences nobody sampled.
    from training.evaluation import heldout_kl, sample_answer_sets
    from training.modeling import load_tokenizer

    policy, reference = two_policies
    prompts = ["the cat", "a dog", "the sun", "a cat"]
    sets = sample_answer_sets(policy, prompts, max_new_tokens=8, seed=3, device="cpu")
    sampled = sets.token_ids[0]
    tok = load_tokenizer(policy)
    again = [
        tuple(tok(text, add_special_tokens=False)["input_ids"])
        + ((tok.eos_token_id,) if ended else ())
        for text, ended in zip(sets[0], sets.finished[0])
    ]
    assert again != sampled  # the case this guards: other tokens than were sampled
    for ids, ended in zip(sampled, sets.finished[0]):
        assert (ids[-1] == tok.eos_token_id) == ended  # EOS kept where the answer ended on it
    got = heldout_kl(
        policy,
        reference,
        prompts,
        sets[0],
        finished=sets.finished[0],
        answer_ids=sampled,
        temperature=0.7,
        device="cpu",
    )
    want = [
        by_hand_ids(policy, reference, p, ids, temperature=0.7) for p, ids in zip(prompts, sampled)
    ]
    assert got == pytest.approx(sum(want) / len(want), abs=1e-4)
