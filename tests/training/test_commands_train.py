"""train_reward_model and train_ppo: bad input is one clear line, recorded runs fail loudly."""

import pytest
from django.core.management import CommandError, call_command

from lineage.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def test_reward_unknown_export_id(tmp_path):
    with pytest.raises(CommandError, match="No export with id 999"):
        call_command(
            "train_reward_model",
            "--export",
            "999",
            "--base-model",
            "x",
            "--out",
            str(tmp_path / "o"),
        )
    assert not TrainingRun.objects.exists()


def test_reward_missing_export_path(tmp_path):
    with pytest.raises(CommandError, match="no such export file or folder"):
        call_command(
            "train_reward_model",
            "--export",
            str(tmp_path / "nope"),
            "--base-model",
            "x",
            "--out",
            str(tmp_path / "o"),
        )


@pytest.mark.ml
def test_reward_bad_export_is_recorded_as_failed(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(CommandError) as info:
        call_command(
            "train_reward_model",
            "--export",
            str(bad),
            "--base-model",
            str(tmp_path / "m"),
            "--out",
            str(tmp_path / "o"),
        )
    assert "\n" not in str(info.value)
    run = TrainingRun.objects.get(kind="reward")
    assert run.status == "failed" and run.error
    assert not ModelVersion.objects.filter(kind="reward").exists()


@pytest.mark.ml
def test_reward_run_records_its_export_and_project_even_when_it_fails(tmp_path, project):
    from annotation.models import Export

    (tmp_path / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a"}\n')
    export = Export.objects.create(project=project, path=str(tmp_path.resolve()), sha256="0" * 64)
    with pytest.raises(CommandError):
        call_command(
            "train_reward_model",
            "--export",
            str(export.pk),
            "--base-model",
            str(tmp_path / "m"),
            "--out",
            str(tmp_path / "o"),
        )
    run = TrainingRun.objects.get(kind="reward")
    assert run.status == "failed"
    assert run.source.export == export and run.source.project == project


def test_ppo_rejects_unknown_prompts_and_reward(tmp_path, project):
    with pytest.raises(CommandError, match="neither a project slug nor a prompts file"):
        call_command(
            "train_ppo",
            "--policy",
            "p",
            "--reward-model",
            "m:f",
            "--prompts",
            "nope",
            "--out",
            str(tmp_path),
        )
    with pytest.raises(CommandError, match="has no prompts"):
        call_command(
            "train_ppo",
            "--policy",
            "p",
            "--reward-model",
            "m:f",
            "--prompts",
            "demo",
            "--out",
            str(tmp_path),
        )


@pytest.mark.ml
def test_ppo_bad_callable_and_missing_reward_dir(tmp_path, project, make_comparisons):
    make_comparisons(project, n=1)
    with pytest.raises(CommandError, match="no_such_module"):
        call_command(
            "train_ppo",
            "--policy",
            "p",
            "--reward-model",
            "no_such_module:f",
            "--prompts",
            "demo",
            "--out",
            str(tmp_path),
        )
    with pytest.raises(CommandError, match="no reward model folder"):
        call_command(
            "train_ppo",
            "--policy",
            "p",
            "--reward-model",
            str(tmp_path / "rm"),
            "--prompts",
            "demo",
            "--out",
            str(tmp_path),
        )
    assert not TrainingRun.objects.exists()
