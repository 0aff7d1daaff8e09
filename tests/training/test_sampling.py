"""Generation settings leak from no checkpoint: PPO samples what it scores, candidates record all.

The tiny model here saves a generation_config.json like a released chat model's
(repetition_penalty 1.5, no_repeat_ngram_size, min_new_tokens, top_k, min_p). transformers fills
every unset field of a passed GenerationConfig from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import GenerationConfig as HFGenerationConfig  # noqa: E402

from training import ppo, sampling  # noqa: E402
from training.generation import GenerationConfig, generate_candidates  # noqa: E402
from training.modeling import encode_prompt, load_causal_lm  # noqa: E402
from training.ppo.math import logprobs_from_logits, truncate_after_eos  # noqa: E402
from training.ppo.rollout import left_pad  # noqa: E402
from training.tiny import build_tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.ml

TEXTS = [f"the cat number {i} sat on the mat and said hello {i % 7}" for i in range(200)]
PROMPTS = ["the cat", "hello there my friend the cat sat", "mat", "on the"]
CHECKPOINT_SETTINGS = {
    "do_sample": True,
    "repetition_penalty": 1.5,
    "no_repeat_ngram_size": 2,
    "min_new_tokens": 4,
    "top_k": 5,
    "min_p": 0.2,
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(clean model, the same weights with a chat model's generation_config.json)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sampling")
    clean = build_tiny_causal_lm(root / "clean", TEXTS, vocab_size=300)
    leaky = root / "leaky"
    shutil.copytree(clean, leaky)
    gen = HFGenerationConfig.from_pretrained(leaky)
    for name, value in CHECKPOINT_SETTINGS.items():
        setattr(gen, name, value)
    gen.save_pretrained(leaky)
    return clean, leaky


def _sampled_and_scored(model, tokenizer, gen_config, temperature, use_helper: bool):
    """Logprobs of the sampled tokens under the distribution generation sampled from, and
    under PPO's scoring forward pass."""
    queries = left_pad([encode_prompt(tokenizer, p) for p in PROMPTS], tokenizer.pad_token_id)
    config = gen_config.__class__.from_dict(gen_config.to_dict())
    config.output_scores = True  # the scores after every processor: what was sampled from
    config.return_dict_in_generate = True
    inputs = {"input_ids": queries, "attention_mask": queries != tokenizer.pad_token_id}
    torch.manual_seed(0)
    if use_helper:
        out = sampling.generate(model, config, **inputs)
    else:
        out = model.generate(**inputs, generation_config=config)
    stop_ids = [tokenizer.eos_token_id]
    responses, lengths, _ = truncate_after_eos(
        out.sequences[:, queries.size(1) :], stop_ids, tokenizer.pad_token_id
    )
    scores = torch.stack(out.scores, dim=1)  # (B, T, V), already divided by the temperature
    at_sampling = torch.log_softmax(scores.float(), -1).gather(-1, responses[..., None])[..., 0]
    scored = logprobs_from_logits(
        ppo.response_logits(
            model, torch.cat([queries, responses], 1), queries.size(1), tokenizer.pad_token_id
        ),
        responses,
        temperature,
    )
    valid = torch.arange(responses.size(1))[None] < lengths[:, None]
    return at_sampling[valid], scored[valid]


def test_ppo_rollout_samples_exactly_the_distribution_it_scores(dirs):
    _, leaky = dirs
    model, tokenizer = load_causal_lm(leaky, device="cpu")
    assert model.generation_config.repetition_penalty == 1.5  # the checkpoint says so
    config = PPOConfig_tiny()
    gen_config = ppo.generation_config(config, tokenizer, [tokenizer.eos_token_id])
    sampled, scored = _sampled_and_scored(model, tokenizer, gen_config, 0.7, use_helper=True)
    assert sampled.numel() > 10
    torch.testing.assert_close(sampled, scored, atol=1e-5, rtol=0)
    # The model's own config is left as it was.
    assert model.generation_config.repetition_penalty == 1.5
    assert model.generation_config.min_p == 0.2
    effective = sampling.effective_settings(model, gen_config)
    assert effective["repetition_penalty"] == 1.0
    assert effective["no_repeat_ngram_size"] == 0
    assert effective["min_new_tokens"] == 0
    assert (effective["top_k"], effective["top_p"], effective["min_p"]) == (0, 1.0, None)
    assert effective["temperature"] == 0.7 and effective["do_sample"] is True


def test_plain_generate_with_a_fresh_config_would_leak(dirs):
    """What the helper prevents: a fresh GenerationConfig alone inherits the checkpoint's."""
    _, leaky = dirs
    model, tokenizer = load_causal_lm(leaky, device="cpu")
    fresh = HFGenerationConfig(
        max_new_tokens=8,
        do_sample=True,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        eos_token_id=[tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=[tokenizer.pad_token_id],
    )
    sampled, scored = _sampled_and_scored(model, tokenizer, fresh, 0.7, use_helper=False)
    assert (sampled - scored).abs().max() > 1e-2


def test_rollout_goes_through_the_neutral_generate(dirs, monkeypatch):
    _, leaky = dirs
    model, tokenizer = load_causal_lm(leaky, device="cpu")
    config = PPOConfig_tiny()
    stop_ids = [tokenizer.eos_token_id]
    gen_config = ppo.generation_config(config, tokenizer, stop_ids)
    calls = []
    real = sampling.generate

    def spy(m, cfg, **inputs):
        calls.append(sampling.effective_settings(m, cfg))
        return real(m, cfg, **inputs)

    monkeypatch.setattr("training.ppo.rollout.generate", spy)
    queries = left_pad([encode_prompt(tokenizer, p) for p in PROMPTS], tokenizer.pad_token_id)
    value_model, _ = ppo.build_value_model(leaky, tokenizer, None, None, torch.float32)
    ppo.rollout.rollout(model, model, value_model, tokenizer, queries, gen_config, config, stop_ids)
    assert calls and calls[0]["repetition_penalty"] == 1.0 and calls[0]["min_p"] is None


def PPOConfig_tiny():  # noqa: N802
    return ppo.PPOConfig(
        total_episodes=4, batch_size=4, mini_batches=1, response_length=8, temperature=0.7
    )


def test_candidates_ignore_and_record_the_checkpoint_settings(dirs):
    clean, leaky = dirs
    config = GenerationConfig(num_candidates=3, max_new_tokens=8, seed=5, temperature=0.9)
    runs = {
        name: generate_candidates(
            load_causal_lm(path, device="cpu"), PROMPTS, config, progress=False
        )
        for name, path in (("clean", clean), ("leaky", leaky))
    }
    as_texts = {n: [[c.text for c in cs] for cs in r.candidates] for n, r in runs.items()}
    assert as_texts["leaky"] == as_texts["clean"]  # the checkpoint's settings changed nothing
    meta = runs["leaky"].candidates[0][0].metadata
    used = meta["generation"]
    assert used["do_sample"] is True and used["temperature"] == 0.9 and used["top_p"] == 1.0
    assert used["top_k"] == 0 and used["min_p"] is None
    assert used["repetition_penalty"] == 1.0
    assert used["no_repeat_ngram_size"] == 0 and used["min_new_tokens"] == 0
    assert used["max_new_tokens"] == 8
    tokenizer = load_causal_lm(leaky, device="cpu")[1]
    assert used["eos_token_id"] == [tokenizer.eos_token_id]
    assert used["banned_token_ids"] == [tokenizer.pad_token_id]
    import json

    json.dumps(meta)  # stored as JSON with the candidate
