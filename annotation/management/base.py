"""Helpers shared by the labeling commands: project lookup and error mapping."""

from __future__ import annotations

from django.core.management.base import CommandError

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
