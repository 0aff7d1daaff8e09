"""Error pages: JSON under /api/ (SPEC section 3: errors are `{"detail", "errors"}`), HTML elsewhere."""

from __future__ import annotations

from django.http import JsonResponse
from django.views import defaults


def _is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def page_not_found(request, exception):
    if _is_api(request):
        return JsonResponse({"detail": "Not found.", "errors": {}}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse(
            {"detail": "Internal server error.", "errors": {}},
            status=500,
        )
    return defaults.server_error(request)
