from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.management.base import service_errors
from annotation.models import TaskType
from annotation.services.projects import project_create


class Command(BaseCommand):
    help = "Create a labeling project."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name")
        parser.add_argument("--task-type", choices=TaskType.values, default=TaskType.RANKING)
        parser.add_argument(
            "--num-candidates",
            type=int,
            help="K, 2..9 (pairwise: 2; demonstration: references shown, at most K)",
        )
        parser.add_argument("--overlap", type=int, default=1, help="annotations per comparison")
        parser.add_argument("--allow-ties", action="store_true", dest="allow_ties", default=True)
        parser.add_argument("--no-ties", action="store_false", dest="allow_ties")
        parser.add_argument(
            "--allow-edit",
            action="store_true",
            help="ranking projects: the labeler may rewrite the best answer (edited_text)",
        )
        parser.add_argument("--guidelines", type=Path, help="Markdown file")
        parser.add_argument("--flags", help="comma-separated flag codes")
        parser.add_argument("--rating-scale", type=int, default=0, help="0 = off, else 1..N")
        parser.add_argument(
            "--rating-labels",
            help='comma-separated label per rating point, lowest first ("Bad,Poor,OK,Good,Great")',
        )
        parser.add_argument("--lease-seconds", type=int, default=600)
        parser.add_argument("--gold-rate", type=float, default=0.0)

    def handle(self, *args, **opts):
        guidelines = ""
        if opts["guidelines"]:
            try:
                guidelines = opts["guidelines"].read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(
                    f"{opts['guidelines']}: cannot read guidelines ({exc.strerror})"
                ) from None
            except UnicodeDecodeError as exc:
                raise CommandError(
                    f"{opts['guidelines']}: not valid UTF-8 (byte {exc.start + 1} is "
                    f"0x{exc.object[exc.start]:02x}); save the guidelines as UTF-8"
                ) from None
        extra = {
            "rating_scale": opts["rating_scale"],
            "lease_seconds": opts["lease_seconds"],
            "gold_rate": opts["gold_rate"],
            "allow_edit": opts["allow_edit"],
        }
        if opts["rating_labels"]:
            extra["rating_labels"] = [x.strip() for x in opts["rating_labels"].split(",")]
        if opts["flags"] is not None:
            extra["flags"] = [f.strip() for f in opts["flags"].split(",") if f.strip()]
        with service_errors():
            project = project_create(
                slug=opts["slug"],
                name=opts["name"],
                task_type=opts["task_type"],
                num_candidates=opts["num_candidates"],
                overlap=opts["overlap"],
                allow_ties=opts["allow_ties"],
                guidelines=guidelines,
                **extra,
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Created project {project.slug} ({project.task_type}, K={project.num_candidates}, "
                f"overlap={project.overlap})"
            )
        )
