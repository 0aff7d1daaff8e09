"""API routes (SPEC section 3), mounted at `api/` under the namespace `api`."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated

from annotation import converters  # noqa: F401 (registers <id:...>)
from annotation.api import docs, review, views

app_name = "api"

urlpatterns = [
    path("v1/auth/token/", views.TokenObtainApi.as_view(), name="token"),
    path("v1/projects/", views.ProjectListApi.as_view(), name="project-list"),
    path(
        "v1/projects/<slug:slug>/assignments/next/",
        views.AssignmentNextApi.as_view(),
        name="assignment-next",
    ),
    path(
        "v1/assignments/<id:assignment_id>/submit/",
        views.AssignmentSubmitApi.as_view(),
        name="assignment-submit",
    ),
    path(
        "v1/assignments/<id:assignment_id>/skip/",
        views.AssignmentSkipApi.as_view(),
        name="assignment-skip",
    ),
    path(
        "v1/assignments/<id:assignment_id>/renew/",
        views.AssignmentRenewApi.as_view(),
        name="assignment-renew",
    ),
    path("v1/projects/<slug:slug>/prompts/", views.PromptsImportApi.as_view(), name="prompts"),
    path(
        "v1/projects/<slug:slug>/candidates/",
        views.CandidatesImportApi.as_view(),
        name="candidates",
    ),
    path(
        "v1/projects/<slug:slug>/comparisons/build/",
        views.ComparisonsBuildApi.as_view(),
        name="comparisons-build",
    ),
    path("v1/projects/<slug:slug>/exports/", views.ExportCreateApi.as_view(), name="exports"),
    path(
        "v1/exports/<id:export_id>/download/",
        views.ExportDownloadApi.as_view(),
        name="export-download",
    ),
    path("v1/projects/<slug:slug>/stats/", views.ProjectStatsApi.as_view(), name="stats"),
    path("v1/projects/<slug:slug>/models/", views.ProjectModelsApi.as_view(), name="models"),
    path(
        "v1/comparisons/<id:comparison_id>/gold/",
        review.ComparisonGoldApi.as_view(),
        name="comparison-gold",
    ),
    path(
        "v1/annotations/<id:annotation_id>/reject/",
        review.AnnotationRejectApi.as_view(),
        name="annotation-reject",
    ),
    path(
        "v1/annotations/<id:annotation_id>/restore/",
        review.AnnotationRestoreApi.as_view(),
        name="annotation-restore",
    ),
    # Anyone signed in may read the schema (SPEC section 3); the HTML reference is for staff.
    path(
        "schema/",
        SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]),
        name="schema",
    ),
    path("docs/", docs.api_docs, name="docs"),
]
