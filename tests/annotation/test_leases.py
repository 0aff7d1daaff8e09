"""The open-lease rule: its Python, ORM and SQL forms pick the same leases (database)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from annotation.leases import (
    lapsed_lease_q,
    lease_is_open,
    open_lease_params,
    open_lease_q,
    open_lease_sql,
)
from annotation.models import Assignment

pytestmark = pytest.mark.django_db


def test_the_three_forms_agree(project, make_labeler, make_comparisons):
    comparisons = make_comparisons(project, n=1)
    now = timezone.now()
    cases = [
        (Assignment.Status.LEASED, now + timedelta(seconds=5)),  # open
        (Assignment.Status.LEASED, now),  # lapsed at this very instant
        (Assignment.Status.LEASED, now - timedelta(seconds=5)),  # lapsed
        (Assignment.Status.EXPIRED, now + timedelta(seconds=5)),
        (Assignment.Status.SUBMITTED, now + timedelta(seconds=5)),
        (Assignment.Status.SKIPPED, now + timedelta(seconds=5)),
    ]
    rows = [
        Assignment.objects.create(
            comparison=comparisons[0],
            labeler=make_labeler(f"u{i}", projects=[project]),
            display_order=comparisons[0].candidate_ids,
            status=status,
            leased_at=now - timedelta(minutes=1),
            expires_at=expires_at,
        )
        for i, (status, expires_at) in enumerate(cases)
    ]
    in_python = {a.pk for a in rows if lease_is_open(a, now)}
    assert in_python == {rows[0].pk}
    assert set(Assignment.objects.filter(open_lease_q(now)).values_list("pk", flat=True)) == (
        in_python
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT a.id FROM {Assignment._meta.db_table} a WHERE {open_lease_sql('a')}",
            open_lease_params(now),
        )
        assert {pk for (pk,) in cursor.fetchall()} == in_python
    lapsed = set(Assignment.objects.filter(lapsed_lease_q(now)).values_list("pk", flat=True))
    assert lapsed == {rows[1].pk, rows[2].pk}
