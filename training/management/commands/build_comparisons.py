"""build_comparisons SLUG [--strategy random|uncertainty] [--reward-model DIR ...] (SPEC section 11).

It lives in the training app because `uncertainty` runs reward models: the annotation app
imports no ML. `random` loads no torch (the imports below are lazy).
"""

from django.core.management.base import BaseCommand, CommandError

from annotation.management.base import get_project, service_errors
from annotation.rules.active import DEFAULT_MAX_SHARE, STRATEGIES
from annotation.services.comparisons import comparisons_build


class Command(BaseCommand):
    help = (
        "Group each prompt's unused candidates into comparisons of K: at random (mixing "
        "models), or by uncertainty (the K candidates whose order the reward model is least "
        "sure of first, served most uncertain first)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--model",
            action="append",
            help="only candidates of this model version or name (repeatable)",
        )
        parser.add_argument("--strategy", default="random", help=f"one of {', '.join(STRATEGIES)}")
        parser.add_argument(
            "--reward-model",
            action="append",
            metavar="DIR",
            help="reward model directory for --strategy uncertainty; repeat it for an ensemble",
        )
        parser.add_argument(
            "--max-share",
            type=float,
            default=DEFAULT_MAX_SHARE,
            help="most of any prefix of the serving order one prompt source may take "
            f"(uncertainty; default {DEFAULT_MAX_SHARE})",
        )
        parser.add_argument("--device", default="auto")
        parser.add_argument("--batch-size", type=int, default=16)

    def handle(self, *args, **opts):
        strategy = opts["strategy"]
        if strategy not in STRATEGIES:
            raise CommandError(
                f"unknown --strategy {strategy!r}: use one of {', '.join(STRATEGIES)}"
            )
        if strategy == "uncertainty" and not opts["reward_model"]:
            raise CommandError("--strategy uncertainty needs --reward-model DIR")
        if strategy == "random" and opts["reward_model"]:
            raise CommandError("--reward-model is only used with --strategy uncertainty")
        project = get_project(opts["slug"])
        with service_errors():
            if strategy == "uncertainty":
                result = self._uncertain(project, opts)
            else:
                result = comparisons_build(project=project, models=opts["model"])
        self.stdout.write(self.style.SUCCESS(f"built {result.created} comparisons ({strategy})"))
        if result.leftover:
            self.stdout.write(f"{result.leftover} candidates left over (not a multiple of K)")
        if result.prompts_short:
            self.stdout.write(
                f"{result.prompts_short} prompts have fewer than K={project.num_candidates} unused candidates"
            )

    def _uncertain(self, project, opts):
        from training.active import build_uncertain_comparisons
        from training.reward.uncertainty import RewardModelDirError

        try:
            return build_uncertain_comparisons(
                project,
                opts["reward_model"],
                models=opts["model"],
                max_share=opts["max_share"],
                device=opts["device"],
                batch_size=opts["batch_size"],
            )
        except (RewardModelDirError, ValueError) as exc:
            raise CommandError(str(exc)) from None
