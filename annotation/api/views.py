"""The v1 JSON API (SPEC section 3): thin views that parse, call one service, render.

Errors raised here or in the services become `{"detail", "errors"}` in one place,
`annotation.api.exceptions.api_exception_handler`.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict
from pathlib import Path

from django.contrib.auth import authenticate
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.urls import reverse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from annotation.api import serializers as s
from annotation.api.parsers import BoundedJSONParser, StrictJSONParser
from annotation.api.permissions import (
    IsStaff,
    assignment_of,
    project_for_labeler,
    project_for_staff,
)
from annotation.auth import signin_refused
from annotation.datafiles.export import table_filename
from annotation.errors import ServiceValidationError
from annotation.models import Export
from annotation.selectors.projects import project_progress, projects_for_user
from annotation.selectors.stats import project_model_leaderboard, project_stats
from annotation.services import exports
from annotation.services.comparisons import comparisons_build
from annotation.services.imports import candidates_import, prompt_conflicts, prompts_import
from annotation.services.labeling import (
    assignment_next,
    assignment_renew,
    assignment_skip,
    ranking_submit,
)
from annotation.services.tokens import api_token_issue

# Responses every authenticated endpoint can give, for the schema.
ERRORS_AUTH = {
    401: OpenApiResponse(s.ErrorSerializer, description="No or invalid credentials."),
}
ERRORS_STAFF = {
    **ERRORS_AUTH,
    403: OpenApiResponse(s.ErrorSerializer, description="Signed in, but not staff."),
}
NOT_FOUND = {404: OpenApiResponse(s.ErrorSerializer, description="No such object, or not yours.")}
BAD_INPUT = {400: OpenApiResponse(s.ErrorSerializer, description="Bad input; `errors` says where.")}
TOO_LARGE = {413: OpenApiResponse(s.ErrorSerializer, description="Too many items or bytes.")}


def _item_errors(exc: ServiceValidationError, key: str) -> ServiceValidationError:
    """Re-key an import service error on items (`errors.line`, or every one of
    `errors.conflicts`) as `{key: {index: [msg]}}`, worded like the serializer's
    (`prompts.4: ...`)."""
    index = exc.errors.get("line")
    if index is None:
        return exc
    items = exc.errors.get("conflicts") or {index: exc.detail.split(": ", 1)[-1]}
    first = next(iter(items))
    return ServiceValidationError(
        f"{key}.{first}: {items[first]}", {key: {str(i): [m] for i, m in items.items()}}
    )


def _with_conflicts(data: s.PromptsImportInput, project) -> dict:
    """The payload's item errors joined by the external_id conflicts of the items that did
    parse, in item order: one answer names every problem, not the shape ones first."""
    errors = dict(data.errors)
    items = errors.get("prompts")
    parsed = getattr(data.fields["prompts"], "parsed", None)
    if not isinstance(items, dict) or not parsed:
        return errors
    conflicts = prompt_conflicts(project=project, records=parsed)
    merged = {**items, **{str(line): [message] for line, message in conflicts.items()}}
    errors["prompts"] = {key: merged[key] for key in sorted(merged, key=int)}
    return errors


# ---------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------


class TokenObtainApi(APIView):
    """Exchange a username and password for a new API token (sign-in limits apply)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [StrictJSONParser, FormParser, MultiPartParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"

    @extend_schema(
        tags=["auth"],
        summary="Issue a new API token (shown once; stored hashed)",
        request=s.TokenInput,
        responses={
            200: s.TokenOutput,
            **BAD_INPUT,
            429: OpenApiResponse(s.ErrorSerializer, description="Too many attempts."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = s.TokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=data.validated_data["username"],
            password=data.validated_data["password"],
        )
        if decision := signin_refused(request._request):
            raise Throttled(wait=decision.retry_after)
        if user is None or not user.is_active:
            raise ValidationError(
                {"non_field_errors": ["Unable to log in with these credentials."]}
            )
        # A new token on every call (keys are stored hashed, so an earlier one cannot be
        # shown again); earlier tokens stay valid until revoked in the admin.
        return Response({"token": api_token_issue(user)})


# ---------------------------------------------------------------------------------------
# Labeler endpoints
# ---------------------------------------------------------------------------------------


class ProjectListApi(APIView):
    """Projects the user labels (staff: all active projects), with progress."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["labeling"],
        summary="List your projects with progress",
        responses={200: s.ProjectOutput(many=True), **ERRORS_AUTH},
    )
    def get(self, request: Request) -> Response:
        rows = [
            {"project": project, **project_progress(project, request.user)}
            for project in projects_for_user(request.user)
        ]
        return Response(s.ProjectOutput(rows, many=True).data)


class AssignmentNextApi(APIView):
    """Lease the next comparison (or renew the open lease); 204 when nothing is left."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["labeling"],
        summary="Get your next comparison",
        request=None,
        responses={
            200: s.AssignmentNextOutput,
            204: OpenApiResponse(description="Nothing left for this labeler."),
            **ERRORS_AUTH,
            **NOT_FOUND,
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_labeler(request.user, slug)
        assignment = assignment_next(project=project, labeler=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"assignment": s.assignment_payload(assignment, project)})


class AssignmentSubmitApi(APIView):
    """Submit a ranking (or a demonstration) for your assignment; replaying a client_token
    returns the same id."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["labeling"],
        summary="Submit a ranking",
        request=s.SubmitInput,
        responses={
            201: OpenApiResponse(s.SubmitOutput, description="Stored."),
            200: OpenApiResponse(s.SubmitOutput, description="Replay of a stored client_token."),
            **BAD_INPUT,
            **ERRORS_AUTH,
            **NOT_FOUND,
            409: OpenApiResponse(
                s.ErrorSerializer, description="Lease ran out and the slot was taken, or skipped."
            ),
        },
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = assignment_of(request.user, assignment_id)
        data = s.SubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        annotation, created = ranking_submit(
            assignment=assignment, labeler=request.user, **data.validated_data
        )
        return Response(
            {"annotation_id": annotation.pk},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class AssignmentSkipApi(APIView):
    """Give the comparison back; you are not served it again."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["labeling"],
        summary="Skip an assignment",
        request=None,
        responses={
            200: s.SkipOutput,
            **ERRORS_AUTH,
            403: OpenApiResponse(s.ErrorSerializer, description="No longer a project member."),
            **NOT_FOUND,
            409: OpenApiResponse(
                s.ErrorSerializer, description="Already submitted, rejected or deleted."
            ),
        },
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = assignment_of(request.user, assignment_id)
        assignment = assignment_skip(assignment=assignment, labeler=request.user)
        return Response({"id": assignment.pk, "status": assignment.status})


class AssignmentRenewApi(APIView):
    """Keep your lease while you work: extends it, also after it ran out while the slot stayed
    free; 409 when the slot was taken, the assignment closed, or you moved on."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["labeling"],
        summary="Renew an assignment's lease",
        request=None,
        responses={
            200: s.RenewOutput,
            **ERRORS_AUTH,
            **NOT_FOUND,
            409: OpenApiResponse(s.ErrorSerializer, description="No lease to renew."),
        },
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        assignment = assignment_of(request.user, assignment_id)
        assignment = assignment_renew(assignment=assignment, labeler=request.user)
        return Response({"id": assignment.pk, "expires_at": assignment.expires_at})


# ---------------------------------------------------------------------------------------
# Staff endpoints
# ---------------------------------------------------------------------------------------


class PromptsImportApi(APIView):
    """Bulk import prompts: all or nothing, idempotent by external_id (else by content)."""

    permission_classes = [IsStaff]
    required_permission = "annotation.change_project"
    parser_classes = [BoundedJSONParser]

    @extend_schema(
        tags=["data"],
        summary="Import prompts",
        request=s.PromptsImportInput,
        responses={200: s.ImportOutput, **BAD_INPUT, **ERRORS_STAFF, **NOT_FOUND, **TOO_LARGE},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(slug)
        data = s.PromptsImportInput(data=request.data)
        if not data.is_valid():
            raise ValidationError(_with_conflicts(data, project))
        try:
            result = prompts_import(
                project=project, records=data.validated_data["prompts"], source="api"
            )
        except ServiceValidationError as exc:
            raise _item_errors(exc, "prompts") from exc
        return Response({"created": result.created, "unchanged": result.unchanged})


class CandidatesImportApi(APIView):
    """Bulk import candidates: all or nothing, idempotent by text per prompt."""

    permission_classes = [IsStaff]
    required_permission = "annotation.change_project"
    parser_classes = [BoundedJSONParser]

    @extend_schema(
        tags=["data"],
        summary="Import candidates",
        request=s.CandidatesImportInput,
        responses={200: s.ImportOutput, **BAD_INPUT, **ERRORS_STAFF, **NOT_FOUND, **TOO_LARGE},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(slug)
        data = s.CandidatesImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = candidates_import(
                project=project, records=data.validated_data["candidates"], where="item"
            )
        except ServiceValidationError as exc:
            raise _item_errors(exc, "candidates") from exc
        return Response({"created": result.created, "unchanged": result.unchanged})


class ComparisonsBuildApi(APIView):
    """Group each prompt's unused candidates into comparisons of K."""

    permission_classes = [IsStaff]
    required_permission = "annotation.change_project"

    @extend_schema(
        tags=["data"],
        summary="Build comparisons",
        request=None,
        responses={200: s.BuildOutput, **ERRORS_STAFF, **NOT_FOUND},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(slug)
        result = comparisons_build(project=project)
        return Response({"created": result.created, "prompts_short": result.prompts_short})


class ExportCreateApi(APIView):
    """Write an immutable preference export (SPEC section 5)."""

    permission_classes = [IsStaff]
    required_permission = "annotation.change_project"

    @extend_schema(
        tags=["data"],
        summary="Create a preference export",
        request=s.ExportInput,
        responses={
            201: s.ExportOutput,
            **BAD_INPUT,
            **ERRORS_STAFF,
            **NOT_FOUND,
            507: OpenApiResponse(
                s.ErrorSerializer, description="The server's disk refused the export (full)."
            ),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(slug)
        data = s.ExportInput(data=request.data)
        data.is_valid(raise_exception=True)
        export = exports.export_create(
            project=project,
            options=exports.ExportOptions(**data.validated_data),
            created_by=request.user,
        )
        url = reverse("api:export-download", kwargs={"export_id": export.pk})
        return Response(
            {
                "id": export.pk,
                "rows": export.rows,
                "sha256": export.sha256,
                "download_url": request.build_absolute_uri(url),
            },
            status=status.HTTP_201_CREATED,
        )


class ExportDownloadApi(APIView):
    """Download an export: the pairs file by default; folders (format `hf`) come zipped."""

    permission_classes = [IsStaff]
    required_permission = "annotation.view_export"
    FILES = ("pairs", "rankings", "manifest", "all")

    @extend_schema(
        tags=["data"],
        summary="Download an export",
        parameters=[
            OpenApiParameter(
                "file",
                str,
                enum=FILES,
                default="pairs",
                description="`pairs` (default), `rankings`, `manifest`, or `all` (a zip).",
            )
        ],
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            **BAD_INPUT,
            **ERRORS_STAFF,
            **NOT_FOUND,
        },
    )
    def get(self, request: Request, export_id: int) -> FileResponse:
        export = Export.objects.filter(pk=export_id).first()
        if export is None:
            raise Http404("Not found.")
        which = request.query_params.get("file", "pairs")
        if which not in self.FILES:
            raise ValidationError({"file": [f"Choose one of {', '.join(self.FILES)}."]})
        try:
            files = exports.export_files_verified(export, which)
        except exports.ExportFilesMissing:
            raise Http404("The export's files are missing on this server.") from None
        if which != "all" and len(files) == 1 and "/" not in files[0][1]:
            path, name = files[0]
            return FileResponse(
                path.open("rb"), as_attachment=True, filename=f"export-{export.pk}-{name}"
            )
        # `all`, and the `hf` table folders: a zip of exactly the files the manifest lists.
        prefix = "" if which == "all" else f"{table_filename(which, export.format)}/"
        name = f"export-{export.pk}-{which}.zip"
        response = StreamingHttpResponse(_zip_stream(files, prefix), content_type="application/zip")
        response["Content-Disposition"] = content_disposition_header(True, name)
        return response


class _Pending:
    """The write end zipfile writes to: bytes wait here until the stream takes them. It has
    no tell(), so zipfile writes a streamable archive (sizes after each member)."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _zip_stream(files: list[tuple[Path, str]], strip: str = "", block: int = 1 << 20):
    """A zip of `files` (path, name in the archive), made as it is sent: the first bytes
    leave at once and memory holds about one block (a 2 GB export used to be zipped into a
    temporary file first, 40 s before the download began). Fast deflate: the text shrinks
    several times at level 1, and higher levels mostly cost time. `strip` is taken off the
    front of each name."""
    pending = _Pending()
    with zipfile.ZipFile(
        pending, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
    ) as archive:
        for path, name in files:
            # The file's own time and mode in the archive, as `ZipFile.write` records them.
            info = zipfile.ZipInfo.from_file(path, name.removeprefix(strip))
            info.compress_type = zipfile.ZIP_DEFLATED
            info._compresslevel = 1  # what ZipFile.open(name) takes from `compresslevel`
            with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as member:
                while data := source.read(block):
                    member.write(data)
                    if chunk := pending.take():
                        yield chunk
    yield pending.take()


DATE_RANGE = [
    OpenApiParameter("since", OpenApiTypes.DATE, description="First day counted (YYYY-MM-DD)."),
    OpenApiParameter("until", OpenApiTypes.DATE, description="Last day counted (YYYY-MM-DD)."),
]


class DateRange(serializers.Serializer):
    """?since=YYYY-MM-DD&until=YYYY-MM-DD, both optional and inclusive."""

    since = serializers.DateField(required=False)
    until = serializers.DateField(required=False)

    def validate(self, attrs):
        if attrs.get("since") and attrs.get("until") and attrs["since"] > attrs["until"]:
            raise ValidationError({"until": ["until is before since."]})
        return attrs


def _date_range(request: Request) -> dict:
    data = DateRange(data=request.query_params)
    data.is_valid(raise_exception=True)
    return {"since": data.validated_data.get("since"), "until": data.validated_data.get("until")}


class ProjectStatsApi(APIView):
    """Progress, agreement and per-labeler figures of a project."""

    permission_classes = [IsStaff]
    required_permission = "annotation.view_project"

    @extend_schema(
        tags=["data"],
        summary="Project statistics",
        parameters=DATE_RANGE,
        responses={200: OpenApiTypes.OBJECT, **ERRORS_STAFF, **NOT_FOUND},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for_staff(slug)
        return Response(project_stats(project, **_date_range(request)))


class ProjectModelsApi(APIView):
    """The model leaderboard from human labels (SPEC section 11)."""

    permission_classes = [IsStaff]
    required_permission = "annotation.view_project"

    @extend_schema(
        tags=["data"],
        summary="Model leaderboard",
        parameters=DATE_RANGE,
        responses={200: OpenApiTypes.OBJECT, **ERRORS_STAFF, **NOT_FOUND},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for_staff(slug)
        rows = project_model_leaderboard(project, **_date_range(request))
        return Response({"models": [asdict(row) for row in rows]})
