"""The admin's gold widget and review screens in a real Chromium: rank and save as gold, a
refused gold ranking, rejecting with a reason and restoring, the statistics page's links."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from annotation.models import Annotation, Comparison
from annotation.services.labeling import assignment_next, ranking_submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STAFF_PASSWORD = "pw-root-123456"


@pytest.fixture
def admin_login(live_server):
    get_user_model().objects.create_superuser("root", "root@example.com", STAFF_PASSWORD)

    def sign_in(page: Page) -> None:
        page.goto(f"{live_server.url}/admin/login/")
        page.get_by_label("Username").fill("root")
        page.get_by_label("Password").fill(STAFF_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Site administration")).to_be_visible()

    return sign_in


def label(project, user, ms=4000):
    assignment = assignment_next(project=project, labeler=user)
    annotation, _ = ranking_submit(
        assignment=assignment,
        labeler=user,
        ranking=[[c] for c in assignment.display_order],
        time_spent_ms=ms,
        client_token=uuid.uuid4(),
    )
    return annotation


def test_rank_a_comparison_and_save_it_as_gold(
    page: Page, live_server, admin_login, make_project, make_comparisons
):
    project = make_project("goldp", num_candidates=3, overlap=1, allow_ties=False)
    (comparison,) = make_comparisons(project, n=1, texts=["Paris.", "Lyon?", "<b>No</b> idea"])
    a, b, c = comparison.candidate_ids
    admin_login(page)
    page.goto(f"{live_server.url}/admin/annotation/comparison/{comparison.pk}/gold/")
    expect(page.get_by_text("<b>No</b> idea")).to_be_visible()  # shown as text, escaped
    # Two candidates on rank 1 in a project without ties: refused, nothing saved.
    page.get_by_label(f"rank of candidate {a}").select_option("1")
    page.get_by_label(f"rank of candidate {b}").select_option("1")
    page.get_by_label(f"rank of candidate {c}").select_option("2")
    page.get_by_role("button", name="Save as gold").click()
    expect(page.locator(".errorlist")).to_be_visible()
    assert not Comparison.objects.get(pk=comparison.pk).is_gold
    page.get_by_label(f"rank of candidate {a}").select_option("2")
    page.get_by_label(f"rank of candidate {b}").select_option("3")
    page.get_by_label(f"rank of candidate {c}").select_option("1")
    page.get_by_role("button", name="Save as gold").click()
    page.wait_for_load_state()
    saved = Comparison.objects.get(pk=comparison.pk)
    assert saved.is_gold and saved.gold_ranking == [[c], [a], [b]]


def test_reject_with_a_reason_then_restore(
    page: Page, live_server, admin_login, make_project, make_labeler, make_comparisons
):
    project = make_project("review", num_candidates=3, overlap=1)
    ann = make_labeler("ann", projects=[project])
    make_comparisons(project, n=2, texts=["Paris.", "Lyon?", "No idea"])
    annotation = label(project, ann, ms=900)
    admin_login(page)
    page.goto(f"{live_server.url}/admin/annotation/annotation/")
    row = page.locator("#result_list tbody tr").filter(has_text="Paris.")
    expect(row).to_contain_text("ann")
    row.locator("input.action-select").check()
    page.locator('select[name="action"]').select_option("reject_selected")
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_role("heading", name="Reject 1 annotation")).to_be_visible()
    page.get_by_label("Reason").fill("answered in under a second")
    page.get_by_role("button", name="Reject").click()
    page.wait_for_load_state()
    rejected = Annotation.objects.get(pk=annotation.pk)
    assert rejected.rejected_at is not None
    assert rejected.rejection_reason == "answered in under a second"
    assert Comparison.objects.get(pk=annotation.comparison_id).submitted_count == 0
    # Restore it from the list of rejected annotations.
    page.goto(f"{live_server.url}/admin/annotation/annotation/?rejected=yes")
    page.locator("#result_list tbody tr input.action-select").first.check()
    page.locator('select[name="action"]').select_option("restore_selected")
    page.get_by_role("button", name="Go").click()
    page.wait_for_load_state()
    assert Annotation.objects.get(pk=annotation.pk).rejected_at is None


def test_statistics_page_links_a_weak_labeler_to_their_work(
    page: Page, live_server, admin_login, make_project, make_labeler, make_comparisons
):
    project = make_project("statsp", num_candidates=3, overlap=1)
    fast = make_labeler("fast", projects=[project])
    make_comparisons(project, n=2)
    label(project, fast, ms=500)
    admin_login(page)
    page.goto(f"{live_server.url}/admin/annotation/project/{project.pk}/stats/")
    expect(page.get_by_role("heading", name="Labelers", exact=True)).to_be_visible()
    weak = page.locator("#labelers td.weak")
    expect(weak).to_have_count(1)
    expect(weak).to_have_text("0.5")
    expect(page.locator("svg.chart rect title")).to_have_count(1)
    page.get_by_role("link", name="fast").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list")).to_contain_text("fast")
