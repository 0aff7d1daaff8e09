"""API fixtures: token clients for a labeler, a labeler of another project, staff, anonymous."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis.configuration import set_hypothesis_home_dir
from rest_framework.test import APIClient

from annotation.services.tokens import api_token_issue

# Hypothesis caches constants and Unicode tables in ./.hypothesis; keep the repository clean.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="hypothesis-"))


def token_client(user) -> APIClient:
    """An APIClient that authenticates like an external program: `Authorization: Token <key>`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_issue(user)}")
    return client


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture
def alice(labeler):
    """Token client of `alice`, a member of the `demo` project."""
    return token_client(labeler)


@pytest.fixture
def other_project(make_project):
    return make_project("other", num_candidates=2, overlap=1)


@pytest.fixture
def outsider_user(make_labeler, other_project):
    return make_labeler("olga", projects=[other_project])


@pytest.fixture
def outsider(outsider_user):
    """Token client of `olga`, a labeler of another project only."""
    return token_client(outsider_user)


@pytest.fixture
def staff(staff_user):
    """Token client of a staff user who is not a member of any project."""
    return token_client(staff_user)


@pytest.fixture
def comparisons(project, make_comparisons):
    """Three comparisons of K=4 in `demo`, each wanting 2 annotations."""
    return make_comparisons(project, 3)


def strict(payload: dict) -> list[list[int]]:
    """A strict ranking in the order the assignment was shown."""
    return [[c["id"]] for c in payload["assignment"]["comparison"]["candidates"]]
