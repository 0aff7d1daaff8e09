"""A training command run again after it finished has nothing to do; one whose inputs or
output changed since, or given --no-resume, trains. It used to retrain over its own output
and register a second model version of the same folder."""

from __future__ import annotations

import json
import os
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Export
from lineage.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.ml]


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    texts = [f"say {i} ok {i}" for i in range(40)]
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("tiny") / "chat", texts, chat_template=True, vocab_size=200
    )


@pytest.fixture(scope="module")
def other_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    texts = [f"tell {i} fine {i}" for i in range(40)]
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("tiny") / "other", texts, chat_template=True, vocab_size=200
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def command_for(kind: str, tmp_path: Path, model: Path) -> list[str]:
    out = str(tmp_path / kind)
    pairs = [
        {"prompt": f"say {i}", "chosen": f"ok {i}", "rejected": "no", "split": "train"}
        for i in range(8)
    ]
    if kind == "reward":
        data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
        return ["train_reward_model", "--export", str(data), "--base-model", str(model),
                "--out", out, "--epochs", "1", "--batch-size", "4", "--max-length", "32"]  # fmt: skip
    if kind == "dpo":
        data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
        return ["train_dpo", "--export", str(data), "--policy", str(model), "--out", out,
                "--epochs", "1", "--batch-size", "4"]  # fmt: skip
    if kind == "sft":
        chats = [
            {"messages": [{"role": "user", "content": f"say {i}"},
                          {"role": "assistant", "content": f"ok {i}"}]}
            for i in range(8)
        ]  # fmt: skip
        data = write_jsonl(tmp_path / "sft.jsonl", chats)
        return ["train_sft", "--data", str(data), "--base-model", str(model), "--out", out,
                "--epochs", "1", "--batch-size", "4", "--max-length", "32"]  # fmt: skip
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"text": f"say {i}"} for i in range(6)])
    return ["train_ppo", "--policy", str(model), "--reward-model",
            "training.demo_world.judge:judge", "--prompts", str(prompts), "--out", out,
            "--total-episodes", "4", "--batch-size", "2", "--mini-batches", "1",
            "--ppo-epochs", "1", "--response-length", "4", "--eval-every", "0",
            "--no-progress"]  # fmt: skip


def given(args: list[str], flag: str, value: str) -> list[str]:
    """`args` with `flag` given `value` instead."""
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def run(args: list[str]) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["reward", "ppo", "sft", "dpo"])
def test_the_same_command_again_has_nothing_to_do(tmp_path, chat_lm, kind):
    args = command_for(kind, tmp_path, chat_lm)
    first = run(args)
    assert "saved " in first
    version = ModelVersion.objects.get(produced_by__isnull=False)
    out = tmp_path / kind
    weights = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file())
    versions = ModelVersion.objects.count()

    again = run(args)
    assert f"{out} already holds {version.name}, made by {kind} run" in again
    assert "nothing to do (--no-resume trains it again)" in again
    assert TrainingRun.objects.count() == 1 and ModelVersion.objects.count() == versions
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()) == weights

    # --name of the version it made is no clash either: it is that run.
    assert "nothing to do" in run([*args, "--name", version.name])

    # --no-resume trains again, a run and a version of its own.
    assert "saved " in run([*args, "--no-resume"])
    assert TrainingRun.objects.count() == 2 and ModelVersion.objects.count() == versions + 1


def test_a_changed_input_or_output_trains_again(tmp_path, chat_lm):
    args = command_for("reward", tmp_path, chat_lm)
    run(args)
    out = tmp_path / "reward"
    # The output folder changed since (someone saved other weights there).
    weights = out / "model.safetensors"
    later = weights.stat().st_mtime + 5
    os.utime(weights, (later, later))
    assert "saved " in run(args)
    assert TrainingRun.objects.count() == 2
    # Other settings are another run: refused by the checkpoint's identity, as before.
    with pytest.raises(CommandError, match="different"):
        run([*args, "--lora"])
    # The base model was retrained in place after the run.
    config = chat_lm / "config.json"
    later = TrainingRun.objects.latest("id").finished_at.timestamp() + 5
    os.utime(config, (later, later))
    assert "saved " in run(args)
    assert TrainingRun.objects.filter(status="succeeded").count() == 3


def copy_model(model: Path, to: Path) -> Path:
    """A copy of `model` dated now: test_a_changed_input_or_output_trains_again dates the
    shared model's config.json in the future, which makes any run of it look out of date."""
    return Path(shutil.copytree(model, to, copy_function=shutil.copy))


MODEL_FLAG = {"reward": "--base-model", "sft": "--base-model", "dpo": "--policy", "ppo": "--policy"}
DATA_FLAG = {"reward": "--export", "sft": "--data", "dpo": "--export", "ppo": "--prompts"}


@pytest.mark.parametrize("kind", ["reward", "ppo", "sft", "dpo"])
def test_another_spelling_of_the_same_inputs_has_nothing_to_do(
    tmp_path, chat_lm, other_lm, kind, monkeypatch
):
    # README: `./var/models/p`, `var/models/p` and the absolute path name one model. Compared
    # as typed, a rerun spelled otherwise was refused ("a different run (base_model
    # changed)"), and train_ppo's --prompts spelled otherwise trained a second version.
    monkeypatch.chdir(tmp_path)
    copy_model(chat_lm, tmp_path / "m")
    args = [a.removeprefix(f"{tmp_path}/") for a in command_for(kind, tmp_path, Path("m"))]
    run(args)
    versions = ModelVersion.objects.count()
    flag, data = MODEL_FLAG[kind], DATA_FLAG[kind]
    for spelling in ("./m", str(tmp_path / "m")):
        assert "nothing to do" in run(given(args, flag, spelling))
    assert "nothing to do" in run(given(args, data, "./" + args[args.index(data) + 1]))
    assert TrainingRun.objects.count() == 1 and ModelVersion.objects.count() == versions
    if kind != "ppo":  # another base model is another run, refused by the flag's name
        with pytest.raises(CommandError, match=f"different run \\({flag} changed; it was"):
            run(given(args, flag, str(other_lm)))


@pytest.mark.parametrize("kind", ["reward", "sft", "dpo"])
def test_the_same_export_by_id_folder_or_file_has_nothing_to_do(
    tmp_path, chat_lm, kind, project, monkeypatch
):
    # By id, the export resumed from its final checkpoint, trained 0 steps and registered a
    # second version of the same folder ("saved ... as rm-1-2, train loss 0.000").
    from annotation.datafiles.digest import sha256_file

    monkeypatch.chdir(tmp_path)
    args = command_for(kind, tmp_path, copy_model(chat_lm, tmp_path / "m"))
    flag = DATA_FLAG[kind]
    file = Path(args[args.index(flag) + 1])
    Path("export").mkdir()
    file = file.rename(Path("export") / file.name)
    export = Export.objects.create(
        project=project,
        path=str(tmp_path / "export"),
        sha256="" if kind == "sft" else sha256_file(file),
    )
    run(given(args, flag, "export"))
    versions = ModelVersion.objects.count()
    for value in (str(export.pk), str(file), str(tmp_path / file)):
        assert "nothing to do" in run(given(args, flag, value))
    assert TrainingRun.objects.count() == 1 and ModelVersion.objects.count() == versions


def test_train_ppo_from_another_policy_is_another_run(tmp_path, chat_lm, other_lm):
    # Its config did not record the policy: another --policy into the same --out said
    # "nothing to do" and kept the old model.
    args = command_for("ppo", tmp_path, copy_model(chat_lm, tmp_path / "m"))
    run(args)
    assert "saved " in run(given(args, "--policy", str(other_lm)))
    latest = ModelVersion.objects.filter(produced_by__isnull=False).latest("id")
    assert latest.parent.path == str(other_lm) and TrainingRun.objects.count() == 2
