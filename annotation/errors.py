"""Service-layer errors. The API maps them to 400, 403, 409 and 507; commands to CommandError."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a service refused the request and changed nothing."""

    def __init__(self, detail: str, errors: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class ServiceValidationError(ServiceError):
    """Bad input (HTTP 400): `errors` maps the offending field or id to messages."""


class ConflictError(ServiceError):
    """The request conflicts with the current state (HTTP 409), e.g. a slot taken meanwhile."""


class NotAllowedError(ServiceError):
    """The user may not act on this object (HTTP 403, or 404 to hide that it exists)."""


class StorageError(ServiceError):
    """The server's disk refused a write (full, read-only): the request was fine, and nothing
    was recorded; it can succeed once space is freed (HTTP 507)."""


class ImportFileError(ServiceValidationError):
    """A data file failed validation; the message names the file and line."""

    def __init__(self, path, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}", {"file": str(path), "line": line})
        self.path = str(path)
        self.line = line
        self.message = message
