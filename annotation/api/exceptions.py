"""One place that turns errors into the API's JSON shape `{"detail": str, "errors": {...}}`.

Service errors carry their own `detail` and `errors`; DRF's errors are reshaped so every
non-2xx answer of the API has the same two keys (SPEC section 3). Status codes: 400 bad
input, 401 no or bad credentials, 403 not allowed, 404 unknown or not yours, 409 conflict,
413 payload too large, 429 throttled, 503 database busy (SQLite's write lock; retry), 507
the server's disk refused a write (an export on a full disk).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from annotation import errors as service_errors
from config.middleware import BUSY_MESSAGE, BUSY_RETRY_AFTER_SECONDS, database_busy

logger = logging.getLogger(__name__)


class PayloadTooLarge(exceptions.APIException):
    """The request body or a bulk list is over the configured limit (HTTP 413)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request too large."
    default_code = "payload_too_large"

    def __init__(self, detail: str, errors: dict | None = None):
        super().__init__(detail)
        self.errors = errors or {}


def _service_status(exc: service_errors.ServiceError) -> int:
    if isinstance(exc, service_errors.NotAllowedError):
        return status.HTTP_403_FORBIDDEN
    if isinstance(exc, service_errors.ConflictError):
        return status.HTTP_409_CONFLICT
    if isinstance(exc, service_errors.StorageError):
        # 507 Insufficient Storage, not 500: the request was valid and nothing broke in the
        # code; the server could not store the result, so the same request can succeed once
        # space is freed (a 500 reads as a bug, a 4xx as the client's fault).
        return status.HTTP_507_INSUFFICIENT_STORAGE
    return status.HTTP_400_BAD_REQUEST


def _first_message(errors) -> str:
    """The first leaf message of a nested DRF error structure, prefixed by its path."""
    path: list[str] = []
    node = errors
    while isinstance(node, (dict, list)) and node:
        if isinstance(node, dict):
            key = next(iter(node))
            path.append(str(key))
            node = node[key]
        else:
            node = node[0]
    message = str(node) if node not in (None, {}, []) else "Invalid input."
    fields = [p for p in path if p != "non_field_errors"]
    return f"{'.'.join(fields)}: {message}" if fields else message


def api_exception_handler(exc, context):
    """Map service, Django and DRF exceptions to `{"detail", "errors"}` with the right status."""
    if isinstance(exc, service_errors.ServiceError):
        return Response({"detail": exc.detail, "errors": exc.errors}, status=_service_status(exc))
    if isinstance(exc, DjangoValidationError):
        errors = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        return Response(
            {"detail": _first_message(errors), "errors": errors},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"Request body is larger than {limit} bytes.", "errors": {}},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, IntegrityError):
        # A constraint caught a race the service did not see coming; the service's transaction
        # has rolled back, so the client may retry. Logged because it hints at a missing check.
        logger.warning("IntegrityError reached the API", exc_info=exc)
        return Response(
            {"detail": "The request conflicts with a concurrent change; retry.", "errors": {}},
            status=status.HTTP_409_CONFLICT,
        )
    if database_busy(exc):
        # SQLite's write lock outlasted the timeout (a long import): nothing was changed.
        return Response(
            {"detail": BUSY_MESSAGE, "errors": {}},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, DataError):
        # Values the database refuses (out of range, bad encoding) are bad input, not a crash.
        logger.warning("DataError reached the API", exc_info=exc)
        return Response(
            {"detail": "The database refused a value of this request.", "errors": {}},
            status=status.HTTP_400_BAD_REQUEST,
        )
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        data = response.data
        errors = data if isinstance(data, dict) else {"non_field_errors": data}
        response.data = {"detail": _first_message(errors), "errors": errors}
    elif isinstance(exc, PayloadTooLarge):
        response.data = {"detail": str(exc.detail), "errors": exc.errors}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"detail": str(response.data["detail"]), "errors": {}}
    else:
        response.data = {"detail": str(response.data), "errors": {}}
    return response
