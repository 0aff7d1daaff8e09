from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotation.datafiles.export import FORMATS
from annotation.management.base import get_project, service_errors
from annotation.rules.pairs import PAIRINGS
from annotation.rules.splits import DEFAULT_TEST_FRACTION
from annotation.services.exports import AGGREGATES, ExportOptions, ExportProgress, export_create


def _share(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Export a project's rankings as preference pairs (pairs file), full rankings (rankings "
        "file) and manifest.json into --out, and record the export."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--pairing", choices=PAIRINGS, default="all_pairs")
        parser.add_argument("--aggregate", choices=AGGREGATES, default="none")
        parser.add_argument(
            "--include-flagged", action="store_true", help="keep annotations that flag a candidate"
        )
        parser.add_argument(
            "--include-gold", action="store_true", help="keep gold (labeler-scoring) comparisons"
        )
        parser.add_argument(
            "--min-agreement",
            type=_share,
            default=None,
            help="drop annotations whose agreement with their comparison's consensus is below this share",
        )
        parser.add_argument(
            "--test-fraction",
            type=_share,
            default=DEFAULT_TEST_FRACTION,
            help="share of prompts (by hash) in the test split",
        )
        parser.add_argument("--created-by", help="username recorded as the export's author")

    def handle(self, *args, **opts):
        project = get_project(opts["slug"])
        created_by = None
        if opts["created_by"]:
            try:
                created_by = get_user_model().objects.get(username=opts["created_by"])
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {opts['created_by']!r}.") from None
        options = ExportOptions(
            format=opts["format"],
            pairing=opts["pairing"],
            aggregate=opts["aggregate"],
            include_flagged=opts["include_flagged"],
            include_gold=opts["include_gold"],
            min_agreement=opts["min_agreement"],
            test_fraction=opts["test_fraction"],
        )

        def progress(state: ExportProgress) -> None:
            self.stdout.write(
                f"  {state.annotations:,} annotations read, {state.pairs:,} pairs written"
            )

        with service_errors():
            export = export_create(
                project=project,
                options=options,
                created_by=created_by,
                out_dir=opts["out"],
                progress=progress,
            )
        counts = export.counts
        skipped = {
            k: v
            for k, v in counts.items()
            if (k.startswith("excluded_") or k.endswith("_preference")) and v
        }
        if skipped:
            self.stdout.write("skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
        self.stdout.write(
            self.style.SUCCESS(
                f"export {export.pk}: {counts['pairs']} pairs ({counts['pairs_train']} train, "
                f"{counts['pairs_test']} test), {counts['rankings']} rankings in {export.path} "
                f"(sha256 {export.sha256[:12]})"
            )
        )
