"""Helpers shared by the labeling commands: project lookup, error mapping, Ctrl-C."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import ServiceError
from annotation.models import Project


def get_project(slug: str) -> Project:
    try:
        return Project.objects.get(slug=slug)
    except Project.DoesNotExist:
        raise CommandError(f"No project with slug {slug!r}.") from None


class service_errors:
    """Context manager turning service errors into a one-line CommandError."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, ServiceError):
            raise CommandError(exc.detail) from None
        return False


class ImportCommand(BaseCommand):
    """An all-or-nothing import: Ctrl-C ends it with one line and exit status 130.

    The import's transaction rolls back on the interrupt, so nothing of the file is stored,
    unless it came after the service returned (`handle` sets `self.imported` then).
    """

    imported = False

    def execute(self, *args, **options):
        self.imported = False
        try:
            return super().execute(*args, **options)
        except KeyboardInterrupt:
            if self.imported:
                message = "interrupted after the import was stored; run it again to see its counts"
            else:
                message = "interrupted: nothing was imported; run the same command again"
            raise CommandError(message, returncode=130) from None
