"""Active preference learning: reward-model held-out accuracy against labels, random vs uncertainty.

Simulated labelers (simulation.labelers, Plackett-Luce around a gold score) rank comparisons
of K candidates drawn from pools of POOL candidates per prompt. After each batch of labels
the reward model is retrained and the next batch is chosen:

- `random`: each prompt's pool dealt into random groups of K, served in random order;
- `uncertainty`: the rule `build_comparisons --strategy uncertainty` runs
  (annotation.rules.active: per prompt the K candidates the ensemble is least sure of, then
  most uncertain first under a per-kind share), on the scores of the current ensemble.

The reward model is a stand-in that 2 shared CPU cores can retrain dozens of times: a
Bradley-Terry linear model on hashed word features (an ensemble of ENSEMBLE bootstrap fits,
numpy), not the transformer `train_reward_model` builds. What is measured is the selection
rule; the model that feeds it in production is the real one.

Two worlds: `demo` (the demo world's prompts and answer kinds, gold = its judge) and
`lexicon` (built here: responses are bags of words whose gold is the sum of sparse word
values plus a per-topic bias; features see the words, not the bias's topic).

    .venv/bin/python bench/active.py               # both worlds, 3 seeds, table + PNG
    .venv/bin/python bench/active.py --quick       # seconds: what tests run
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotation.rules.active import Scored, informative_order, uncertain_groups  # noqa: E402
from simulation.labelers import plackett_luce_order  # noqa: E402

K = 4
POOL = 8
FEATURES = 1024
ENSEMBLE = 3
TEMPERATURE = 0.15  # labelers' Plackett-Luce temperature on gold scores in [0, 1]
TARGET_SHARE = 0.6


@dataclass
class World:
    name: str
    prompts: list[str]
    kinds: list[str]  # cluster of each prompt
    texts: list[list[str]]  # POOL responses per prompt
    gold: list[list[float]]


def _tokens(prompt: str, response: str) -> list[str]:
    words = response.lower().replace(".", " ").replace(",", " ").split()
    head = " ".join(prompt.lower().split()[:2])
    # Words, the first words crossed with the prompt's opening (its kind), a length bucket.
    # No bigrams: nearly unique per response, they let the model memorize its training pool.
    feats = [f"w:{w}" for w in words] + [f"h:{head}|{w}" for w in words[:6]]
    feats.append(f"n:{min(len(words), 30) // 3}")
    return feats


def featurize(world: World) -> np.ndarray:
    """One row of hashed, length-normalized features per candidate (prompt-major order)."""
    rows = []
    for prompt, texts in zip(world.prompts, world.texts):
        for text in texts:
            row = np.zeros(FEATURES, dtype=np.float64)
            for token in _tokens(prompt, text):
                row[zlib.crc32(token.encode()) % FEATURES] += 1.0
            rows.append(row / max(1.0, np.sqrt((row**2).sum())))
    return np.stack(rows)


def demo_world(n_prompts: int, seed: int) -> World:
    from training.demo_world.corpus import ANSWERERS, QUALITIES, prompt_pool
    from training.demo_world.judge import score as gold_score
    from training.demo_world.prompts import parse_prompt

    rng = random.Random(seed)
    pool = prompt_pool()
    kinds_all = [(kind, text) for kind, texts in sorted(pool.items()) for text in texts]
    rng.shuffle(kinds_all)
    qualities, weights = zip(*QUALITIES.items())
    world = World("demo", [], [], [], [])
    for kind, prompt in kinds_all:
        if len(world.prompts) == n_prompts:
            break
        meta = parse_prompt(prompt)
        texts: list[str] = []
        for _ in range(60):
            if len(texts) == POOL:
                break
            quality = rng.choices(qualities, weights)[0]
            if quality == "ignores_format" and kind != "format":
                quality = "wrong"
            text = ANSWERERS[kind](rng, meta, quality)
            if text not in texts:
                texts.append(text)
        if len(texts) < POOL:
            continue
        world.prompts.append(prompt)
        world.kinds.append(kind)
        world.texts.append(texts)
        world.gold.append([gold_score(prompt, t) for t in texts])
    return world


def lexicon_world(n_prompts: int, seed: int) -> World:
    rng = random.Random(1000 + seed)
    vocab = [f"tok{i}" for i in range(300)]
    value = {w: (rng.gauss(0, 1) if rng.random() < 0.25 else 0.0) for w in vocab}
    topics = [f"topic{i}" for i in range(6)]
    world = World("lexicon", [], [], [], [])
    for i in range(n_prompts):
        topic = topics[i % len(topics)]
        texts, gold = [], []
        for _ in range(POOL):
            words = rng.sample(vocab, rng.randint(4, 10))
            texts.append(" ".join(words))
            gold.append(sum(value[w] for w in words) / 3)
        lo, hi = min(gold), max(gold)
        world.prompts.append(f"{topic} question {i}")
        world.kinds.append(topic)
        world.texts.append(texts)
        world.gold.append([(g - lo) / (hi - lo) if hi > lo else 0.5 for g in gold])
    return world


def fit(x: np.ndarray, pairs: list[tuple[int, int]], rng: np.random.Generator, *, boot: bool):
    """Bradley-Terry logistic fit on (winner, loser) candidate rows; a bootstrap resample if asked."""
    w = np.zeros(x.shape[1])
    if not pairs:
        return w
    idx = np.array(pairs)
    if boot:
        idx = idx[rng.integers(0, len(idx), len(idx))]
    d = x[idx[:, 0]] - x[idx[:, 1]]
    lr, l2 = 20.0, 1e-3
    for _ in range(300):
        p = 1.0 / (1.0 + np.exp(-(d @ w)))
        grad = -d.T @ (1.0 - p) / len(d) + l2 * w
        w -= lr * grad
    return w


def held_out_accuracy(scores: np.ndarray, world: World, prompts: list[int]) -> float:
    right = total = 0
    for p in prompts:
        g = world.gold[p]
        for i, j in itertools.combinations(range(POOL), 2):
            if abs(g[i] - g[j]) < 1e-9:
                continue
            total += 1
            right += (scores[p * POOL + i] - scores[p * POOL + j]) * (g[i] - g[j]) > 0
    return right / max(total, 1)


def run_curve(world, x, strategy, seed, budgets, batch):
    """Accuracy after each budget (comparisons labeled) for one strategy and seed."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    order = list(range(len(world.prompts)))
    random.Random(7 + seed).shuffle(order)
    cut = int(len(order) * 0.7)
    train, test = order[:cut], order[cut:]
    unused = {p: list(range(POOL)) for p in train}
    pairs: list[tuple[int, int]] = []
    labeled = 0
    curve = []
    weights = [np.zeros(x.shape[1])]
    for budget in budgets:
        while labeled < budget:
            take = min(batch, budget - labeled)
            chosen = pick(world, x, strategy, weights, unused, take, rng)
            if not chosen:
                break
            for p, group in chosen:
                for i in group:
                    unused[p].remove(i)
                ranked = plackett_luce_order([world.gold[p][i] for i in group], TEMPERATURE, rng)
                best_first = [p * POOL + group[i] for i in ranked]
                pairs += list(itertools.combinations(best_first, 2))
                labeled += 1
            members = ENSEMBLE if strategy == "uncertainty" else 1
            weights = [fit(x, pairs, nrng, boot=members > 1) for _ in range(members)]
        mean = np.mean([x @ w for w in weights], axis=0)
        curve.append(held_out_accuracy(mean, world, test))
    return curve


def pick(world, x, strategy, weights, unused, take, rng):
    """The next `take` comparisons (prompt, candidate indexes) under the strategy."""
    if strategy == "random":
        groups = []
        for p, rest in unused.items():
            rest = rest[:]
            rng.shuffle(rest)
            groups += [(p, rest[i : i + K]) for i in range(0, len(rest) - len(rest) % K, K)]
        rng.shuffle(groups)
        return groups[:take]
    scores = np.stack([x @ w for w in weights], axis=1)  # candidate x model
    items, groups = [], {}
    for p, rest in unused.items():
        if len(rest) < K:
            continue
        pool = [(i, scores[p * POOL + i].tolist()) for i in rest]
        for n, (group, value) in enumerate(uncertain_groups(pool, K)):
            groups[(p, n)] = (p, group)
            items.append(Scored((p, n), world.kinds[p], value))
    return [groups[key] for key in informative_order(items)[:take]]


def labels_to_reach(curve: list[float], budgets: list[int], target: float) -> int | None:
    for budget, acc in zip(budgets, curve):
        if acc >= target - 1e-9:
            return budget
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, small worlds (seconds)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=240, help="prompts per world")
    parser.add_argument("--png", default=str(ROOT / "bench" / "active.png"))
    args = parser.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    n_prompts = 60 if args.quick else args.prompts
    max_labels = int(n_prompts * 0.7) * POOL // K  # every training candidate labeled once
    step = max(5, max_labels // 10)
    budgets = list(range(step, max_labels + 1, step))
    start = time.perf_counter()
    results = {}
    for make in (demo_world, lexicon_world):
        for strategy in ("random", "uncertainty"):
            curves = []
            for seed in range(seeds):
                world = make(n_prompts, seed)
                x = featurize(world)
                curves.append(run_curve(world, x, strategy, seed, budgets, batch=step))
            results[(world.name, strategy)] = np.mean(curves, axis=0).tolist()
    print(f"K={K}, pool={POOL}, {n_prompts} prompts (70% labeled pool, 30% held out), "
          f"{seeds} seed(s), {time.perf_counter() - start:.1f}s")  # fmt: skip
    print("world     strategy     " + " ".join(f"{b:>6}" for b in budgets))
    summary = []
    for world_name in ("demo", "lexicon"):
        for strategy in ("random", "uncertainty"):
            curve = results[(world_name, strategy)]
            print(f"{world_name:<9} {strategy:<12} " + " ".join(f"{a:6.3f}" for a in curve))
        random_curve = results[(world_name, "random")]
        target = random_curve[-1]
        needed_random = labels_to_reach(random_curve, budgets, target)
        needed = labels_to_reach(results[(world_name, "uncertainty")], budgets, target)
        share = needed / needed_random if needed and needed_random else None
        summary.append((world_name, target, needed_random, needed, share))
    for world_name, target, needed_random, needed, share in summary:
        verdict = "n/a" if share is None else f"{share:.0%} of the labels"
        met = share is not None and share <= TARGET_SHARE
        print(
            f"{world_name}: random's final accuracy {target:.3f} at {needed_random} labels; "
            f"uncertainty reaches it at {needed} -> {verdict} "
            f"({'meets' if met else 'misses'} the <= {TARGET_SHARE:.0%} target)"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, world_name in zip(axes, ("demo", "lexicon")):
            for strategy in ("random", "uncertainty"):
                ax.plot(budgets, results[(world_name, strategy)], marker="o", label=strategy)
            ax.set_title(f"{world_name} world")
            ax.set_xlabel("comparisons labeled (K=4)")
            ax.set_ylabel("RM held-out pair accuracy")
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=90)
        print(f"wrote {args.png}")
    except ImportError:
        print("matplotlib not installed: no PNG")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
