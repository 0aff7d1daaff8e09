"""A train_* command refuses, before any work, an --out it would damage or cannot write:
training into the base model's own folder used to overwrite its weights, and into a
folder of someone's files deleted their checkpoints/ and truncated metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from lineage.models import ModelVersion, TrainingRun
from tests.training.test_reruns import command_for, run
from training.outputs import refuse_unsafe_output


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    texts = [f"say {i} ok {i}" for i in range(40)]
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("tiny") / "chat", texts, chat_template=True, vocab_size=200
    )


def _with_out(args: list[str], out: Path) -> list[str]:
    args = list(args)
    args[args.index("--out") + 1] = str(out)
    return args


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_check_names_each_unsafe_folder(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds the input"):
        refuse_unsafe_output(model, [model])
    with pytest.raises(ValueError, match="holds the input"):
        refuse_unsafe_output(tmp_path, [f"{tmp_path}/./model"])
    with pytest.raises(ValueError, match="no training run wrote it"):
        refuse_unsafe_output(model, ["some/hub-id"])
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        refuse_unsafe_output(afile)
    with pytest.raises(ValueError, match="cannot write to"):
        refuse_unsafe_output(afile / "out")
    # Fine: a new folder, an empty one, a run's own output, a hub id as input.
    refuse_unsafe_output(tmp_path / "new" / "out", ["gpt2", "training.demo_world.judge:judge"])
    (tmp_path / "empty").mkdir()
    refuse_unsafe_output(tmp_path / "empty", [model])
    (model / "training_config.json").write_text("{}")
    refuse_unsafe_output(model, ["gpt2"])


@pytest.mark.django_db
@pytest.mark.ml
@pytest.mark.parametrize("kind", ["reward", "ppo", "sft", "dpo"])
def test_training_into_the_input_models_folder_is_refused_and_changes_nothing(
    tmp_path,
    chat_lm,
    kind,
):
    before = _files(chat_lm)
    args = _with_out(command_for(kind, tmp_path, chat_lm), chat_lm)
    with pytest.raises(CommandError, match="holds the input"):
        run(args)
    assert _files(chat_lm) == before
    assert TrainingRun.objects.count() == 0 and ModelVersion.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.ml
def test_a_folder_of_someones_files_or_a_file_is_refused(tmp_path, chat_lm):
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "checkpoints" / "important.txt").write_text("keep me")
    (mine / "metrics.jsonl").write_text('{"step": 1}\n')
    args = command_for("reward", tmp_path, chat_lm)
    with pytest.raises(CommandError, match="not empty and no training run wrote it"):
        run(_with_out(args, mine))
    assert (mine / "checkpoints" / "important.txt").read_text() == "keep me"
    assert (mine / "metrics.jsonl").read_text() == '{"step": 1}\n'
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CommandError, match="is a file, not a folder"):
        run(_with_out(args, tmp_path / "afile"))
    assert TrainingRun.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.ml
def test_another_kinds_output_is_refused(tmp_path, chat_lm):
    reward = command_for("reward", tmp_path, chat_lm)
    assert "saved " in run(reward)
    out = reward[reward.index("--out") + 1]
    before = _files(Path(out))
    # (Resuming, the reward run's checkpoint is refused as another run's; starting over
    # would have deleted it and written an SFT model over the reward model.)
    sft = _with_out(command_for("sft", tmp_path, chat_lm), Path(out))
    with pytest.raises(CommandError, match="holds the output of reward run"):
        call_command(*sft, "--no-resume")
    assert _files(Path(out)) == before
    assert TrainingRun.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.ml
def test_only_the_folders_latest_run_decides_its_kind(tmp_path, chat_lm):
    # An SFT run's folder deleted and reused by a reward model: the reward model's own
    # resume, or its next run there, is not "another kind's output".
    import shutil

    sft = command_for("sft", tmp_path, chat_lm)
    out = Path(sft[sft.index("--out") + 1])
    reward = _with_out(command_for("reward", tmp_path, chat_lm), out)
    run(sft)
    shutil.rmtree(out)
    assert "saved " in run(reward)
    assert "saved " in run([*reward, "--no-resume"])
    assert TrainingRun.objects.filter(kind=TrainingRun.Kind.REWARD).count() == 2


def test_a_folder_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    # (CI runs as root, for whom chmod does not stop a write: ask os.access's answer.)
    import os

    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(
        "training.outputs.os.access",
        lambda path, mode: Path(path) != locked and real_access(path, mode),
    )
    with pytest.raises(ValueError, match=r"cannot write to .*locked"):
        refuse_unsafe_output(locked / "new" / "out")
    refuse_unsafe_output(tmp_path / "elsewhere")
