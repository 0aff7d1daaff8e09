"""PPO with LoRA: only adapters train, the reference is the base, resume works, and the saved
policy is a plain model the next command loads as a model version."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
import torch

from tests.training.test_ppo import PROMPTS, TEXTS, TIMING_KEYS, count_a, tiny_config
from training.ppo import models as ppo_models
from training.ppo import train_ppo

pytestmark = pytest.mark.ml

LORA = dict(lora=True, lora_r=4, lr=1e-2)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    torch.set_num_threads(1)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lora") / "lm", TEXTS, vocab_size=300)


def test_only_adapter_weights_train_and_the_reference_logprobs_are_the_base_models(
    tiny_lm, tmp_path, monkeypatch
):
    from peft import PeftModel

    from training.modeling import load_causal_lm
    from training.ppo import rollout as ppo_rollout

    built = {}
    real_load_models = ppo_models.load_models

    def keep(*args, **kwargs):
        models = built["models"] = real_load_models(*args, **kwargs)
        for key, model in (("policy", models.policy), ("value", models.value_model)):
            assert isinstance(model, PeftModel)
            built[key] = {n: p.detach().clone() for n, p in model.named_parameters()}
            built[key + "_trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        return models

    checked = []

    def check_weights(row):
        """After each step (before the final merge): frozen weights as loaded, adapters moved."""
        models = built["models"]
        for key, model in (("policy", models.policy), ("value", models.value_model)):
            trainable = built[key + "_trainable"]
            assert trainable and all("lora_" in n or "score" in n for n in trainable), trainable
            moved = set()
            for name, param in model.named_parameters():
                if name in trainable:
                    if not torch.equal(param, built[key][name]):
                        moved.add(name)
                else:
                    assert torch.equal(param, built[key][name]), name
            assert any("lora_B" in n for n in moved), key
        checked.append(row["step"])

    seen_ref = []
    real_rollout = ppo_rollout.rollout

    def spy_rollout(policy, ref_policy, *args, **kwargs):
        batch = real_rollout(policy, ref_policy, *args, **kwargs)
        seen_ref.append((batch.query_responses.clone(), batch.context_length, batch.ref_logprobs))
        return batch

    import training.ppo.train as ppo_train

    monkeypatch.setattr(ppo_train, "load_models", keep)
    monkeypatch.setattr(ppo_train, "rollout", spy_rollout)
    base, tokenizer = load_causal_lm(tiny_lm, device="cpu")
    config = tiny_config(total_episodes=32, **LORA)
    train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "run", config, on_metrics=check_weights)
    assert checked == [1, 2]
    # Every rollout's reference logprobs are the base model's, also after the adapter moved.
    pad = tokenizer.pad_token_id
    assert len(seen_ref) == 2
    for qr, context_length, ref_logprobs in seen_ref:
        with torch.no_grad():
            logits = ppo_models.response_logits(base, qr, context_length, pad)
        from training.ppo.math import INVALID_LOGPROB, logprobs_from_logits

        expected = logprobs_from_logits(logits, qr[:, context_length:], 1.0)
        valid = ref_logprobs != INVALID_LOGPROB
        assert valid.any()
        assert torch.allclose(ref_logprobs[valid], expected[valid], atol=1e-5)


def test_lora_checkpoint_resumes_exactly(tiny_lm, tmp_path):
    config = tiny_config(total_episodes=8 * 4, batch_size=8, ppo_epochs=2, save_every=2, **LORA)
    straight = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "straight", config)

    class Preempted(Exception):
        pass

    def crash_after_step_3(row):
        if row["step"] == 3:
            raise Preempted

    with pytest.raises(Preempted):
        train_ppo(
            tiny_lm, count_a, PROMPTS, tmp_path / "resumed", config, on_metrics=crash_after_step_3
        )
    saved = next((tmp_path / "resumed" / "checkpoints").iterdir())
    resumed = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "resumed", config)
    assert resumed.resumed_from == 2, saved
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.django_db
def test_the_saved_lora_policy_is_a_plain_model_version(tiny_lm, tmp_path):
    from django.core.management import call_command
    from transformers import AutoModelForCausalLM

    from lineage.models import ModelVersion

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "policy"
    stdout = StringIO()
    call_command(
        "train_ppo",
        "--policy",
        str(tiny_lm),
        "--reward-model",
        "tests.training.test_ppo:count_a",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--lora",
        "--lora-r",
        "4",
        "--gradient-checkpointing",
        "--total-episodes",
        "16",
        "--batch-size",
        "16",
        "--response-length",
        "8",
        "--device",
        "cpu",
        "--eval-every",
        "0",
        "--no-progress",
        stdout=stdout,
    )
    version = ModelVersion.objects.get(path=str(out))
    assert version.kind == ModelVersion.Kind.POLICY and version.parent.path == str(tiny_lm)
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)  # no peft needed to load it
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert json.loads((out / "training_config.json").read_text())["gradient_checkpointing"]
    # It is a valid --policy for the next round.
    call_command(
        "train_ppo",
        "--policy",
        str(out),
        "--reward-model",
        "tests.training.test_ppo:count_a",
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "next"),
        "--total-episodes",
        "16",
        "--batch-size",
        "16",
        "--response-length",
        "4",
        "--device",
        "cpu",
        "--eval-every",
        "0",
        "--no-progress",
        stdout=StringIO(),
    )
    assert ModelVersion.objects.get(path=str(tmp_path / "next")).parent == version


def test_a_bf16_base_trains_fp32_adapters_and_head(tiny_lm, tmp_path):
    config = tiny_config(total_episodes=16, dtype="bfloat16", **LORA)
    models = ppo_models.load_models(tiny_lm, count_a, config, torch.device("cpu"), 16)
    for model in (models.policy, models.value_model):
        dtypes = {(p.requires_grad, p.dtype) for p in model.parameters()}
        assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
    for precision in ("no", "bf16"):  # a bf16 trunk feeds the fp32 head with or without autocast
        result = train_ppo(
            tiny_lm,
            count_a,
            PROMPTS,
            tmp_path / precision,
            tiny_config(total_episodes=16, dtype="bfloat16", mixed_precision=precision, **LORA),
        )
        assert result.steps == 1 and all(
            torch.isfinite(torch.tensor(v)) for v in result.metrics.values()
        )
