"""Shared fixtures: projects, users and comparisons built through the services."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def make_project(db):
    from annotation.services.projects import project_create

    def make(slug="demo", **kwargs):
        return project_create(slug=slug, **kwargs)

    return make


@pytest.fixture
def project(make_project):
    return make_project("demo", num_candidates=4, overlap=2)


@pytest.fixture
def make_labeler(db):
    from annotation.services.projects import labeler_create

    def make(username="alice", projects=(), **kwargs):
        user, _token = labeler_create(username=username, projects=list(projects), **kwargs)
        return user

    return make


@pytest.fixture
def labeler(make_labeler, project):
    return make_labeler("alice", projects=[project])


@pytest.fixture
def staff_user(make_labeler):
    return make_labeler("admin", staff=True, password="admin-pass-123")


@pytest.fixture
def make_comparisons(db):
    """Create `n` prompts with K candidates each in `project` and build their comparisons."""
    from annotation.models import Comparison
    from annotation.services.comparisons import comparisons_build
    from annotation.services.imports import (
        candidate_record,
        candidates_import,
        prompt_record,
        prompts_import,
    )

    def make(project, n=5, texts=None, prefix="p"):
        k = project.num_candidates
        records = [
            prompt_record(
                {"external_id": f"{prefix}{i}", "text": f"Question {prefix}{i}?"}, line=i + 1
            )
            for i in range(n)
        ]
        prompts_import(project=project, records=records)
        candidates = []
        for i in range(n):
            for j in range(k):
                text = texts[j] if texts else f"Answer {j} to {prefix}{i}"
                candidates.append(
                    candidate_record(
                        {"prompt_external_id": f"{prefix}{i}", "text": text, "model": f"m{j % 2}"},
                        line=len(candidates) + 1,
                    )
                )
        candidates_import(project=project, records=candidates)
        comparisons_build(project=project)
        return list(
            Comparison.objects.filter(project=project, prompt__external_id__startswith=prefix)
        )

    return make


def pytest_collection_modifyitems(config, items):
    """Run the browser tests last: Playwright's sync API leaves an event loop running in the
    main thread for the rest of the session, and Django then refuses database work (migrations,
    live servers) in the tests that would follow."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
