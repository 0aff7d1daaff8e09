from django.core.management.base import BaseCommand

from annotation.management.base import get_project, service_errors
from annotation.services.projects import labeler_create


class Command(BaseCommand):
    help = (
        "Create a labeler (or add an existing one to a project). The last line printed is a "
        "new API token, shown this once (tokens are stored hashed); for an existing user it is "
        "an additional token, earlier ones stay valid unless --new-token revokes them."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--project", action="append", required=True, help="project slug (repeatable)"
        )
        parser.add_argument(
            "--staff",
            action="store_true",
            help=(
                "also make them a project admin: the admin site and the staff API, with the "
                "'project admins' group's view/add/change permissions"
            ),
        )
        parser.add_argument("--password", help="password for browser login")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--new-token",
            action="store_true",
            help="revoke the user's other API tokens (the printed one is the only valid one)",
        )

    def handle(self, *args, **opts):
        projects = [get_project(slug) for slug in opts["project"]]
        with service_errors():
            user, token = labeler_create(
                username=opts["username"],
                projects=projects,
                staff=opts["staff"],
                password=opts["password"],
                email=opts["email"],
                new_token=opts["new_token"],
            )
        role = "staff labeler" if user.is_staff else "labeler"
        self.stdout.write(f"{role} {user.username} in {', '.join(p.slug for p in projects)}")
        self.stdout.write(token)
