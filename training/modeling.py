"""Loading causal language models and rendering prompts, shared by generation, reward and PPO code.

Every model path the project accepts (a local directory or a Hugging Face Hub id) goes through
`load_causal_lm`, so that a bad path fails the same way everywhere: a `ModelLoadError` whose
message is one sentence a command can print instead of a traceback.

`format_prompt` is THE prompt rendering: candidates generated for labelers and PPO rollouts
render a prompt identically, so the policy is trained on exactly what labelers saw.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PAD_TOKEN = "<pad>"

# Files one of which a local directory must hold for AutoTokenizer to build a real tokenizer
# (without any, transformers may silently return an empty tokenizer for some model types).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tiktoken.model",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

Prompt = str | list[dict[str, Any]]


class ModelLoadError(Exception):
    """A model or tokenizer could not be loaded; the message is one sentence for the user."""


# --------------------------------------------------------------------------- device and dtype


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op CPU threads (None or 0: leave torch's setting).

    CPU results depend on the thread count (float sums are split and added in another
    order), so a run that must repeat on any machine fixes it; for models as small as the
    demo world's one thread is also the fastest.
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return the torch device for `device`; "auto" or None picks CUDA when present, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available here")
    return resolved


def resolve_dtype(
    device: torch.device | str | None, dtype: str | torch.dtype | None = None
) -> torch.dtype:
    """Return the weights dtype: bf16 on CUDA when supported, else fp32; `dtype` overrides.

    CUDA without bf16 support gets fp32 rather than fp16, because fp16 overflows in the
    activations of several popular models and generation must never silently produce NaNs.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None and dtype != "auto":
        try:
            return DTYPES[dtype.lower()]
        except KeyError:
            raise ValueError(
                f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16"
            ) from None
    device = resolve_device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# --------------------------------------------------------------------------- loading


def _is_local_reference(path: str) -> bool:
    """True when `path` names the local filesystem rather than a hub id like "org/name"."""
    if os.path.exists(path):
        return True
    # A hub id is "name" or "org/name"; anything else (absolute, relative with ./, ~, several
    # slashes, Windows separators) can only mean a local path that is missing.
    return os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or "\\" in path


def model_reference(path: str | Path) -> str:
    """How a run names a model: a local file or folder by its absolute path (`./m`, `m` and
    `/abs/m` are one model), anything else (a hub id) as given; `lineage.services.model_path`
    stores model versions the same way."""
    local = Path(str(path)).expanduser()
    return str(local.resolve()) if local.exists() else str(path)


def _hub_error(path: str, exc: BaseException) -> ModelLoadError:
    """Turn a transformers/hub failure on a hub id into one readable sentence."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"} or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ).lower() in {"1", "true", "yes", "on"}:
        return ModelLoadError(
            f"Model {path!r} is not a local directory and is not in the Hugging Face cache, "
            "and the hub is offline (HF_HUB_OFFLINE=1): download it first or pass a local path."
        )
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(
        f"Model {path!r} is not a local directory and could not be loaded from the Hugging Face "
        f"Hub ({reason})."
    )


def _check_local_dir(path: Path, *, need_weights: bool) -> None:
    """Fail early, with a precise sentence, on a local path that cannot hold a model."""
    if not path.exists():
        raise ModelLoadError(f"Model path {str(path)!r} does not exist.")
    if not path.is_dir():
        raise ModelLoadError(f"Model path {str(path)!r} is a file, not a model directory.")
    if need_weights and not (path / "config.json").is_file():
        raise ModelLoadError(
            f"Directory {str(path)!r} has no config.json, so it is not a transformers model directory."
        )
    if need_weights and not any(p.name.endswith(WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise ModelLoadError(f"Directory {str(path)!r} has a config.json but no model weights.")


def check_model_reference(path: str | Path, *, causal_lm: bool = False) -> None:
    """Raise `ModelLoadError` unless `path` names a loadable model, without loading weights.

    Commands call it before they write anything (SPEC section 4): a local directory needs a
    readable config.json and weights; a hub id needs its config (from the cache when offline).
    With `causal_lm`, the config must also be one AutoModelForCausalLM generates with;
    otherwise a peft adapter folder (a LoRA reward model) passes when its base model does.
    """
    import json

    ref = str(path)
    local = _is_local_reference(ref)
    if local:
        local_path = Path(ref).expanduser()
        adapter = local_path / "adapter_config.json"
        if not causal_lm and adapter.is_file():
            try:
                base = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ModelLoadError(
                    f"The adapter_config.json in {ref!r} could not be read ({_first_line(exc)})."
                ) from exc
            if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in local_path.iterdir()):
                raise ModelLoadError(f"Directory {ref!r} has an adapter config but no weights.")
            check_model_reference(base)
            return
        _check_local_dir(local_path, need_weights=True)
        ref = str(local_path)
    config = _load_config(ref, local=local)
    if causal_lm:
        _check_causal_config(ref, config)


def _load_config(ref: str, *, local: bool):
    """The model's config, or a ModelLoadError that says whether the hub or the folder failed."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref)
    except (OSError, ValueError, KeyError) as exc:
        if not local:
            raise _hub_error(ref, exc) from exc
        raise ModelLoadError(
            f"The config.json in {ref!r} could not be read ({_first_line(exc)})."
        ) from exc


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer with left padding and a pad token distinct from EOS.

    When the tokenizer has no pad token (or reuses EOS as pad), a new `<pad>` special token is
    added: PPO must tell padding from a real end of sequence. The vocabulary then grows by
    one, so the model's embeddings must be resized; `load_causal_lm` does that.
    """
    from transformers import AutoTokenizer

    ref = str(path)
    local = _is_local_reference(ref)
    if local:
        local_path = Path(ref).expanduser()
        _check_local_dir(local_path, need_weights=False)
        if not any((local_path / name).is_file() for name in TOKENIZER_FILES):
            raise ModelLoadError(
                f"Directory {ref!r} has no tokenizer files (tokenizer.json or similar)."
            )
        ref = str(local_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError, TypeError) as exc:
        if not local:
            raise _hub_error(ref, exc) from exc
        raise ModelLoadError(
            f"The tokenizer in {ref!r} could not be loaded ({_first_line(exc)})."
        ) from exc
    if isinstance(tokenizer, bool) or len(tokenizer) == 0:
        raise ModelLoadError(f"The tokenizer in {ref!r} is empty.")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _causal_lm_class_names() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update(value if isinstance(value, (list, tuple)) else [value])
    return names


def _check_causal_config(ref: str, config: Any) -> None:
    """Reject configs that AutoModelForCausalLM cannot load, or saved from a non-causal head."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    model_type = getattr(config, "model_type", "?")
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelLoadError(
            f"Model {ref!r} (model_type {model_type!r}) is not a causal language model that "
            "AutoModelForCausalLM can load."
        )
    # A BERT classifier has a config AutoModelForCausalLM accepts, but loading it would
    # silently initialise a fresh LM head: the saved architecture tells the truth.
    architectures = getattr(config, "architectures", None) or []
    causal = _causal_lm_class_names()
    if architectures and not any(
        a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures
    ):
        raise ModelLoadError(
            f"Model {ref!r} is a {architectures[0]}, not a causal language model that can generate text."
        )


def set_pad_token_id(model: Any, pad_token_id: int) -> None:
    """Tell `model` which id pads, on its config and on its text config.

    Multimodal configs (Gemma 3, Qwen2.5-VL, ...) keep the language model's settings in a
    sub-config, and that is where the sequence-classification head looks for padding
    (`config.get_text_config().pad_token_id`): setting only the top level would leave the
    head reading the reward off a pad token.
    """
    model.config.pad_token_id = pad_token_id
    text_config = model.config.get_text_config()
    if text_config is not model.config:
        text_config.pad_token_id = pad_token_id


def load_causal_lm(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (left padding, distinct pad) in eval mode on `device`."""
    from transformers import AutoModelForCausalLM

    ref = str(path)
    local = _is_local_reference(ref)
    if local:
        local_path = Path(ref).expanduser()
        _check_local_dir(local_path, need_weights=True)
        ref = str(local_path)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(torch_device, dtype)
    config = _load_config(ref, local=local)
    _check_causal_config(ref, config)
    tokenizer = load_tokenizer(ref)
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, config=config, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        if not local:
            raise _hub_error(ref, exc) from exc
        raise ModelLoadError(
            f"The model in {ref!r} could not be loaded ({_first_line(exc)})."
        ) from exc
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        # load_tokenizer added a pad token: give it an embedding row (never attended to).
        model.resize_token_embeddings(len(tokenizer))
    set_pad_token_id(model, tokenizer.pad_token_id)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(torch_device)
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------- prompts


# Config fields that bound a model's input length, by architecture family.
MAX_POSITION_FIELDS = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "max_seq_len",
    "seq_length",
)


def config_max_positions(config: Any) -> int | None:
    """The longest input a model config's position embeddings allow, None when it says not."""
    for name in MAX_POSITION_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def lora_fan_in_fan_out(model: torch.nn.Module) -> bool:
    """Whether LoRA must transpose its weights: GPT-2-style models use Conv1D, not Linear.

    peft would switch it on by itself, with a warning per layer; saying so up front is quiet.
    """
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(module, Conv1D) for module in model.modules())


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """Return `prompt` as a chat: a plain string becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in prompt
    ):
        raise ValueError("a prompt is a string or a list of {'role', 'content'} messages")
    return prompt


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> str:
    """Render a prompt as the text the model continues (its chat template when it has one).

    With a template, a plain string becomes one user message and the assistant turn is opened
    (add_generation_prompt). Without one, a string stays as is and a chat becomes
    "role: content" lines ending with "assistant:".
    """
    if has_chat_template(tokenizer):
        rendered = tokenizer.apply_chat_template(
            as_messages(prompt), tokenize=False, add_generation_prompt=True
        )
        return str(rendered)
    if isinstance(prompt, str):
        return prompt
    lines = [f"{m['role']}: {m['content']}" for m in as_messages(prompt)]
    return "\n".join([*lines, "assistant:"])


def encode_completion(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of an answer as it follows `encode_prompt`'s ids in training: the stripped
    text (stored candidates are stripped), tokenized on its own, then EOS.

    Tokenized apart from the prompt, as generation continues the prompt's tokens; the reward
    model renders answers the same way (`training.reward.scoring.render_reward_input`).
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: an answer could never end")
    ids = tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id]


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    """Token ids of the rendered prompt, without a second BOS when a chat template added one."""
    text = format_prompt(tokenizer, prompt)
    # Chat templates write their own special tokens (BOS included); adding them again would
    # give the model an input it never saw in training.
    return list(tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"])
