"""PPO-ptx: the LM loss on ptx_data in every update, its data formats, errors and resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.training.test_ppo import PROMPTS, TEXTS, count_a, tiny_config  # noqa: E402
from training.ppo import PPOConfig, train_ppo  # noqa: E402
from training.ppo.ptx import PtxBatches, load_ptx_data  # noqa: E402

pytestmark = pytest.mark.ml


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    torch.set_num_threads(1)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm", TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def tokenizer(tiny_lm):
    from training.modeling import load_tokenizer

    return load_tokenizer(tiny_lm)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_the_three_shapes_are_tokenized_with_the_loss_where_it_belongs(tmp_path, tokenizer):
    from training.modeling import encode_prompt

    eos = tokenizer.eos_token_id
    data = write_jsonl(
        tmp_path / "ptx.jsonl",
        [
            {"text": "the cat sat"},
            {"prompt": "the cat 3", "response": "said hello"},
            {"prompt": "the cat 4", "completion": "sat"},
            {
                "messages": [
                    {"role": "user", "content": "the cat 3"},
                    {"role": "assistant", "content": "said hello"},
                ]
            },
        ],
    )
    text, pair, completion, chat = load_ptx_data(data, tokenizer, max_length=64)
    words = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert text.ids == words("the cat sat") + [eos] and text.loss_from == 0
    prompt = encode_prompt(tokenizer, "the cat 3")
    assert pair.ids == prompt + words("said hello") + [eos] and pair.loss_from == len(prompt)
    assert completion.ids[completion.loss_from :] == words("sat") + [eos]
    # A chat's last assistant message is the response, the messages before it the prompt.
    chat_prompt = encode_prompt(tokenizer, [{"role": "user", "content": "the cat 3"}])
    assert chat.ids == chat_prompt + words("said hello") + [eos]
    assert chat.loss_from == len(chat_prompt)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[1, 2]", ":2: each line must be a JSON object"),
        ('{"prompt": "x"}', ":2: a line needs 'text', 'messages', or 'prompt' with 'response'"),
        ('{"text": ""}', ":2: 'text' must be a non-empty string"),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
            ":2: the last of 'messages' must be the assistant's",
        ),
        ('{"text": "a"', ":2: invalid JSON"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, tokenizer, line, problem):
    data = write_jsonl(tmp_path / "ptx.jsonl", [{"text": "fine"}, line])
    with pytest.raises(ValueError, match=f"ptx.jsonl{problem}"):
        load_ptx_data(data, tokenizer, max_length=64)


def test_missing_empty_and_prompt_only_files_are_refused(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="is not a file"):
        load_ptx_data(tmp_path / "nope.jsonl", tokenizer, max_length=64)
    with pytest.raises(ValueError, match="holds no examples"):
        load_ptx_data(write_jsonl(tmp_path / "empty.jsonl", []), tokenizer, max_length=64)
    long_prompt = write_jsonl(
        tmp_path / "long.jsonl", [{"prompt": "the cat " * 40, "response": "sat"}]
    )
    with pytest.raises(ValueError, match="long.jsonl:1: the prompt fills all 8 tokens"):
        load_ptx_data(long_prompt, tokenizer, max_length=8)


def test_batches_repeat_per_step_and_mask_prompt_and_padding(tmp_path, tokenizer):
    data = write_jsonl(
        tmp_path / "ptx.jsonl",
        [{"prompt": "the cat 1", "response": "said hello"}, {"text": "the mat"}],
    )
    examples = load_ptx_data(data, tokenizer, max_length=64)
    batches = PtxBatches(examples, tokenizer.pad_token_id, seed=0, rank=0)
    batches.start_step(3)
    first = [batches.next(4, torch.device("cpu")) for _ in range(2)]
    batches.start_step(3)
    again = [batches.next(4, torch.device("cpu")) for _ in range(2)]
    for a, b in zip(first, again):
        assert all(torch.equal(a[k], b[k]) for k in a)  # a resumed step draws the same
    batch = first[0]
    for row in range(4):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        example = next(e for e in examples if e.ids == ids)
        labels = batch["labels"][row].tolist()
        assert labels[: example.loss_from] == [-100] * example.loss_from
        assert labels[example.loss_from : len(ids)] == ids[example.loss_from :]
        assert labels[len(ids) :] == [-100] * (len(labels) - len(ids))  # padding never counts


def _nll(model_dir, tokenizer, texts) -> float:
    from training.modeling import load_causal_lm

    model, _ = load_causal_lm(model_dir, device="cpu")
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        return float(model(**batch, labels=labels).loss)


def test_ptx_pulls_the_policy_toward_its_data_beside_the_reward(tiny_lm, tokenizer, tmp_path):
    """The same PPO run against the letter-'a' reward, with and without PPO-ptx on the texts:
    with it, the policy's NLL on those texts ends far lower (the tiny model starts untrained,
    so the ptx loss teaches it them), and its loss is logged every step."""
    data = write_jsonl(tmp_path / "ptx.jsonl", [{"text": t} for t in TEXTS])
    config = tiny_config(total_episodes=16 * 12)
    plain = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "plain", config)
    ptx_config = replace(config, ptx_data=str(data), ptx_coef=2.0)
    with_ptx = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "ptx", ptx_config)
    start = _nll(tiny_lm, tokenizer, TEXTS[:32])
    after_plain = _nll(tmp_path / "plain", tokenizer, TEXTS[:32])
    after_ptx = _nll(tmp_path / "ptx", tokenizer, TEXTS[:32])
    assert after_ptx < after_plain - 1.0 and after_ptx < start - 1.0, (
        start,
        after_plain,
        after_ptx,
    )
    assert "ptx_loss" not in plain.history[-1]
    losses = [row["ptx_loss"] for row in with_ptx.history]
    assert all(loss > 0 for loss in losses)
    recorded = json.loads((tmp_path / "ptx" / "training_config.json").read_text())
    assert recorded["ptx_data"] == str(data) and recorded["ptx_coef"] == 2.0
    assert len(recorded["identity"]["ptx_data"]["sha256"]) == 64


def test_resume_refuses_other_ptx_data(tiny_lm, tmp_path):
    """Exact resume with ptx is test_ppo's resume test (its "ptx" case); here the data
    changes under the same path and the checkpoint is refused."""
    data = write_jsonl(tmp_path / "ptx.jsonl", [{"text": t} for t in TEXTS[:50]])
    config = tiny_config(
        total_episodes=8 * 4, batch_size=8, ppo_epochs=2, save_every=2, ptx_data=str(data)
    )
    train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "run", config)  # leaves the step-2 checkpoint
    write_jsonl(data, [{"text": t} for t in TEXTS[50:100]])  # same path, other examples
    with pytest.raises(ValueError, match="the ptx_data differs"):
        train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "run", config)


def test_config_refuses_a_negative_coefficient():
    with pytest.raises(ValueError, match="ptx_coef must be 0 or more"):
        PPOConfig(ptx_coef=-1.0)
