from pathlib import Path

from annotation.management.base import ImportCommand, get_project, service_errors
from annotation.services.imports import candidates_import_file


class Command(ImportCommand):
    help = 'Import candidates generated elsewhere: .jsonl {"prompt_external_id" | "prompt_id", "text", "model"}.'

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("file", type=Path)

    def handle(self, *args, **opts):
        project = get_project(opts["slug"])
        with service_errors():
            result = candidates_import_file(project=project, path=opts["file"])
        self.imported = True
        self.stdout.write(
            self.style.SUCCESS(f"created {result.created}, unchanged {result.unchanged}")
        )
