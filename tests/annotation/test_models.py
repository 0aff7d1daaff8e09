"""Each invariant of SPEC section 2 that a constraint holds fails at the database."""

import uuid

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import (
    Annotation,
    Assignment,
    Candidate,
    Comparison,
    Project,
    Prompt,
    messages_sha256,
    text_sha256,
)

pytestmark = pytest.mark.django_db


def violates(fn):
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


def make_prompt(project, external_id=None, text="hi"):
    messages = [{"role": "user", "content": text}]
    return Prompt.objects.create(
        project=project,
        external_id=external_id,
        messages=messages,
        content_hash=messages_sha256(messages),
    )


@pytest.mark.parametrize("k", [1, 10, 0])
def test_num_candidates_outside_2_to_9_is_refused(k):
    violates(lambda: Project.objects.create(slug=f"p{k}", name="p", num_candidates=k))


def test_pairwise_project_must_have_k_2():
    violates(
        lambda: Project.objects.create(slug="pw", name="p", task_type="pairwise", num_candidates=3)
    )
    Project.objects.create(slug="pw2", name="p", task_type="pairwise", num_candidates=2)


def test_overlap_and_gold_rate_bounds():
    violates(lambda: Project.objects.create(slug="o", name="p", overlap=0))
    violates(lambda: Project.objects.create(slug="g", name="p", gold_rate=1.5))


def test_external_id_unique_within_a_project_only(project, make_project):
    make_prompt(project, "x1")
    violates(lambda: make_prompt(project, "x1", text="other"))
    make_prompt(make_project("other"), "x1")  # another project may reuse it


def test_prompts_without_external_id_are_unique_by_content(project):
    make_prompt(project, None, "same")
    violates(lambda: make_prompt(project, None, "same"))
    make_prompt(project, "has-id", "same")  # with an id, the same text is allowed


def test_candidate_text_unique_per_prompt(project):
    prompt = make_prompt(project, "x")
    Candidate.objects.create(prompt=prompt, text="a", text_hash=text_sha256("a"))
    violates(lambda: Candidate.objects.create(prompt=prompt, text="a", text_hash=text_sha256("a")))


def test_comparison_constraints(project, make_comparisons):
    comparison = make_comparisons(project, n=1)[0]
    violates(
        lambda: Comparison.objects.create(
            project=project,
            prompt=comparison.prompt,
            candidate_ids=comparison.candidate_ids,
            candidate_key=comparison.candidate_key,
        )
    )
    comparison.submitted_count = comparison.required + 1
    violates(lambda: comparison.save())
    comparison.refresh_from_db()
    comparison.is_gold = True
    violates(lambda: comparison.save())


def test_one_assignment_per_comparison_and_labeler_and_unique_client_token(
    project, labeler, make_comparisons
):
    comparison = make_comparisons(project, n=1)[0]
    now = timezone.now()

    def assign():
        return Assignment.objects.create(
            comparison=comparison,
            labeler=labeler,
            display_order=comparison.candidate_ids,
            leased_at=now,
            expires_at=now,
        )

    assignment = assign()
    violates(assign)
    token = uuid.uuid4()
    ranking = [[cid] for cid in comparison.candidate_ids]

    def annotate():
        return Annotation.objects.create(
            assignment=assignment,
            comparison=comparison,
            labeler=labeler,
            ranking=ranking,
            client_token=token,
        )

    annotate()
    violates(annotate)


def test_an_assignment_has_one_first_answer_and_a_chain_of_corrections(
    project, labeler, make_comparisons
):
    comparison = make_comparisons(project, n=1)[0]
    now = timezone.now()
    assignment = Assignment.objects.create(
        comparison=comparison,
        labeler=labeler,
        display_order=comparison.candidate_ids,
        leased_at=now,
        expires_at=now,
    )
    ranking = [[cid] for cid in comparison.candidate_ids]

    def answer(supersedes=None):
        return Annotation.objects.create(
            assignment=assignment,
            comparison=comparison,
            labeler=labeler,
            ranking=ranking,
            client_token=uuid.uuid4(),
            supersedes=supersedes,
        )

    first = answer()
    violates(answer)  # a second first answer would count the labeler twice
    correction = answer(supersedes=first)
    answer(supersedes=correction)
    violates(lambda: answer(supersedes=first))  # a fork of the chain
    assert Annotation.objects.filter(assignment=assignment).count() == 3
