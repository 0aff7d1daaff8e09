"""Demonstration projects, allow_edit, and the SFT export (issue 20): services and command."""

from __future__ import annotations

import hashlib
import json
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from annotation.datafiles.sft import SftWriter, sft_row
from annotation.errors import ServiceValidationError
from annotation.models import Annotation, Comparison, Export, TaskType
from annotation.services.comparisons import comparisons_build
from annotation.services.demonstrations import DemonstrationExportOptions, demonstrations_export
from annotation.services.imports import (
    candidate_record,
    candidates_import,
    prompt_record,
    prompts_import,
)
from annotation.services.labeling import assignment_next, ranking_submit
from annotation.services.review import annotation_reject


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def demo_project(make_project):
    return make_project("demos", task_type=TaskType.DEMONSTRATION, num_candidates=2, overlap=2)


def add_prompts(project, n=3, candidates_for=(), chat=False):
    records = []
    for i in range(n):
        raw = (
            {
                "external_id": f"q{i}",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"Question {i}?"},
                ],
            }
            if chat
            else {"external_id": f"q{i}", "text": f"Question {i}?"}
        )
        records.append(prompt_record(raw, line=i + 1))
    prompts_import(project=project, records=records)
    cands = [
        candidate_record(
            {"prompt_external_id": f"q{i}", "text": f"Draft {j} for {i}", "model": f"m{j}"},
            line=j + 1,
        )
        for i in candidates_for
        for j in range(3)
    ]
    if cands:
        candidates_import(project=project, records=cands)
    return comparisons_build(project=project)


def write(project, labeler, text, **kwargs):
    assignment = assignment_next(project=project, labeler=labeler)
    assert assignment is not None
    annotation, created = ranking_submit(
        assignment=assignment,
        labeler=labeler,
        demonstration=text,
        client_token=uuid.uuid4(),
        **kwargs,
    )
    return assignment, annotation


# -- pure writer ---------------------------------------------------------------------------


def test_sft_row_appends_the_answer_as_the_assistant_turn():
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert sft_row(prompt, "A") == {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
        ]
    }
    with pytest.raises(ValueError, match="non-empty"):
        sft_row(prompt, "  ")
    with pytest.raises(ValueError, match="message 0"):
        sft_row([{"role": "tool", "content": "x"}], "A")


def test_sft_writer_publishes_file_and_manifest_or_nothing(tmp_path):
    out = tmp_path / "sft"
    with SftWriter(out) as writer:
        writer.write([{"role": "user", "content": "Q é"}], "A ü")
        result = writer.finish(options={"include_gold": False}, source={"project": "p"})
    data = (out / "sft.jsonl").read_bytes()
    assert json.loads(data) == {
        "messages": [{"role": "user", "content": "Q é"}, {"role": "assistant", "content": "A ü"}]
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "sft"
    assert manifest["rows"] == 1 == result.rows
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == result.sha256
    assert manifest["options"] == {"include_gold": False}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "sft.jsonl"]

    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError), SftWriter(failed) as writer:
        writer.write([{"role": "user", "content": "Q"}], "A")
        raise RuntimeError("boom")
    assert list(failed.iterdir()) == []
    with pytest.raises(FileExistsError, match="not empty"):
        SftWriter(out)


# -- labeling ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_demonstration_tasks_one_per_prompt_with_up_to_k_references(demo_project):
    result = add_prompts(demo_project, n=3, candidates_for=[1])
    assert result.created == 3
    by_prompt = {c.prompt.external_id: c for c in Comparison.objects.filter(project=demo_project)}
    assert by_prompt["q0"].candidate_ids == []
    assert len(by_prompt["q1"].candidate_ids) == 2  # K references of the 3 candidates
    assert all(c.required == 2 for c in by_prompt.values())
    # Building again adds nothing: every prompt has its task.
    assert comparisons_build(project=demo_project).created == 0


@pytest.mark.django_db
def test_demonstration_is_served_by_the_queue_and_stored(demo_project, make_labeler):
    add_prompts(demo_project, n=1, candidates_for=[0])
    alice = make_labeler("alice", projects=[demo_project])
    bob = make_labeler("bob", projects=[demo_project])
    carol = make_labeler("carol", projects=[demo_project])
    assignment, annotation = write(demo_project, alice, "  The answer.  ")
    assert len(assignment.display_order) == 2  # references, shuffled per labeler
    annotation.refresh_from_db()
    assert annotation.demonstration == "The answer."
    assert annotation.ranking == []
    write(demo_project, bob, "Another answer.")
    # Overlap 2 reached: nothing left for a third labeler, nor twice for the first.
    assert assignment_next(project=demo_project, labeler=carol) is None
    assert assignment_next(project=demo_project, labeler=alice) is None
    comparison = Comparison.objects.get(project=demo_project)
    assert comparison.submitted_count == 2
    assert comparison.status == Comparison.Status.COMPLETE


@pytest.mark.django_db
def test_demonstration_correction_supersedes(demo_project, make_labeler):
    add_prompts(demo_project, n=1)
    alice = make_labeler("alice", projects=[demo_project])
    assignment, first = write(demo_project, alice, "First try.")
    second, created = ranking_submit(
        assignment=assignment, labeler=alice, demonstration="Better.", client_token=uuid.uuid4()
    )
    assert created and second.supersedes_id == first.pk
    assert Comparison.objects.get(project=demo_project).submitted_count == 1


@pytest.mark.django_db
@override_settings(ANSWER_MAX_LENGTH=20)
@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"demonstration": "   "}, "demonstration", "must not be empty"),
        ({"demonstration": "x" * 21}, "demonstration", "longer than 20"),
        ({"demonstration": "a\x00b"}, "demonstration", "NUL"),
        ({"demonstration": 12}, "demonstration", "must be text"),
        ({"demonstration": "ok", "ranking": [[1]]}, "ranking", "not a ranking"),
        ({"demonstration": "ok", "edited_text": "x"}, "edited_text", "demonstration"),
    ],
)
def test_bad_demonstrations_are_refused_and_nothing_stored(
    demo_project, make_labeler, fields, field, message
):
    add_prompts(demo_project, n=1)
    alice = make_labeler("alice", projects=[demo_project])
    assignment = assignment_next(project=demo_project, labeler=alice)
    with pytest.raises(ServiceValidationError, match=message) as caught:
        ranking_submit(assignment=assignment, labeler=alice, client_token=uuid.uuid4(), **fields)
    assert field in caught.value.errors
    assert not Annotation.objects.exists()
    assert Comparison.objects.get(project=demo_project).submitted_count == 0


@pytest.mark.django_db
def test_allow_edit_stores_the_rewrite_of_the_best_answer(
    make_project, make_labeler, make_comparisons
):
    project = make_project("edits", num_candidates=2, allow_edit=True)
    comparison = make_comparisons(project, n=1)[0]
    alice = make_labeler("alice", projects=[project])
    assignment = assignment_next(project=project, labeler=alice)
    a, b = comparison.candidate_ids
    annotation, _ = ranking_submit(
        assignment=assignment,
        labeler=alice,
        ranking=[[a], [b]],
        edited_text=" A better answer. ",
        client_token=uuid.uuid4(),
    )
    annotation.refresh_from_db()
    assert annotation.edited_text == "A better answer."
    assert annotation.ranking == [[a], [b]]


@pytest.mark.django_db
def test_edits_and_demonstrations_are_refused_where_the_project_takes_none(
    project, labeler, make_comparisons
):
    comparison = make_comparisons(project, n=1)[0]
    assignment = assignment_next(project=project, labeler=labeler)
    ranking = [[c] for c in comparison.candidate_ids]
    with pytest.raises(ServiceValidationError, match="allow_edit is off") as caught:
        ranking_submit(
            assignment=assignment,
            labeler=labeler,
            ranking=ranking,
            edited_text="x",
            client_token=uuid.uuid4(),
        )
    assert "edited_text" in caught.value.errors
    with pytest.raises(ServiceValidationError, match="only demonstration projects"):
        ranking_submit(
            assignment=assignment,
            labeler=labeler,
            ranking=ranking,
            demonstration="x",
            client_token=uuid.uuid4(),
        )
    with pytest.raises(ServiceValidationError, match="non-empty list of tiers"):
        ranking_submit(assignment=assignment, labeler=labeler, client_token=uuid.uuid4())
    assert not Annotation.objects.exists()


@pytest.mark.django_db
def test_allow_edit_is_refused_on_demonstration_projects(make_project):
    with pytest.raises(ServiceValidationError, match="allow_edit"):
        make_project("bad", task_type=TaskType.DEMONSTRATION, allow_edit=True)


# -- export --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_export_demonstrations_writes_sft_rows_and_manifest(
    demo_project, make_labeler, tmp_path, staff_user
):
    add_prompts(demo_project, n=3, chat=True)
    alice = make_labeler("alice", projects=[demo_project])
    bob = make_labeler("bob", projects=[demo_project])
    a0, _ = write(demo_project, alice, "Old answer.")
    ranking_submit(
        assignment=a0, labeler=alice, demonstration="Answer 0.", client_token=uuid.uuid4()
    )  # the correction replaces the first
    _, on_gold = write(demo_project, alice, "Answer 1.")
    _, rejected = write(demo_project, alice, "Rude answer.")
    annotation_reject(annotation=rejected, by=staff_user, reason="rude")
    write(demo_project, bob, "Bob's answer.")
    Comparison.objects.filter(pk=on_gold.comparison_id).update(is_gold=True, gold_ranking=[])

    out = StringIO()
    call_command("export_demonstrations", "demos", "--out", str(tmp_path / "sft"), stdout=out)
    rows = read_lines(tmp_path / "sft" / "sft.jsonl")
    answers = sorted(r["messages"][-1]["content"] for r in rows)
    assert answers == ["Answer 0.", "Bob's answer."]  # not the rejected, gold, superseded
    for row in rows:
        assert list(row) == ["messages"]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    export = Export.objects.get()
    manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    assert export.kind == Export.Kind.SFT
    assert manifest["format"] == "sft"
    assert manifest["rows"] == export.rows == 2
    assert manifest["counts"]["excluded_gold"] == 1
    digest = hashlib.sha256((tmp_path / "sft" / "sft.jsonl").read_bytes()).hexdigest()
    assert manifest["sha256"] == export.sha256 == digest
    assert manifest["options"]["include_gold"] is False
    assert manifest["source"]["project"] == "demos"
    assert f"export {export.pk}: 2 rows" in out.getvalue()

    with_gold = demonstrations_export(
        project=demo_project,
        options=DemonstrationExportOptions(include_gold=True),
        out_dir=tmp_path / "gold",
    )
    assert with_gold.counts["excluded_gold"] == 0
    assert with_gold.rows == 3


@pytest.mark.django_db
def test_export_demonstrations_of_edited_answers(
    make_project, make_labeler, make_comparisons, tmp_path
):
    project = make_project("edits", num_candidates=2, allow_edit=True)
    make_comparisons(project, n=2)
    alice = make_labeler("alice", projects=[project])
    for text in ("Edited 0.", ""):
        assignment = assignment_next(project=project, labeler=alice)
        ids = assignment.comparison.candidate_ids
        ranking_submit(
            assignment=assignment,
            labeler=alice,
            ranking=[[ids[0]], [ids[1]]],
            edited_text=text,
            client_token=uuid.uuid4(),
        )
    with pytest.raises(CommandError, match="--include-edited"):
        call_command("export_demonstrations", "edits", "--out", str(tmp_path / "no"))
    assert not (tmp_path / "no").exists()
    call_command(
        "export_demonstrations",
        "edits",
        "--out",
        str(tmp_path / "e"),
        "--include-edited",
        stdout=StringIO(),
    )
    rows = read_lines(tmp_path / "e" / "sft.jsonl")
    assert len(rows) == 1
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": "Edited 0."}
    assert rows[0]["messages"][0]["role"] == "user"
    assert Export.objects.get().counts["edited"] == 1


@pytest.mark.django_db
def test_export_demonstrations_refuses_a_used_folder(demo_project, tmp_path):
    add_prompts(demo_project, n=1)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(CommandError, match="not empty"):
        call_command("export_demonstrations", "demos", "--out", str(tmp_path / "used"))
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["notes.txt"]
    assert not Export.objects.exists()
    with pytest.raises(CommandError, match="No project"):
        call_command("export_demonstrations", "nope", "--out", str(tmp_path / "x"))


@pytest.mark.django_db
def test_export_demonstrations_on_a_full_disk_is_one_line_and_leaves_nothing(
    demo_project, make_labeler, tmp_path, monkeypatch
):
    from tests.annotation.test_exports import _full_open

    add_prompts(demo_project, n=3)
    alice = make_labeler("alice", projects=[demo_project])
    for i in range(3):
        write(demo_project, alice, f"Answer {i}. " + "x" * 2000)  # past the 4 KiB buffer
    monkeypatch.setattr("annotation.datafiles.sft.open", _full_open, raising=False)
    out = tmp_path / "exports" / "sft"
    with pytest.raises(CommandError) as info:
        call_command("export_demonstrations", "demos", "--out", str(out), stdout=StringIO())
    assert str(info.value) == f"cannot write the export to {out}: No space left on device"
    # The folders the export made for itself are gone again; one that was there stays.
    assert not (tmp_path / "exports").exists() and not Export.objects.exists()
    out.mkdir(parents=True)
    with pytest.raises(CommandError):
        call_command("export_demonstrations", "demos", "--out", str(out), stdout=StringIO())
    assert list(out.iterdir()) == []
    monkeypatch.undo()  # the leftovers of a failed abort blocked this as "not empty"
    call_command("export_demonstrations", "demos", "--out", str(out), stdout=StringIO())
    assert Export.objects.get().rows == 3


# -- preference export of edited answers ---------------------------------------------------


def _export_pair_rows(out, fmt):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(out / "pairs.parquet").to_pylist()
    return read_lines(out / "pairs.jsonl")


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_preference_export_adds_edited_over_each_candidate(
    make_project, make_labeler, make_comparisons, tmp_path, fmt
):
    from annotation.services.exports import EDITED_MODEL, ExportOptions, export_create

    project = make_project("edits", num_candidates=3, allow_edit=True)
    comparison = make_comparisons(project, n=1)[0]
    alice = make_labeler("alice", projects=[project])
    assignment = assignment_next(project=project, labeler=alice)
    a, b, c = comparison.candidate_ids
    ranking_submit(
        assignment=assignment,
        labeler=alice,
        ranking=[[a], [b], [c]],
        edited_text="The best answer, rewritten.",
        client_token=uuid.uuid4(),
    )
    out = tmp_path / "x"
    export = export_create(project=project, options=ExportOptions(format=fmt), out_dir=out)
    rows = _export_pair_rows(out, fmt)
    edited = [r for r in rows if r["chosen_model"] == EDITED_MODEL]
    plain = [r for r in rows if r["chosen_model"] != EDITED_MODEL]
    assert len(plain) == 3  # C(3, 2) from the ranking, as before
    assert len(edited) == 3  # edited > each candidate
    texts = {cand.pk: cand.text for cand in comparison.candidates.all()}
    assert sorted((r["rejected"], r["margin"]) for r in edited) == sorted(
        [(texts[a], 1.0), (texts[b], 2.0), (texts[c], 3.0)]
    )
    assert all(r["chosen"] == "The best answer, rewritten." for r in edited)
    # The annotation counts once (SPEC 5): its ranking's 3 pairs and its edit's 3 share
    # the weight, so a reward model trained on the file gives it no double vote.
    assert {r["annotation_id"] for r in rows} == {Annotation.objects.get().pk}
    assert [r["weight"] for r in rows] == pytest.approx([1 / 6] * 6)
    assert export.rows == 6
    assert export.counts["edited_pairs"] == 3
    assert export.counts["edited_annotations"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["edited_pairs"] == 3
    assert manifest["counts"]["pairs"] == 6


@pytest.mark.django_db
def test_consensus_export_counts_each_edit_once_beside_the_consensus_ranking(
    make_project, make_labeler, make_comparisons, tmp_path
):
    from annotation.services.exports import EDITED_MODEL, ExportOptions, export_create

    project = make_project("edits", num_candidates=3, allow_edit=True, overlap=2)
    comparison = make_comparisons(project, n=1)[0]
    a, b, c = comparison.candidate_ids
    for name, edit in (("alice", "Alice's rewrite."), ("bob", "")):
        labeler = make_labeler(name, projects=[project])
        ranking_submit(
            assignment=assignment_next(project=project, labeler=labeler),
            labeler=labeler,
            ranking=[[a], [b], [c]],
            edited_text=edit,
            client_token=uuid.uuid4(),
        )
    options = ExportOptions(aggregate="consensus")
    export_create(project=project, options=options, out_dir=tmp_path / "x")
    rows = read_lines(tmp_path / "x" / "pairs.jsonl")
    pooled = [r for r in rows if r["annotation_id"] is None]
    edited = [r for r in rows if r["chosen_model"] == EDITED_MODEL]
    assert len(pooled) == 3 and sum(r["weight"] for r in pooled) == pytest.approx(1.0)
    assert len(edited) == 3 and sum(r["weight"] for r in edited) == pytest.approx(1.0)
    assert {r["labeler"] for r in edited} != {"consensus"}


@pytest.mark.django_db
def test_preference_export_of_a_demonstration_project_is_refused(demo_project, tmp_path):
    add_prompts(demo_project, n=1)
    with pytest.raises(CommandError, match="export_demonstrations"):
        call_command("export_preferences", "demos", "--out", str(tmp_path / "p"))
    assert not (tmp_path / "p").exists()


@pytest.mark.django_db
def test_create_project_takes_demonstration_and_allow_edit():
    from annotation.models import Project

    call_command("create_project", "w", "--task-type", "demonstration", stdout=StringIO())
    call_command("create_project", "e", "--allow-edit", stdout=StringIO())
    assert Project.objects.get(slug="w").task_type == "demonstration"
    assert Project.objects.get(slug="e").allow_edit is True
    with pytest.raises(CommandError, match="allow_edit"):
        call_command("create_project", "x", "--task-type", "demonstration", "--allow-edit")


# -- the labeling page -----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_page_writes_a_demonstration_with_javascript_off(client, demo_project, make_labeler):
    from django.urls import reverse

    add_prompts(demo_project, n=1, candidates_for=[0])
    from annotation.models import Candidate

    Candidate.objects.filter(prompt__project=demo_project).update(text="<script>x()</script>")
    alice = make_labeler("alice", projects=[demo_project])
    client.force_login(alice)
    page = client.get(reverse("label", kwargs={"slug": "demos"}))
    html = page.content.decode()
    assert 'name="demonstration"' in html
    assert "Reference 1" in html and "Reference 2" in html
    assert "<script>x()</script>" not in html  # model output is escaped
    assert 'name="rank_' not in html
    assignment = page.context["assignment"]
    url = reverse("assignment-submit", kwargs={"assignment_id": assignment.pk})
    empty = client.post(url, {"client_token": str(uuid.uuid4()), "demonstration": "  "})
    assert empty.status_code == 400
    assert "must not be empty" in empty.content.decode()
    sent = client.post(url, {"client_token": str(uuid.uuid4()), "demonstration": "Mine."})
    assert sent.status_code == 302
    assert Annotation.objects.get().demonstration == "Mine."
    history = client.get(reverse("history")).content.decode()
    assert "Your answer:" in history and "Mine." in history
    # Corrections reopen the stored text.
    edit = client.get(reverse("assignment-edit", kwargs={"assignment_id": assignment.pk}))
    assert ">Mine.</textarea>" in edit.content.decode()


@pytest.mark.django_db
def test_the_ranking_page_offers_the_rewrite_only_with_allow_edit(
    client, make_project, make_labeler, make_comparisons
):
    from django.urls import reverse

    project = make_project("edits", num_candidates=2, allow_edit=True)
    make_comparisons(project, n=1)
    alice = make_labeler("alice", projects=[project])
    client.force_login(alice)
    page = client.get(reverse("label", kwargs={"slug": "edits"}))
    assert 'name="edited_text"' in page.content.decode()
    assignment = page.context["assignment"]
    a, b = assignment.display_order
    sent = client.post(
        reverse("assignment-submit", kwargs={"assignment_id": assignment.pk}),
        {
            "client_token": str(uuid.uuid4()),
            f"rank_{a}": "1",
            f"rank_{b}": "2",
            "edited_text": "Rewritten.",
        },
    )
    assert sent.status_code == 302
    assert Annotation.objects.get().edited_text == "Rewritten."

    plain = make_project("plain", num_candidates=2)
    make_comparisons(plain, n=1, prefix="x")
    plain.members.add(alice)
    assert (
        'name="edited_text"'
        not in client.get(reverse("label", kwargs={"slug": "plain"})).content.decode()
    )


def test_answers_are_stripped_with_lf_line_breaks():
    from annotation.rules.answers import demonstration_clean, edited_text_clean

    assert demonstration_clean(demonstration=" a\r\nb\rc \n", max_length=50) == "a\nb\nc"
    assert edited_text_clean(edited_text="x\r\ny", allow_edit=True, max_length=50) == "x\ny"
    assert edited_text_clean(edited_text="", allow_edit=False, max_length=50) == ""


@pytest.mark.django_db
def test_an_sft_export_downloads_verified(demo_project, make_labeler, staff_user, tmp_path):
    from tests.api.conftest import token_client

    add_prompts(demo_project, n=1)
    write(demo_project, make_labeler("alice", projects=[demo_project]), "An answer.")
    export = demonstrations_export(project=demo_project, out_dir=tmp_path / "s")
    client = token_client(staff_user)
    url = f"/api/v1/exports/{export.pk}/download/"
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == (tmp_path / "s" / "sft.jsonl").read_bytes()
    assert client.get(url + "?file=manifest").status_code == 200
    assert client.get(url + "?file=rankings").status_code == 404
    (tmp_path / "s" / "sft.jsonl").write_text('{"messages": []}\n')
    assert client.get(url).status_code == 409


@pytest.mark.django_db
def test_sft_file_loads_unchanged_with_datasets(demo_project, make_labeler, tmp_path):
    datasets = pytest.importorskip("datasets")
    add_prompts(demo_project, n=2, chat=True)
    alice = make_labeler("alice", projects=[demo_project])
    write(demo_project, alice, "One.")
    write(demo_project, alice, "Two.")
    demonstrations_export(project=demo_project, out_dir=tmp_path / "s")
    loaded = datasets.load_dataset(
        "json",
        data_files=str(tmp_path / "s" / "sft.jsonl"),
        split="train",
        cache_dir=str(tmp_path / "c"),
    )
    assert loaded.column_names == ["messages"]
    assert sorted(row["messages"][-1]["content"] for row in loaded) == ["One.", "Two."]
    assert all(row["messages"][-1]["role"] == "assistant" for row in loaded)
