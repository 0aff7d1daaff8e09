from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Run the loop (prompts → candidates → simulated labels → export → reward "
        "model → PPO → new candidates) and write report.json with gold scores before and after."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--out", type=Path, default=None, help="report folder (default DATA_DIR/loop)"
        )
        parser.add_argument(
            "--judge", default="training.demo_world.judge:judge", help="module:function"
        )
        parser.add_argument("--prompts", type=Path, help="prompts .jsonl (default: the demo world)")
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace an earlier loop run in --out (without it the loop refuses to start)",
        )
        parser.add_argument(
            "--policy", help="starting policy (default: the demo policy, built if missing)"
        )
        parser.add_argument("--num-prompts", type=int, dest="prompts_n")
        parser.add_argument("--eval-prompts", type=int)
        parser.add_argument(
            "--eval-samples",
            type=int,
            help="answers per held-out prompt and policy that gold, win rate and KL average "
            "over (default 8)",
        )
        parser.add_argument("--labelers", type=int)
        parser.add_argument("--noise", type=float)
        parser.add_argument("--overlap", type=int, help="annotations per comparison")
        parser.add_argument(
            "--tie-epsilon",
            type=float,
            help="labelers tie answers whose judge scores are this close (default 0: equal)",
        )
        parser.add_argument(
            "--no-ties", action="store_true", help="labelers always rank strictly (coin flips)"
        )
        parser.add_argument("--policy-steps", type=int)
        parser.add_argument("--ppo-episodes", type=int)
        parser.add_argument("--ppo-batch-size", type=int)
        parser.add_argument("--rm-epochs", type=float)
        parser.add_argument("--rm-lr", type=float)
        parser.add_argument("--ppo-lr", type=float)
        parser.add_argument("--kl-coef", type=float)
        parser.add_argument("--max-new-tokens", type=int)
        parser.add_argument("--seed", type=int)
        parser.add_argument(
            "--rounds",
            type=int,
            help="rounds of labels → reward model → PPO, each from the last policy (default 1)",
        )
        parser.add_argument(
            "--rm-patience",
            type=int,
            help="reward-model epochs without held-out improvement before it stops (default 2)",
        )
        parser.add_argument(
            "--min-rm-accuracy",
            type=float,
            help="stop before PPO when the reward model's held-out accuracy is below this",
        )
        parser.add_argument(
            "--method",
            choices=["ppo", "dpo"],
            help="ppo: reward model + PPO (default); dpo: DPO on the round's export instead",
        )
        parser.add_argument(
            "--strategy",
            help="random (default) or uncertainty: rounds after the first build from 2K "
            "candidates per prompt by the previous round's reward model, most uncertain first",
        )
        parser.add_argument(
            "--threads",
            type=int,
            help="torch CPU threads for the run (default 1: the fastest for the demo world's "
            "tiny models, and the same figures on any core count; 0: torch's default)",
        )
        parser.add_argument(
            "--ptx-coef",
            type=float,
            help="PPO-ptx: weight of the LM loss on --ptx-data in every PPO update "
            "(default 0: off; 1 is train_ppo's default weight)",
        )
        parser.add_argument(
            "--ptx-data",
            help="JSON lines for PPO-ptx (train_ppo --ptx-data; default: the demo policy's "
            "training corpus with the demo policy, none with --policy)",
        )
        parser.add_argument("--dpo-beta", type=float)
        parser.add_argument("--dpo-epochs", type=float)
        parser.add_argument("--dpo-lr", type=float)

    def handle(self, *args, **opts):
        from annotation.errors import ServiceError
        from training.loop import LoopConfig, loop_run

        fields = {
            "prompts_n": "prompts",
            "eval_prompts": "eval_prompts",
            "eval_samples": "eval_samples",
            "labelers": "labelers",
            "noise": "noise",
            "overlap": "overlap",
            "tie_epsilon": "tie_epsilon",
            "rm_lr": "rm_lr",
            "ppo_lr": "ppo_lr",
            "policy_steps": "policy_steps",
            "ppo_episodes": "ppo_episodes",
            "ppo_batch_size": "ppo_batch_size",
            "rm_epochs": "rm_epochs",
            "kl_coef": "kl_coef",
            "max_new_tokens": "max_new_tokens",
            "seed": "seed",
            "rounds": "rounds",
            "rm_patience": "rm_patience",
            "min_rm_accuracy": "min_rm_accuracy",
            "method": "method",
            "dpo_beta": "dpo_beta",
            "dpo_epochs": "dpo_epochs",
            "dpo_lr": "dpo_lr",
            "strategy": "strategy",
            "threads": "threads",
            "ptx_coef": "ptx_coef",
            "ptx_data": "ptx_data",
        }
        values = {f: opts[o] for o, f in fields.items() if opts[o] is not None}
        if opts["no_ties"]:
            values["tie_epsilon"] = None
        try:
            config = LoopConfig(**values)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        out = opts["out"] or Path(settings.DATA_DIR) / "loop"
        try:
            report = loop_run(
                out_dir=out,
                judge_spec=opts["judge"],
                prompts_file=opts["prompts"],
                policy=opts["policy"],
                config=config,
                overwrite=opts["overwrite"],
                log=lambda line: self.stdout.write(line),
            )
        except (ValueError, ServiceError) as exc:  # bad input or a refused step: no traceback
            raise CommandError(str(exc).splitlines()[0]) from None
        self.stdout.write("")
        for key in (
            "rm_accuracy_vs_labels",
            "labeler_agreement",
            "rm_accuracy",
            "label_agreement_with_judge",
            "gold_before",
            "gold_after",
            "gold_ci",
            "win_rate_vs_start",
            "win_rate_ci",
            "labeler_win_rate",
            "kl",
            "kl_heldout",
            "dpo_eval_accuracy",
            "rm_score_first",
            "rm_score_last",
            "rm_length_correlation",
            "near_duplicate_share",
        ):
            if key not in report:  # figures of the other method
                continue
            value = report.get(key)
            if isinstance(value, float):
                shown = f"{value:.3f}"
            elif isinstance(value, list) and all(isinstance(v, float) for v in value):
                shown = "[" + ", ".join(f"{v:.3f}" for v in value) + "]"
            else:
                shown = value
            self.stdout.write(f"{key:28s} {shown}")
        self.stdout.write("")
        self._rounds_table(report.get("rounds") or [])
        self._leaderboard(report.get("leaderboard") or [], report.get("labeler_win_rate"))
        if report.get("stopped_before_ppo"):
            raise CommandError(
                f"{report['stopped_before_ppo']} (report: {Path(out) / 'report.json'})"
            )
        self.stdout.write(self.style.SUCCESS(f"report: {Path(out) / 'report.json'}"))

    def _rounds_table(self, rounds):
        def f(value):
            return f"{value:.3f}" if isinstance(value, float) else "n/a"

        def ci(pair):
            return f"[{f(pair[0])}, {f(pair[1])}]" if pair else "n/a"

        header = (
            f"{'round':>5} {'rm acc':>7} {'labelers':>8} {'vs judge':>8} {'gold before':>11} "
            f"{'gold after':>10} {'gold diff 95% CI':>18} {'win':>6} {'win 95% CI':>16} "
            f"{'KL':>7} {'over-opt':>8} {'built by':>11}"
        )
        self.stdout.write(header)
        for r in rounds:
            over = (r.get("overoptimization") or {}).get("flagged")
            self.stdout.write(
                f"{r['round']:>5} {f(r.get('rm_accuracy_vs_labels')):>7} "
                f"{f(r.get('labeler_agreement')):>8} {f(r.get('rm_accuracy')):>8} "
                f"{f(r.get('gold_before')):>11} {f(r.get('gold_after')):>10} "
                f"{ci(r.get('gold_ci')):>18} {f(r.get('win_rate_vs_start')):>6} "
                f"{ci(r.get('win_rate_ci')):>16} {f(r.get('kl_heldout')):>7} "
                f"{'yes' if over else 'no' if over is not None else 'n/a':>8} "
                f"{r.get('strategy') or 'n/a':>11}"
            )
        for r in rounds:
            for warning in r.get("warnings") or []:
                self.stdout.write(self.style.WARNING(f"round {r['round']}: {warning}"))

    def _leaderboard(self, rows, labeler_win_rate):
        if not rows:
            return
        self.stdout.write("")
        self.stdout.write("leaderboard (simulated labelers, held-out prompts; ties count 1/2)")
        self.stdout.write(f"{'model':40s} {'games':>5} {'win rate':>8} {'95% CI':>16} {'BT':>6}")
        for row in rows:
            self.stdout.write(
                f"{row['model'][:40]:40s} {row['comparisons']:>5} {row['win_rate']:>8.3f} "
                f"{'[' + format(row['ci_low'], '.3f') + ', ' + format(row['ci_high'], '.3f') + ']':>16} "
                f"{row['strength']:>6.2f}"
            )
        if labeler_win_rate is not None:
            self.stdout.write(f"labeler_win_rate (new over start policy) {labeler_win_rate:.3f}")
