"""PPO benchmark: episodes/s and final reward of our trainer vs trl 1.12.0's experimental PPOTrainer.

Same tiny GPT-2 policy, same (randomly initialised, seeded) reward model, same prompts, same
shapes (rollout batch, minibatches, PPO epochs, response length, temperature, KL coefficient,
learning rate). trl 1.12.0 is installed into its own virtual environment inside the benchmark
folder (never a project dependency): `pip install --no-deps trl==1.12.0` into a venv that sees
this project's torch / transformers / accelerate / datasets through a .pth file, so both
trainers run on the very same libraries.

Both final policies are then scored by one evaluator: sampled responses to the same prompts,
with the same seed, scored by the reward model through `training.reward.scoring`.

    .venv/bin/python bench/ppo.py                # ours and trl, prints both and the ratio
    .venv/bin/python bench/ppo.py --skip-trl     # ours only
SPEC section 9 target: >= 1.5x trl's episodes/s at equal or better final reward.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXTS = [
    f"question {i}: what does the {animal} do? answer: the {animal} {verb} on the {place}."
    for i, (animal, verb, place) in enumerate(
        (a, v, p)
        for a in ("cat", "dog", "bird", "fish", "horse")
        for v in ("sits", "runs", "sleeps", "jumps", "waits")
        for p in ("mat", "roof", "grass", "bed", "road", "hill")
    )
]
PROMPTS = [
    f"question {i}: what does the {a} do? answer:"
    for i, a in enumerate(["cat", "dog", "bird", "fish", "horse"] * 13)
]

TRL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    assert trl.__version__ == "1.12.0", trl.__version__
    tok = AutoTokenizer.from_pretrained(spec["policy"], padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(spec["policy"])
    ref = AutoModelForCausalLM.from_pretrained(spec["policy"])
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in spec["prompts"]]
    train = Dataset.from_dict({"input_ids": ids})
    args = PPOConfig(
        output_dir=spec["out"],
        total_episodes=spec["episodes"],
        per_device_train_batch_size=spec["batch_size"],  # trl: the rollout batch per device
        gradient_accumulation_steps=1,
        num_mini_batches=spec["mini_batches"],
        num_ppo_epochs=spec["ppo_epochs"],
        learning_rate=spec["lr"],
        response_length=spec["response_length"],
        temperature=spec["temperature"],
        kl_coef=spec["kl_coef"],
        missing_eos_penalty=spec["missing_eos_penalty"],
        stop_token="eos",
        local_rollout_forward_batch_size=spec["batch_size"],
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=spec["device"] == "cpu",
        bf16=False,
        seed=spec["seed"],
        dataloader_num_workers=0,
    )
    trainer = PPOTrainer(
        args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
        train_dataset=train, value_model=value, eval_dataset=train.select(range(4)),
    )
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    trainer.save_model(spec["out"])
    tok.save_pretrained(spec["out"])
    logs = [r for r in trainer.state.log_history if "objective/scores" in r]
    print("RESULT " + json.dumps({
        "wall_s": wall,
        "episodes_per_s": spec["episodes"] / wall,
        "train_scores": [r["objective/scores"] for r in logs],
    }))
    """
)


def build_world(root: Path, *, seed: int) -> tuple[Path, Path]:
    """The tiny policy and a seeded random reward model sharing its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from training.modeling import load_tokenizer
    from training.tiny import build_tiny_causal_lm

    policy_dir = build_tiny_causal_lm(
        root / "policy", TEXTS, n_layer=2, n_embd=64, vocab_size=400, seed=seed
    )
    _pretrain(policy_dir, seed=seed)
    torch.manual_seed(seed + 1)
    reward = AutoModelForSequenceClassification.from_pretrained(policy_dir, num_labels=1)
    with torch.no_grad():
        reward.score.weight.mul_(20.0)  # a random head with spread, so there is signal to climb
    tokenizer = load_tokenizer(policy_dir)
    reward.config.pad_token_id = tokenizer.pad_token_id
    reward.save_pretrained(root / "reward")
    tokenizer.save_pretrained(root / "reward")
    return policy_dir, root / "reward"


def _pretrain(policy_dir: Path, *, seed: int, steps: int = 150) -> None:
    """A few hundred language-model steps on TEXTS + EOS, so that the policy writes answers
    that end, as a real SFT policy does (a random one would never emit EOS)."""
    import torch

    from training.modeling import load_causal_lm

    model, tokenizer = load_causal_lm(policy_dir, device="cpu", dtype="float32")
    rows = [
        tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for t in TEXTS
    ]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(ids == tokenizer.pad_token_id, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(rows), (32,), generator=generator)
        loss = model(
            input_ids=ids[pick],
            attention_mask=ids[pick] != tokenizer.pad_token_id,
            labels=labels[pick],
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)


def evaluate(policy_dir: Path, reward_dir: Path, args: argparse.Namespace) -> float:
    """Mean penalised RM score of seeded samples on every prompt: one judge for both trainers."""
    import torch

    from training.modeling import encode_prompt, load_causal_lm
    from training.reward.scoring import load_reward_model

    model, tokenizer = load_causal_lm(policy_dir, device="cpu", dtype="float32")
    scorer = load_reward_model(reward_dir, device="cpu", dtype="float32")
    torch.manual_seed(1234)
    width = max(len(encode_prompt(tokenizer, p)) for p in PROMPTS)
    rows = [encode_prompt(tokenizer, p) for p in PROMPTS]
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    texts: list[str] = []
    ended: list[bool] = []
    for _ in range(args.eval_samples):
        out = model.generate(
            input_ids=ids,
            attention_mask=ids != tokenizer.pad_token_id,
            do_sample=True,
            temperature=args.temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=args.response_length,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        ended += (out[:, width:] == tokenizer.eos_token_id).any(dim=1).tolist()
    scores = scorer.score(PROMPTS * args.eval_samples, texts, normalize=False)
    # The objective both trainers optimise: the RM score, minus the penalty for no EOS.
    penalty = args.missing_eos_penalty or 0.0
    return sum(s - (0.0 if e else penalty) for s, e in zip(scores, ended)) / len(scores)


def run_ours(policy_dir: Path, reward_dir: Path, out: Path, args: argparse.Namespace) -> dict:
    from training.ppo import PPOConfig, train_ppo

    config = PPOConfig(
        total_episodes=args.episodes,
        batch_size=args.batch_size,
        mini_batches=args.mini_batches,
        ppo_epochs=args.ppo_epochs,
        lr=args.lr,
        response_length=args.response_length,
        temperature=args.temperature,
        kl_coef=args.kl_coef,
        missing_eos_penalty=args.missing_eos_penalty,
        seed=args.seed,
        device="cpu",
        eval_every=0,
        save_every=0,
        progress=False,
    )
    started = time.perf_counter()
    result = train_ppo(policy_dir, reward_dir, PROMPTS, out, config)
    wall = time.perf_counter() - started
    loop_eps = result.metrics["episodes_per_s"]
    return {
        "wall_s": wall,
        "episodes_per_s": loop_eps,
        "train_scores": [r["score_raw"] for r in result.history],
    }


def ensure_trl_venv(venv: Path) -> Path:
    """A venv holding only trl 1.12.0, layered over this project's venv for everything else."""
    python = venv / "bin" / "python"
    if python.exists():
        probe = subprocess.run(
            [str(python), "-c", "import trl; print(trl.__version__)"],
            capture_output=True,
            text=True,
        )
        if probe.stdout.strip() == "1.12.0":
            return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Appended after the venv's own site-packages: trl 1.12.0 shadows the project's trl.
    (Path(site) / "_rlhf_studio_base.pth").write_text(ours + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "trl==1.12.0"], check=True
    )
    return python


def run_trl(
    python: Path, policy_dir: Path, reward_dir: Path, out: Path, args: argparse.Namespace
) -> dict:
    spec = {
        "policy": str(policy_dir),
        "reward": str(reward_dir),
        "out": str(out),
        "prompts": PROMPTS,
        "episodes": args.episodes,
        "batch_size": args.batch_size,
        "mini_batches": args.mini_batches,
        "ppo_epochs": args.ppo_epochs,
        "lr": args.lr,
        "response_length": args.response_length,
        "temperature": args.temperature,
        "kl_coef": args.kl_coef,
        "missing_eos_penalty": args.missing_eos_penalty,
        "seed": args.seed,
        "device": "cpu",
        "threads": args.threads,
    }
    script = out.parent / "trl_ppo_run.py"
    script.write_text(TRL_SCRIPT)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "PYTHONPATH": "",
        "WANDB_DISABLED": "true",
    }
    proc = subprocess.run(
        [str(python), str(script), json.dumps(spec)], capture_output=True, text=True, env=env
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"trl run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _figures(runs: list[dict]) -> str:
    return ", ".join(f"{run['episodes_per_s']:.1f}" for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mini-batches", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--response-length", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--missing-eos-penalty", type=float, default=1.0)
    parser.add_argument(
        "--eval-samples", type=int, default=4, help="samples per prompt at evaluation"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: oversubscribed cores make more threads far slower)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per trainer")
    parser.add_argument("--skip-trl", action="store_true", help="run only our trainer")
    parser.add_argument("--trl-venv", type=Path, default=ROOT / "var" / "bench" / "trl-1.12.0-venv")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep outputs here (default: temp)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        policy_dir, reward_dir = build_world(root, seed=args.seed)
        before = evaluate(policy_dir, reward_dir, args)
        shapes = (
            f"{args.episodes} episodes, rollout {args.batch_size}, {args.mini_batches} minibatches, "
            f"{args.ppo_epochs} epochs, {args.response_length} tokens, {args.threads} threads"
        )
        print(f"PPO benchmark: tiny GPT-2 (2 layers, width 64, briefly pretrained); {shapes}")
        print(f"initial policy: reward {before:+.3f}")

        # Alternate the two trainers and keep each one's best run: the machine is shared, and
        # a burst of load from elsewhere should not decide the comparison.
        python = None if args.skip_trl else ensure_trl_venv(args.trl_venv)
        ours_runs, trl_runs = [], []
        for repeat in range(args.repeats):
            ours_runs.append(run_ours(policy_dir, reward_dir, root / f"ours-{repeat}", args))
            if python is not None:
                trl_runs.append(
                    run_trl(python, policy_dir, reward_dir, root / f"trl-{repeat}", args)
                )
        ours = max(ours_runs, key=lambda r: r["episodes_per_s"])
        ours["final_reward"] = evaluate(root / "ours-0", reward_dir, args)
        print(
            f"ours        : {ours['episodes_per_s']:7.1f} episodes/s (best of {args.repeats}: "
            f"{_figures(ours_runs)}), "
            f"final reward {ours['final_reward']:+.3f}"
        )
        if python is None:
            return
        theirs = max(trl_runs, key=lambda r: r["episodes_per_s"])
        theirs["final_reward"] = evaluate(root / "trl-0", reward_dir, args)
        print(
            f"trl 1.12.0  : {theirs['episodes_per_s']:7.1f} episodes/s (best of {args.repeats}: "
            f"{_figures(trl_runs)}), "
            f"final reward {theirs['final_reward']:+.3f}"
        )
        ratio = ours["episodes_per_s"] / theirs["episodes_per_s"]
        verdict = (
            "meets" if ratio >= 1.5 and ours["final_reward"] >= theirs["final_reward"] else "misses"
        )
        print(
            f"speed ratio : {ratio:.2f}x (target >= 1.5x at equal or better final reward: {verdict})"
        )


if __name__ == "__main__":
    main()
