"""Browser views without a browser: pages, the plain-form fallback, escaping and sanitizing."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.forms import ordinal, tiers_from_ranks
from annotation.markdown import render_markdown
from annotation.models import Annotation, Assignment, Comparison, TaskType
from annotation.services.imports import candidate_record, candidates_import, prompts_import
from annotation.services.imports import prompt_record as make_prompt_record
from annotation.services.labeling import assignment_next, ranking_submit

XSS_SCRIPT = "<script>window.__pwned = 1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned = 2">'


# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------


def test_ordinal_suffixes():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip


def test_tiers_from_ranks_groups_equal_numbers_best_first_and_tolerates_gaps():
    assert tiers_from_ranks({11: 2, 12: 1, 13: 2, 14: 5}) == [[12], [11, 13], [14]]


def test_render_markdown_keeps_structure_and_drops_active_content():
    html = render_markdown(
        "# Rules\n\n**Prefer** honest answers. [docs](https://example.org)\n\n"
        f"{XSS_SCRIPT}\n\n{XSS_IMG}\n\n[bad](javascript:alert(1))\n\n"
        '<a href="#" onclick="x()">c</a>\n\n```\ncode <b>\n```'
    )
    assert "<h1>Rules</h1>" in html
    assert "<strong>Prefer</strong>" in html
    assert 'href="https://example.org"' in html and "noopener" in html
    for bad in ("<script", "__pwned = 1", "onerror", "javascript:", "onclick"):
        assert bad not in html
    # Code in guidelines is shown escaped inside <pre><code>.
    assert "code &lt;b&gt;" in html


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture
def ranking_project(make_project):
    return make_project(
        "rank",
        name="Rank <b>four</b>",
        num_candidates=3,
        overlap=1,
        rating_scale=5,
        guidelines=f"# Be kind\n\n{XSS_SCRIPT}",
    )


@pytest.fixture
def alice(make_labeler, ranking_project):
    return make_labeler("alice", projects=[ranking_project])


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def label_url(project) -> str:
    return reverse("label", kwargs={"slug": project.slug})


def current_assignment(user) -> Assignment:
    return Assignment.objects.get(labeler=user, status=Assignment.Status.LEASED)


# ---------------------------------------------------------------------------------------
# Sign-in, home
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_need_sign_in(client, ranking_project):
    for url in (reverse("home"), label_url(ranking_project), reverse("history")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_login_then_logout(client, make_labeler, ranking_project):
    make_labeler("bob", projects=[ranking_project], password="a-long-password-1")
    page = client.get(reverse("login"))
    assert page.status_code == 200 and b'name="password"' in page.content
    bad = client.post(reverse("login"), {"username": "bob", "password": "nope"})
    assert b"did not match" in bad.content
    ok = client.post(reverse("login"), {"username": "bob", "password": "a-long-password-1"})
    assert ok.status_code == 302 and ok["Location"] == reverse("home")
    assert client.get(reverse("home")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("home")).status_code == 302


@pytest.mark.django_db
def test_home_lists_only_my_projects_with_progress(
    alice_client, alice, ranking_project, make_project, make_comparisons
):
    other = make_project("secret", name="Secret project")
    comparisons = make_comparisons(ranking_project, n=4)
    a = assignment_next(project=ranking_project, labeler=alice)
    ranking_submit(
        assignment=a,
        labeler=alice,
        ranking=[[i] for i in a.display_order],
        client_token=uuid.uuid4(),
    )
    html = alice_client.get(reverse("home")).content.decode()
    assert "Rank &lt;b&gt;four&lt;/b&gt;" in html  # names are escaped
    assert other.name not in html
    assert "1 of 4 comparisons complete" in html
    assert "You have labeled 1." in html
    assert len(comparisons) == 4


# ---------------------------------------------------------------------------------------
# Labeling page
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_label_page_shows_cards_in_display_order_escaped(
    alice_client, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=1, texts=[XSS_SCRIPT, XSS_IMG, "  two\n   spaces"])
    response = alice_client.get(label_url(ranking_project))
    assert response.status_code == 200
    html = response.content.decode()
    assignment = current_assignment(alice)
    positions = [html.index(f'data-candidate="{cid}"') for cid in assignment.display_order]
    assert positions == sorted(positions)
    # Untrusted text is escaped, whitespace kept verbatim for pre-wrap.
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=" in html
    assert "<img src=x" not in html and "<script>window" not in html
    assert "  two\n   spaces" in html
    # Guidelines rendered and sanitized; open for a labeler who has not labeled yet.
    # ("# Be kind" is an h3: the guidelines nest below the page's h2 sections.)
    assert "<h3>Be kind</h3>" in html and "__pwned = 1</script>" not in html.split("<details")[1]
    assert '<details class="guidelines" open>' in html
    assert 'name="rank_' in html and 'name="flag_' in html and 'name="rating_' in html
    assert response.context["config"]["assignment"]["candidate_ids"] == assignment.display_order


@pytest.mark.django_db
def test_label_page_shows_a_code_fence_with_pygments_options(
    alice_client, alice, ranking_project, make_comparisons
):
    # `{style=x}` reached Pygments as a second `style`: every reload of the page was a 500
    # on the same lease, and the labeler could not reach Skip.
    fence = "Try:\n\n```{style=x}\nprint(1)\n```\n"
    make_comparisons(ranking_project, n=1, texts=[fence, "plain", "other", "fourth"])
    response = alice_client.get(label_url(ranking_project))
    assert response.status_code == 200
    assert "print(1)" in response.content.decode()


@pytest.mark.django_db
def test_label_page_renews_the_same_lease_on_reload(
    alice_client, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=2)
    alice_client.get(label_url(ranking_project))
    first = current_assignment(alice)
    alice_client.get(label_url(ranking_project))
    assert Assignment.objects.filter(labeler=alice).count() == 1
    assert current_assignment(alice).expires_at >= first.expires_at


@pytest.mark.django_db
def test_chat_prompt_shows_each_turn_with_its_role(alice_client, ranking_project):
    record = make_prompt_record(
        {
            "external_id": "chat",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi <there>"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Explain."},
            ],
        },
        line=1,
    )
    prompts_import(project=ranking_project, records=[record])
    candidates_import(
        project=ranking_project,
        records=[
            candidate_record({"prompt_external_id": "chat", "text": f"answer {i}"}, line=i)
            for i in range(3)
        ],
    )
    from annotation.services.comparisons import comparisons_build

    comparisons_build(project=ranking_project)
    html = alice_client.get(label_url(ranking_project)).content.decode()
    for role in ("turn-system", "turn-user", "turn-assistant"):
        assert role in html
    assert html.index("You are terse.") < html.index("Hi &lt;there&gt;") < html.index("Explain.")
    assert '<div class="role">Assistant</div>' in html


@pytest.mark.django_db
def test_label_page_of_someone_elses_project_is_404(client, make_labeler, ranking_project):
    client.force_login(make_labeler("mallory"))
    assert client.get(label_url(ranking_project)).status_code == 404


@pytest.mark.django_db
def test_label_page_says_nothing_left(alice_client, ranking_project):
    html = alice_client.get(label_url(ranking_project)).content.decode()
    assert "Nothing left to label" in html
    assert '<section id="task" aria-labelledby="task-heading" hidden>' in html


# ---------------------------------------------------------------------------------------
# Plain-form fallback
# ---------------------------------------------------------------------------------------


def form_data(assignment, ranks, **extra) -> dict:
    data = {"client_token": str(uuid.uuid4()), "started_ms": "0"}
    data.update({f"rank_{cid}": str(r) for cid, r in zip(assignment.display_order, ranks)})
    data.update(extra)
    return data


@pytest.mark.django_db
def test_form_submit_stores_tiers_flags_ratings_and_serves_the_next(
    alice_client, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=2)
    alice_client.get(label_url(ranking_project))
    a = current_assignment(alice)
    x, y, z = a.display_order
    data = form_data(a, [2, 1, 2])
    data.update({f"flag_{x}": ["harmful", "untruthful"], f"rating_{y}": "5"})
    data["rationale"] = "  y is right  "
    response = alice_client.post(reverse("assignment-submit", args=[a.pk]), data)
    assert response.status_code == 302 and response["Location"] == label_url(ranking_project)
    annotation = Annotation.objects.get(assignment=a)
    assert annotation.ranking == [[y], [x, z]]
    assert annotation.flags == {str(x): ["harmful", "untruthful"]}
    assert annotation.ratings == {str(y): 5}
    assert annotation.rationale == "y is right"
    assert annotation.time_spent_ms > 0  # from the page's start time
    page = alice_client.get(response["Location"])
    assert b"Saved." in page.content
    assert current_assignment(alice).comparison_id != a.comparison_id
    assert b'Today: <strong id="today-count">1</strong>' in page.content


@pytest.mark.django_db
def test_form_submit_with_missing_rank_keeps_the_answer_and_stores_nothing(
    alice_client, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=1)
    alice_client.get(label_url(ranking_project))
    a = current_assignment(alice)
    x, y, z = a.display_order
    data = {
        "client_token": str(uuid.uuid4()),
        f"rank_{x}": "1",
        f"rank_{z}": "2",
        f"flag_{y}": "harmful",
        "rationale": "keep <me>",
    }
    response = alice_client.post(reverse("assignment-submit", args=[a.pk]), data)
    assert response.status_code == 400
    html = response.content.decode()
    assert "Rank every response (missing: response 2)." in html
    assert 'value="1" selected>1st' in html and 'value="2" selected>2nd' in html
    assert 'value="harmful" checked' in html
    assert "keep &lt;me&gt;</textarea>" in html
    assert not Annotation.objects.exists()


@pytest.mark.django_db
def test_form_all_bad_without_ranks_is_one_tier(
    alice_client, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=1)
    alice_client.get(label_url(ranking_project))
    a = current_assignment(alice)
    data = {"client_token": str(uuid.uuid4()), "all_bad": "on"}
    assert alice_client.post(reverse("assignment-submit", args=[a.pk]), data).status_code == 302
    annotation = Annotation.objects.get()
    assert annotation.all_bad is True
    assert annotation.ranking == [list(a.display_order)]


@pytest.mark.django_db
def test_form_tie_refused_where_ties_are_off(client, make_project, make_labeler, make_comparisons):
    project = make_project("strict", num_candidates=3, allow_ties=False)
    client.force_login(make_labeler("carol", projects=[project]))
    make_comparisons(project, n=1)
    client.get(label_url(project))
    a = Assignment.objects.get()
    response = client.post(reverse("assignment-submit", args=[a.pk]), form_data(a, [1, 1, 2]))
    assert response.status_code == 400
    assert b"does not allow ties" in response.content
    assert not Annotation.objects.exists()


@pytest.mark.django_db
def test_form_replay_of_a_token_does_not_store_twice(
    alice_client, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=2)
    alice_client.get(label_url(ranking_project))
    a = current_assignment(alice)
    data = form_data(a, [1, 2, 3])
    url = reverse("assignment-submit", args=[a.pk])
    assert alice_client.post(url, data).status_code == 302
    assert alice_client.post(url, data).status_code == 302
    assert Annotation.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("choice", "expected", "all_bad"),
    [("a", "ab", False), ("b", "ba", False), ("tie", "t", False), ("bad", "t", True)],
)
def test_form_pairwise_choices(
    client, make_project, make_labeler, make_comparisons, choice, expected, all_bad
):
    project = make_project("pair", task_type=TaskType.PAIRWISE)
    client.force_login(make_labeler("dan", projects=[project]))
    make_comparisons(project, n=1)
    html = client.get(label_url(project)).content.decode()
    assert "A is better" in html and "B is better" in html and "Both bad" in html
    assert 'name="rank_' not in html
    a = Assignment.objects.get()
    first, second = a.display_order
    data = {"client_token": str(uuid.uuid4()), "choice": choice}
    assert client.post(reverse("assignment-submit", args=[a.pk]), data).status_code == 302
    annotation = Annotation.objects.get()
    tiers = {"ab": [[first], [second]], "ba": [[second], [first]], "t": [[first, second]]}
    assert annotation.ranking == tiers[expected]
    assert annotation.all_bad is all_bad


@pytest.mark.django_db
def test_form_skip_frees_the_comparison_and_serves_another(
    alice_client, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=2)
    alice_client.get(label_url(ranking_project))
    a = current_assignment(alice)
    response = alice_client.post(reverse("assignment-skip", args=[a.pk]))
    assert response.status_code == 302
    a.refresh_from_db()
    assert a.status == Assignment.Status.SKIPPED
    alice_client.get(label_url(ranking_project))
    assert current_assignment(alice).comparison_id != a.comparison_id
    # Skipping the last one leaves nothing.
    alice_client.post(reverse("assignment-skip", args=[current_assignment(alice).pk]))
    assert b"Nothing left to label" in alice_client.get(label_url(ranking_project)).content


@pytest.mark.django_db
def test_form_posts_on_someone_elses_assignment_are_404(
    client, make_labeler, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=1)
    a = assignment_next(project=ranking_project, labeler=alice)
    client.force_login(make_labeler("eve", projects=[ranking_project]))
    assert (
        client.post(reverse("assignment-submit", args=[a.pk]), form_data(a, [1, 2, 3])).status_code
        == 404
    )
    assert client.post(reverse("assignment-skip", args=[a.pk])).status_code == 404
    assert not Annotation.objects.exists()


@pytest.mark.django_db
def test_form_late_submit_after_the_slot_was_taken_stores_nothing(
    client, make_labeler, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=1)
    a = assignment_next(project=ranking_project, labeler=alice)
    Assignment.objects.filter(pk=a.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    bob = make_labeler("bob", projects=[ranking_project])
    assert assignment_next(project=ranking_project, labeler=bob).comparison_id == a.comparison_id
    client.force_login(alice)
    data = form_data(a, [1, 2, 3], rationale="my careful reasons")
    response = client.post(reverse("assignment-submit", args=[a.pk]), data)
    # The refused answer stays on screen (it used to redirect to "Here is another
    # comparison" above "Nothing left"), with a way on and no way to send it again.
    assert response.status_code == 409
    html = response.content.decode()
    assert "taken by others" in html and "Nothing was stored" in html
    assert "Here is another comparison" not in html
    assert "my careful reasons</textarea>" in html
    first = a.display_order[0]
    assert f'name="rank_{first}"' in html and '<option value="1" selected>' in html
    assert 'id="submit-button"' not in html
    assert "Next comparison" in html
    assert not Annotation.objects.exists()


@pytest.mark.django_db
def test_form_needs_csrf(alice, ranking_project, make_comparisons):
    from django.test import Client

    make_comparisons(ranking_project, n=1)
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(alice)
    a = assignment_next(project=ranking_project, labeler=alice)
    response = csrf_client.post(reverse("assignment-submit", args=[a.pk]), form_data(a, [1, 2, 3]))
    assert response.status_code == 403


# ---------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_history_shows_my_annotations_only_newest_first(
    alice_client, alice, make_labeler, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=3, texts=[XSS_SCRIPT, "middle", "last"])
    bob = make_labeler("bob", projects=[ranking_project])
    for labeler, rationale in ((alice, "first <why>"), (alice, "second"), (bob, "bobs")):
        a = assignment_next(project=ranking_project, labeler=labeler)
        ranking_submit(
            assignment=a,
            labeler=labeler,
            ranking=[[i] for i in sorted(a.display_order)],
            flags={str(a.display_order[0]): ["harmful"]},
            rationale=rationale,
            client_token=uuid.uuid4(),
        )
    html = alice_client.get(reverse("history")).content.decode()
    assert "bobs" not in html
    assert html.index("second") < html.index("first &lt;why&gt;")
    assert "&lt;script&gt;window.__pwned" in html and "<script>window" not in html
    assert '<span class="tag tag-flag">harmful</span>' in html
    assert ">1st<" in html and ">3rd<" in html
    filtered = alice_client.get(reverse("history"), {"project": ranking_project.slug})
    assert filtered.status_code == 200 and b"second" in filtered.content


@pytest.mark.django_db
def test_history_of_a_foreign_project_is_404(alice_client, make_project):
    make_project("other")
    assert alice_client.get(reverse("history"), {"project": "other"}).status_code == 404


@pytest.mark.django_db
def test_today_counts_only_todays_annotations(
    alice_client, alice, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=3)
    for _ in range(2):
        a = assignment_next(project=ranking_project, labeler=alice)
        ranking_submit(
            assignment=a,
            labeler=alice,
            ranking=[[i] for i in a.display_order],
            client_token=uuid.uuid4(),
        )
    Annotation.objects.filter(pk=Annotation.objects.first().pk).update(
        created_at=timezone.now() - timedelta(days=2)
    )
    response = alice_client.get(label_url(ranking_project))
    assert response.context["today"] == 1
    assert Comparison.objects.filter(status=Comparison.Status.COMPLETE).count() == 2


@pytest.mark.django_db
def test_assignment_fragment_renders_the_cards_for_their_labeler_only(
    client, alice_client, alice, make_labeler, ranking_project, make_comparisons
):
    make_comparisons(ranking_project, n=1, texts=["# Title\n\n" + XSS_SCRIPT, XSS_IMG, "**b**"])
    alice_client.get(label_url(ranking_project))
    assignment = current_assignment(alice)
    url = reverse("assignment-fragment", kwargs={"assignment_id": assignment.pk})
    response = alice_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    positions = [html.index(f'data-candidate="{cid}"') for cid in assignment.display_order]
    assert positions == sorted(positions)
    assert '<h4 dir="auto">Title</h4>' in html and "<strong>b</strong>" in html  # below h3
    assert "<script>window" not in html and "<img" not in html
    assert 'id="fragment-prompt"' in html and "Question" in html
    # Someone else's assignment is not found; signed out goes to the login page.
    bob = make_labeler("bob", projects=[ranking_project])
    client.force_login(bob)
    assert client.get(url).status_code == 404
    client.logout()
    assert client.get(url).status_code == 302
