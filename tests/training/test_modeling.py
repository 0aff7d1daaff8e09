"""Model loading, device/dtype choice and prompt rendering (training/modeling.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from training.modeling import (  # noqa: E402
    ModelLoadError,
    encode_prompt,
    format_prompt,
    load_causal_lm,
    load_tokenizer,
    lora_fan_in_fan_out,
    resolve_device,
    resolve_dtype,
)
from training.tiny import build_tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.ml

TEXTS = [
    "hello there, how are you today?",
    "the capital of france is paris",
    "two plus two is four",
] * 5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("plain"), TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("chat"), TEXTS, arch="llama", vocab_size=300, chat_template=True
    )


def _model_with_tokenizer(tmp: Path, *, pad_token: str | None) -> Path:
    """A GPT-2 whose tokenizer has no pad token, or uses EOS as pad (like many hub models)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXTS, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"]))
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]", pad_token=pad_token
    )
    config = GPT2Config(vocab_size=len(hf_tok), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp)
    hf_tok.save_pretrained(tmp)
    return tmp


def _one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and "Traceback" not in message


# --------------------------------------------------------------------------- device and dtype


def test_resolve_device_auto_picks_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_device_rejects_cuda_without_gpu():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_resolve_dtype_defaults_and_overrides():
    assert resolve_dtype("cpu") == torch.float32
    assert resolve_dtype("cpu", "auto") == torch.float32
    assert resolve_dtype("cpu", "bfloat16") == torch.bfloat16
    assert resolve_dtype("cpu", "float16") == torch.float16
    assert resolve_dtype("cpu", torch.float64) == torch.float64
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("cpu", "int8")


# --------------------------------------------------------------------------- loading


def test_load_causal_lm_gives_eval_model_and_left_padding_tokenizer(plain_dir):
    model, tokenizer = load_causal_lm(plain_dir, device="cpu")
    assert not model.training
    assert model.dtype == torch.float32
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_load_causal_lm_dtype_override(plain_dir):
    model, _ = load_causal_lm(plain_dir, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize("pad_token", [None, "[EOS]"])
def test_missing_or_eos_pad_token_gets_a_distinct_pad_and_resized_embeddings(tmp_path, pad_token):
    path = _model_with_tokenizer(tmp_path, pad_token=pad_token)
    vocab_before = len(load_tokenizer_raw(path))
    model, tokenizer = load_causal_lm(path, device="cpu")
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert len(tokenizer) == vocab_before + 1
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    # The model still runs on the new id.
    out = model(input_ids=torch.tensor([[tokenizer.pad_token_id, tokenizer.eos_token_id]]))
    assert out.logits.shape[-1] >= len(tokenizer)


def load_tokenizer_raw(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_load_tokenizer_alone(plain_dir):
    tokenizer = load_tokenizer(plain_dir)
    assert tokenizer.padding_side == "left"
    batch = tokenizer(["hello", "hello there how are you"], padding=True)
    # Left padding: the short row starts with pads and ends with real tokens.
    assert batch["input_ids"][0][0] == tokenizer.pad_token_id
    assert batch["attention_mask"][0][-1] == 1


# --------------------------------------------------------------------------- load errors


def test_missing_directory_is_one_clear_sentence(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_causal_lm(tmp_path / "nope")
    assert _one_sentence(str(info.value))


def test_relative_missing_path_is_not_mistaken_for_a_hub_id():
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_causal_lm("./models/no-such-policy")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json") as info:
        load_causal_lm(tmp_path)
    assert _one_sentence(str(info.value))


def test_directory_with_config_but_no_weights(tmp_path, plain_dir):
    shutil.copy(plain_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match="no model weights"):
        load_causal_lm(tmp_path)


def test_directory_without_tokenizer(tmp_path, plain_dir):
    for name in ("config.json", "model.safetensors"):
        shutil.copy(plain_dir / name, tmp_path / name)
    with pytest.raises(ModelLoadError, match="no tokenizer files") as info:
        load_causal_lm(tmp_path)
    assert _one_sentence(str(info.value))


def test_bert_classifier_is_not_a_causal_lm(tmp_path, plain_dir):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=300,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    shutil.copy(plain_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    with pytest.raises(ModelLoadError, match="BertForSequenceClassification, not a causal") as info:
        load_causal_lm(tmp_path)
    assert _one_sentence(str(info.value))


def test_encoder_decoder_config_is_not_a_causal_lm(tmp_path):
    from transformers import T5Config

    T5Config(
        vocab_size=100, d_model=16, num_layers=1, num_heads=2, d_ff=32, d_kv=8
    ).save_pretrained(tmp_path)
    # Weights present so that the config check, not the weights check, answers.
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"model_type 't5'.*not a causal language model"):
        load_causal_lm(tmp_path)


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline") as info:
        load_causal_lm("rlhf-studio-tests/no-such-model")
    assert _one_sentence(str(info.value))
    assert "rlhf-studio-tests/no-such-model" in str(info.value)


def test_corrupt_config_is_a_load_error(tmp_path, plain_dir):
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(plain_dir / name, tmp_path / name)
    (tmp_path / "config.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ModelLoadError, match="could not be read"):
        load_causal_lm(tmp_path)


# --------------------------------------------------------------------------- prompt rendering


def test_format_prompt_uses_the_chat_template(chat_dir):
    tokenizer = load_tokenizer(chat_dir)
    assert format_prompt(tokenizer, "hi") == "<|user|> hi <eos> <|assistant|> "
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (
        format_prompt(tokenizer, chat)
        == "<|system|> be brief <eos> <|user|> hi <eos> <|assistant|> "
    )
    # A plain string is the same as a one-message chat.
    assert format_prompt(tokenizer, "hi") == format_prompt(
        tokenizer, [{"role": "user", "content": "hi"}]
    )


def test_format_prompt_without_template(plain_dir):
    tokenizer = load_tokenizer(plain_dir)
    assert format_prompt(tokenizer, "What is 2 + 2?") == "What is 2 + 2?"
    chat = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    assert (
        format_prompt(tokenizer, chat)
        == "system: be brief\nuser: hi\nassistant: hello\nuser: bye\nassistant:"
    )


def test_format_prompt_rejects_malformed_chats(plain_dir):
    tokenizer = load_tokenizer(plain_dir)
    with pytest.raises(ValueError, match="role"):
        format_prompt(tokenizer, [{"text": "hi"}])


def test_encode_prompt_matches_the_rendering(chat_dir):
    tokenizer = load_tokenizer(chat_dir)
    ids = encode_prompt(tokenizer, "hello there")
    assert tokenizer.decode(ids) == format_prompt(tokenizer, "hello there")
    # The template's role markers are single special tokens, not spelled out in pieces.
    assert tokenizer.convert_tokens_to_ids("<|assistant|>") in ids


def test_lora_transposes_only_for_conv1d_models(plain_dir, chat_dir):
    gpt2, _ = load_causal_lm(plain_dir, device="cpu")
    llama, _ = load_causal_lm(chat_dir, device="cpu")
    assert lora_fan_in_fan_out(gpt2) is True  # GPT-2 projections are Conv1D
    assert lora_fan_in_fan_out(llama) is False  # nn.Linear


def _hub_kernels_setting(**env: str) -> str:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k != "USE_HUB_KERNELS"} | env
    code = "import os, training; print(os.environ['USE_HUB_KERNELS'])"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean, cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_hub_kernels_are_off_unless_the_environment_asks_for_them():
    # On a GPU, transformers would fetch kernels from the Hub at `model.train()`: offline
    # that raised mid-run (seen on an H200 with bench/gpu_ppo.py --lora).
    assert _hub_kernels_setting() == "NO"
    assert _hub_kernels_setting(USE_HUB_KERNELS="YES") == "YES"


def test_loaded_models_do_not_use_hub_kernels(plain_dir):
    model, _ = load_causal_lm(plain_dir, device="cpu")
    assert model.use_kernels is False
    model.train()  # what switched kernels on and fetched them from the Hub
    assert model.use_kernels is False
