"""The hand-written SQL of the hot path: names from `_meta`, instances without extras."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import FieldDoesNotExist
from django.utils import timezone

from annotation.api import authentication
from annotation.models import Assignment, Comparison
from annotation.selectors import queue
from annotation.selectors.sql import Table
from annotation.services.labeling import assignment_next


def _tables() -> dict[str, Table]:
    return {t.alias: t for t in vars(queue).values() if isinstance(t, Table)}


def _statements() -> dict[str, str]:
    return {name: sql for name, sql in vars(queue).items() if name.endswith("_SQL")}


def test_every_column_a_statement_names_exists():
    # A column spelled by hand (not through Table) that a rename left behind fails here.
    tables = _tables()
    statements = _statements()
    assert len(statements) >= 8
    for name, sql in statements.items():
        for alias, column in re.findall(r"\b([a-z]+)\.([a-z_]+)\b", sql):
            meta = tables[alias].model._meta
            assert column in {f.column for f in meta.concrete_fields}, (name, alias, column)


def test_a_renamed_column_renames_the_sql(monkeypatch):
    field = Comparison._meta.get_field("submitted_count")
    monkeypatch.setattr(field, "column", "n_submitted")
    assert Table(Comparison, "c").submitted_count == "c.n_submitted"
    with pytest.raises(FieldDoesNotExist):
        _ = Table(Comparison, "c").submitted  # a field that is gone fails, not guesses


def test_the_token_lookup_names_only_real_columns():
    sql = authentication._user_by_token_sql()
    assert sql.startswith("SELECT t.id, t.last_used, u.id, u.password")
    assert "JOIN annotation_apitoken t ON t.user_id = u.id WHERE t.digest = %s" in sql


def _no_extras(instance) -> None:
    """Only the model's own fields (some may be deferred) and Django's _state: nothing bolted on."""
    fields = {f.attname for f in type(instance)._meta.concrete_fields}
    assert set(vars(instance)) <= fields | {"_state"}, set(vars(instance)) - fields


@pytest.mark.django_db
def test_rows_come_back_as_the_orm_would_give_them(project, labeler, make_comparisons):
    make_comparisons(project, n=2)
    now = timezone.now()
    found = queue.queue_head(project=project, labeler=labeler, gold=False, now=now)
    assert found.prior_assignment_id is None  # no earlier lease of this labeler on it
    head = found.comparison
    _no_extras(head)
    _no_extras(head.prompt)
    assert set(vars(head)) > {f.attname for f in Comparison._meta.concrete_fields}
    orm = Comparison.objects.get(pk=head.pk)
    for field in Comparison._meta.concrete_fields:
        assert getattr(head, field.attname) == getattr(orm, field.attname), field.name
    assert head.prompt.messages == orm.prompt.messages

    assignment = assignment_next(project=project, labeler=labeler, now=now)
    mine = queue.assignment_of_labeler(assignment.pk, labeler)
    _no_extras(mine)
    orm = Assignment.objects.get(pk=assignment.pk)
    for field in Assignment._meta.concrete_fields:
        assert getattr(mine, field.attname) == getattr(orm, field.attname), field.name

    target = queue.comparison_locked_for(assignment.comparison_id, labeler)
    assert isinstance(target, queue.SubmitTarget) and target.labeler_is_member is True
    _no_extras(target.comparison)
    _no_extras(target.project)
    assert target.project.pk == project.pk

    member = queue.member_queue_locked(project, labeler)
    assert member.is_member and member.queue.served == 1
    _no_extras(member.queue)
    _no_extras(queue.project_for_member(project.slug, labeler))
