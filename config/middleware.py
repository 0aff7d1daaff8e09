"""Project-wide middleware: request-body limits, the Content-Security-Policy header, and a
503 for a database too busy to answer."""

from __future__ import annotations

from django.conf import settings
from django.db import OperationalError
from django.http import HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

# URL names of the staff bulk-import endpoints (the API's and the admin's upload page), the
# only ones allowed bodies up to IMPORT_MAX_BYTES; every other request is held to
# DATA_UPLOAD_MAX_MEMORY_SIZE.
IMPORT_URL_NAMES = frozenset({"api:prompts", "api:candidates", "admin:annotation_project_import"})


# Of those, the API's: a request with `Authorization: Token ...` is authenticated (and
# refused) before its body is read. One signed in by its session is not: DRF's CSRF check
# reads the body first, so those are held to the upload page's rule below.
API_IMPORT_URL_NAMES = frozenset({"api:prompts", "api:candidates"})
TOKEN_HEADER_PREFIX = "token "


def _declared_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def body_limit_for(path_info: str) -> int:
    """The largest request body, in bytes, that this path accepts."""
    try:
        match = resolve(path_info)
    except Resolver404:
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if match.view_name in IMPORT_URL_NAMES:
        return settings.IMPORT_MAX_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class RequestBodyLimitMiddleware:
    """Answer 413 from the declared Content-Length, before anything reads or parses the body.

    Without a Content-Length (chunked uploads) Django reads no body at all, so the
    declared length is the whole story.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        length = _declared_length(request)
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            limit = body_limit_for(request.path_info)
            if length > limit:
                return too_large(request, limit)
        return self.get_response(request)


def _authenticates_by_token(request) -> bool:
    return request.META.get("HTTP_AUTHORIZATION", "").lower().startswith(TOKEN_HEADER_PREFIX)


class StaffImportBodyMiddleware:
    """Bodies past DATA_UPLOAD_MAX_MEMORY_SIZE are taken from signed-in staff who may import
    (change_project, as the pages themselves ask) only: on the admin's upload page, and on
    the API's import endpoints when the session, not a token, says who posts.

    It sits after AuthenticationMiddleware and answers before any view middleware: the CSRF
    check reads the POST body, so without it anyone holding a CSRF cookie of their own (any
    labeler) could have a 50 MiB upload parsed, and only then be refused.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _declared_length(request) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            try:
                view_name = resolve(request.path_info).view_name
            except Resolver404:
                view_name = None
            # (An anonymous API request is refused by DRF before it reads a body.)
            by_session = view_name == "admin:annotation_project_import" or (
                view_name in API_IMPORT_URL_NAMES
                and request.user.is_authenticated
                and not _authenticates_by_token(request)
            )
            if by_session and not _may_import(request.user):
                return too_large(request, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return self.get_response(request)


def _may_import(user) -> bool:
    return user.is_active and user.is_staff and user.has_perm("annotation.change_project")


def too_large(request, limit: int) -> HttpResponse:
    message = f"Request body is larger than {limit} bytes."
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": message, "errors": {}}, status=413)
    return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


# Pages load scripts from our own static files only: nothing inline runs. Inline styles stay
# allowed (the admin's charts and bars size themselves with style attributes); they cannot
# run code.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Send the Content-Security-Policy header on every response that lacks one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


# How long a client should wait before retrying a request the database was too busy for.
BUSY_RETRY_AFTER_SECONDS = 5


def database_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked": another connection held the write lock past our
    timeout (a long import, say). PostgreSQL has no such wait: its writers lock rows."""
    return isinstance(exc, OperationalError) and "database is locked" in str(exc)


BUSY_MESSAGE = (
    "The database is busy with another write (an import, say); nothing was changed. "
    f"Try again in {BUSY_RETRY_AFTER_SECONDS} seconds."
)


def busy_response(request) -> HttpResponse:
    """503 with Retry-After: the request changed nothing and can be sent again as it was."""
    message = BUSY_MESSAGE
    if request.path_info.startswith("/api/"):
        response = JsonResponse({"detail": message, "errors": {}}, status=503)
    else:
        response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(BUSY_RETRY_AFTER_SECONDS)
    return response


class DatabaseBusyMiddleware:
    """Answer a request that hit SQLite's write lock with 503 and Retry-After, not a 500.

    SQLite serializes writers: while one transaction writes (an import of a million prompts
    holds the lock for minutes), others wait up to the `timeout` set in settings, then fail.
    The failed request rolled back, so retrying it is safe. The API's exception handler
    answers the same for DRF views.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if database_busy(exception):
            return busy_response(request)
        return None
