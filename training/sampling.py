"""Generation settings that are exactly the ones we name: nothing leaks in from a checkpoint.

`model.generate(generation_config=cfg)` does not use `cfg` alone: transformers fills every
field `cfg` leaves at None from the checkpoint's own `generation_config.json` (a released chat
model's `repetition_penalty=1.5`, `no_repeat_ngram_size`, `min_length`, `top_k=20`, ...). PPO
would then sample from one distribution and score logprobs of another, and labelers would rank
candidates made with settings nobody recorded.

`neutral_generation_config` builds a fresh config with every logits processor and warper set
explicitly to its off value, then the settings given. `generate` calls the model with it and
also clears the few switches that are only off at None (forced BOS/EOS, bad words, min-p...)
when the checkpoint sets them. `effective_settings` reports what generation actually used,
computed the way transformers merges the two configs. The model's own config is never changed.
"""

from __future__ import annotations

import copy
from typing import Any

# Each generation switch that turns a logits processor / warper (or beam search) on, with the
# value that turns it off. transformers only fills a field from the checkpoint when it is None.
NEUTRAL: dict[str, Any] = {
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_new_tokens": 0,  # generation then derives min_length from it, ignoring the checkpoint's
    "length_penalty": 1.0,
    "guidance_scale": 1.0,
    "remove_invalid_values": False,
    "renormalize_logits": False,
    "num_beams": 1,
    "num_return_sequences": 1,
    "early_stopping": False,
}

# Switches that are off only at None: a fresh config cannot say "off" for them, so when the
# checkpoint sets one, `generate` passes it as None explicitly (call arguments win over both).
OFF_ONLY_AT_NONE = (
    "min_p",
    "top_h",
    "bad_words_ids",
    "sequence_bias",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "watermarking_config",
    "stop_strings",
    "max_time",
)

# What a record of "the settings used" lists.
RECORDED = (
    "do_sample",
    *NEUTRAL,
    *OFF_ONLY_AT_NONE,
    "max_new_tokens",
    "eos_token_id",
    "pad_token_id",
)


def neutral_generation_config(**settings: Any) -> Any:
    """A fresh transformers.GenerationConfig: every processor off, then `settings` on top."""
    from transformers import GenerationConfig

    return GenerationConfig(**{**NEUTRAL, **settings})


def _model_config(model: Any) -> Any:
    from transformers import GenerationConfig

    return getattr(model, "generation_config", None) or GenerationConfig()


def overrides(model: Any, generation_config: Any) -> dict[str, None]:
    """Fields `generation_config` leaves at None that the model's own config would fill."""
    model_config = _model_config(model)
    return {
        name: None
        for name in OFF_ONLY_AT_NONE
        if getattr(generation_config, name, None) is None
        and getattr(model_config, name, None) is not None
    }


def generate(model: Any, generation_config: Any, **inputs: Any) -> Any:
    """`model.generate` with exactly `generation_config`: nothing filled from the checkpoint."""
    extra = overrides(model, generation_config)
    return model.generate(**inputs, generation_config=generation_config, **extra)


def effective_settings(model: Any, generation_config: Any) -> dict[str, Any]:
    """The settings `generate(model, generation_config)` samples with, as JSON-ready values.

    Merged as transformers merges them: the checkpoint's values fill the fields left at None,
    then the call's explicit arguments (the `overrides`) replace those.
    """
    merged = copy.deepcopy(generation_config)
    merged.update(**_model_config(model).to_dict(), defaults_only=True)
    merged.update(**overrides(model, generation_config))
    out: dict[str, Any] = {}
    for name in RECORDED:
        value = getattr(merged, name, None)
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out
