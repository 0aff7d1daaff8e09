from django.core.management.base import BaseCommand

from annotation.management.base import get_project, service_errors
from annotation.services.projects import labeler_create


class Command(BaseCommand):
    help = "Create a labeler (or add an existing one to a project); the last line printed is the API token."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--project", action="append", required=True, help="project slug (repeatable)"
        )
        parser.add_argument("--staff", action="store_true", help="also give admin-site access")
        parser.add_argument("--password", help="password for browser login")
        parser.add_argument("--email", default="")

    def handle(self, *args, **opts):
        projects = [get_project(slug) for slug in opts["project"]]
        with service_errors():
            user, token = labeler_create(
                username=opts["username"],
                projects=projects,
                staff=opts["staff"],
                password=opts["password"],
                email=opts["email"],
            )
        role = "staff labeler" if user.is_staff else "labeler"
        self.stdout.write(f"{role} {user.username} in {', '.join(p.slug for p in projects)}")
        self.stdout.write(token.key)
