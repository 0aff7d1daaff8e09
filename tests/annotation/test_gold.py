"""Gold rankings: validated like a submission, from the service, the command and the API."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from annotation.errors import ServiceValidationError
from annotation.models import Comparison
from annotation.services.gold import comparison_gold_clear, comparison_gold_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def comparison(project, make_comparisons):
    return make_comparisons(project, 1)[0]


def test_gold_set_stores_a_valid_ranking(comparison):
    a, b, c, d = comparison.candidate_ids
    saved = comparison_gold_set(comparison=comparison, ranking=[[b], [a, c], [d]])
    comparison.refresh_from_db()
    assert comparison.is_gold and comparison.gold_ranking == [[b], [a, c], [d]]
    assert saved.is_gold


@pytest.mark.parametrize(
    "ranking, message",
    [
        ([[99999], [1]], "not part of this comparison"),
        ("first", "non-empty list"),
        ([], "non-empty list"),
    ],
)
def test_gold_set_refuses_bad_rankings(comparison, ranking, message):
    with pytest.raises(ServiceValidationError, match=message):
        comparison_gold_set(comparison=comparison, ranking=ranking)
    comparison.refresh_from_db()
    assert not comparison.is_gold and comparison.gold_ranking is None


def test_gold_set_names_missing_and_repeated_candidates(comparison):
    a, b, c, d = comparison.candidate_ids
    with pytest.raises(ServiceValidationError) as missing:
        comparison_gold_set(comparison=comparison, ranking=[[a], [b], [c]])
    assert f"Candidate {d} is missing" in str(missing.value.errors)
    with pytest.raises(ServiceValidationError, match="more than once"):
        comparison_gold_set(comparison=comparison, ranking=[[a], [b], [c], [d], [a]])


def test_gold_ties_follow_the_project(make_project, make_comparisons):
    project = make_project("strict", num_candidates=2, overlap=1, allow_ties=False)
    (comparison,) = make_comparisons(project, 1)
    with pytest.raises(ServiceValidationError, match="does not allow ties"):
        comparison_gold_set(comparison=comparison, ranking=[comparison.candidate_ids])


def test_gold_clear(comparison):
    comparison_gold_set(comparison=comparison, ranking=[[c] for c in comparison.candidate_ids])
    comparison_gold_clear(comparison=comparison)
    comparison.refresh_from_db()
    assert not comparison.is_gold and comparison.gold_ranking is None


def write(tmp_path, rows) -> str:
    path = tmp_path / "gold.jsonl"
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    return str(path)


def test_import_gold_marks_every_row(project, make_comparisons, tmp_path, capsys):
    comparisons = make_comparisons(project, 2)
    rows = [{"comparison_id": c.pk, "ranking": [[i] for i in c.candidate_ids]} for c in comparisons]
    call_command("import_gold", "demo", write(tmp_path, rows))
    assert "marked 2" in capsys.readouterr().out
    assert Comparison.objects.filter(is_gold=True).count() == 2


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "gold.jsonl:2: invalid JSON"),
        ({"comparison_id": "x", "ranking": []}, "gold.jsonl:2: 'comparison_id' must be an integer"),
        ({"comparison_id": 2**63, "ranking": [[1]]}, "gold.jsonl:2: 'comparison_id' must be an id"),
        ({"comparison_id": 0, "ranking": [[1]]}, "gold.jsonl:2: 'comparison_id' must be an id"),
        ({"comparison_id": 99999, "ranking": [[1]]}, "gold.jsonl:2: comparison 99999 is not in"),
        ({"ranking": [[1]], "comparison_id": 1, "extra": 1}, "gold.jsonl:2: unknown field 'extra'"),
        ([1], "gold.jsonl:2: expected an object"),
        ("DUPLICATE", "gold.jsonl:2: comparison {id} already appears on line 1"),
        ("MISSING", "gold.jsonl:2: comparison {id}: Candidate {last} is missing"),
        ("NO_RANKING", "gold.jsonl:2: 'ranking' is missing"),
    ],
)
def test_import_gold_bad_line_writes_nothing(project, make_comparisons, tmp_path, bad, message):
    first, second = make_comparisons(project, 2)
    good = {"comparison_id": first.pk, "ranking": [[i] for i in first.candidate_ids]}
    if bad == "DUPLICATE":
        bad = good
    elif bad == "MISSING":
        bad = {"comparison_id": second.pk, "ranking": [[i] for i in second.candidate_ids[:-1]]}
    elif bad == "NO_RANKING":
        bad = {"comparison_id": second.pk}
    ids = {"id": first.pk if bad is good else second.pk, "last": second.candidate_ids[-1]}
    with pytest.raises(CommandError, match=message.format(**ids).replace("(", r"\(")):
        call_command("import_gold", "demo", write(tmp_path, [good, bad]))
    assert not Comparison.objects.filter(is_gold=True).exists()


def test_import_gold_refuses_a_comparison_of_another_project(
    project, make_project, make_comparisons, tmp_path
):
    other = make_project("other", num_candidates=2, overlap=1)
    (foreign,) = make_comparisons(other, 1, prefix="o")
    row = {"comparison_id": foreign.pk, "ranking": [[i] for i in foreign.candidate_ids]}
    with pytest.raises(
        CommandError, match=f"gold.jsonl:1: comparison {foreign.pk} is not in project demo"
    ):
        call_command("import_gold", "demo", write(tmp_path, [row]))
    with pytest.raises(CommandError, match="No project"):
        call_command("import_gold", "nope", write(tmp_path, [row]))


def test_ctrl_c_during_import_gold_is_one_line_and_marks_nothing(
    project, make_comparisons, tmp_path, monkeypatch
):
    first, second = make_comparisons(project, 2)
    rows = [
        {"comparison_id": c.pk, "ranking": [[i] for i in c.candidate_ids]} for c in (first, second)
    ]
    original = Comparison.objects.bulk_update

    def interrupted(*args, **kwargs):
        original(*args, **kwargs)  # written, not yet committed
        raise KeyboardInterrupt

    monkeypatch.setattr(Comparison.objects, "bulk_update", interrupted)
    with pytest.raises(CommandError) as info:
        call_command("import_gold", "demo", write(tmp_path, rows))
    assert str(info.value) == "interrupted: nothing was imported; run the same command again"
    assert info.value.returncode == 130
    assert not Comparison.objects.filter(is_gold=True).exists()
