"""Browser pages: the labeler's projects, the labeling page and its plain-form fallback, history.

Views parse input, call one service and render. The labeling page works in two modes: with
JavaScript it talks to the JSON API (`/api/v1/...`) and never reloads; without, its form
posts to `assignment_submit` / `assignment_skip` here, which redirect back to the page.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Set
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from annotation.api.permissions import assignment_of, project_for_labeler
from annotation.errors import ConflictError, NotAllowedError, ServiceValidationError
from annotation.forms import SubmissionForm, ordinal, pairwise_choice
from annotation.markdown import render_markdown, render_text, word_count
from annotation.models import Assignment, Project, TaskType
from annotation.selectors.labelers import (
    annotation_current,
    annotation_history,
    annotations_today,
    has_labeled,
    submitted_by_project,
)
from annotation.selectors.projects import projects_for_user
from annotation.selectors.queue import candidate_texts
from annotation.services.labeling import assignment_next, assignment_skip, ranking_submit

ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
HISTORY_PAGE_SIZE = 25


def _now_ms() -> int:
    return int(time.time() * 1000)


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The projects this user labels, with the project's and the user's own progress."""
    mine = submitted_by_project(request.user)
    projects = []
    for project in projects_for_user(request.user):
        total, complete = project.comparisons_total, project.comparisons_complete
        projects.append(
            {
                "project": project,
                "total": total,
                "complete": complete,
                "mine": mine.get(project.pk, 0),
                "percent": round(100 * complete / total) if total else 0,
            }
        )
    return render(request, "annotation/home.html", {"projects": projects})


# ---------------------------------------------------------------------------------------
# Labeling page
# ---------------------------------------------------------------------------------------


# The level a text's `#` heading takes, below the page's own headings (annotation.markdown):
# cards under their h3 "Response N", the prompt under the h2 "Prompt", History under its h1,
# guidelines under the "Guidelines" disclosure that stands at the h2 sections' level.
CARD_TOP = 4
PROMPT_TOP = 3
HISTORY_TOP = 2
GUIDELINES_TOP = 3


def _prompt_turns(messages_: list[dict]) -> list[dict]:
    """The prompt as turns; a plain-text prompt (one user message) shows without a role."""
    plain = len(messages_) == 1 and messages_[0].get("role") == "user"
    return [
        {
            "role": m.get("role", ""),
            "label": "" if plain else ROLE_LABELS.get(m.get("role"), m.get("role", "")),
            **_text(m.get("content", ""), top=PROMPT_TOP),
        }
        for m in messages_
    ]


def _text(text: str, *, top: int) -> dict:
    """A text block as the `_text.html` include shows it: rendered, raw, and its length.

    `top` is the level its `#` headings take, below the headings around it.
    """
    return {"html": render_text(text, top=top), "text": text, "words": word_count(text)}


def _card(
    project: Project, *, cid: int, n: int, text: str, values, k: int, invalid: Set[str]
) -> dict:
    """What the card template shows for one candidate, with posted values put back.

    `k` is the number of candidates of the comparison shown, not the project's setting:
    the rank choices come from what is on the page. `invalid` names the inputs a refused
    post's errors are about (SubmissionForm.invalid_fields).
    """
    chosen_flags = values.getlist(f"flag_{cid}") if values is not None else []
    rank = values.get(f"rank_{cid}", "") if values is not None else ""
    rating = values.get(f"rating_{cid}", "") if values is not None else ""
    letter = "AB"[n - 1] if project.task_type == TaskType.PAIRWISE and n else ""
    return {
        "id": cid,
        "n": n,
        "letter": letter,
        "label": f"Text of response {letter or n}",
        **_text(text, top=CARD_TOP),
        "ranks": [(str(i), ordinal(i), str(i) == rank) for i in range(1, k + 1)],
        "flags": [(code, code in chosen_flags) for code in project.flags or []],
        "ratings": [(value, text, value == rating) for value, text in project.rating_choices()],
        "rank_invalid": f"rank_{cid}" in invalid,
        "rating_invalid": f"rating_{cid}" in invalid,
    }


def _task_parts(
    project: Project,
    assignment: Assignment,
    values: QueryDict | None,
    invalid: Set[str] = frozenset(),
) -> tuple[list[dict], list[dict]]:
    """The cards (in the labeler's display order) and prompt turns of an assignment."""
    comparison = assignment.comparison
    texts = {c.pk: c.text for c in comparison.candidates.all()}
    cards = [
        _card(
            project,
            cid=cid,
            n=n,
            text=texts.get(cid, ""),
            values=values,
            k=len(assignment.display_order),
            invalid=invalid,
        )
        for n, cid in enumerate(assignment.display_order, start=1)
    ]
    return cards, _prompt_turns(comparison.prompt.messages)


def _with_comparison(assignment_id: int) -> Assignment:
    """The assignment with everything the labeling page shows, in three queries."""
    return (
        Assignment.objects.select_related("comparison__prompt", "comparison__project")
        .prefetch_related("comparison__candidates")
        .get(pk=assignment_id)
    )


def _label_page(
    request: HttpRequest,
    project: Project,
    assignment: Assignment | None,
    *,
    form: SubmissionForm | None = None,
    status: int = 200,
    values: QueryDict | None = None,
    editing: str | None = None,
    slot_lost: bool = False,
) -> HttpResponse:
    """The labeling page for an assignment (or "nothing left").

    `editing` is where to go after a correction: the page then reopens a submitted
    assignment with `values` (its stored answer) prefilled. `slot_lost` keeps a refused
    late answer on screen with no way to send it again.
    """
    if values is None:
        values = form.data if form is not None else None
    now = timezone.now()
    invalid = form.invalid_fields() if form is not None else set()
    cards, turns = _task_parts(project, assignment, values, invalid) if assignment else ([], [])
    today = annotations_today(user=request.user, project=project, now=now)
    api_zero = {"assignment_id": 0}
    config = {
        "assignment": (
            {
                "id": assignment.pk,
                "expires_at": assignment.expires_at.isoformat(),
                "candidate_ids": assignment.display_order,
                "choice": values.get("choice", "") if values is not None else "",
            }
            if assignment is not None
            else None
        ),
        "server_now": now.isoformat(),
        # Set when correcting a submitted answer: where to go once the correction is stored.
        "editing": editing,
        "slot_lost": slot_lost,
        "today": today,
        "project": {
            "slug": project.slug,
            "task_type": project.task_type,
            "allow_ties": project.allow_ties,
            "num_candidates": project.num_candidates,
        },
        # Ids are filled in by the script: `/0/` in these paths stands for the assignment.
        "urls": {
            "next": reverse("api:assignment-next", kwargs={"slug": project.slug}),
            "submit": reverse("api:assignment-submit", kwargs=api_zero),
            "skip": reverse("api:assignment-skip", kwargs=api_zero),
            "renew": reverse("api:assignment-renew", kwargs=api_zero),
            "form_submit": reverse("assignment-submit", kwargs=api_zero),
            "form_skip": reverse("assignment-skip", kwargs=api_zero),
            "login": reverse("login"),
            "edit": reverse("assignment-edit", kwargs=api_zero),
            "fragment": reverse("assignment-fragment", kwargs=api_zero),
            "label": reverse("label", kwargs={"slug": project.slug}),
        },
    }
    context = {
        "project": project,
        "pairwise": project.task_type == TaskType.PAIRWISE,
        "guidelines_html": render_markdown(project.guidelines, top=GUIDELINES_TOP),
        # Open the guidelines for someone who has not labeled in this project yet.
        "guidelines_open": not has_labeled(user=request.user, project=project),
        "assignment": assignment,
        "seconds_left": (
            max(0, int((assignment.expires_at - now).total_seconds()))
            if assignment and not editing
            else 0
        ),
        "cards": cards,
        "turns": turns,
        "today": today,
        "form": form,
        # Inputs the errors in #alert are about: aria-invalid, and described by the alert.
        "invalid_fields": invalid,
        "client_token": uuid.uuid4(),
        # A refused post keeps its start time, so time spent covers the whole answer.
        "started_ms": (values.get("started_ms") if values is not None else None) or _now_ms(),
        "rationale": values.get("rationale", "") if values is not None else "",
        "all_bad": bool(values.get("all_bad")) if values is not None else False,
        "rationale_max_length": settings.RATIONALE_MAX_LENGTH,
        "demonstration": values.get("demonstration", "") if values is not None else "",
        "edited_text": values.get("edited_text", "") if values is not None else "",
        "answer_max_length": settings.ANSWER_MAX_LENGTH,
        "editing": editing,
        "slot_lost": slot_lost,
        "choice": values.get("choice", "") if values is not None else "",
        "config": config,
    }
    # A demonstration is written, not ranked: its own page (a plain form, no ranking script).
    template = (
        "annotation/label_demonstration.html"
        if project.task_type == TaskType.DEMONSTRATION
        else "annotation/label.html"
    )
    return render(request, template, context, status=status)


@login_required
@require_GET
def label(request: HttpRequest, slug: str) -> HttpResponse:
    """The labeling page with the labeler's current (or next) comparison."""
    project = project_for_labeler(request.user, slug)
    try:
        assignment = assignment_next(project=project, labeler=request.user)
    except NotAllowedError as exc:
        raise PermissionDenied(exc.detail) from exc
    if assignment is not None:
        assignment = _with_comparison(assignment.pk)
    return _label_page(request, project, assignment)


@login_required
@require_GET
def assignment_fragment(request: HttpRequest, assignment_id: int) -> HttpResponse:
    """The prompt and cards of one of the user's assignments, server-rendered, for the script.

    The script leases through the JSON API and then swaps this HTML in, so a comparison
    fetched without a reload is rendered (Markdown, highlighting, sanitizing) exactly like
    the first one.
    """
    assignment = _with_comparison(assignment_of(request.user, assignment_id).pk)
    project = project_for_labeler(request.user, assignment.comparison.project.slug)  # 404
    cards, turns = _task_parts(project, assignment, None)
    context = {
        "project": project,
        "pairwise": project.task_type == TaskType.PAIRWISE,
        "cards": cards,
        "turns": turns,
    }
    return render(request, "annotation/_fragment.html", context)


@login_required
@require_POST
def assignment_submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    """Plain-form submit (JavaScript off): store the answer, then show the next comparison."""
    assignment = _with_comparison(assignment_of(request.user, assignment_id).pk)
    project = assignment.comparison.project
    form = SubmissionForm(
        request.POST, project=project, display_order=assignment.display_order, now_ms=_now_ms()
    )
    # A correction sent from the edit page goes back where it came from. (A plain repeat of
    # a first submit, a double click, replays its token and is no correction.)
    editing = None
    if assignment.status == Assignment.Status.SUBMITTED and "next" in request.POST:
        editing = _safe_next(request, request.POST.get("next"), project)
    if not form.is_valid():
        return _label_page(request, project, assignment, form=form, status=400, editing=editing)
    try:
        ranking_submit(assignment=assignment, labeler=request.user, **form.submission())
    except ServiceValidationError as exc:
        form.add_error(None, exc.detail)
        form.mark_invalid(exc.errors)
        return _label_page(request, project, assignment, form=form, status=400, editing=editing)
    except ConflictError as exc:
        # Nothing was stored: keep the answer on screen so it is not lost from sight.
        form.add_error(None, f"{exc.detail} Nothing was stored; your answer is kept below.")
        return _label_page(request, project, assignment, form=form, status=409, slot_lost=True)
    except NotAllowedError as exc:
        raise PermissionDenied(exc.detail) from exc
    if editing:
        messages.success(request, "Correction saved.")
        return redirect(editing)
    messages.success(request, "Saved.")
    return redirect("label", slug=project.slug)


def _safe_next(request: HttpRequest, target: str | None, project: Project) -> str:
    """A same-site path to return to after a correction, else the project's labeling page."""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("label", kwargs={"slug": project.slug})


def _stored_values(assignment: Assignment, annotation) -> QueryDict:
    """A stored annotation as the form fields that would send it again (to prefill a correction)."""
    values = QueryDict(mutable=True)
    for rank, tier in enumerate(annotation.ranking, start=1):
        for cid in tier:
            values[f"rank_{cid}"] = str(rank)
    for cid, codes in (annotation.flags or {}).items():
        values.setlist(f"flag_{cid}", list(codes))
    for cid, rating in (annotation.ratings or {}).items():
        values[f"rating_{cid}"] = str(rating)
    values["rationale"] = annotation.rationale
    values["demonstration"] = annotation.demonstration
    values["edited_text"] = annotation.edited_text
    if annotation.all_bad:
        values["all_bad"] = "on"
    if assignment.comparison.project.task_type == TaskType.PAIRWISE:
        values["choice"] = pairwise_choice(
            annotation.ranking, annotation.all_bad, assignment.display_order
        )
    return values


@login_required
@require_GET
def assignment_edit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    """Reopen a submitted assignment with its stored answer prefilled, to send a correction."""
    assignment = _with_comparison(assignment_of(request.user, assignment_id).pk)
    project = project_for_labeler(request.user, assignment.comparison.project.slug)  # 404
    current = annotation_current(assignment)
    if assignment.status != Assignment.Status.SUBMITTED or current is None:
        messages.info(request, "That comparison has no stored answer to correct.")
        return redirect("label", slug=project.slug)
    return _label_page(
        request,
        project,
        assignment,
        values=_stored_values(assignment, current),
        editing=_safe_next(request, request.GET.get("next"), project),
    )


@login_required
@require_POST
def assignment_skip_view(request: HttpRequest, assignment_id: int) -> HttpResponse:
    """Plain-form skip: give the comparison back and show the next one."""
    assignment = assignment_of(request.user, assignment_id)
    slug = Project.objects.values_list("slug", flat=True).get(comparisons=assignment.comparison_id)
    try:
        assignment_skip(assignment=assignment, labeler=request.user)
    except ConflictError as exc:
        messages.error(request, exc.detail)
    except NotAllowedError as exc:
        raise PermissionDenied(exc.detail) from exc
    else:
        messages.info(request, "Skipped.")
    return redirect("label", slug=slug)


# ---------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    """The user's own annotations, newest first, optionally for one project."""
    project = None
    if slug := request.GET.get("project"):
        project = project_for_labeler(request.user, slug)
    page = Paginator(annotation_history(request.user, project=project), HISTORY_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    texts = candidate_texts(cid for a in page for tier in a.ranking for cid in tier)
    rows = []
    for annotation in page:
        tiers = []
        for position, tier in enumerate(annotation.ranking, start=1):
            tiers.append(
                {
                    "label": ordinal(position),
                    "candidates": [
                        {
                            **_text(texts.get(cid, ""), top=HISTORY_TOP),
                            "flags": annotation.flags.get(str(cid), []),
                            "rating": annotation.ratings.get(str(cid)),
                        }
                        for cid in tier
                    ],
                }
            )
        superseded = getattr(annotation, "superseded_by", None)
        rows.append(
            {
                "annotation": annotation,
                "prompt": _text(annotation.comparison.prompt.text, top=HISTORY_TOP),
                "tiers": tiers,
                "superseded": superseded is not None,
                "edit_url": (
                    None
                    if superseded is not None
                    else reverse(
                        "assignment-edit", kwargs={"assignment_id": annotation.assignment_id}
                    )
                    + "?next="
                    + quote(request.get_full_path())
                ),
            }
        )
    return render(
        request,
        "annotation/history.html",
        {
            "page": page,
            "rows": rows,
            "project": project,
            "projects": projects_for_user(request.user),
        },
    )
