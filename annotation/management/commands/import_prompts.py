from pathlib import Path

from django.core.management.base import BaseCommand

from annotation.management.base import get_project, service_errors
from annotation.services.imports import parse_prompt_file, prompts_import


class Command(BaseCommand):
    help = "Import prompts from .jsonl ({text} or {messages}), .csv (text column) or a datasets folder. All or nothing."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("file", type=Path)

    def handle(self, *args, **opts):
        project = get_project(opts["slug"])
        with service_errors():
            records = parse_prompt_file(opts["file"])
            self.stdout.write(f"validated {len(records)} prompts from {opts['file']}")
            result = prompts_import(project=project, records=records, source=opts["file"].name)
        self.stdout.write(
            self.style.SUCCESS(f"created {result.created}, unchanged {result.unchanged}")
        )
