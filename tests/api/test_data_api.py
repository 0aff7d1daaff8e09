"""Contract tests of the staff endpoints: imports, build, exports, download, stats."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
from pathlib import Path

import pytest

from annotation.models import Candidate, Comparison, Export, Prompt
from tests.api.conftest import strict

pytestmark = pytest.mark.django_db


def url(slug: str, what: str) -> str:
    return f"/api/v1/projects/{slug}/{what}/"


def post(client, path: str, body) -> object:
    return client.post(path, body, format="json")


# ---------------------------------------------------------------------------------------
# POST /api/v1/projects/{slug}/prompts/
# ---------------------------------------------------------------------------------------

PROMPTS = [
    {"external_id": "a", "text": "What is 2+2?", "metadata": {"topic": "math"}},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
        ]
    },
]


def test_prompts_import_creates_then_replays_as_unchanged(staff, project):
    response = post(staff, url("demo", "prompts"), {"prompts": PROMPTS})

    assert response.status_code == 200
    assert response.json() == {"created": 2, "unchanged": 0}
    text, chat = Prompt.objects.filter(project=project).order_by("id")
    assert (text.external_id, text.messages, text.metadata, text.is_chat) == (
        "a",
        [{"role": "user", "content": "What is 2+2?"}],
        {"topic": "math"},
        False,
    )
    assert chat.external_id is None and chat.is_chat and len(chat.messages) == 2

    again = post(staff, url("demo", "prompts"), {"prompts": PROMPTS})

    assert again.status_code == 200
    assert again.json() == {"created": 0, "unchanged": 2}
    assert Prompt.objects.count() == 2


def test_prompts_import_lists_every_bad_item_and_stores_nothing(staff, project):
    items = [
        {"text": ""},
        {"external_id": "ok", "text": "fine"},
        {"messages": [{"role": "bot", "content": "hi"}]},
        {"external_id": "dup", "text": "one"},
        {"external_id": "dup", "text": "two"},
        "just a string",
    ]

    response = post(staff, url("demo", "prompts"), {"prompts": items})

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "prompts": {
            "0": ["'text' must be non-empty text"],
            "2": ["messages[0].role must be one of system, user, assistant"],
            "4": ["duplicate external_id 'dup' (first at item 3)"],
            "5": ["each record must be a JSON object"],
        }
    }
    assert response.json()["detail"] == "prompts.0: 'text' must be non-empty text"
    assert Prompt.objects.count() == 0


def test_prompts_import_refuses_every_changed_external_id_by_item(staff, project):
    old = [{"external_id": "a", "text": "old"}, {"external_id": "c", "text": "old too"}]
    post(staff, url("demo", "prompts"), {"prompts": old})
    items = [
        {"external_id": "b", "text": "new"},
        {"external_id": "a", "text": "changed"},
        {"external_id": "c", "text": "changed too"},
    ]

    response = post(staff, url("demo", "prompts"), {"prompts": items})

    assert response.status_code == 400
    # Each conflict named (not only the first), worded like the other item errors.
    assert response.json()["errors"] == {
        "prompts": {
            "1": ["external_id 'a' already exists with different content"],
            "2": ["external_id 'c' already exists with different content"],
        }
    }
    assert response.json()["detail"].startswith("prompts.1: external_id 'a' already exists")
    assert sorted(Prompt.objects.values_list("external_id", flat=True)) == ["a", "c"]


def test_prompts_import_names_shape_errors_and_conflicts_in_one_answer(staff, project):
    post(staff, url("demo", "prompts"), {"prompts": [{"external_id": "a", "text": "old"}]})
    items = [
        {"external_id": "b", "text": ""},
        {"external_id": "a", "text": "changed"},
        {"external_id": "c", "text": "fine"},
        {"text": 7},
    ]

    response = post(staff, url("demo", "prompts"), {"prompts": items})

    assert response.status_code == 400
    errors = response.json()["errors"]["prompts"]
    assert list(errors) == ["0", "1", "3"]  # item order, the conflict among the shape errors
    assert errors["1"] == ["external_id 'a' already exists with different content"]
    assert response.json()["detail"] == "prompts.0: 'text' must be non-empty text"
    assert sorted(Prompt.objects.values_list("external_id", flat=True)) == ["a"]


@pytest.mark.parametrize("body", [{}, {"prompts": []}, {"prompts": {"text": "x"}}, [], "x"])
def test_prompts_import_refuses_a_body_without_a_list(staff, project, body):
    response = post(staff, url("demo", "prompts"), body)
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "errors"}
    assert Prompt.objects.count() == 0


def test_prompts_import_past_the_limit_is_413(staff, project, settings):
    settings.BULK_IMPORT_MAX_ITEMS = 3
    items = [{"text": f"q{i}"} for i in range(4)]

    response = post(staff, url("demo", "prompts"), {"prompts": items})

    assert response.status_code == 413
    assert response.json() == {
        "detail": "4 items is more than the limit of 3 per request; split the import into "
        "several requests.",
        "errors": {"prompts": ["at most 3 items"]},
    }
    assert Prompt.objects.count() == 0
    assert post(staff, url("demo", "prompts"), {"prompts": items[:3]}).status_code == 200


def test_prompts_import_into_an_unknown_project_is_404(staff):
    assert post(staff, url("nope", "prompts"), {"prompts": PROMPTS}).status_code == 404


# ---------------------------------------------------------------------------------------
# POST /api/v1/projects/{slug}/candidates/
# ---------------------------------------------------------------------------------------


@pytest.fixture
def prompts(staff, project):
    post(staff, url("demo", "prompts"), {"prompts": PROMPTS})
    return list(Prompt.objects.filter(project=project).order_by("id"))


def test_candidates_import_by_external_id_and_by_prompt_id(staff, prompts):
    items = [
        {"prompt_external_id": "a", "text": "4", "model": "m1"},
        {"prompt_id": prompts[1].pk, "text": "Blue.", "model": "m2"},
    ]

    response = post(staff, url("demo", "candidates"), {"candidates": items})

    assert response.status_code == 200
    assert response.json() == {"created": 2, "unchanged": 0}
    assert sorted(Candidate.objects.values_list("prompt_id", "text", "model_name")) == [
        (prompts[0].pk, "4", "m1"),
        (prompts[1].pk, "Blue.", "m2"),
    ]
    again = post(staff, url("demo", "candidates"), {"candidates": items})
    assert again.json() == {"created": 0, "unchanged": 2}


def test_candidates_import_names_the_item_with_an_unknown_prompt(staff, prompts, other_project):
    foreign = Prompt.objects.create(
        project=other_project, messages=[{"role": "user", "content": "x"}], content_hash="f"
    )
    items = [
        {"prompt_external_id": "a", "text": "4"},
        {"prompt_external_id": "zz", "text": "5"},
    ]

    response = post(staff, url("demo", "candidates"), {"candidates": items})

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "candidates": {"1": ["no prompt with prompt_external_id 'zz' in project demo"]}
    }
    # A prompt of another project is as unknown as a missing one.
    response = post(
        staff, url("demo", "candidates"), {"candidates": [{"prompt_id": foreign.pk, "text": "4"}]}
    )
    assert response.status_code == 400
    assert list(response.json()["errors"]["candidates"]) == ["0"]
    assert Candidate.objects.count() == 0


def test_candidates_import_lists_malformed_items(staff, prompts):
    items = [{"text": "no prompt"}, {"prompt_external_id": "a"}, {"prompt_id": "7", "text": "x"}]

    response = post(staff, url("demo", "candidates"), {"candidates": items})

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "candidates": {
            "0": ["missing 'prompt_external_id' or 'prompt_id'"],
            "1": ["'text' must be non-empty text"],
            "2": ["'prompt_id' must be an integer"],
        }
    }


def test_candidates_import_refuses_ids_out_of_the_database_range(staff, prompts):
    # Past 64 bits the streaming parser already refuses the body ("integer overflow").
    items = [{"prompt_id": 0, "text": "x"}, {"prompt_id": 2**63, "text": "y"}]
    response = post(staff, url("demo", "candidates"), {"candidates": items[:1]})
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "candidates": {"0": ["'prompt_id' must be an id from 1 to 9223372036854775807"]}
    }
    assert post(staff, url("demo", "candidates"), {"candidates": items}).status_code == 400
    assert Candidate.objects.count() == 0


def test_candidates_import_past_the_limit_is_413(staff, prompts, settings):
    settings.BULK_IMPORT_MAX_ITEMS = 1
    items = [{"prompt_external_id": "a", "text": str(i)} for i in range(2)]
    assert post(staff, url("demo", "candidates"), {"candidates": items}).status_code == 413
    assert Candidate.objects.count() == 0


# ---------------------------------------------------------------------------------------
# POST /api/v1/projects/{slug}/comparisons/build/
# ---------------------------------------------------------------------------------------


def test_build_groups_candidates_into_comparisons_of_k(staff, prompts):
    items = [{"prompt_external_id": "a", "text": f"answer {i}", "model": "m"} for i in range(4)]
    items += [{"prompt_id": prompts[1].pk, "text": f"colour {i}"} for i in range(2)]
    post(staff, url("demo", "candidates"), {"candidates": items})

    response = staff.post(url("demo", "comparisons/build"))

    assert response.status_code == 200
    assert response.json() == {"created": 1, "prompts_short": 1}
    [comparison] = Comparison.objects.all()
    assert comparison.prompt_id == prompts[0].pk and comparison.required == 2
    assert staff.post(url("demo", "comparisons/build")).json() == {
        "created": 0,
        "prompts_short": 1,
    }


# ---------------------------------------------------------------------------------------
# Exports and stats
# ---------------------------------------------------------------------------------------


@pytest.fixture
def annotated(alice, comparisons):
    """One strict ranking by alice on the first comparison (K=4: 6 pairs)."""
    payload = alice.post("/api/v1/projects/demo/assignments/next/").json()
    body = {"ranking": strict(payload), "client_token": str(uuid.uuid4())}
    response = alice.post(
        f"/api/v1/assignments/{payload['assignment']['id']}/submit/", body, format="json"
    )
    assert response.status_code == 201
    return payload


def test_export_create_and_download(staff, annotated):
    response = post(staff, url("demo", "exports"), {"pairing": "all_pairs"})

    assert response.status_code == 201
    body = response.json()
    export = Export.objects.get()
    assert body == {
        "id": export.pk,
        "rows": 6,
        "sha256": export.sha256,
        "download_url": f"http://testserver/api/v1/exports/{export.pk}/download/",
    }
    assert export.created_by.username == "admin"

    download = staff.get(body["download_url"])

    assert download.status_code == 200
    content = b"".join(download.streaming_content)
    assert hashlib.sha256(content).hexdigest() == body["sha256"]
    rows = [json.loads(line) for line in content.decode().splitlines()]
    assert len(rows) == 6
    candidates = [c["text"] for c in annotated["assignment"]["comparison"]["candidates"]]
    assert (rows[0]["chosen"], rows[0]["rejected"]) in {
        (candidates[i], candidates[j]) for i in range(4) for j in range(i + 1, 4)
    }
    assert "attachment" in download["Content-Disposition"]


def test_an_unknown_export_option_is_400_and_exports_nothing(staff, annotated):
    # "pairng" would otherwise export with the default pairing, as if the client had not asked.
    response = post(staff, url("demo", "exports"), {"pairng": "best_vs_rest"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"pairng": ["Unknown field."]}
    assert not Export.objects.exists()


def test_export_download_of_manifest_rankings_and_all(staff, annotated):
    export_id = post(staff, url("demo", "exports"), {}).json()["id"]
    base = f"/api/v1/exports/{export_id}/download/"

    manifest = json.loads(b"".join(staff.get(base + "?file=manifest").streaming_content))
    assert manifest["source"]["project"] == "demo"
    rankings = b"".join(staff.get(base + "?file=rankings").streaming_content).splitlines()
    assert len(rankings) == 1
    archive = zipfile.ZipFile(io.BytesIO(b"".join(staff.get(base + "?file=all").streaming_content)))
    assert sorted(archive.namelist()) == ["manifest.json", "pairs.jsonl", "rankings.jsonl"]
    bad = staff.get(base + "?file=../../etc/passwd")
    assert bad.status_code == 400
    assert "file" in bad.json()["errors"]


def test_hf_export_with_no_pairs_is_a_valid_empty_dataset(staff, comparisons):
    # No annotations, so no pairs: this was a 500 for format=hf (jsonl and parquet were fine).
    datasets = pytest.importorskip("datasets")
    response = post(staff, url("demo", "exports"), {"format": "hf"})
    assert response.status_code == 201, response.content
    assert response.json()["rows"] == 0
    export = Export.objects.get()
    assert len(datasets.load_from_disk(str(Path(export.path) / "pairs"))) == 0
    archive = staff.get(f"/api/v1/exports/{export.pk}/download/?file=all")
    assert archive.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).namelist()
    assert "manifest.json" in names and any(n.startswith("pairs/") for n in names)


def test_export_download_all_zips_only_what_the_manifest_lists(staff, annotated):
    export_id = post(staff, url("demo", "exports"), {}).json()["id"]
    folder = Path(Export.objects.get().path)
    (folder / "secrets.env").write_text("TOKEN=planted later")
    (folder / "sub").mkdir()
    (folder / "sub" / "more.txt").write_text("x")
    response = staff.get(f"/api/v1/exports/{export_id}/download/?file=all")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == ["manifest.json", "pairs.jsonl", "rankings.jsonl"]


@pytest.mark.parametrize("edited", ["pairs.jsonl", "rankings.jsonl"])
@pytest.mark.parametrize("which", ["pairs", "rankings", "all"])
def test_export_download_refuses_edited_bytes(staff, annotated, edited, which):
    export_id = post(staff, url("demo", "exports"), {}).json()["id"]
    path = Path(Export.objects.get().path) / edited
    path.write_bytes(path.read_bytes().replace(b"train", b"tra1n", 1) + b"\n")
    response = staff.get(f"/api/v1/exports/{export_id}/download/?file={which}")
    if which != "all" and not edited.startswith(which):
        assert response.status_code == 200  # the other table is untouched
        return
    assert response.status_code == 409, response.content
    detail = response.json()["detail"]
    assert f"{edited} was modified after the export" in detail and "refusing" in detail


def test_export_download_refuses_an_edited_manifest(staff, annotated):
    export_id = post(staff, url("demo", "exports"), {}).json()["id"]
    folder = Path(Export.objects.get().path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["pairs"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for which in ("manifest", "pairs", "all"):
        response = staff.get(f"/api/v1/exports/{export_id}/download/?file={which}")
        assert response.status_code == 409
        assert "manifest.json no longer matches" in response.json()["detail"]
    (folder / "manifest.json").write_text("{not json")
    response = staff.get(f"/api/v1/exports/{export_id}/download/?file=manifest")
    assert response.status_code == 409 and "manifest.json was modified" in response.json()["detail"]


def test_export_download_refuses_an_edited_hf_folder(staff, annotated):
    pytest.importorskip("datasets")
    export_id = post(staff, url("demo", "exports"), {"format": "hf"}).json()["id"]
    folder = Path(Export.objects.get().path)
    ok = staff.get(f"/api/v1/exports/{export_id}/download/?file=pairs")
    assert ok.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(b"".join(ok.streaming_content))).namelist()
    assert "state.json" in names
    (folder / "pairs" / "extra.arrow").write_bytes(b"planted")
    response = staff.get(f"/api/v1/exports/{export_id}/download/?file=pairs")
    assert response.status_code == 409 and "pairs was modified" in response.json()["detail"]


def test_export_options_are_validated(staff, annotated):
    response = post(staff, url("demo", "exports"), {"format": "csv", "min_agreement": 2})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"format", "min_agreement"}
    assert Export.objects.count() == 0


def test_export_download_of_an_unknown_export_is_404(staff):
    assert staff.get("/api/v1/exports/999/download/").status_code == 404


def test_stats_reports_progress(staff, annotated):
    response = staff.get(url("demo", "stats"))

    assert response.status_code == 200
    body = response.json()
    assert body["project"] == "demo"
    assert body["progress"]["comparisons"] == 3
    assert body["progress"]["complete"] == 0
    assert body["progress"]["assignments_submitted"] == 1
    assert body["progress"]["annotations"] == 1
    assert [row["labeler"] for row in body["labelers"]] == ["alice"]
