"""Candidates per second, batched versus one prompt at a time, on the same model (SPEC section 9).

    python bench/generation.py                      # tiny GPT-2 built on the spot, CPU
    python bench/generation.py --model PATH --device cuda --prompts 256

"One prompt at a time" still samples that prompt's K candidates together in one batch, as a
plain `generate(num_return_sequences=K)` loop would; batched mode packs `--batch-size`
sequences from many prompts per forward pass. Target: batched >= 4x.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from training.demo_world.prompts import load_prompts  # noqa: E402
from training.generation import GenerationConfig, generate_candidates  # noqa: E402
from training.modeling import load_causal_lm  # noqa: E402
from training.tiny import build_tiny_causal_lm  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model path or hub id (default: a tiny GPT-2 built here)")
    parser.add_argument("--prompts", type=int, default=64, help="number of demo prompts")
    parser.add_argument("--num-candidates", type=int, default=4, help="K per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--n-embd", type=int, default=64, help="width of the tiny model")
    parser.add_argument("--n-layer", type=int, default=2, help="layers of the tiny model")
    return parser.parse_args()


def timed(model, prompts, config) -> tuple[float, int]:
    """Seconds and candidates for one generate_candidates call."""
    started = time.perf_counter()
    result = generate_candidates(model, prompts, config, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, result.num_candidates


def main() -> None:
    """Run both modes on the same prompts and print candidates/s and the ratio."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = [r["text"] for r in load_prompts(args.prompts)]
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or build_tiny_causal_lm(
            Path(tmp) / "tiny",
            prompts,
            n_layer=args.n_layer,
            n_embd=args.n_embd,
            n_head=2,
            vocab_size=1000,
            chat_template=True,
        )
        loaded = load_causal_lm(path, device=args.device)
        model_params = sum(p.numel() for p in loaded[0].parameters())
        k = args.num_candidates
        # A single resample round at most: both modes do the same work per candidate.
        batched = GenerationConfig(
            num_candidates=k,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            max_resample_rounds=1,
        )
        single = GenerationConfig(
            num_candidates=k,
            max_new_tokens=args.max_new_tokens,
            batch_size=k,
            max_resample_rounds=1,
        )
        timed(loaded, prompts[:2], batched)  # warm-up: kernels, allocator, lazy imports

        t_batched, n_batched = timed(loaded, prompts, batched)
        t_single, n_single = 0.0, 0
        for prompt in prompts:
            seconds, count = timed(loaded, [prompt], single)
            t_single += seconds
            n_single += count

    device = next(loaded[0].parameters()).device
    print(
        f"model {path} ({model_params / 1e6:.2f}M params) on {device}, {len(prompts)} prompts, "
        f"K={k}, max_new_tokens={args.max_new_tokens}, threads={torch.get_num_threads()}"
    )
    rate_batched = n_batched / t_batched
    rate_single = n_single / t_single
    print(
        f"one prompt at a time: {n_single} candidates in {t_single:.2f}s = {rate_single:.1f} candidates/s"
    )
    print(
        f"batched ({args.batch_size} sequences): {n_batched} candidates in {t_batched:.2f}s "
        f"= {rate_batched:.1f} candidates/s"
    )
    ratio = rate_batched / rate_single
    print(f"speed-up: {ratio:.1f}x (target >= 4x) {'PASS' if ratio >= 4 else 'FAIL'}")


if __name__ == "__main__":
    main()
