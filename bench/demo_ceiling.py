"""Where the demo world's gold comes from, and how far a better policy could move it.

For each policy given (default: the demo policy), on the loop's held-out prompts (the 48
demo prompts after the 236 it labels, as `make loop` splits them) with the loop's sampling
(`--samples` answers per prompt, default 8 as the loop's `--eval-samples`, seeds 0, 1, ...,
40 new tokens): the judge's components per prompt kind, the share of answers the judge
already scores 1.0, and, against the first policy's answers, the win rate (as the loop's
`win_rate_vs_start`: every answer against every answer to the same prompt) of

- each later policy given (e.g. the loop's `var/loop/policy`), as the loop reports it;
- `style fix`: the first policy's answers with the corpus's rude tails deleted, the gain a
  policy that only learned manners would get;
- `oracle`: a perfect answer everywhere: 1 - share_perfect / 2, since an answer already
  perfect can only tie (ties count 1/2).

It says which targets a reward model and PPO can reach from this starting policy at all.

    .venv/bin/python bench/demo_ceiling.py
    .venv/bin/python bench/demo_ceiling.py var/models/demo-policy var/loop/policy
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LOOP_PROMPTS, LOOP_EVAL_PROMPTS = 236, 48  # training.loop.LoopConfig defaults


def without_rude_tails(answer: str) -> str:
    """The answer with every rude tail the demo corpus appends removed."""
    from training.demo_world.corpus import RUDE_TAILS

    for tail in RUDE_TAILS:
        answer = answer.replace(" " + tail, "").replace(" " + tail.upper(), "")
    return answer


def breakdown(prompts: list[str], answers: list[str]) -> dict[str, dict[str, float]]:
    """Mean judge component and gold per prompt kind (and "all")."""
    from training.demo_world.judge import components, score
    from training.demo_world.prompts import parse_prompt

    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for prompt, answer in zip(prompts, answers):
        kind = (parse_prompt(prompt) or {}).get("kind", "other")
        parts = {**components(prompt, answer), "gold": score(prompt, answer)}
        for group in (kind, "all"):
            for name, value in parts.items():
                sums[group][name].append(value)
            sums[group]["perfect"].append(float(parts["gold"] >= 0.999))
    return {
        g: {n: sum(v) / len(v) for n, v in d.items()} | {"n": len(d["gold"])}
        for g, d in sums.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policies", nargs="*", help="policy folders (default: the demo policy)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--samples", type=int, default=8, help="answers per prompt and policy")
    args = parser.parse_args(argv)

    from training.demo_world.judge import judge
    from training.demo_world.policy import build_demo_policy
    from training.demo_world.prompts import load_prompts
    from training.evaluation import heldout_gold_figures, mean, sample_answer_sets

    policies = args.policies or [str(build_demo_policy(ROOT / "var" / "models" / "demo-policy"))]
    records = load_prompts()[LOOP_PROMPTS : LOOP_PROMPTS + LOOP_EVAL_PROMPTS]
    prompts = [r["text"] for r in records]
    answers = {
        p: sample_answer_sets(
            p, prompts, samples=args.samples, max_new_tokens=args.max_new_tokens, seed=0
        )
        for p in policies
    }
    every_prompt = [p for _ in range(args.samples) for p in prompts]

    def gold_sets(sets: list[list[str]]) -> list[list[float]]:
        return [judge(prompts, answers) for answers in sets]

    start = answers[policies[0]]
    start_gold = gold_sets(start)

    columns = ("n", "correct", "follow", "brevity", "polite", "gold", "perfect")
    for policy in policies:
        print(f"\n{policy}")
        print(f"{'kind':<11}" + "".join(f"{c:>9}" for c in columns))
        every_answer = [a for answer_set in answers[policy] for a in answer_set]
        for kind, row in sorted(breakdown(every_prompt, every_answer).items()):
            print(
                f"{kind:<11}"
                + "".join(f"{row[c]:>9.2f}" if c != "n" else f"{row[c]:>9d}" for c in columns)
            )

    def line(label: str, sets: list[list[str]]) -> str:
        figures = heldout_gold_figures(start_gold, gold_sets(sets))
        return f"{label:<28}{figures['gold_after']:>8.3f}{figures['win_rate_vs_start']:>10.3f}"

    print(f"\nagainst {policies[0]} (gold {mean([g for s in start_gold for g in s]):.3f}):")
    print(f"{'':<28}{'gold':>8}{'win rate':>10}")
    for policy in policies[1:]:
        print(line(Path(policy).name, answers[policy]))
    fixed = [[without_rude_tails(a) for a in answer_set] for answer_set in start]
    print(line("style fix (no rude tails)", fixed))
    perfect = mean([float(g >= 0.999) for scores in start_gold for g in scores])
    print(f"{'oracle (all perfect)':<28}{1.0:>8.3f}{1 - perfect / 2:>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
