from pathlib import Path

from annotation.management.base import ImportCommand, get_project, service_errors
from annotation.services.gold import gold_import_file


class Command(ImportCommand):
    help = 'Mark comparisons gold: .jsonl rows {"comparison_id", "ranking"}, all or nothing.'

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("file", type=Path)

    def handle(self, *args, **opts):
        project = get_project(opts["slug"])
        with service_errors():
            result = gold_import_file(project=project, path=opts["file"])
        self.imported = True
        self.stdout.write(self.style.SUCCESS(f"marked {result.marked} comparisons gold"))
