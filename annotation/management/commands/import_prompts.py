from pathlib import Path

from django.core.management.base import CommandError

from annotation.management.base import ImportCommand, get_project, service_errors
from annotation.rules.promptprep import DEDUP_MODES, PII_MODES, PrepOptions
from annotation.services.imports import parse_prompt_file
from annotation.services.promptprep import (
    prompts_import_prepared,
    prompts_prepare,
    removed_file_check,
)


class Command(ImportCommand):
    help = (
        "Import prompts from .jsonl ({text} or {messages}), .csv (text column) or a datasets "
        "folder, after the preparation filters (length, personal data, duplicates, a cap per "
        "source). All or nothing; removed rows go to a side file for review."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--dedup",
            choices=DEDUP_MODES,
            default="exact",
            help="exact: drop rows repeating an earlier row (rows with an external_id are kept); "
            "near: also MinHash near duplicates of earlier rows and stored prompts (default exact)",
        )
        parser.add_argument(
            "--near-threshold",
            type=float,
            default=0.8,
            metavar="J",
            help="Jaccard similarity of character 5-grams at which --dedup near removes a row "
            "(default 0.8)",
        )
        parser.add_argument(
            "--pii",
            choices=PII_MODES,
            default="keep",
            help="e-mail addresses, phone numbers, card numbers and IP addresses: keep them, "
            "redact them as [EMAIL] [PHONE] [CARD] [IP], or drop the prompt (default keep)",
        )
        parser.add_argument(
            "--pii-region",
            default="US",
            help="region for national phone numbers without a +country code (default US)",
        )
        parser.add_argument("--min-chars", type=int, metavar="N")
        parser.add_argument("--max-chars", type=int, metavar="N")
        parser.add_argument(
            "--max-per-source",
            type=int,
            metavar="N",
            help="keep at most N prompts per `source` (the row's field, else metadata.source)",
        )
        parser.add_argument(
            "--removed-out",
            type=Path,
            help="where removed rows are written (default: FILE.removed.jsonl beside the file); "
            "checked before the file is read, and replaced only when the import is stored",
        )

    def handle(self, *args, **opts):
        project = get_project(opts["slug"])
        try:
            options = PrepOptions(
                dedup=opts["dedup"],
                near_threshold=opts["near_threshold"],
                pii=opts["pii"],
                pii_region=opts["pii_region"] or None,
                min_chars=opts["min_chars"],
                max_chars=opts["max_chars"],
                max_per_source=opts["max_per_source"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        path: Path = opts["file"]
        removed_path = opts["removed_out"] or path.with_name(path.name + ".removed.jsonl")
        with service_errors():
            # A path asked for is refused before the work; the default one, beside the
            # file, only once rows are removed (a read-only folder may hold a clean file).
            if opts["removed_out"]:
                removed_file_check(removed_path, source=path)
            records = parse_prompt_file(path)
            self.stdout.write(f"validated {len(records)} prompts from {path}")
            prep = prompts_prepare(project=project, records=records, options=options)
            result = prompts_import_prepared(
                project=project, path=path, prep=prep, removed_path=removed_path
            )
        self.imported = True
        width = max(len(name) for name, _ in prep.table())
        for name, count in prep.table():
            self.stdout.write(f"  {name:<{width}}  {count:>8}")
        if prep.removed:
            self.stdout.write(f"removed rows written to {removed_path}")
        self.stdout.write(
            self.style.SUCCESS(f"created {result.created}, unchanged {result.unchanged}")
        )
