from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Run one full round of the loop (prompts → candidates → simulated labels → export → reward "
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
            "--policy", help="starting policy (default: the demo policy, built if missing)"
        )
        parser.add_argument("--num-prompts", type=int, dest="prompts_n")
        parser.add_argument("--eval-prompts", type=int)
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
            "--method",
            choices=["ppo", "dpo"],
            help="ppo: reward model + PPO (default); dpo: DPO on the round's export instead",
        )
        parser.add_argument("--dpo-beta", type=float)
        parser.add_argument("--dpo-epochs", type=float)
        parser.add_argument("--dpo-lr", type=float)

    def handle(self, *args, **opts):
        from training.loop import LoopConfig, loop_run

        fields = {
            "prompts_n": "prompts",
            "eval_prompts": "eval_prompts",
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
            "method": "method",
            "dpo_beta": "dpo_beta",
            "dpo_epochs": "dpo_epochs",
            "dpo_lr": "dpo_lr",
        }
        values = {f: opts[o] for o, f in fields.items() if opts[o] is not None}
        if opts["no_ties"]:
            values["tie_epsilon"] = None
        config = LoopConfig(**values)
        out = opts["out"] or Path(settings.DATA_DIR) / "loop"
        try:
            report = loop_run(
                out_dir=out,
                judge_spec=opts["judge"],
                prompts_file=opts["prompts"],
                policy=opts["policy"],
                config=config,
                log=lambda line: self.stdout.write(line),
            )
        except ValueError as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        self.stdout.write("")
        for key in (
            "rm_accuracy",
            "label_agreement_with_judge",
            "gold_before",
            "gold_after",
            "win_rate_vs_start",
            "kl",
            "dpo_eval_accuracy",
            "rm_score_first",
            "rm_score_last",
        ):
            if key not in report:  # figures of the other method
                continue
            value = report.get(key)
            shown = f"{value:.3f}" if isinstance(value, float) else value
            self.stdout.write(f"{key:28s} {shown}")
        self.stdout.write(self.style.SUCCESS(f"report: {Path(out) / 'report.json'}"))
