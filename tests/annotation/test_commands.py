"""create_project, create_labeler, import_candidates and build_comparisons through call_command."""

import hashlib
import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from annotation.models import ApiToken, Comparison, Project

pytestmark = pytest.mark.django_db


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_project_with_options(tmp_path):
    guidelines = tmp_path / "g.md"
    guidelines.write_text("# Rank by helpfulness")
    out = run(
        "create_project",
        "p1",
        "--name",
        "P one",
        "--num-candidates",
        "3",
        "--overlap",
        "2",
        "--no-ties",
        "--guidelines",
        str(guidelines),
    )
    assert "Created project p1" in out
    project = Project.objects.get(slug="p1")
    assert (project.num_candidates, project.overlap, project.allow_ties) == (3, 2, False)
    assert project.guidelines == "# Rank by helpfulness"
    assert project.flags == ["unhelpful", "untruthful", "harmful"]


def test_create_project_refuses_guidelines_that_are_not_utf8(tmp_path):
    guidelines = tmp_path / "latin1.md"
    guidelines.write_bytes("# Caf\u00e9 rules".encode("latin-1"))
    with pytest.raises(CommandError) as info:
        run("create_project", "p1", "--guidelines", str(guidelines))
    assert str(info.value) == (
        f"{guidelines}: not valid UTF-8 (byte 6 is 0xe9); save the guidelines as UTF-8"
    )
    assert not Project.objects.exists()


def test_create_project_pairwise_defaults_to_two():
    run("create_project", "pw", "--task-type", "pairwise")
    assert Project.objects.get(slug="pw").num_candidates == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--num-candidates", "12"], "num_candidates"),
        (
            ["--task-type", "pairwise", "--num-candidates", "3"],
            "pairwise project compares exactly 2",
        ),
        (["--overlap", "0"], "overlap"),
    ],
)
def test_create_project_rejects_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        run("create_project", "bad", *args)
    assert not Project.objects.exists()


def test_create_project_twice_fails():
    run("create_project", "p1")
    with pytest.raises(CommandError, match="already exists"):
        run("create_project", "p1")


def test_create_labeler_prints_token_last_and_is_rerunnable(project):
    # Issue 14: tokens are stored hashed, so a re-run cannot print the old token; it prints an
    # additional one (the last line is always a usable token, SPEC section 4), and
    # --new-token revokes the others (docs/api.md).
    out = run("create_labeler", "bob", "--project", "demo", "--password", "s3cret-pass-word")
    user = get_user_model().objects.get(username="bob")
    token = out.strip().splitlines()[-1]
    (stored,) = ApiToken.objects.filter(user=user)
    assert stored.digest == hashlib.sha256(token.encode()).hexdigest() != token
    assert stored.prefix == token[:8] and len(token) == 40
    assert user.check_password("s3cret-pass-word")
    assert user.groups.filter(name="labelers").exists() and not user.is_staff
    assert list(project.members.all()) == [user]
    again = run("create_labeler", "bob", "--project", "demo", "--staff")
    assert token not in again
    second = again.strip().splitlines()[-1]
    assert len(second) == 40 and second != token
    digests = set(ApiToken.objects.filter(user=user).values_list("digest", flat=True))
    assert digests == {hashlib.sha256(t.encode()).hexdigest() for t in (token, second)}
    user.refresh_from_db()
    assert user.is_staff
    fresh = run("create_labeler", "bob", "--project", "demo", "--new-token").strip()
    fresh = fresh.splitlines()[-1]
    assert len(fresh) == 40 and fresh != token
    (replaced,) = ApiToken.objects.filter(user=user)  # the old one is revoked
    assert replaced.digest == hashlib.sha256(fresh.encode()).hexdigest()


@pytest.mark.parametrize(
    "username, password, message",
    [
        ("bob", "password", "password: This password is too common."),
        ("bob", "short", "password: This password is too short"),
        ("bobbylabeler", "bobbylabeler1", "password: The password is too similar to the username."),
        ("bob smith", "a-long-good-passphrase", "username 'bob smith': Enter a valid username."),
        ("bob/../x", "a-long-good-passphrase", "Enter a valid username."),
    ],
)
def test_create_labeler_applies_djangos_username_and_password_validators(
    project, username, password, message
):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        run("create_labeler", username, "--project", "demo", "--password", password)
    assert not get_user_model().objects.exists()


def test_create_labeler_keeps_an_existing_password_when_the_new_one_is_refused(project):
    run("create_labeler", "bob", "--project", "demo", "--password", "s3cret-pass-word")
    with pytest.raises(CommandError, match="too common"):
        run("create_labeler", "bob", "--project", "demo", "--password", "password")
    assert get_user_model().objects.get(username="bob").check_password("s3cret-pass-word")


def test_create_labeler_unknown_project():
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        run("create_labeler", "bob", "--project", "nope")


def test_import_candidates_and_build_comparisons(make_project, tmp_path):
    make_project("r", num_candidates=2)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "\n".join(json.dumps({"external_id": f"q{i}", "text": f"q{i}"}) for i in range(3))
    )
    run("import_prompts", "r", str(prompts))
    candidates = tmp_path / "c.jsonl"
    rows = [
        {"prompt_external_id": f"q{i}", "text": f"{m} says {i}", "model": m}
        for i in range(3)
        for m in ("a", "b", "c")
    ]
    candidates.write_text("\n".join(json.dumps(r) for r in rows))
    assert "created 9" in run("import_candidates", "r", str(candidates))
    out = run("build_comparisons", "r")
    assert "built 3 comparisons" in out and "3 candidates left over" in out
    for comparison in Comparison.objects.all():
        models = {c.model_name for c in comparison.candidates.all()}
        assert len(models) == 2  # pairs mix models
    assert "built 0 comparisons" in run("build_comparisons", "r")  # never the same set twice


def test_build_comparisons_filtered_by_model(make_project, tmp_path):
    project = make_project("f", num_candidates=2)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"external_id": "q", "text": "q"}))
    run("import_prompts", "f", str(prompts))
    candidates = tmp_path / "c.jsonl"
    rows = [
        {"prompt_external_id": "q", "text": f"{m}{n}", "model": m}
        for m in ("a", "b")
        for n in range(2)
    ]
    candidates.write_text("\n".join(json.dumps(r) for r in rows))
    run("import_candidates", "f", str(candidates))
    assert "built 1 comparisons" in run("build_comparisons", "f", "--model", "a")
    comparison = Comparison.objects.get(project=project)
    assert {c.model_name for c in comparison.candidates.all()} == {"a"}


def test_expire_leases_marks_lapsed_leases_only(project, labeler, make_labeler, make_comparisons):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.models import Assignment
    from annotation.services.labeling import assignment_next

    make_comparisons(project, 2)
    # Another labeler's lease lapses (their own next call would lease it to them again).
    bob = make_labeler("bob", projects=[project])
    lapsed = assignment_next(project=project, labeler=bob)
    Assignment.objects.filter(pk=lapsed.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    current = assignment_next(project=project, labeler=labeler)  # a fresh lease, still open
    assert current.pk != lapsed.pk

    assert "expired 1 leases" in run("expire_leases")
    assert Assignment.objects.get(pk=lapsed.pk).status == Assignment.Status.EXPIRED
    assert Assignment.objects.get(pk=current.pk).status == Assignment.Status.LEASED
    assert "expired 0 leases" in run("expire_leases")
