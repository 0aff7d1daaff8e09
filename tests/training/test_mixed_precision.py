"""Mixed precision: fp32 master weights, bf16 compute (accelerate / the Trainer's autocast).

bf16 autocast works on CPU, so this runs everywhere. A pure bf16 full fine-tune is refused:
at small learning rates most bf16 weight updates round away.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from training.ppo import PPOConfig, train_ppo  # noqa: E402
from training.ppo import train as ppo_train  # noqa: E402
from training.tiny import build_tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.ml

TEXTS = [f"the cat number {i} sat on the mat and said hello {i % 7}" for i in range(200)]
PROMPTS = [f"the cat {i}" for i in range(16)]


def count_a(prompts, responses):
    return [float(r.count("a")) for r in responses]


def tiny(**overrides) -> PPOConfig:
    base = dict(
        total_episodes=16,
        batch_size=8,
        mini_batches=2,
        ppo_epochs=1,
        lr=1e-3,
        response_length=6,
        device="cpu",
        eval_every=0,
        save_every=0,
        progress=False,
    )
    return PPOConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_causal_lm(tmp_path_factory.mktemp("mp") / "lm", TEXTS, vocab_size=300)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_pure_low_precision_full_fine_tune_is_refused(dtype):
    with pytest.raises(ValueError, match=f"dtype {dtype} without LoRA.*mixed_precision bf16"):
        tiny(dtype=dtype)
    assert tiny(dtype=dtype, lora=True).dtype == dtype  # a frozen bf16 base under LoRA is fine


def test_bad_mixed_precision_and_fp16_on_cpu_fail_clearly(tiny_lm, tmp_path):
    with pytest.raises(ValueError, match="mixed_precision must be no, bf16 or fp16"):
        tiny(mixed_precision="int8")
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "out", tiny(mixed_precision="fp16"))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_ppo_bf16_mixed_precision_keeps_fp32_weights_and_computes_in_bf16(
    tiny_lm, tmp_path, monkeypatch
):
    seen: dict[str, set] = {"policy": set(), "value": set()}
    real_load = ppo_train.load_models

    def load_and_watch(*args, **kwargs):
        models = real_load(*args, **kwargs)
        for name, model in (("policy", models.policy), ("value", models.value_model)):
            assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights

            def hook(module, inputs, output, name=name):
                seen[name].add(output.dtype)

            # The first transformer block's MLP: an ordinary matmul that autocast lowers.
            block = model.transformer.h[0].mlp.c_fc
            block.register_forward_hook(hook)
        return models

    monkeypatch.setattr(ppo_train, "load_models", load_and_watch)
    result = train_ppo(tiny_lm, count_a, PROMPTS, tmp_path / "bf16", tiny(mixed_precision="bf16"))
    assert seen["policy"] == {torch.bfloat16} and seen["value"] == {torch.bfloat16}
    before = load_file(tiny_lm / "model.safetensors")
    after = load_file(result.output_dir / "model.safetensors")
    assert {t.dtype for t in after.values()} == {torch.float32}
    # fp32 master weights take every small update: nearly every weight moved.
    changed = sum(int((after[k] != before[k]).sum()) for k in before if "h.0" in k)
    total = sum(before[k].numel() for k in before if "h.0" in k)
    assert changed / total > 0.9
    assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
