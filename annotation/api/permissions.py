"""Who may call what, and the lookups that hide other people's objects behind a 404.

Anonymous callers get 401 (the view's first authenticator, TokenAuthentication, names a
`WWW-Authenticate` scheme), signed-in non-staff get 403 on staff endpoints. Object access
is scoped in the query itself: a project the user is not a member of, or an assignment of
someone else, does not exist for them (404), so ids of other people's work leak nothing.
"""

from __future__ import annotations

from django.http import Http404
from rest_framework.permissions import BasePermission

from annotation.models import Assignment, Project
from annotation.selectors.queue import assignment_of_labeler, project_for_member


class IsStaff(BasePermission):
    """Signed-in staff users holding the view's `required_permission`, if it names one.

    The permission is the one the admin asks for the same work (change_project to import,
    build and export, view_project for statistics, change_comparison for gold,
    change_annotation for review, view_export to download), so an account the admin limits
    is limited here too. Superusers hold every permission; `create_labeler --staff` puts an
    account in the "project admins" group, which holds these.
    """

    message = "This endpoint is for staff users."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_staff):
            return False
        needed = getattr(view, "required_permission", None)
        if needed and not user.has_perm(needed):
            self.message = f"This endpoint needs the {needed} permission."
            return False
        return True


def project_for_labeler(user, slug: str) -> Project:
    """The project with this slug if the user labels it (staff: any project), else 404."""
    project = project_for_member(slug, user)
    if project is None:
        raise Http404("Not found.")
    return project


def project_for_staff(slug: str) -> Project:
    """Any project by slug, for staff endpoints (the permission class has checked the user)."""
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise Http404("Not found.")
    return project


def assignment_of(user, assignment_id: int) -> Assignment:
    """The user's own assignment with this id, else 404 (staff included: leases are personal)."""
    assignment = assignment_of_labeler(assignment_id, user)
    if assignment is None:
        raise Http404("Not found.")
    return assignment
