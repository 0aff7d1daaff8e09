"""Corrections from the browser (History "Edit", "Undo last"), and right-to-left text."""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import reverse

from annotation.models import Annotation, Assignment, Prompt, TaskType
from annotation.services.labeling import assignment_next, ranking_submit

pytestmark = pytest.mark.django_db

ARABIC = "هذه إجابة جيدة ومفيدة"
HEBREW = "זו תשובה טובה ומועילה"


@pytest.fixture
def project(make_project):
    return make_project("fix", num_candidates=3, overlap=1, rating_scale=5)


@pytest.fixture
def alice(make_labeler, project):
    return make_labeler("alice", projects=[project])


def submitted(project, user, ranking=None, **extra) -> tuple[Assignment, Annotation]:
    assignment = assignment_next(project=project, labeler=user)
    order = assignment.display_order
    annotation, _ = ranking_submit(
        assignment=assignment,
        labeler=user,
        ranking=ranking or [[order[0]], [order[1], order[2]]],
        client_token=uuid.uuid4(),
        **extra,
    )
    return assignment, annotation


def test_history_offers_edit_on_the_current_answer_only(client, project, alice, make_comparisons):
    make_comparisons(project, 1)
    assignment, first = submitted(project, alice)
    client.force_login(alice)
    edit = reverse("assignment-edit", args=[assignment.pk])
    html = client.get(reverse("history")).content.decode()
    assert html.count(edit) == 1
    ranking_submit(
        assignment=assignment,
        labeler=alice,
        ranking=[[c] for c in assignment.display_order],
        client_token=uuid.uuid4(),
    )
    html = client.get(reverse("history")).content.decode()
    assert html.count(edit) == 1  # the correction's row; the superseded one has none
    assert "corrected later" in html


def test_edit_reopens_the_comparison_with_the_stored_answer(
    client, project, alice, make_comparisons
):
    make_comparisons(project, 2)
    x, y, z = (assignment := assignment_next(project=project, labeler=alice)).display_order
    ranking_submit(
        assignment=assignment,
        labeler=alice,
        ranking=[[y], [x, z]],
        flags={str(x): ["harmful"]},
        ratings={str(z): 4},
        rationale="y is right",
        client_token=uuid.uuid4(),
    )
    client.force_login(alice)
    response = client.get(reverse("assignment-edit", args=[assignment.pk]) + "?next=/history/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Correcting your answer" in html and "Submit correction" in html
    assert 'id="skip-button"' not in html

    def selected(name):
        match = re.search(rf'name="{name}">(.*?)</select>', html, re.S)
        found = re.search(r'<option value="(\d+)" selected>', match.group(1))
        return found and found.group(1)

    assert (selected(f"rank_{y}"), selected(f"rank_{x}"), selected(f"rank_{z}")) == ("1", "2", "2")
    assert selected(f"rating_{z}") == "4"
    assert re.search(rf'name="flag_{x}" value="harmful" checked', html)
    assert "y is right</textarea>" in html
    assert '<input type="hidden" name="next" value="/history/">' in html


def test_the_plain_form_stores_a_correction_and_returns(client, project, alice, make_comparisons):
    make_comparisons(project, 2)
    assignment, first = submitted(project, alice)
    x, y, z = assignment.display_order
    client.force_login(alice)
    data = {
        "client_token": str(uuid.uuid4()),
        "started_ms": "0",
        f"rank_{x}": "3",
        f"rank_{y}": "2",
        f"rank_{z}": "1",
        "next": "/history/",
    }
    response = client.post(reverse("assignment-submit", args=[assignment.pk]), data)
    assert response.status_code == 302 and response["Location"] == "/history/"
    correction = Annotation.objects.get(supersedes=first)
    assert correction.ranking == [[z], [y], [x]]
    assignment.comparison.refresh_from_db()
    assert assignment.comparison.submitted_count == 1


def test_edit_refuses_an_assignment_with_no_answer_and_others_work(
    client, project, alice, make_labeler, make_comparisons
):
    make_comparisons(project, 2)
    open_lease = assignment_next(project=project, labeler=alice)
    client.force_login(alice)
    response = client.get(reverse("assignment-edit", args=[open_lease.pk]))
    assert response.status_code == 302
    bob = make_labeler("bob", projects=[project])
    client.force_login(bob)
    assert client.get(reverse("assignment-edit", args=[open_lease.pk])).status_code == 404


def test_edit_rejects_an_offsite_next(client, project, alice, make_comparisons):
    make_comparisons(project, 1)
    assignment, _ = submitted(project, alice)
    client.force_login(alice)
    url = reverse("assignment-edit", args=[assignment.pk]) + "?next=https://evil.example/"
    html = client.get(url).content.decode()
    assert "evil.example" not in html


def test_pairwise_edit_preselects_the_stored_choice(
    client, make_project, make_labeler, make_comparisons
):
    project = make_project("pairfix", task_type=TaskType.PAIRWISE, overlap=1)
    bea = make_labeler("bea", projects=[project])
    make_comparisons(project, 1)
    assignment = assignment_next(project=project, labeler=bea)
    a, b = assignment.display_order
    ranking_submit(
        assignment=assignment, labeler=bea, ranking=[[b], [a]], client_token=uuid.uuid4()
    )
    client.force_login(bea)
    html = client.get(reverse("assignment-edit", args=[assignment.pk])).content.decode()
    assert re.search(r'data-choice="b" aria-pressed="true"', html)
    assert re.search(r'data-choice="a" aria-pressed="false"', html)
    assert '"choice": "b"' in html


def test_user_text_blocks_carry_dir_auto_with_arabic_and_hebrew(
    client, project, alice, make_comparisons
):
    (comparison,) = make_comparisons(project, 1, texts=[ARABIC, HEBREW, "Plain English."])
    Prompt.objects.filter(pk=comparison.prompt_id).update(
        messages=[{"role": "user", "content": f"{HEBREW}\n\n```\ncode stays ltr\n```"}]
    )
    client.force_login(alice)
    html = client.get(reverse("label", kwargs={"slug": project.slug})).content.decode()
    for text in (ARABIC, HEBREW):
        # The card's text block and the paragraph holding the text both lay out by content.
        assert f'<p dir="auto">{text}</p>' in html  # rendered Markdown, per paragraph
        assert re.search(rf'<div class="raw" dir="auto" hidden>{text}</div>', html)  # raw text
    assert html.count('<div class="md" dir="auto">') == 4  # three cards and the prompt
    assert re.search(r'<div class="text" data-slot="text"[^>]*aria-label="Prompt text"', html)
    assert '<pre dir="ltr">' in html
    assert re.search(r'<textarea id="rationale" name="rationale" dir="auto"', html)
    assignment = Assignment.objects.get(labeler=alice)
    order = assignment.display_order
    ranking_submit(
        assignment=assignment,
        labeler=alice,
        ranking=[[c] for c in order],
        rationale=ARABIC,
        client_token=uuid.uuid4(),
    )
    history = client.get(reverse("history")).content.decode()
    assert history.count(f'<p dir="auto">{HEBREW}</p>') == 2  # the prompt and a response
    assert f'<span dir="auto">{ARABIC}</span>' in history
