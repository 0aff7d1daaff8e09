"""Tiny causal language models built on the spot, for tests, benchmarks and the demo world.

Nothing here downloads anything: the tokenizer is trained on the given texts with `tokenizers`
and the model is a freshly initialised GPT-2 or Llama config, saved with `save_pretrained` so
that everything downstream loads it exactly as it would load a hub checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
BOS_TOKEN = "<bos>"

# A minimal ChatML-style template: enough to exercise the chat-template code paths.
# Assistant turns sit in {% generation %} markers (which render nothing), so trl's
# assistant_only_loss can mask everything else; the turn's <eos> is inside, so it is learnt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|> {% generation %}{{ message['content'] }} <eos>{% endgeneration %} "
    "{% else %}"
    "<|{{ message['role'] }}|> {{ message['content'] }} <eos> "
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
CHAT_ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]


def build_tokenizer(texts: Iterable[str], *, vocab_size: int = 2000, chat_template: bool = False):
    """Train a small byte-level BPE tokenizer on `texts` and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [UNK_TOKEN, PAD_TOKEN, EOS_TOKEN, BOS_TOKEN]
    if chat_template:
        special += CHAT_ROLE_TOKENS
    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        padding_side="left",
    )
    if chat_template:
        hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_tiny_causal_lm(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    arch: str = "gpt2",
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    max_positions: int = 256,
    vocab_size: int = 2000,
    chat_template: bool = False,
    seed: int = 0,
) -> Path:
    """Build, save and return the directory of a tiny randomly initialised causal LM.

    `arch` is "gpt2" or "llama". The pad token is distinct from EOS (left padding needs it).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size, chat_template=chat_template)
    torch.manual_seed(seed)
    ids = dict(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=max_positions,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            **ids,
        )
        model = GPT2LMHeadModel(config)
    elif arch == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=n_embd,
            intermediate_size=n_embd * 2,
            num_hidden_layers=n_layer,
            num_attention_heads=n_head,
            num_key_value_heads=n_head,
            max_position_embeddings=max_positions,
            tie_word_embeddings=True,
            **ids,
        )
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}: use 'gpt2' or 'llama'")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
