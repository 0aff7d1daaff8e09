"""Near-duplicate removal at import scale: rows/s, recall and peak memory over 1M prompts.

Streams N synthetic prompts (20-word sentences over a 20k-word vocabulary) through the
import's PromptFilter with `--dedup near`: every 10th row repeats an earlier row with one
word changed (a near duplicate to remove), every 25th repeats one exactly; the rest are
distinct. Prints rows/s, the share of injected duplicates removed (recall), the share of
distinct rows wrongly removed, and the process's peak RSS at each tenth of the run: the
index is sized up front, so memory stays flat while the rows stream by.

    .venv/bin/python bench/prompt_dedup.py               # N = 1,000,000
    .venv/bin/python bench/prompt_dedup.py --n 20000     # quick
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotation.rules.promptprep import PrepOptions, PromptFilter  # noqa: E402

VOCABULARY = 20_000
WORDS = 20


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sentence(seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randrange(VOCABULARY)}" for _ in range(WORDS)]


def is_distinct(i: int) -> bool:
    return i < 100 or (i % 10 != 0 and i % 25 != 0)


def earlier_distinct(rng: random.Random, i: int) -> int:
    while not is_distinct(k := rng.randrange(i)):
        pass
    return k * 7 + 1


def rows(n: int, seed: int):
    """(text, kind) with kind in distinct / near / exact."""
    rng = random.Random(seed)
    for i in range(n):
        if i >= 100 and i % 10 == 0:
            words = sentence(earlier_distinct(rng, i))
            words[rng.randrange(WORDS)] = f"x{rng.randrange(VOCABULARY)}"
            yield " ".join(words), "near"
        elif i >= 100 and i % 25 == 0:
            yield " ".join(sentence(earlier_distinct(rng, i))), "exact"
        else:
            yield " ".join(sentence(i * 7 + 1)), "distinct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start_rss = rss_mb()
    rules = PromptFilter(
        PrepOptions(dedup="near", near_threshold=args.threshold), expected_rows=args.n
    )
    print(
        f"index: {(rules._lsh.nbytes + rules._exact_bloom.nbytes) / 2**20:.1f} MiB of Bloom filters for {args.n:,} rows"
    )
    injected = {"near": 0, "exact": 0, "distinct": 0}
    removed = dict(injected)
    checkpoints = {args.n * k // 10 for k in range(1, 11)}
    began = time.perf_counter()
    for i, (text, kind) in enumerate(rows(args.n, args.seed), start=1):
        decision = rules.dedupe([{"role": "user", "content": text}])
        injected[kind] += 1
        removed[kind] += not decision.keep
        if i in checkpoints:
            print(
                f"  {i:>9,} rows  {i / (time.perf_counter() - began):>7,.0f} rows/s  peak RSS {rss_mb():,.0f} MB"
            )
    elapsed = time.perf_counter() - began
    # A "distinct" row can still be a true near duplicate of another by chance (shared words);
    # with 20 words of 20k the chance is negligible, so removals there are false matches.
    dup_total = injected["near"] + injected["exact"]
    print(f"rows: {args.n:,} in {elapsed:,.1f} s ({args.n / elapsed:,.0f} rows/s)")
    print(
        f"removed: {removed['near']:,}/{injected['near']:,} near duplicates, "
        f"{removed['exact']:,}/{injected['exact']:,} exact, recall "
        f"{(removed['near'] + removed['exact']) / max(dup_total, 1):.4f}"
    )
    print(
        f"distinct rows removed (false matches): {removed['distinct']:,} of {injected['distinct']:,}"
    )
    print(f"peak RSS {rss_mb():,.0f} MB (started at {start_rss:,.0f} MB)")


if __name__ == "__main__":
    main()
