from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotation.management.base import get_project, service_errors
from annotation.services.demonstrations import DemonstrationExportOptions, demonstrations_export


class Command(BaseCommand):
    help = (
        'Export a project\'s written demonstrations as sft.jsonl ({"messages": [...]} rows, '
        "trl's conversational format) with manifest.json into --out, and record the export."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
        parser.add_argument(
            "--include-edited",
            action="store_true",
            help="also the edited best answers of a ranking project with allow_edit",
        )
        parser.add_argument(
            "--include-gold", action="store_true", help="keep answers to gold comparisons"
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
        options = DemonstrationExportOptions(
            include_edited=opts["include_edited"], include_gold=opts["include_gold"]
        )
        with service_errors():
            export = demonstrations_export(
                project=project,
                options=options,
                created_by=created_by,
                out_dir=opts["out"],
                progress=lambda rows: self.stdout.write(f"  {rows:,} rows written"),
            )
        counts = export.counts
        if counts.get("excluded_gold"):
            self.stdout.write(f"skipped: excluded_gold {counts['excluded_gold']}")
        self.stdout.write(
            self.style.SUCCESS(
                f"export {export.pk}: {export.rows} rows ({counts['demonstrations']} "
                f"demonstrations, {counts['edited']} edited answers) in "
                f"{Path(export.path) / 'sft.jsonl'} (sha256 {export.sha256[:12]})"
            )
        )
