"""A comparison's candidates have one source, candidate_ids; the key and the rows are derived.

Migration 0011 turned the implicit many-to-many into ComparisonCandidate on the same table:
the test migrates back to 0010, writes rows with the models of that time, migrates forward
and back, and checks every row survived with its position.
"""

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.models import RestrictedError

from annotation.models import Candidate, Comparison, ComparisonCandidate
from annotation.services.comparisons import comparisons_insert

BEFORE = [("annotation", "0012_comparison_priority")]
AFTER = [("annotation", "0013_comparison_candidate_position")]


def test_built_comparisons_derive_key_and_rows_from_candidate_ids(project, make_comparisons):
    for comparison in make_comparisons(project, n=3):
        ids = comparison.candidate_ids
        assert comparison.candidate_key == Comparison.key_for(ids)
        rows = ComparisonCandidate.objects.filter(comparison=comparison).order_by("position")
        assert [row.candidate_id for row in rows] == ids
        assert sorted(c.pk for c in comparison.candidates.all()) == sorted(ids)


@pytest.mark.django_db
def test_a_compared_candidate_cannot_be_deleted_alone_but_goes_with_its_prompt(
    project, make_comparisons
):
    comparison = make_comparisons(project, n=1)[0]
    prompt = comparison.prompt
    compared = Candidate.objects.get(pk=comparison.candidate_ids[0])
    loose = Candidate.objects.create(prompt=prompt, text="never compared", text_hash="x" * 64)

    with pytest.raises(RestrictedError), transaction.atomic():
        compared.delete()
    assert ComparisonCandidate.objects.filter(comparison=comparison).count() == len(
        comparison.candidate_ids
    )
    loose.delete()  # nothing names it

    prompt.delete()
    assert not Comparison.objects.filter(pk=comparison.pk).exists()
    assert not Candidate.objects.filter(pk__in=comparison.candidate_ids).exists()
    assert not ComparisonCandidate.objects.exists()


def test_insert_ignores_a_stale_key_and_refuses_a_repeated_candidate(project, make_comparisons):
    built = make_comparisons(project, n=1)[0]
    prompt, ids = built.prompt, built.candidate_ids
    built.delete()
    (fresh,) = comparisons_insert(
        comparisons=[
            Comparison(project=project, prompt=prompt, candidate_ids=ids[::-1], candidate_key="x")
        ]
    )
    fresh.refresh_from_db()
    assert fresh.candidate_key == Comparison.key_for(ids)
    assert (
        list(
            fresh.comparisoncandidate_set.order_by("position").values_list(
                "candidate_id", flat=True
            )
        )
        == ids[::-1]
    )
    with pytest.raises(ValueError, match="twice"):
        comparisons_insert(
            comparisons=[Comparison(project=project, prompt=prompt, candidate_ids=[ids[0]] * 2)]
        )


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def at_0010():
    apps = _migrate(BEFORE)
    try:
        yield apps
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_migration_0011_keeps_the_rows_and_fills_positions_both_ways(at_0010):
    apps = at_0010
    project = apps.get_model("annotation", "Project").objects.create(slug="m", name="M")
    prompt = apps.get_model("annotation", "Prompt").objects.create(
        project=project, messages=[{"role": "user", "content": "hi"}], content_hash="h"
    )
    Candidate = apps.get_model("annotation", "Candidate")
    a, b, c = (
        Candidate.objects.create(prompt=prompt, text=t, text_hash=t) for t in ("a", "b", "c")
    )
    comparison = apps.get_model("annotation", "Comparison").objects.create(
        project=project,
        prompt=prompt,
        candidate_ids=[c.pk, a.pk, b.pk],
        candidate_key=",".join(str(i) for i in sorted([a.pk, b.pk, c.pk])),
    )
    comparison.candidates.set([a, b, c])

    apps = _migrate(AFTER)
    rows = apps.get_model("annotation", "ComparisonCandidate").objects.filter(
        comparison_id=comparison.pk
    )
    assert sorted((r.position, r.candidate_id) for r in rows) == [(0, c.pk), (1, a.pk), (2, b.pk)]

    apps = _migrate(BEFORE)
    old = apps.get_model("annotation", "Comparison").objects.get(pk=comparison.pk)
    assert sorted(x.pk for x in old.candidates.all()) == sorted([a.pk, b.pk, c.pk])
