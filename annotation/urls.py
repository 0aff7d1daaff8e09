"""Browser routes: sign-in, the labeler's projects, the labeling page and its form fallback."""

from django.contrib.auth import views as auth_views
from django.urls import path

from annotation import (
    converters,  # noqa: F401 (registers <id:...>)
    views,
)
from annotation.auth import ThrottledLoginView

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "accounts/login/",
        ThrottledLoginView.as_view(),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/<slug:slug>/label/", views.label, name="label"),
    path(
        "assignments/<id:assignment_id>/submit/",
        views.assignment_submit,
        name="assignment-submit",
    ),
    path(
        "assignments/<id:assignment_id>/skip/",
        views.assignment_skip_view,
        name="assignment-skip",
    ),
    path(
        "assignments/<id:assignment_id>/edit/",
        views.assignment_edit,
        name="assignment-edit",
    ),
    path(
        "assignments/<id:assignment_id>/fragment/",
        views.assignment_fragment,
        name="assignment-fragment",
    ),
    path("history/", views.history, name="history"),
]
