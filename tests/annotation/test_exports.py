"""The export service, the export_preferences command and the stats selector (database)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotation.datafiles.export import table_filename
from annotation.datafiles.jsonl import read_jsonl
from annotation.errors import ServiceValidationError
from annotation.models import Annotation, Assignment, Comparison, Export
from annotation.selectors.stats import project_stats
from annotation.services.exports import (
    CONSENSUS_LABELER,
    ExportOptions,
    export_create,
    labeler_pseudonym,
)


def annotate(
    comparison,
    labeler,
    ranking,
    *,
    flags=None,
    all_bad=False,
    supersedes=None,
    shown=None,
    time_ms=1000,
):
    """Store a submitted annotation directly (the labeling services are tested elsewhere)."""
    now = timezone.now()
    assignment, _ = Assignment.objects.get_or_create(
        comparison=comparison,
        labeler=labeler,
        defaults=dict(
            display_order=shown or list(comparison.candidate_ids),
            status=Assignment.Status.SUBMITTED,
            leased_at=now,
            expires_at=now + timedelta(minutes=10),
            submitted_at=now,
        ),
    )
    return Annotation.objects.create(
        assignment=assignment,
        comparison=comparison,
        labeler=labeler,
        ranking=ranking,
        flags=flags or {},
        all_bad=all_bad,
        time_spent_ms=time_ms,
        client_token=uuid.uuid4(),
        supersedes=supersedes,
    )


def strict(comparison, reverse=False):
    ids = list(comparison.candidate_ids)
    return [[c] for c in (reversed(ids) if reverse else ids)]


def export_pairs_path(export: Export) -> Path:
    """The pairs file (or folder, for `hf`) of an export: what the download endpoint serves."""
    return Path(export.path) / table_filename("pairs", export.format)


@pytest.fixture
def labelers(make_labeler, project):
    return [make_labeler(name, projects=[project]) for name in ("ann", "bob", "cat")]


@pytest.fixture
def ranked(project, labelers, make_comparisons):
    """Three comparisons (K=4), each ranked the same strict way by ann and bob."""
    comparisons = make_comparisons(project, n=3)
    for comparison in comparisons:
        for labeler in labelers[:2]:
            annotate(comparison, labeler, strict(comparison))
    return comparisons


def export(project, tmp_path, name="out", **options):
    return export_create(project=project, options=ExportOptions(**options), out_dir=tmp_path / name)


def test_export_writes_files_and_an_immutable_record(
    project, ranked, labelers, tmp_path, staff_user
):
    result = export_create(
        project=project, options=ExportOptions(), created_by=staff_user, out_dir=tmp_path / "out"
    )
    assert isinstance(result, Export) and result.pk
    assert result.rows == 3 * 2 * 6  # 3 comparisons, 2 annotations, C(4,2) pairs each
    assert result.format == "jsonl" and result.created_by == staff_user
    assert result.options["pairing"] == "all_pairs"
    pairs_file = export_pairs_path(result)
    assert pairs_file == tmp_path / "out" / "pairs.jsonl"
    assert result.sha256 == hashlib.sha256(pairs_file.read_bytes()).hexdigest()

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files"]["pairs"]["sha256"] == result.sha256
    rankings_file = tmp_path / "out" / manifest["files"]["rankings"]["path"]
    assert (
        manifest["files"]["rankings"]["sha256"]
        == hashlib.sha256(rankings_file.read_bytes()).hexdigest()
    )
    assert manifest["source"]["project"] == "demo"
    assert manifest["source"]["created_by"] == "admin"
    assert manifest["counts"]["rankings"] == 6 and manifest["counts"]["annotations_read"] == 6
    assert manifest["prompt_format"] == "text"

    rows = read_jsonl(pairs_file)
    first = ranked[0]
    ids = list(first.candidate_ids)
    row = rows[0]
    assert row["prompt"] == "Question p0?"
    assert row["chosen"] == first.candidates.get(pk=ids[0]).text
    assert row["rejected"] == first.candidates.get(pk=ids[1]).text
    assert row["margin"] == 1.0 and row["weight"] == pytest.approx(1 / 6)
    assert row["comparison_id"] == first.pk
    assert row["chosen_model"] in {"m0", "m1"}
    # Labelers are pseudonyms: neither the username nor the user id leaks.
    names = {r["labeler"] for r in rows}
    assert names == {
        labeler_pseudonym(project_id=project.pk, labeler_id=u.pk) for u in labelers[:2]
    }
    assert not any("ann" in n or "bob" in n for n in names)
    for annotation_id in {r["annotation_id"] for r in rows}:
        assert sum(
            r["weight"] for r in rows if r["annotation_id"] == annotation_id
        ) == pytest.approx(1)

    ranking = read_jsonl(rankings_file)[0]
    assert ranking["candidate_ids"] == ids
    assert ranking["tiers"] == [[0], [1], [2], [3]]


def test_only_the_latest_annotation_of_an_assignment_is_exported(
    project, labelers, make_comparisons, tmp_path
):
    (comparison,) = make_comparisons(project, n=1)
    old = annotate(comparison, labelers[0], strict(comparison))
    new = annotate(comparison, labelers[0], strict(comparison, reverse=True), supersedes=old)
    result = export(project, tmp_path)
    rows = read_jsonl(export_pairs_path(result))
    assert {r["annotation_id"] for r in rows} == {new.pk}
    assert rows[0]["chosen"] == comparison.candidates.get(pk=comparison.candidate_ids[-1]).text


def test_flagged_annotations_are_left_out_unless_asked(project, ranked, labelers, tmp_path):
    flagged = Annotation.objects.filter(comparison=ranked[0], labeler=labelers[0]).get()
    Annotation.objects.filter(pk=flagged.pk).update(
        flags={str(ranked[0].candidate_ids[0]): ["harmful"]}
    )
    # An empty list of codes is not a flag.
    Annotation.objects.filter(comparison=ranked[1], labeler=labelers[0]).update(
        flags={str(ranked[1].candidate_ids[0]): []}
    )
    default = export(project, tmp_path, "a")
    assert default.rows == 5 * 6
    assert default.counts["excluded_flagged"] == 1
    assert flagged.pk not in {r["annotation_id"] for r in read_jsonl(export_pairs_path(default))}
    included = export(project, tmp_path, "b", include_flagged=True)
    assert included.rows == 6 * 6 and included.counts["excluded_flagged"] == 0


def test_gold_comparisons_are_left_out_unless_asked(project, ranked, tmp_path):
    gold = ranked[2]
    Comparison.objects.filter(pk=gold.pk).update(is_gold=True, gold_ranking=strict(gold))
    default = export(project, tmp_path, "a")
    assert default.rows == 2 * 2 * 6 and default.counts["excluded_gold"] == 2
    assert gold.pk not in {r["comparison_id"] for r in read_jsonl(export_pairs_path(default))}
    included = export(project, tmp_path, "b", include_gold=True)
    assert included.rows == 3 * 2 * 6


@pytest.fixture
def disputed(project, labelers, make_comparisons):
    """One comparison: ann and bob rank it forward, cat backward."""
    (comparison,) = make_comparisons(project, n=1, prefix="d")
    for labeler in labelers[:2]:
        annotate(comparison, labeler, strict(comparison))
    annotate(comparison, labelers[2], strict(comparison, reverse=True))
    return comparison


def test_consensus_aggregate_exports_one_ranking_per_comparison(project, disputed, tmp_path):
    result = export(project, tmp_path, aggregate="consensus")
    rows = read_jsonl(export_pairs_path(result))
    assert len(rows) == 6 and result.counts["consensus_annotations"] == 3
    assert {r["labeler"] for r in rows} == {CONSENSUS_LABELER}
    assert {r["annotation_id"] for r in rows} == {None}
    assert sum(r["weight"] for r in rows) == pytest.approx(1.0)
    (ranking,) = read_jsonl(tmp_path / "out" / "rankings.jsonl")
    assert ranking["tiers"] == [[0], [1], [2], [3]]  # the 2-to-1 majority order


def test_min_agreement_drops_the_outlier(project, disputed, tmp_path, labelers):
    result = export(project, tmp_path, min_agreement=0.5)
    rows = read_jsonl(export_pairs_path(result))
    kept = set(Annotation.objects.filter(labeler__in=labelers[:2]).values_list("pk", flat=True))
    assert {r["annotation_id"] for r in rows} == kept
    assert result.counts["excluded_low_agreement"] == 1


@pytest.mark.parametrize(
    ("threshold", "kept_labelers"),
    [
        # ann and bob agree with the consensus exactly 1.0, cat exactly 0.0. A share equal to
        # the threshold is kept; only a share below it is dropped (docs/api.md, SPEC 5).
        (1.0, {"ann", "bob"}),
        (1.0 - 1e-9, {"ann", "bob"}),
        (0.0, {"ann", "bob", "cat"}),
        (1e-9, {"ann", "bob"}),
    ],
)
def test_min_agreement_keeps_a_share_equal_to_the_threshold(
    project, disputed, tmp_path, labelers, threshold, kept_labelers
):
    result = export(project, tmp_path, min_agreement=threshold)
    kept = {r["annotation_id"] for r in read_jsonl(export_pairs_path(result))}
    expected = set(
        Annotation.objects.filter(labeler__username__in=kept_labelers).values_list("pk", flat=True)
    )
    assert kept == expected
    assert result.counts["excluded_low_agreement"] == 3 - len(kept_labelers)


def test_min_agreement_needs_others_to_measure_against(
    project, labelers, make_comparisons, tmp_path
):
    (comparison,) = make_comparisons(project, n=1)
    annotate(comparison, labelers[0], strict(comparison))
    result = export(project, tmp_path, min_agreement=0.1)
    assert result.rows == 0 and result.counts["excluded_agreement_unmeasured"] == 1


def test_all_bad_single_tier_gives_no_rows(project, labelers, make_comparisons, tmp_path):
    (comparison,) = make_comparisons(project, n=1)
    annotate(comparison, labelers[0], [list(comparison.candidate_ids)], all_bad=True)
    annotate(comparison, labelers[1], strict(comparison))
    result = export(project, tmp_path, pairing="best_vs_rest")
    assert result.rows == 3  # best vs rest of the one strict ranking
    assert result.counts["rankings"] == 1
    assert result.counts["rankings_without_preference"] == 1


def test_chat_projects_export_conversations(make_project, make_labeler, tmp_path):
    from annotation.services.comparisons import comparisons_build
    from annotation.services.imports import (
        candidate_record,
        candidates_import,
        prompt_record,
        prompts_import,
    )

    project = make_project("chat", num_candidates=2, task_type="pairwise")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
    ]
    prompts_import(
        project=project, records=[prompt_record({"external_id": "c", "messages": messages}, line=1)]
    )
    candidates_import(
        project=project,
        records=[
            candidate_record({"prompt_external_id": "c", "text": t, "model": "m"}, line=i)
            for i, t in enumerate(["Hello.", "Greetings to you."], start=1)
        ],
    )
    comparisons_build(project=project)
    comparison = Comparison.objects.get(project=project)
    annotate(comparison, make_labeler("dan", projects=[project]), strict(comparison))
    result = export(project, tmp_path)
    (row,) = read_jsonl(export_pairs_path(result))
    assert row["prompt"] == messages
    assert row["chosen"][0]["role"] == "assistant" and len(row["chosen"]) == 1
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(
        "json",
        data_files=str(export_pairs_path(result)),
        split="train",
        cache_dir=str(tmp_path / "c"),
    )
    assert ds[0]["prompt"] == messages


def test_parquet_export_records_the_file_hash(project, ranked, tmp_path):
    pytest.importorskip("pyarrow")
    result = export(project, tmp_path, format="parquet")
    path = export_pairs_path(result)
    assert path.name == "pairs.parquet"
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_reward_training_names_the_export_it_read(project, ranked, tmp_path, fmt):
    # One digest scheme on both sides: a run's data_sha256 is the Export's sha256, for an
    # `hf` folder as much as for a file.
    pytest.importorskip("pyarrow")
    if fmt == "hf":
        pytest.importorskip("datasets")
    from training.reward.data import load_preferences

    result = export(project, tmp_path, format=fmt)
    assert load_preferences(result.path).sha256 == result.sha256


def test_rows_hash_to_the_split_they_carry(project, labelers, make_comparisons, tmp_path):
    # Reward training's fallback split (an export without test rows) calls split_for_prompt on
    # the row's prompt; the export hashed the stored messages. They must agree, or one prompt
    # could land in different splits in the export and in training.
    from annotation.rules.splits import split_for_prompt

    for comparison in make_comparisons(project, n=40, prefix="s"):
        annotate(comparison, labelers[0], strict(comparison))
    rows = read_jsonl(export_pairs_path(export(project, tmp_path, test_fraction=0.5)))
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all(split_for_prompt(r["prompt"], test_fraction=0.5) == r["split"] for r in rows)


def test_query_count_does_not_grow_with_the_data(project, labelers, make_comparisons, tmp_path):
    def queries_for(n, name):
        for comparison in make_comparisons(project, n=n, prefix=name):
            annotate(comparison, labelers[0], strict(comparison))
        with CaptureQueriesContext(connection) as ctx:
            export_create(
                project=project, options=ExportOptions(), out_dir=tmp_path / name, chunk_size=2000
            )
        return len(ctx.captured_queries)

    assert queries_for(2, "a") == queries_for(20, "b")


def test_unlabeled_comparisons_between_labeled_ones_are_not_read(
    project, labelers, make_comparisons, tmp_path, monkeypatch
):
    # Priorities and later rounds scatter the labeled comparisons among unlabeled ones; a
    # chunk reads the comparisons and candidate texts of its labeled ones only, not of the
    # whole id range between them (memory grew with the project, not the labels).
    from annotation.services import exports

    comparisons = make_comparisons(project, n=60, prefix="gap")
    labeled = comparisons[::20]
    for comparison in labeled:
        annotate(comparison, labelers[0], strict(comparison))
    read = {"comparisons": 0, "texts": 0}
    infos, texts = exports._comparison_infos, exports._candidate_texts

    def counting_infos(*args):
        found = infos(*args)
        read["comparisons"] += len(found)
        return found

    def counting_texts(*args):
        found = texts(*args)
        read["texts"] += len(found)
        return found

    monkeypatch.setattr(exports, "_comparison_infos", counting_infos)
    monkeypatch.setattr(exports, "_candidate_texts", counting_texts)
    done = export(project, tmp_path)
    k = project.num_candidates
    assert done.rows == len(labeled) * k * (k - 1) // 2
    assert read == {"comparisons": len(labeled), "texts": len(labeled) * k}


def test_chunks_never_split_a_comparison(project, disputed, ranked, tmp_path):
    small = export_create(
        project=project,
        options=ExportOptions(aggregate="consensus"),
        out_dir=tmp_path / "a",
        chunk_size=1,
    )
    large = export_create(
        project=project, options=ExportOptions(aggregate="consensus"), out_dir=tmp_path / "b"
    )
    assert (tmp_path / "a" / "pairs.jsonl").read_bytes() == (
        tmp_path / "b" / "pairs.jsonl"
    ).read_bytes()
    assert small.counts["rankings"] == large.counts["rankings"] == 4


def test_a_reject_committed_while_the_export_streams_does_not_break_it(
    project, ranked, tmp_path, monkeypatch
):
    # Staff reject (or a labeler corrects) an answer after the export read its row but before
    # it looked up that comparison's prompt and texts: the export keeps what it read.
    import annotation.services.exports as exports

    real_stream = exports._annotation_stream
    first = ranked[0]

    def stream_then_reject(project, chunk_size):
        for n, row in enumerate(real_stream(project, chunk_size)):
            yield row
            if n == 0:
                Annotation.objects.filter(comparison=first).update(
                    rejected_at=timezone.now(), rejection_reason="off-topic"
                )

    monkeypatch.setattr(exports, "_annotation_stream", stream_then_reject)
    for chunk_size in (1, 1000):
        result = export_create(
            project=project,
            options=ExportOptions(),
            out_dir=tmp_path / f"c{chunk_size}",
            chunk_size=chunk_size,
        )
        rows = read_jsonl(export_pairs_path(result))
        assert {r["comparison_id"] for r in rows} == {c.pk for c in ranked}
        Annotation.objects.update(rejected_at=None, rejection_reason="")


def test_bad_options_and_folders_are_refused(project, ranked, tmp_path):
    with pytest.raises(ServiceValidationError, match="pairing"):
        export(project, tmp_path, pairing="all")
    with pytest.raises(ServiceValidationError, match="min_agreement"):
        export(project, tmp_path, min_agreement=1.5)
    assert not (tmp_path / "out").exists()
    export(project, tmp_path)
    with pytest.raises(ServiceValidationError, match="already exists"):
        export(project, tmp_path)
    assert Export.objects.count() == 1


def test_files_are_removed_when_the_record_cannot_be_stored(project, ranked, tmp_path, monkeypatch):
    def refuse(**kwargs):
        raise RuntimeError("database is read-only")

    monkeypatch.setattr(Export.objects, "create", refuse)
    with pytest.raises(RuntimeError, match="read-only"):
        export(project, tmp_path)
    assert not (tmp_path / "out").exists()  # its files, and the folder the export made


def test_default_folder_is_under_data_dir(project, ranked, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    result = export_create(project=project, options=ExportOptions())
    assert Path(result.path).parent == tmp_path / "exports"
    assert (Path(result.path) / "manifest.json").exists()


# --- the command ---------------------------------------------------------------------------


def test_command_exports_and_reports(project, ranked, tmp_path, staff_user):
    out = StringIO()
    call_command(
        "export_preferences",
        "demo",
        "--out",
        str(tmp_path / "cmd"),
        "--pairing",
        "best_vs_rest",
        "--test-fraction",
        "0",
        "--created-by",
        "admin",
        stdout=out,
    )
    export = Export.objects.get()
    assert export.rows == 6 * 3 and export.options["pairing"] == "best_vs_rest"
    assert export.created_by == staff_user
    assert export.counts["pairs_test"] == 0
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith(f"export {export.pk}: 18 pairs (18 train, 0 test), 6 rankings")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--out", "X"], "No project"),
        (["demo", "--out", "X", "--min-agreement", "2"], "min_agreement|min-agreement"),
        (["demo", "--out", "X", "--format", "csv"], "invalid choice"),
        (["demo", "--out", "X", "--created-by", "ghost"], "No user"),
    ],
)
def test_command_errors_are_one_line(project, tmp_path, args, message):
    args = [str(tmp_path / a) if a == "X" else a for a in args]
    with pytest.raises(CommandError, match=message):
        call_command("export_preferences", *args, stdout=StringIO())
    assert Export.objects.count() == 0


def test_command_hf_export_with_no_pairs_is_a_valid_empty_dataset(project, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = StringIO()
    call_command(
        "export_preferences", "demo", "--out", str(tmp_path / "hf"), "--format", "hf", stdout=out
    )
    assert "0 pairs (0 train, 0 test), 0 rankings" in out.getvalue()
    assert len(datasets.load_from_disk(str(tmp_path / "hf" / "pairs"))) == 0
    assert Export.objects.get().rows == 0


def test_command_refuses_a_non_empty_out_folder(project, ranked, tmp_path):
    (tmp_path / "notes.txt").write_text("not part of any export")
    with pytest.raises(CommandError, match=r"is not empty \(it holds 'notes.txt'\)"):
        call_command("export_preferences", "demo", "--out", str(tmp_path), stdout=StringIO())
    assert Export.objects.count() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_export_killed_midway_leaves_nothing_that_blocks_running_it_again(
    project, ranked, tmp_path
):
    from annotation.datafiles.export import _FolderLock

    out = tmp_path / "export"
    out.mkdir()
    # What a killed jsonl export and a killed hf export leave: hidden, never published.
    for name in (".pairs.jsonl.0123456789ab.tmp", ".rankings.jsonl.0123456789ab.tmp",
                 ".pairs.ba9876543210.tmp.spool.jsonl", ".export.lock"):  # fmt: skip
        (out / name).write_text('{"half": ')
    (out / ".pairs.ba9876543210.tmp.cache").mkdir()
    call_command("export_preferences", "demo", "--out", str(out), stdout=StringIO())
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "pairs.jsonl",
        "rankings.jsonl",
    ]
    # An export still writing a folder holds its lock: another is refused, nothing touched.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / ".pairs.jsonl.0123456789ab.tmp").write_text("being written")
    live = _FolderLock(busy)
    try:
        with pytest.raises(CommandError, match="is being written by another export"):
            call_command("export_preferences", "demo", "--out", str(busy), stdout=StringIO())
        assert (busy / ".pairs.jsonl.0123456789ab.tmp").read_text() == "being written"
    finally:
        live.release()
    assert Export.objects.count() == 1


def test_command_refuses_an_existing_export(project, ranked, tmp_path):
    call_command("export_preferences", "demo", "--out", str(tmp_path), stdout=StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("export_preferences", "demo", "--out", str(tmp_path), stdout=StringIO())


# --- stats ---------------------------------------------------------------------------------


def test_project_stats(project, disputed, labelers):
    Comparison.objects.filter(pk=disputed.pk).update(is_gold=True, gold_ranking=strict(disputed))
    stats = project_stats(project)
    assert stats["project"] == "demo"
    assert stats["progress"]["comparisons"] == 1 and stats["progress"]["gold_comparisons"] == 1
    assert stats["progress"]["annotations"] == 3 and stats["progress"]["labelers"] == 3
    assert stats["progress"]["assignments_submitted"] == 3
    # Pairwise agreement over the three labeler pairs: 1 (ann-bob), 0, 0.
    assert stats["agreement"]["pairwise_agreement"] == pytest.approx(1 / 3)
    by_name = {row["labeler"]: row for row in stats["labelers"]}
    assert set(by_name) == {"ann", "bob", "cat"}
    assert by_name["ann"]["gold_accuracy"] == 1.0 and by_name["cat"]["gold_accuracy"] == 0.0
    # The pooled consensus is the 2-to-1 majority (forward).
    assert by_name["ann"]["agreement_with_consensus"] == 1.0
    assert by_name["cat"]["agreement_with_consensus"] == 0.0
    assert by_name["ann"]["median_time_ms"] == 1000
    assert {tuple(p["labelers"]) for p in stats["labeler_pairs"]} == {
        ("ann", "bob"),
        ("ann", "cat"),
        ("bob", "cat"),
    }
    json.dumps(stats)  # JSON-ready for the API


def test_missing_optional_dependency_is_a_clear_error(project, ranked, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ServiceValidationError, match=r"parquet needs pyarrow"):
        export(project, tmp_path, format="parquet")
    assert not (tmp_path / "out").exists()


def test_failed_export_into_the_default_folder_leaves_no_folder(
    project, ranked, settings, tmp_path, monkeypatch
):
    settings.DATA_DIR = tmp_path

    def refuse(**kwargs):
        raise RuntimeError("database is read-only")

    monkeypatch.setattr(Export.objects, "create", refuse)
    with pytest.raises(RuntimeError):
        export_create(project=project, options=ExportOptions())
    assert not (tmp_path / "exports").exists()


# --- a full disk -----------------------------------------------------------------------------


class _FullDisk(io.RawIOBase):
    """A file on a disk with no space left: every write fails, as the flush at close does."""

    def writable(self):
        return True

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def _full_open(path, mode="r", *args, **kwargs):
    """`open` for the export writer: its tables fill the disk once 4 KiB are buffered (the
    bytes still buffered then fail the flush at close too)."""
    if mode != "wb":
        return open(path, mode, *args, **kwargs)
    open(path, "wb").close()  # the temporary file exists, as it would
    return io.BufferedWriter(_FullDisk(), buffer_size=4096)


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["writing", "finishing"])
def test_a_full_disk_is_a_clear_error_and_leaves_no_export(
    project, ranked, tmp_path, monkeypatch, where
):
    out = tmp_path / "exports" / "out"
    if where == "writing":
        monkeypatch.setattr("annotation.datafiles.export.open", _full_open, raising=False)
    else:  # the manifest, the last file written
        monkeypatch.setattr(Path, "write_text", _full)
    with pytest.raises(CommandError) as info:
        call_command("export_preferences", "demo", "--out", str(out), stdout=StringIO())
    assert str(info.value) == f"cannot write the export to {out}: No space left on device"
    # The folders the export made for itself are removed again (nothing under a final name,
    # no temporary table, no lock was left in them); a folder that was there stays, empty.
    assert not (tmp_path / "exports").exists() and Export.objects.count() == 0
    out.mkdir(parents=True)
    with pytest.raises(CommandError):
        call_command("export_preferences", "demo", "--out", str(out), stdout=StringIO())
    assert list(out.iterdir()) == [] and Export.objects.count() == 0
    monkeypatch.undo()
    call_command("export_preferences", "demo", "--out", str(out), stdout=StringIO())
    assert Export.objects.count() == 1


def test_a_full_disk_answers_the_api_with_json_507(
    project, ranked, settings, tmp_path, monkeypatch
):
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from annotation.datafiles.export import ExportWriter

    settings.DATA_DIR = tmp_path
    monkeypatch.setattr(ExportWriter, "write_annotation", _full)
    client = APIClient()
    client.force_authenticate(
        get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    )
    response = client.post("/api/v1/projects/demo/exports/", {}, format="json")
    assert response.status_code == 507
    body = response.json()
    folder = body["errors"]["out"][0]
    assert body["detail"] == f"cannot write the export to {folder}: No space left on device"
    assert not (tmp_path / "exports").exists() and Export.objects.count() == 0
