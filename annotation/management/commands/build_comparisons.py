from django.core.management.base import BaseCommand

from annotation.management.base import get_project
from annotation.services.comparisons import comparisons_build


class Command(BaseCommand):
    help = "Group each prompt's unused candidates into comparisons of K (mixing models)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--model",
            action="append",
            help="only candidates of this model version or name (repeatable)",
        )

    def handle(self, *args, **opts):
        project = get_project(opts["slug"])
        result = comparisons_build(project=project, models=opts["model"])
        self.stdout.write(self.style.SUCCESS(f"built {result.created} comparisons"))
        if result.leftover:
            self.stdout.write(f"{result.leftover} candidates left over (not a multiple of K)")
        if result.prompts_short:
            self.stdout.write(
                f"{result.prompts_short} prompts have fewer than K={project.num_candidates} unused candidates"
            )
