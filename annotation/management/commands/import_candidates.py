from pathlib import Path

from django.core.management.base import BaseCommand

from annotation.management.base import get_project, service_errors
from annotation.services.imports import candidates_import_file


class Command(BaseCommand):
    help = 'Import candidates generated elsewhere: .jsonl {"prompt_external_id" | "prompt_id", "text", "model"}.'

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("file", type=Path)

    def handle(self, *args, **opts):
        project = get_project(opts["slug"])
        with service_errors():
            result = candidates_import_file(project=project, path=opts["file"])
        self.stdout.write(
            self.style.SUCCESS(f"created {result.created}, unchanged {result.unchanged}")
        )
