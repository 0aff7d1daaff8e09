"""Active preference learning: reward-model held-out accuracy against labels, random vs uncertainty.

Simulated labelers (simulation.labelers, Plackett-Luce around a gold score) rank comparisons
of K candidates drawn from pools of POOL candidates per prompt. After each batch of labels
the reward model is retrained and the next batch is chosen:

- `random`: each prompt's pool dealt into random groups of K, served in random order;
- `uncertainty`: the rule `build_comparisons --strategy uncertainty` runs
  (annotation.rules.active: per prompt the K candidates the ensemble is least sure of, then
  most uncertain first under a per-kind share), on the scores of the current ensemble.

Accuracy is over every pair of the held-out prompts' candidates that the gold judge orders
(its ties left out). Two reward models (`--rm`):

`linear` (the default, seconds): a stand-in that 2 shared CPU cores can retrain dozens of
times, a Bradley-Terry linear model on hashed word features (an ensemble of ENSEMBLE
bootstrap fits, numpy). Worlds: `demo` (the demo world's prompts and answer kinds, gold = its
judge) and `lexicon` (built here: responses are bags of words whose gold is the sum of sparse
word values plus a per-topic bias; features see the words, not the bias's topic).

`transformer` (minutes): the project's reward model, `training.reward.train_reward_model`
(K-wise loss, epochs and learning rate from `scaled_defaults`, early stopping on a 10%
held-out split of the labeled prompts), on the demo policy (`build_demo_policy` with its
defaults, cached in DATA_DIR/models/demo-policy), trained once per budget on everything
labeled so far. Candidates are real: POOL distinct answers per prompt sampled from the demo
policy (`generate_candidates`, seeded, temperature 1), gold from the world's judge. The first
batch is random for both strategies (there is no reward model yet, as in the loop's round 1);
after it `uncertainty` ranks by an ensemble of `--ensemble` reward models (default 2, seeds
differ, same labels), and the model measured is the one trained with random's seed. Worlds:
`demo` (its prompts and judge) and `second`, imported from tests/training/second_world.py
(its prompts and judge, warm short answers first, answered by the same demo policy).

    .venv/bin/python bench/active.py                       # linear, both worlds, 3 seeds
    .venv/bin/python bench/active.py --quick               # seconds: what tests run
    .venv/bin/python bench/active.py --rm transformer      # real RM, 60 prompts, 3 seeds
    .venv/bin/python bench/active.py --rm transformer --quick --policy-steps 30   # tests
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
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
    n = len(world.texts[0])  # candidates per prompt, the same for every prompt
    right = total = 0
    for p in prompts:
        g = world.gold[p]
        for i, j in itertools.combinations(range(n), 2):
            if abs(g[i] - g[j]) < 1e-9:
                continue
            total += 1
            right += (scores[p * n + i] - scores[p * n + j]) * (g[i] - g[j]) > 0
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


def report_targets(summary) -> None:
    """One line per world: labels uncertainty needs to reach random's final accuracy."""
    for world_name, target, needed_random, needed, share in summary:
        verdict = "n/a" if share is None else f"{share:.0%} of the labels"
        met = share is not None and share <= TARGET_SHARE
        print(
            f"{world_name}: random's final accuracy {target:.3f} at {needed_random} labels; "
            f"uncertainty reaches it at {needed} -> {verdict} "
            f"({'meets' if met else 'misses'} the <= {TARGET_SHARE:.0%} target)"
        )


def plot(png: str, names, budgets, results) -> None:
    """One panel per world, a line per strategy; curves of several seeds get a ±1 sd band."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG")
        return
    fig, axes = plt.subplots(1, len(names), figsize=(10, 4))
    for ax, world_name in zip(axes, names):
        for strategy in ("random", "uncertainty"):
            curves = np.atleast_2d(np.array(results[(world_name, strategy)]))
            mean = curves.mean(axis=0)
            ax.plot(budgets, mean, marker="o", label=strategy)
            if len(curves) > 1:
                sd = curves.std(axis=0, ddof=1)
                ax.fill_between(budgets, mean - sd, mean + sd, alpha=0.15)
        ax.set_title(f"{world_name} world")
        ax.set_xlabel(f"comparisons labeled (K={K})")
        ax.set_ylabel("RM held-out pair accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    print(f"wrote {png}")


def run_linear(args) -> int:
    seeds = 1 if args.quick else (args.seeds or 3)
    n_prompts = 60 if args.quick else (args.prompts or 240)
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
    report_targets(summary)
    plot(args.png or str(ROOT / "bench" / "active.png"), ("demo", "lexicon"), budgets, results)
    return 0


# --------------------------------------------------------------------------- --rm transformer

POLICY_MAX_NEW_TOKENS = 40  # tokens per sampled candidate, as the loop samples
RM_BATCH = 16  # rankings per optimizer step (the loop's rm_batch_size)
RM_PATIENCE = 2  # epochs without held-out improvement before the RM stops (the loop's)


def demo_policy_dir(steps: int | None) -> Path:
    """Where the demo policy is cached: DATA_DIR/models/demo-policy, as `build_demo_policy` has it.

    A build with other `steps` gets its own folder, so a test's short build never replaces
    the full one that the commands and the loop use.
    """
    data_dir = Path(os.environ.get("DATA_DIR") or ROOT / "var")
    name = "demo-policy" if steps is None else f"demo-policy-{steps}steps"
    return data_dir / "models" / name


def demo_prompts() -> tuple[list[str], list[str]]:
    """The demo world's prompts (shuffled once) and their kinds (the clusters)."""
    from training.demo_world.corpus import prompt_pool

    pairs = [(text, kind) for kind, texts in sorted(prompt_pool().items()) for text in texts]
    random.Random(0).shuffle(pairs)
    return [t for t, _ in pairs], [k for _, k in pairs]


def second_prompts() -> tuple[list[str], list[str]]:
    """tests/training/second_world.py's prompts; a prompt's cluster is its opening words."""
    from tests.training.second_world import prompt_texts

    texts = prompt_texts()
    return texts, [" ".join(t.split()[:2]) for t in texts]


def real_world(name: str, policy: Path, n_prompts: int, pool: int, seed: int) -> World:
    """`n_prompts` prompts of a world, each with `pool` distinct candidates sampled from the
    policy (seeded per prompt, temperature 1) and their gold scores from the world's judge.

    Prompts for which the policy gave fewer than `pool` distinct answers are left out.
    """
    from training.generation import GenerationConfig, generate_candidates

    if name == "demo":
        from training.demo_world.judge import judge

        prompts, kinds = demo_prompts()
    else:
        from tests.training.second_world import judge

        prompts, kinds = second_prompts()
    # A margin for the prompts that come back short.
    want = min(len(prompts), n_prompts + max(4, n_prompts // 4))
    config = GenerationConfig(
        num_candidates=pool,
        max_new_tokens=POLICY_MAX_NEW_TOKENS,
        temperature=1.0,
        seed=seed,
        batch_size=64,
        device="cpu",
        max_resample_rounds=3,
    )
    result = generate_candidates(str(policy), prompts[:want], config, progress=False)
    world = World(name, [], [], [], [])
    for index, row in enumerate(result.candidates):
        if len(world.prompts) == n_prompts:
            break
        if len(row) < pool:
            continue
        texts = [c.text for c in row]
        world.prompts.append(prompts[index])
        world.kinds.append(kinds[index])
        world.texts.append(texts)
        world.gold.append([float(g) for g in judge([prompts[index]] * pool, texts)])
    if len(world.prompts) < n_prompts:
        raise SystemExit(f"{name}: only {len(world.prompts)} prompts got {pool} distinct answers")
    return world


class TransformerRM:
    """Trains the project's reward model (`train_reward_model`, K-wise loss) on the rankings
    labeled so far and scores candidates with it (`load_reward_model`).

    Epochs and learning rate follow `scaled_defaults` on the number of training rankings (the
    K-wise loss's batch element), early stopping on a 10% held-out split of the labeled
    prompts (the export's own split rule) keeps the best epoch, as the loop does.
    """

    def __init__(self, policy: Path, work: Path, *, max_epochs: float | None = None):
        self.policy = policy
        self.work = work
        self.max_epochs = max_epochs
        self.trained = 0
        self.seconds = 0.0

    def fit_and_score(
        self, rankings: list, seed: int, prompts: list[str], responses: list[str]
    ) -> list[float]:
        """Train one reward model on `rankings` (seeded) and return its scores of the responses."""
        from training.reward.config import RewardConfig
        from training.reward.data import PreferenceData, Ranking
        from training.reward.schedule import scaled_defaults
        from training.reward.scoring import load_reward_model
        from training.reward.train import model_max_positions, train_reward_model

        started = time.perf_counter()
        data = PreferenceData(
            source=Path("bench-active"),
            sha256=f"bench-active-{self.trained}",
            rankings=[Ranking(r.prompt, r.completions, r.tiers) for r in rankings],
        )
        epochs, lr = scaled_defaults(len(rankings), RM_BATCH)
        if self.max_epochs is not None:
            epochs = min(epochs, self.max_epochs)
        config = RewardConfig(
            loss="kwise",
            epochs=epochs,
            lr=lr,
            batch_size=RM_BATCH,
            eval_batch_size=64,
            max_length=min(512, model_max_positions(self.policy) or 512),
            seed=seed,
            eval_fraction=0.1,
            early_stopping_patience=RM_PATIENCE,
            device="cpu",
            logging_steps=10**6,
            save_steps=10**6,
            resume=False,
        )
        out = self.work / f"rm-{self.trained}"
        train_reward_model(data, str(self.policy), out, config)
        scores = load_reward_model(out, device="cpu", batch_size=64).score(prompts, responses)
        shutil.rmtree(out)
        self.trained += 1
        self.seconds += time.perf_counter() - started
        return [float(s) for s in scores]


def run_real_curve(world, rm, strategy, seed, budgets, ensemble):
    """Held-out accuracy of the real reward model after each budget, one strategy and seed.

    The first batch is random for both strategies (no reward model yet: the loop's round 1);
    after each budget the reward model is retrained on everything labeled so far, and with
    `uncertainty` its scores (and those of `ensemble - 1` more models, other seeds, same
    labels) choose the next batch. Member 0 is trained with the seed random uses and is the
    one measured, so the ensemble only changes what is labeled.
    """
    from training.reward.data import Ranking

    n = len(world.texts[0])  # candidates per prompt
    rng = random.Random(seed)
    order = list(range(len(world.prompts)))
    random.Random(7 + seed).shuffle(order)
    cut = int(len(order) * 0.7)
    train, test = sorted(order[:cut]), order[cut:]
    unused = {p: list(range(n)) for p in train}
    test_rows = [(p, i) for p in test for i in range(n)]
    rankings: list[Ranking] = []
    member_scores: list[np.ndarray] = []  # (candidates,) per ensemble member, train pool
    curve = []
    labeled = 0
    for number, budget in enumerate(budgets):
        take = budget - labeled
        if strategy == "random" or not member_scores:
            chosen = pick(world, None, "random", None, unused, take, rng)
        else:
            chosen = pick_scored(world, np.stack(member_scores, axis=1), unused, take)
        for p, group in chosen:
            for i in group:
                unused[p].remove(i)
            ranked = plackett_luce_order([world.gold[p][i] for i in group], TEMPERATURE, rng)
            rankings.append(
                Ranking(
                    prompt=world.prompts[p],
                    completions=[world.texts[p][group[i]] for i in ranked],
                    tiers=[[t] for t in range(len(group))],
                )
            )
            labeled += 1
        last = number == len(budgets) - 1
        selects = strategy == "uncertainty" and not last
        pool_rows = [(p, i) for p in train for i in unused[p]] if selects else []
        rows = test_rows + pool_rows
        prompts = [world.prompts[p] for p, _ in rows]
        responses = [world.texts[p][i] for p, i in rows]
        members = ensemble if selects else 1
        member_scores = []
        for member in range(members):
            scores = rm.fit_and_score(rankings, seed * 100 + member, prompts, responses)
            full = np.zeros(len(world.prompts) * n)
            for (p, i), s in zip(rows, scores):
                full[p * n + i] = s
            member_scores.append(full)
        curve.append(held_out_accuracy(member_scores[0], world, test))
    return curve


def pick_scored(world, scores, unused, take):
    """The `uncertainty` pick of `pick` on given (candidate x model) scores."""
    n = len(world.texts[0])
    items, groups = [], {}
    for p, rest in unused.items():
        if len(rest) < K:
            continue
        pool = [(i, scores[p * n + i].tolist()) for i in rest]
        for g, (group, value) in enumerate(uncertain_groups(pool, K)):
            groups[(p, g)] = (p, group)
            items.append(Scored((p, g), world.kinds[p], value))
    return [groups[key] for key in informative_order(items)[:take]]


def mean_sd(values, *, sign: bool = False) -> str:
    """mean±sd (sample sd; 0 for one value)."""
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):{'+' if sign else ''}.3f}±{sd:.3f}"


def run_transformer(args) -> int:
    import torch

    from training.demo_world.policy import build_demo_policy

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    quick = args.quick
    seeds = args.seeds or (1 if quick else 3)
    n_prompts = args.prompts or (12 if quick else 60)
    points = 2 if quick else args.points
    max_labels = int(n_prompts * 0.7) * args.pool // K
    budgets = sorted({round(max_labels * (n + 1) / points) for n in range(points)})
    results: dict[tuple[str, str], list[list[float]]] = {}
    names = ("demo", "second")
    start = time.perf_counter()
    policy = demo_policy_dir(args.policy_steps)
    # Libraries print to stdout (the Trainer's logs, deepspeed's probe): stdout is the table.
    with (
        contextlib.redirect_stdout(sys.stderr),
        tempfile.TemporaryDirectory(prefix="bench-active-") as work,
    ):
        build_demo_policy(policy, steps=args.policy_steps, progress=False)
        policy_s = time.perf_counter() - start
        rm = TransformerRM(policy, Path(work), max_epochs=3.0 if quick else None)
        for name in names:
            world = real_world(name, policy, n_prompts, args.pool, seed=0)
            for strategy in ("random", "uncertainty"):
                results[(name, strategy)] = [
                    run_real_curve(world, rm, strategy, seed, budgets, args.ensemble)
                    for seed in range(seeds)
                ]
    print(
        f"real reward model (train_reward_model, K-wise, demo policy {policy}), K={K}, "
        f"pool={args.pool}, {n_prompts} prompts per world (70% labeled pool, 30% held out), "
        f"{seeds} seed(s), uncertainty ensemble {args.ensemble}; {rm.trained} reward models "
        f"in {rm.seconds:.0f}s, {time.perf_counter() - start:.0f}s in all "
        f"(policy {policy_s:.0f}s)"
    )
    # diff: uncertainty - random per seed (same held-out prompts and first batch), mean±sd.
    print(f"{'world':<8} {'labels':>6}  {'random':>12}  {'uncertainty':>12}  {'diff':>13}")
    summary = []
    for name in names:
        rand, unc = np.array(results[(name, "random")]), np.array(results[(name, "uncertainty")])
        for b, budget in enumerate(budgets):
            diff = mean_sd(unc[:, b] - rand[:, b], sign=True)
            print(
                f"{name:<8} {budget:>6}  {mean_sd(rand[:, b]):>12}  {mean_sd(unc[:, b]):>12}"
                f"  {diff:>13}"
            )
        random_curve, unc_curve = rand.mean(axis=0).tolist(), unc.mean(axis=0).tolist()
        target = random_curve[-1]
        needed_random = labels_to_reach(random_curve, budgets, target)
        needed = labels_to_reach(unc_curve, budgets, target)
        share = needed / needed_random if needed and needed_random else None
        summary.append((name, target, needed_random, needed, share))
    report_targets(summary)
    plot(args.png or str(ROOT / "bench" / "active_transformer.png"), names, budgets, results)
    if args.json:
        curves = {f"{w}/{s}": c for (w, s), c in results.items()}
        Path(args.json).write_text(json.dumps({"budgets": budgets, "curves": curves}, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rm",
        choices=("linear", "transformer"),
        default="linear",
        help="linear: the numpy stand-in (default); transformer: train_reward_model",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one seed, small worlds (what tests run)"
    )
    parser.add_argument("--seeds", type=int, help="default 3 (1 with --quick)")
    parser.add_argument("--prompts", type=int, help="prompts per world: default 240 / 60")
    parser.add_argument("--png", help="default bench/active.png / bench/active_transformer.png")
    parser.add_argument(
        "--pool", type=int, default=POOL, help="transformer: candidates sampled per prompt"
    )
    parser.add_argument("--points", type=int, default=5, help="transformer: budgets on the curve")
    parser.add_argument(
        "--ensemble",
        type=int,
        default=2,
        help="transformer: reward models that pick by uncertainty",
    )
    parser.add_argument(
        "--policy-steps", type=int, help="transformer: demo policy build steps (default: its own)"
    )
    parser.add_argument("--json", help="transformer: write every seed's curve to this file")
    parser.add_argument("--threads", type=int, default=1, help="transformer: torch CPU threads")
    args = parser.parse_args(argv)
    if args.ensemble < 1 or args.points < 1:
        parser.error("--ensemble and --points must be at least 1")
    if args.pool < K:
        parser.error(f"--pool must be at least K={K}")
    return run_linear(args) if args.rm == "linear" else run_transformer(args)


if __name__ == "__main__":
    raise SystemExit(main())
