"""Reward-model training throughput: K-wise vs pairwise loss, and trl's RewardTrainer as is.

All three train one epoch of the same K=4 strict rankings (6 comparisons each) on the same
tiny model, with the same number of sequences per forward pass. Comparisons/s is training
comparisons divided by the trainer's own train_runtime (no data loading or model saving).
SPEC section 9 asks K-wise >= 1.5x pairwise.

    .venv/bin/python bench/reward.py [--rankings 256] [--words 48] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotation.rules.pairs import ordered_pairs  # noqa: E402  (after the path is set)

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "green",
    "quick",
    "table",
    "music",
    "paper",
    "light",
    "ocean",
    "forest",
    "silver",
    "window",
]


def write_export(directory: Path, *, rankings: int, k: int, words: int, seed: int = 0) -> Path:
    """K completions per prompt ranked strictly by how often they say "please"; all in train."""
    rng = random.Random(seed)
    pair_rows, ranking_rows = [], []
    for i in range(rankings):
        prompt = f"question {i}: tell me about {rng.choice(WORDS)} and {rng.choice(WORDS)}"
        completions = []
        for quality in range(k):
            text = [rng.choice(WORDS) for _ in range(words)]
            for slot in rng.sample(range(words), k - 1 - quality):
                text[slot] = "please"
            completions.append(" ".join(text))
        order = rng.sample(range(k), k)
        shown = [completions[o] for o in order]
        tiers = [[order.index(q)] for q in range(k)]  # strict: C(K,2) pairs
        ranking_rows.append(
            {
                "prompt": prompt,
                "completions": shown,
                "tiers": tiers,
                "weight": 1.0,
                "split": "train",
            }
        )
        # completions[q] has quality rank q: the strict ranking by quality, as pairs.
        for a, b, gap in ordered_pairs([[q] for q in range(k)]):
            pair_rows.append(
                {
                    "prompt": prompt,
                    "chosen": completions[a],
                    "rejected": completions[b],
                    "margin": gap,
                    "weight": 1 / (k * (k - 1) / 2),
                    "split": "train",
                }
            )
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("pairs.jsonl", pair_rows), ("rankings.jsonl", ranking_rows)):
        (directory / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (directory / "manifest.json").write_text(json.dumps({"schema_version": 1, "bench": True}))
    return directory


def trl_baseline(
    export: Path, base: Path, out: Path, *, batch_size: int, use_cpu: bool
) -> tuple[int, float]:
    """trl's RewardTrainer with its defaults (bf16, gradient checkpointing, its own rendering)."""
    from datasets import load_dataset
    from trl import RewardConfig, RewardTrainer

    dataset = load_dataset("json", data_files=str(export / "pairs.jsonl"), split="train")
    args = RewardConfig(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        num_train_epochs=1,
        report_to=[],
        save_strategy="no",
        logging_steps=10_000,
        use_cpu=use_cpu,
        disable_tqdm=True,
    )
    trainer = RewardTrainer(model=str(base), args=args, train_dataset=dataset)
    output = trainer.train()
    return len(trainer.train_dataset), float(output.metrics["train_runtime"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rankings", type=int, default=256, help="K=4 rankings to train on")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--words", type=int, default=48, help="words per completion")
    parser.add_argument("--sequences", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-trl", action="store_true")
    args = parser.parse_args()

    import torch

    from training.modeling import resolve_device
    from training.reward import RewardConfig, train_reward_model
    from training.tiny import build_tiny_causal_lm

    if args.threads:
        torch.set_num_threads(args.threads)
    use_cpu = resolve_device(args.device).type == "cpu"
    k = args.k
    tmp = Path(tempfile.mkdtemp(prefix="bench-reward-"))
    export = write_export(tmp / "export", rankings=args.rankings, k=k, words=args.words)
    base = build_tiny_causal_lm(
        tmp / "base",
        [" ".join(WORDS + ["please", "question", "tell", "me", "about", "and"])] * 4,
        n_layer=args.n_layer,
        n_embd=args.n_embd,
        max_positions=max(256, 2 * args.words + 64),
    )
    common = dict(
        epochs=1,
        lr=1e-4,
        max_length=max(256, 2 * args.words + 64),
        logging_steps=10_000,
        save_steps=10_000,
        eval_each_epoch=False,
        device=args.device,
        resume=False,
    )
    rows = []
    for name, config in (
        (
            "pairwise (ours, trl RewardTrainer + weights)",
            RewardConfig(loss="pairwise", batch_size=args.sequences // 2, **common),
        ),
        (
            "kwise (InstructGPT)",
            RewardConfig(loss="kwise", batch_size=max(1, args.sequences // k), **common),
        ),
    ):
        started = time.perf_counter()
        result = train_reward_model(export, str(base), tmp / name.split()[0], config)
        wall = time.perf_counter() - started
        rows.append((name, result.num_train_pairs, result.train_runtime_s, wall))
    if not args.skip_trl:
        pairs, runtime = trl_baseline(
            export, base, tmp / "trl", batch_size=args.sequences // 2, use_cpu=use_cpu
        )
        rows.append(("trl RewardTrainer, defaults", pairs, runtime, float("nan")))

    print(
        f"\n{args.rankings} rankings of K={k} ({args.words} words each), model {args.n_layer}x{args.n_embd}, "
        f"{args.sequences} sequences per forward, device {resolve_device(args.device)}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'run':48} {'comparisons':>11} {'train s':>8} {'comparisons/s':>14}")
    rates = {}
    for name, pairs, runtime, _ in rows:
        rates[name.split()[0]] = pairs / runtime
        print(f"{name:48} {pairs:>11} {runtime:>8.2f} {pairs / runtime:>14.1f}")
    ratio = rates["kwise"] / rates["pairwise"]
    print(
        f"\nkwise / pairwise: {ratio:.2f}x (target >= 1.5x): {'PASS' if ratio >= 1.5 else 'FAIL'}"
    )
    if "trl" in rates:
        print(f"kwise / trl defaults: {rates['kwise'] / rates['trl']:.2f}x")


if __name__ == "__main__":
    main()
