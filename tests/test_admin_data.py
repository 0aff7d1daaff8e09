"""Exports and imports from the admin: the options form, download links, file uploads."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.models import Candidate, Export, Prompt
from annotation.services.labeling import assignment_next, ranking_submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(client, db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(user)
    return user


@pytest.fixture
def labeled(project, labeler, make_comparisons):
    make_comparisons(project, n=2)
    assignment = assignment_next(project=project, labeler=labeler)
    ranking_submit(
        assignment=assignment,
        labeler=labeler,
        ranking=[[c] for c in assignment.display_order],
        client_token=uuid.uuid4(),
    )
    return project


OPTIONS = {
    "pairing": "best_vs_rest",
    "aggregate": "none",
    "min_agreement": "",
    "format": "jsonl",
    "test_fraction": "0.5",
}


def test_export_form_calls_the_service_with_the_options(client, root, labeled, tmp_path, settings):
    settings.DATA_DIR = tmp_path
    url = reverse("admin:annotation_project_export", args=[labeled.pk])
    assert "best vs rest" in client.get(url).content.decode()
    response = client.post(url, {**OPTIONS, "include_gold": "on"}, follow=True)
    export = Export.objects.get()
    assert export.rows == 3  # K=4, best vs rest: 3 pairs
    assert export.options["pairing"] == "best_vs_rest" and export.options["include_gold"] is True
    assert export.options["test_fraction"] == 0.5 and export.created_by == root
    page = response.content.decode()
    download = reverse("api:export-download", kwargs={"export_id": export.pk})
    assert f"Export {export.pk} of demo: 3 pairs." in page and download in page
    assert client.get(download).status_code == 200  # the admin's session signs the API in
    listing = client.get(reverse("admin:annotation_export_changelist")).content.decode()
    assert f'href="{download}"' in listing
    detail = client.get(reverse("admin:annotation_export_change", args=[export.pk]))
    assert f'href="{download}"' in detail.content.decode()


def test_export_form_refuses_bad_options_and_writes_nothing(
    client, root, labeled, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    url = reverse("admin:annotation_project_export", args=[labeled.pk])
    response = client.post(url, {**OPTIONS, "min_agreement": "1.5", "format": "csv"})
    page = response.content.decode()
    assert response.status_code == 200 and "Select a valid choice" in page
    assert "less than or equal to 1" in page
    assert Export.objects.count() == 0


def test_export_form_is_refused_to_labelers(client, labeler, project):
    client.force_login(labeler)
    response = client.get(reverse("admin:annotation_project_export", args=[project.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def upload(client, project, kind, name, lines):
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.post(
        reverse("admin:annotation_project_import", args=[project.pk]),
        {"kind": kind, "file": SimpleUploadedFile(name, body)},
        follow=True,
    )


def test_import_prompts_then_candidates_from_uploads(client, root, project):
    response = upload(
        client, project, "prompts", "prompts.jsonl", [{"external_id": "q1", "text": "Hi?"}]
    )
    assert "prompts.jsonl: 1 created, 0 unchanged." in response.content.decode()
    again = upload(
        client, project, "prompts", "prompts.jsonl", [{"external_id": "q1", "text": "Hi?"}]
    )
    assert "0 created, 1 unchanged." in again.content.decode()
    response = upload(
        client,
        project,
        "candidates",
        "cands.jsonl",
        [{"prompt_external_id": "q1", "text": "Hello.", "model": "m"}],
    )
    assert "cands.jsonl: 1 created" in response.content.decode()
    assert Candidate.objects.get().model_name == "m"


def test_a_bad_line_imports_nothing_and_names_file_and_line(client, root, project):
    lines = [{"text": "fine"}, {"text": ""}, {"text": "also fine"}]
    response = upload(client, project, "prompts", "batch.jsonl", lines)
    page = response.content.decode()
    assert "batch.jsonl:2:" in page and "Nothing was imported." in page
    assert "/tmp" not in page.split("batch.jsonl:2:")[0][-40:]
    assert Prompt.objects.count() == 0
    response = upload(
        client, project, "candidates", "c.jsonl", [{"prompt_external_id": "missing", "text": "x"}]
    )
    assert "c.jsonl:1:" in response.content.decode() and Candidate.objects.count() == 0


def test_an_upload_with_an_id_past_64_bits_is_a_line_error_not_a_500(client, root, project):
    lines = [{"prompt_id": 99999999999999999999999, "text": "t"}]
    response = upload(client, project, "candidates", "c.jsonl", lines)
    page = response.content.decode()
    assert response.status_code == 200
    assert "c.jsonl:1: &#x27;prompt_id&#x27; must be an id from 1 to" in page
    assert "Nothing was imported." in page and Candidate.objects.count() == 0


def test_uploads_past_the_request_cap_up_to_import_max_bytes_are_taken(
    client, root, project, settings
):
    # The upload page is a staff import endpoint: it takes IMPORT_MAX_BYTES, not the 1 MiB
    # every other request is held to.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    settings.IMPORT_MAX_BYTES = 100_000
    lines = [{"external_id": f"q{i}", "text": f"question number {i}"} for i in range(200)]
    response = upload(client, project, "prompts", "many.jsonl", lines)
    assert response.status_code == 200, response.content[:200]
    assert "many.jsonl: 200 created" in response.content.decode()
    settings.IMPORT_MAX_BYTES = 5_000
    response = upload(client, project, "prompts", "more.jsonl", lines)
    assert response.status_code == 413
    assert Prompt.objects.count() == 200


def test_only_staff_may_send_the_upload_page_a_body_past_the_request_cap(
    labeler, project, settings, monkeypatch
):
    from django.contrib.auth.models import Permission
    from django.http.multipartparser import MultiPartParser
    from django.test import Client

    parsed = []
    original = MultiPartParser.parse
    monkeypatch.setattr(MultiPartParser, "parse", lambda self: parsed.append(1) or original(self))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    settings.IMPORT_MAX_BYTES = 100_000
    lines = [{"text": f"question number {i}"} for i in range(200)]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    url = reverse("admin:annotation_project_import", args=[project.pk])
    # Anyone can hold a CSRF cookie of their own; the CSRF check would parse the body.
    anonymous = Client(enforce_csrf_checks=True)
    anonymous.cookies["csrftoken"] = "a" * 32
    signed_in = Client(enforce_csrf_checks=True)
    signed_in.force_login(labeler)
    # Staff too, without the permission the page asks for (change_project).
    viewer = get_user_model().objects.create_user("viewer", password="pw-view-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_project"))
    viewing = Client(enforce_csrf_checks=True)
    viewing.force_login(viewer)
    for client in (anonymous, signed_in, viewing):
        form = {"kind": "prompts", "file": SimpleUploadedFile("p.jsonl", body)}
        response = client.post(url, form, HTTP_X_CSRFTOKEN="a" * 32)
        assert response.status_code == 413
    assert parsed == [] and Prompt.objects.count() == 0


def test_the_export_action_needs_change_permission(client, labeled, settings, tmp_path):
    from django.contrib.auth.models import Permission

    settings.DATA_DIR = tmp_path
    viewer = get_user_model().objects.create_user("viewer", password="pw-view-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_project"))
    client.force_login(viewer)
    changelist = reverse("admin:annotation_project_changelist")
    assert "export_preferences" not in client.get(changelist).content.decode()
    client.post(changelist, {"action": "export_preferences", "_selected_action": [labeled.pk]})
    assert Export.objects.count() == 0
    viewer.user_permissions.add(Permission.objects.get(codename="change_project"))
    client.post(changelist, {"action": "export_preferences", "_selected_action": [labeled.pk]})
    assert Export.objects.count() == 1


def test_uploads_over_import_max_bytes_are_refused(client, root, project, settings):
    settings.IMPORT_MAX_BYTES = 10
    response = upload(
        client, project, "prompts", "big.jsonl", [{"text": "much more than ten bytes"}]
    )
    assert "IMPORT_MAX_BYTES" in response.content.decode()
    assert Prompt.objects.count() == 0


def test_a_prompt_upload_is_stored_a_batch_at_a_time_after_every_line_is_checked(
    client, root, project, monkeypatch
):
    # The page holds one batch of records, not the file's: each batch is written before the
    # next is read. A bad last line is still found before anything is written.
    from annotation.services import imports

    monkeypatch.setattr(imports, "BULK_BATCH", 2)
    stored_when_read = []
    real_record = imports.prompt_record

    def counting(raw, *, line):
        stored_when_read.append(Prompt.objects.filter(project=project).count())
        return real_record(raw, line=line)

    monkeypatch.setattr(imports, "prompt_record", counting)
    lines = [{"external_id": f"p{i}", "text": f"q{i}"} for i in range(5)] + [{"text": ""}]
    page = upload(client, project, "prompts", "p.jsonl", lines).content.decode()
    assert "p.jsonl:6: &#x27;text&#x27; must be non-empty" in page
    assert stored_when_read == [0] * 6 and Prompt.objects.count() == 0

    stored_when_read.clear()
    lines[-1] = {"text": "q0"}  # no external_id, same text as p0: a new prompt (ids differ)
    lines.append({"text": "q0"})  # the same again, in the next batch: unchanged
    page = upload(client, project, "prompts", "p.jsonl", lines).content.decode()
    assert "p.jsonl: 6 created, 1 unchanged." in page
    # First pass: 7 lines checked, none stored; second: batches of 2 stored as it goes.
    assert stored_when_read == [0] * 7 + [0, 0, 2, 2, 4, 4, 6]


def test_every_conflict_of_an_upload_is_named_across_batches_and_nothing_is_kept(
    client, root, project, monkeypatch
):
    from annotation.services import imports

    upload(client, project, "prompts", "a.jsonl", [{"external_id": "x", "text": "old x"}])
    upload(client, project, "prompts", "a.jsonl", [{"external_id": "y", "text": "old y"}])
    monkeypatch.setattr(imports, "BULK_BATCH", 2)
    monkeypatch.setattr(imports, "MAX_NAMED_CONFLICTS", 1)
    lines = [
        {"external_id": "n1", "text": "new"},
        {"external_id": "x", "text": "changed x"},  # line 2: batch 1
        {"external_id": "n2", "text": "new 2"},
        {"external_id": "n3", "text": "new 3"},
        {"external_id": "y", "text": "changed y"},  # line 5: batch 3, after a clean batch
    ]
    page = upload(client, project, "prompts", "b.jsonl", lines).content.decode()
    assert "b.jsonl:2: external_id &#x27;x&#x27; already exists with different content" in page
    assert "(and 1 more)" in page and "Nothing was imported." in page
    assert sorted(Prompt.objects.values_list("external_id", flat=True)) == ["x", "y"]
    with pytest.raises(imports.ServiceValidationError) as info:
        records = (imports.prompt_record(line, line=n) for n, line in enumerate(lines, 1))
        imports.prompts_import(project=project, records=records)
    assert info.value.errors["conflicts"] == {
        2: "external_id 'x' already exists with different content"
    }  # one named (MAX_NAMED_CONFLICTS), both counted
    assert "(and 1 more)" in info.value.detail
