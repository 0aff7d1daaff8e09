"""The training-run recorder: JSON-safe metrics on every database, and failures always recorded."""

from __future__ import annotations

import math

import pytest
from django.db import DatabaseError

from lineage.models import TrainingRun
from lineage.services import jsonable, jsonable_metrics, training_run


def test_jsonable_turns_non_finite_numbers_into_null_and_names_them():
    bad: list[str] = []
    out = jsonable({"a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf}, "e": 2}, bad)
    assert out == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2}
    assert bad == ["a", "b.1", "c.d"]
    assert jsonable_metrics({"loss": 0.5, "grad_norm": math.inf}) == {
        "loss": 0.5,
        "grad_norm": None,
        "non_finite": ["grad_norm"],
    }
    assert jsonable("a\x00b") == "a\ufffdb"  # PostgreSQL's jsonb refuses NUL


def test_nan_and_infinite_metrics_are_saved_and_the_run_succeeds(db):
    with training_run(kind=TrainingRun.Kind.PPO, config={"lr": math.nan}) as run:
        for step in range(12):  # past flush_every: the history is saved mid-run too
            run.log({"step": step, "grad_norm": math.inf, "score": 1e30 * 1e300 - 1e30 * 1e300})
        run.run.metrics = {"score": math.nan, "kl": 0.25, "by_gap": {"1": -math.inf}}
        run.flush()
    saved = TrainingRun.objects.get(pk=run.run.pk)
    assert saved.status == TrainingRun.Status.SUCCEEDED, saved.error
    assert saved.metrics == {
        "score": None,
        "kl": 0.25,
        "by_gap": {"1": None},
        "non_finite": ["by_gap.1", "score"],
    }
    assert len(saved.metrics_history) == 12
    assert saved.metrics_history[0] == {
        "step": 0,
        "grad_norm": None,
        "score": None,
        "non_finite": ["grad_norm", "score"],
    }
    assert saved.config == {"lr": None}


def test_an_exception_in_the_body_marks_the_run_failed_with_its_error(db):
    with (
        pytest.raises(RuntimeError, match="out of memory"),
        training_run(kind=TrainingRun.Kind.REWARD, config={}) as run,
    ):
        run.log({"step": 1, "loss": math.nan})
        raise RuntimeError("out of memory")
    saved = TrainingRun.objects.get(pk=run.run.pk)
    assert saved.status == TrainingRun.Status.FAILED
    assert saved.error == "RuntimeError: out of memory"
    assert saved.finished_at is not None
    assert "RuntimeError: out of memory" in saved.log


def test_an_exception_while_saving_the_finished_run_marks_it_failed(db, monkeypatch):
    real_save = TrainingRun.save

    def refuse_success(self, *args, **kwargs):
        if self.status == TrainingRun.Status.SUCCEEDED:
            raise DatabaseError("could not write metrics")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(TrainingRun, "save", refuse_success)
    with (
        pytest.raises(DatabaseError, match="could not write metrics"),
        training_run(kind=TrainingRun.Kind.PPO, config={}) as run,
    ):
        run.log({"step": 1})
    saved = TrainingRun.objects.get(pk=run.run.pk)
    assert saved.status == TrainingRun.Status.FAILED
    assert "DatabaseError: could not write metrics" in saved.error
    assert saved.finished_at is not None


def test_a_failure_whose_save_fails_too_still_records_status_and_error(db, monkeypatch):
    def always_refuse(self, *args, **kwargs):
        raise DatabaseError("metrics refused")

    with (
        pytest.raises(ValueError, match="boom"),
        training_run(kind=TrainingRun.Kind.PPO, config={}) as run,
    ):
        monkeypatch.setattr(TrainingRun, "save", always_refuse)
        raise ValueError("boom")
    saved = TrainingRun.objects.get(pk=run.run.pk)
    assert saved.status == TrainingRun.Status.FAILED
    assert saved.error.startswith("ValueError: boom (and saving the run failed: DatabaseError")


def test_one_local_folder_is_one_model_version_however_it_is_written(db, tmp_path, monkeypatch):
    from lineage.models import ModelVersion
    from lineage.services import model_version_register

    monkeypatch.chdir(tmp_path)
    (tmp_path / "var" / "models" / "policy").mkdir(parents=True)
    first = model_version_register(path="./var/models/policy")
    assert first.path == str((tmp_path / "var" / "models" / "policy").resolve())
    for spelling in (
        "var/models/policy",
        str(tmp_path / "var/models/policy/"),
        "var/models/../models/policy",
    ):
        assert model_version_register(path=spelling) == first
    # A hub id or a module:function reward is kept as written.
    hub = model_version_register(path="Qwen/Qwen2.5-0.5B-Instruct")
    judge = model_version_register(path="training.demo_world.judge:judge", kind="reward")
    assert (hub.path, judge.path) == (
        "Qwen/Qwen2.5-0.5B-Instruct",
        "training.demo_world.judge:judge",
    )
    # A version stored before paths were resolved is still found by the path as typed.
    (tmp_path / "old").mkdir()
    legacy = ModelVersion.objects.create(name="legacy", path="old", kind="policy")
    assert model_version_register(path="old") == legacy
    assert ModelVersion.objects.count() == 4


def test_a_finished_run_is_found_however_its_models_and_data_were_given(db, tmp_path, monkeypatch):
    # What identifies a run is each local model folder by its absolute path and the data by
    # its sha256, not the string or id typed: one recorded with raw strings (before commands
    # stored them resolved) is still this run, and another base model or other data is not.
    from lineage.services import finished_run, model_version_register

    monkeypatch.chdir(tmp_path)
    for folder in ("m", "other", "out", "exports/e"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "out" / "model.safetensors").write_bytes(b"weights")
    typed = {"lr": 1, "base_model": "m", "export": "exports/e", "data_sha256": "a" * 64}
    with training_run(kind="reward", config=typed, output_dir="out") as run:
        model_version_register(path="out", kind="reward", produced_by=run.run)

    now = {"lr": 1, "base_model": str(tmp_path / "m"), "data_sha256": "a" * 64}
    by_id = {**now, "export": str(tmp_path / "exports/e"), "given": {"--export": "3"}}
    by_file = {**now, "export": "exports/e/pairs.jsonl", "given": {"--base-model": "./m"}}
    for config in (typed, by_id, by_file, {**typed, "base_model": "./m/"}):
        assert finished_run(kind="reward", output_dir="out", config=config) is not None
    for config in ({**by_id, "base_model": "other"}, {**by_id, "data_sha256": "b" * 64}):
        assert finished_run(kind="reward", output_dir="out", config=config) is None


def test_allow_modified_files_recorded_as_typed_still_identify_the_run(tmp_path, monkeypatch):
    # Runs recorded before the files were stored resolved hold them as typed.
    from lineage.services import run_identity

    monkeypatch.chdir(tmp_path)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "pairs.jsonl").write_text("{}\n")
    modified = {"sha256": "a" * 64, "recorded": "b" * 64, "by": "manifest.json"}
    old = {"lr": 1, "data_modified": [{**modified, "file": "e/pairs.jsonl"}]}
    new = {"lr": 1, "data_modified": [{**modified, "file": str(tmp_path / "e" / "pairs.jsonl")}]}
    assert run_identity(old) == run_identity(new)
    other = {"lr": 1, "data_modified": [{**modified, "file": str(tmp_path / "f.jsonl")}]}
    assert run_identity(other) != run_identity(new)
