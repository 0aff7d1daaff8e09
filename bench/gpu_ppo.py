"""GPU PPO benchmark: a Qwen2-shaped ~0.5B policy and reward model, N steps of our PPO loop.

Nothing is downloaded: the models are `Qwen2Config`s with Qwen2.5-0.5B's shapes (24 layers,
hidden 896, MLP 4864, 14 query / 2 key-value heads, vocabulary 151,936, tied embeddings) and
random weights, and the tokenizer is a byte-level BPE built on the spot with the same
vocabulary size (every id decodes to text). The reward model is the same shape with a scalar
head; the critic starts from it as in any run. Training goes through `training.ppo.train_ppo`
in bf16 mixed precision (fp32 master weights), responses of 128 tokens.

    .venv/bin/python bench/gpu_ppo.py                       # 0.5B on the GPU, 6 steps
    .venv/bin/python bench/gpu_ppo.py --steps 10 --batch-size 128 --lora --gradient-checkpointing
    .venv/bin/python bench/gpu_ppo.py --tiny                # a tiny version (automatic on CPU)

Prints episodes/s, generated tokens/s, peak GPU memory, the step-time split
(generation / scoring / update, from the `time_*` metrics the loop logs) and the MFU of the
update: 6 x trainable parameters x tokens the update processes / update seconds / the GPU's
peak dense bf16 FLOP/s (table below, or --peak-tflops). Step 1 warms up (CUDA kernels,
allocator) and is left out of the figures when there are more steps. The last line is
`RESULT {json}` for scripts. Targets (issue 15): update MFU > 30%, generation <= 60% of a step.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Qwen2.5-0.5B's shapes (its config.json), without its weights.
QWEN2_0_5B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151_936,
    max_position_embeddings=32_768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s. The first
# name contained in torch.cuda.get_device_name() wins, so the specific ones come first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)

WORDS = [
    "river",
    "garden",
    "lamp",
    "window",
    "music",
    "paper",
    "stone",
    "cloud",
    "bread",
    "winter",
    "letter",
    "bridge",
]
PROMPTS = [
    f"question {i}: write a short note about the {WORDS[i % len(WORDS)]} and the "
    f"{WORDS[(i * 5 + 3) % len(WORDS)]}."
    for i in range(512)
]


def peak_tflops(device_name: str) -> float | None:
    """The table's dense bf16 peak for a GPU name, or None for a GPU not in it."""
    for name, tflops in PEAK_BF16_TFLOPS:
        if name.lower() in device_name.lower():
            return tflops
    return None


def wide_tokenizer(vocab_size: int):
    """A byte-level BPE with exactly `vocab_size` ids, built without training or downloads:
    4 specials, the 256 byte symbols, then merges into every 2-byte and as many 3-byte
    tokens as the size needs. Real merges, so text encodes to fewer tokens than bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from training.tiny import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN

    specials = [UNK_TOKEN, PAD_TOKEN, EOS_TOKEN, BOS_TOKEN]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(specials + alphabet)}
    merges: list[tuple[str, str]] = []

    def add(left: str, right: str) -> bool:
        if len(vocab) >= vocab_size:
            return False
        vocab[left + right] = len(vocab)
        merges.append((left, right))
        return True

    pairs = [a + b for a in alphabet for b in alphabet]
    for a in alphabet:
        for b in alphabet:
            if not add(a, b):
                break
    for ab in pairs:
        if len(vocab) >= vocab_size:
            break
        for c in alphabet:
            if not add(ab, c):
                break
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        padding_side="left",
    )


def build_models(root: Path, *, tiny: bool, seed: int) -> tuple[Path, Path, int]:
    """Save the policy and the reward model (random weights, bf16 on disk); return their
    folders and the policy's parameter count."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    from training.tiny import build_tokenizer

    if tiny:
        tokenizer = build_tokenizer(PROMPTS, vocab_size=400)
        shape = {**TINY, "vocab_size": len(tokenizer)}
    else:
        tokenizer = wide_tokenizer(QWEN2_0_5B["vocab_size"])
        shape = dict(QWEN2_0_5B)
    ids = dict(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    policy = Qwen2ForCausalLM(Qwen2Config(**shape, **ids)).to(torch.bfloat16)
    params = sum(p.numel() for p in policy.parameters())
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    policy.generation_config.eos_token_id = tokenizer.eos_token_id
    policy.save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")
    del policy
    reward = Qwen2ForSequenceClassification(Qwen2Config(**shape, **ids, num_labels=1))
    reward.to(torch.bfloat16).save_pretrained(root / "reward")
    tokenizer.save_pretrained(root / "reward")
    return root / "policy", root / "reward", params


def summarise(
    history: list[dict[str, float]],
    *,
    batch_size: int,
    ppo_epochs: int,
    context_length: int,
    trainable: int,
    peak: float | None,
) -> dict[str, float | None]:
    """The benchmark's figures from the loop's metrics rows (step 1 left out when N > 1)."""
    rows = history[1:] if len(history) > 1 else history
    n = len(rows)
    mean = lambda key: sum(r[key] for r in rows) / n  # noqa: E731
    step, gen, score, update = (
        mean(k) for k in ("step_time", "time_generation", "time_scoring", "time_update")
    )
    response = mean("response_length")
    # The update runs every episode's padded prompt + response through policy and critic in
    # each epoch (micro-batches trim to their longest response: a lower bound when EOS varies).
    update_tokens = ppo_epochs * batch_size * (context_length + response)
    update_flops = 6.0 * trainable * update_tokens
    return {
        "steps_measured": n,
        "episodes_per_s": batch_size / step,
        "tokens_per_s": batch_size * response / step,  # generated response tokens
        "step_s": step,
        "generation_s": gen,
        "scoring_s": score,
        "update_s": update,
        "other_s": max(step - gen - score - update, 0.0),
        "generation_share": gen / step,
        "response_length": response,
        "update_tokens": update_tokens,
        "update_tflops_per_s": update_flops / update / 1e12,
        "mfu_update": None if peak is None else update_flops / update / (peak * 1e12),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="PPO steps (step 1 is warm-up)")
    parser.add_argument("--batch-size", type=int, default=64, help="episodes per rollout")
    parser.add_argument("--mini-batches", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=128)
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (r 16)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny Qwen2 instead of 0.5B (automatic without CUDA)"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the 0.5B model even without CUDA (slow on CPU: for checking the script)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s (default: the table)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the models here")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    import torch

    import training.ppo.train as ppo_train
    from training.modeling import encode_prompt, load_tokenizer
    from training.ppo import PPOConfig, train_ppo

    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.tiny and args.full:
        raise SystemExit("--tiny and --full exclude each other")
    tiny = args.tiny or not (cuda or args.full)
    if tiny and not args.tiny:
        print("no CUDA device: running the tiny version (--tiny)")
    if tiny:  # seconds on a CPU, so the script stays tested
        args.batch_size = min(args.batch_size, 4)
        args.mini_batches = min(args.mini_batches, 2)
        args.ppo_epochs = min(args.ppo_epochs, 1)
        args.response_length = min(args.response_length, 8)
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops or (peak_tflops(device_name) if cuda else None)

    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        policy_dir, reward_dir, params = build_models(root, tiny=tiny, seed=args.seed)
        build_s = time.perf_counter() - started
        tokenizer = load_tokenizer(policy_dir)
        context_length = max(len(encode_prompt(tokenizer, p)) for p in PROMPTS)

        counted: list[int] = []
        real_adamw = ppo_train.adamw

        def counting_adamw(trainable, config):  # the loop's own list of trained parameters
            counted.append(sum(p.numel() for p in trainable))
            return real_adamw(trainable, config)

        ppo_train.adamw = counting_adamw
        config = PPOConfig(
            total_episodes=args.steps * args.batch_size,
            batch_size=args.batch_size,
            mini_batches=args.mini_batches,
            ppo_epochs=args.ppo_epochs,
            response_length=args.response_length,
            temperature=1.0,
            mixed_precision="bf16",
            lora=args.lora,
            # LoRA: the frozen base in bf16 (adapters, head and optimizer states stay fp32).
            dtype="bfloat16" if args.lora else "float32",
            gradient_checkpointing=args.gradient_checkpointing,
            seed=args.seed,
            device="cuda" if cuda else "cpu",
            eval_every=0,
            save_every=0,
            progress=False,
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            result = train_ppo(policy_dir, reward_dir, PROMPTS, root / "out", config)
        finally:
            ppo_train.adamw = real_adamw
    figures = summarise(
        result.history,
        batch_size=args.batch_size,
        ppo_epochs=args.ppo_epochs,
        context_length=context_length,
        trainable=counted[0],
        peak=peak,
    )
    report = {
        "device": device_name,
        "model": "qwen2-tiny" if tiny else "qwen2-0.5b-shape",
        "params": params,
        "trainable_params": counted[0],
        "batch_size": args.batch_size,
        "mini_batches": args.mini_batches,
        "ppo_epochs": args.ppo_epochs,
        "response_length_max": args.response_length,
        "context_length": context_length,
        "lora": args.lora,
        "gradient_checkpointing": args.gradient_checkpointing,
        "mixed_precision": "bf16",
        "peak_tflops": peak,
        "build_s": build_s,
        **figures,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_host_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print_report(report)
    return report


def print_report(r: dict) -> None:
    def pct(x: float | None) -> str:
        return "n/a (no peak FLOP/s: pass --peak-tflops)" if x is None else f"{100 * x:.1f}%"

    lines = [
        f"device           {r['device']}  ({r['model']}, {r['params'] / 1e6:.1f}M params, "
        f"{r['trainable_params'] / 1e6:.2f}M trained{', LoRA' if r['lora'] else ''}"
        f"{', gradient checkpointing' if r['gradient_checkpointing'] else ''})",
        f"shape            batch {r['batch_size']}, {r['mini_batches']} minibatches x "
        f"{r['ppo_epochs']} epochs, prompt width {r['context_length']}, response <= "
        f"{r['response_length_max']} (mean {r['response_length']:.1f}), bf16 mixed precision",
        f"measured         {r['steps_measured']} step(s)",
        f"episodes/s       {r['episodes_per_s']:.2f}",
        f"tokens/s         {r['tokens_per_s']:.1f} (generated response tokens)",
        f"step             {r['step_s']:.3f} s = generation {r['generation_s']:.3f} "
        f"({100 * r['generation_share']:.0f}%) + scoring {r['scoring_s']:.3f} + update "
        f"{r['update_s']:.3f} + other {r['other_s']:.3f}",
        f"update           {r['update_tflops_per_s']:.2f} TFLOP/s, MFU {pct(r['mfu_update'])}",
        "peak GPU memory  "
        + (
            "n/a (CPU)"
            if r["peak_gpu_memory_gib"] is None
            else f"{r['peak_gpu_memory_gib']:.2f} GiB"
        ),
        f"targets          update MFU > 30%: "
        f"{'n/a' if r['mfu_update'] is None else ('met' if r['mfu_update'] > 0.3 else 'NOT met')}"
        f"; generation <= 60% of a step: {'met' if r['generation_share'] <= 0.6 else 'NOT met'}",
    ]
    print("\n".join(lines))
    print("RESULT " + json.dumps(r))


if __name__ == "__main__":
    main()
