"""How a simulated labeler reaches the labeling app: `next`, `submit`, `skip`.

`simulation.run.play` drives any `Backend`, so the in-process path
(`simulation.services.ServiceBackend`) and the HTTP path (`HttpBackend`, here, over the v1
API of SPEC section 3) share the judge call, the tie rule and the score cache.

Django-free: `requests` is imported only when an HTTP client is made.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from annotation.prompts import ModelInput, prompt_model_input


@dataclass(frozen=True)
class Served:
    """One leased comparison as its labeler sees it."""

    assignment_id: int
    comparison_id: int
    prompt: ModelInput  # as judges get it (SPEC section 4)
    candidate_ids: list[int]  # in the labeler's display order
    texts: list[str]  # one per candidate id, in the same order


class Outcome(StrEnum):
    CREATED = "created"
    REPLAY = "replay"  # the client token was stored before: the same annotation
    CONFLICT = "conflict"  # the lease ran out and the slot went to someone else


@dataclass(frozen=True)
class Submitted:
    outcome: Outcome
    annotation_id: int | None = None


class Backend(Protocol):
    """One labeler's access to a project's queue."""

    def next(self) -> Served | None:
        """Lease (or renew) the next comparison; None when nothing is left for this labeler."""

    def submit(self, served: Served, tiers: list[list[int]], client_token: uuid.UUID) -> Submitted:
        """Store a ranking of `served`'s candidates (tiers best first)."""

    def skip(self, served: Served) -> None:
        """Give the assignment back so this labeler is not served it again."""


# ---------------------------------------------------------------------------------------
# Over HTTP
# ---------------------------------------------------------------------------------------


class ApiError(RuntimeError):
    """The server answered something a well-behaved client cannot go on from."""


class LabelerClient:
    """A labeler's view of the v1 API over one keep-alive HTTP session."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0, retries: int = 3):
        try:
            import requests
        except ImportError as exc:  # pragma: no cover - requests ships with the dev extras
            raise ApiError("the HTTP mode needs the `requests` package") from exc
        self._requests = requests
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Token {token.strip()}", "Accept": "application/json"}
        )

    def _post(self, path: str, body: dict | None = None):
        last: Exception | None = None
        # Retrying is safe: `next` renews the same lease and `submit` is idempotent by token.
        for attempt in range(self.retries):
            try:
                return self.session.post(self.base + path, json=body, timeout=self.timeout)
            except (self._requests.ConnectionError, self._requests.Timeout) as exc:
                last = exc
                time.sleep(0.05 * 2**attempt)
        raise ApiError(f"POST {path}: {last}")

    def project(self, slug: str) -> dict:
        """The project as `GET /api/v1/projects/` lists it for this labeler."""
        try:
            response = self.session.get(self.base + "/api/v1/projects/", timeout=self.timeout)
        except self._requests.RequestException as exc:
            raise ApiError(f"GET /api/v1/projects/: {exc}") from exc
        if response.status_code != 200:
            raise ApiError(f"projects: HTTP {response.status_code}: {response.text[:200]}")
        for project in response.json():
            if project.get("slug") == slug:
                return project
        raise ApiError(f"project {slug!r} is not among this labeler's projects at {self.base}")

    def next(self, slug: str) -> dict | None:
        """The next assignment payload, or None when the project has nothing left for us."""
        response = self._post(f"/api/v1/projects/{slug}/assignments/next/")
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise ApiError(f"next: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()["assignment"]

    def submit(self, assignment_id: int, ranking: list[list[int]], client_token: str):
        """(status, annotation id or None): 201 stored, 200 replay, 409 conflict."""
        response = self._post(
            f"/api/v1/assignments/{assignment_id}/submit/",
            {"ranking": ranking, "client_token": client_token},
        )
        if response.status_code in (200, 201):
            return response.status_code, response.json()["annotation_id"]
        if response.status_code == 409:
            return 409, None
        raise ApiError(f"submit: HTTP {response.status_code}: {response.text[:200]}")

    def skip(self, assignment_id: int) -> None:
        """Give an assignment back (after a conflict) so the labeler is not served it again."""
        response = self._post(f"/api/v1/assignments/{assignment_id}/skip/")
        if response.status_code not in (200, 409):
            raise ApiError(f"skip: HTTP {response.status_code}: {response.text[:200]}")

    def close(self) -> None:
        self.session.close()


def served_from_payload(assignment: dict) -> Served:
    """A `next` payload's assignment (docs/api.md) as a `Served`."""
    comparison = assignment["comparison"]
    prompt = comparison["prompt"]
    candidates = comparison["candidates"]
    return Served(
        assignment_id=assignment["id"],
        comparison_id=comparison["id"],
        prompt=prompt_model_input(prompt["messages"], is_chat=prompt["is_chat"]),
        candidate_ids=[c["id"] for c in candidates],
        texts=[c["text"] for c in candidates],
    )


_OUTCOMES = {201: Outcome.CREATED, 200: Outcome.REPLAY, 409: Outcome.CONFLICT}


class HttpBackend:
    """A labeler working on one project through the v1 API."""

    def __init__(self, client: LabelerClient, slug: str):
        self.client = client
        self.slug = slug

    def next(self) -> Served | None:
        assignment = self.client.next(self.slug)
        return None if assignment is None else served_from_payload(assignment)

    def submit(self, served: Served, tiers: list[list[int]], client_token: uuid.UUID) -> Submitted:
        code, annotation_id = self.client.submit(served.assignment_id, tiers, str(client_token))
        return Submitted(_OUTCOMES[code], annotation_id)

    def skip(self, served: Served) -> None:
        self.client.skip(served.assignment_id)
