"""train_reward_model and train_ppo: bad input is one clear line, recorded runs fail loudly."""

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.datafiles.digest import sha256_file
from lineage.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def write_manifest(folder: Path) -> None:
    """The manifest export_preferences writes: each table's file and sha256."""
    files = {
        table: {"path": p.name, "sha256": sha256_file(p)}
        for table in ("pairs",)
        if (p := folder / f"{table}.jsonl").is_file()
    }
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "files": files}))


def write_export(folder: Path, n: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"prompt": f"question {i}", "chosen": "a kind answer", "rejected": "no", "split": "train"}
        for i in range(n)
    ]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_manifest(folder)
    return folder


def reward_command(export: str, base_model, out, *extra, **kwargs) -> None:
    call_command(
        "train_reward_model",
        "--export",
        export,
        "--base-model",
        str(base_model),
        "--out",
        str(out),
        *extra,
        **kwargs,
    )


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    texts = [f"question {i} a kind answer no" for i in range(50)]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm", texts, vocab_size=200)


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


def test_reward_bad_export_writes_nothing(tmp_path, project):
    """Validation comes first (SPEC section 4): no TrainingRun for an export that cannot train."""
    from annotation.models import Export, RunSource

    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    export = Export.objects.create(project=project, path=str(tmp_path.resolve()), sha256="0" * 64)
    for value in (str(bad), str(export.pk)):
        with pytest.raises(CommandError, match="missing column") as info:
            reward_command(value, tmp_path / "m", tmp_path / "o")
        assert "\n" not in str(info.value)
    assert not TrainingRun.objects.exists()
    assert not RunSource.objects.exists()
    assert not ModelVersion.objects.exists()
    assert not (tmp_path / "o").exists()


def test_reward_bad_base_model_writes_nothing(tmp_path):
    write_export(tmp_path / "export")
    with pytest.raises(CommandError, match="does not exist"):
        reward_command(str(tmp_path / "export"), tmp_path / "no-model", tmp_path / "o")
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()


def test_reward_refuses_an_export_modified_after_the_fact(tmp_path, project):
    from annotation.models import Export

    folder = write_export(tmp_path / "export")
    digest = sha256_file(folder / "pairs.jsonl")
    export = Export.objects.create(project=project, path=str(folder.resolve()), sha256=digest)
    with (folder / "pairs.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "planted", "rejected": "x"}) + "\n")
    for value in (str(export.pk), str(folder), str(folder / "pairs.jsonl")):
        with pytest.raises(CommandError, match="modified after export") as info:
            reward_command(value, tmp_path / "m", tmp_path / "o")
        assert str(folder / "pairs.jsonl") in str(info.value) and "\n" not in str(info.value)
    # A manifest edited to match the edited file does not fool the Export row.
    write_manifest(folder)
    with pytest.raises(CommandError, match=f"Export {export.pk} recorded {digest[:12]}"):
        reward_command(str(export.pk), tmp_path / "m", tmp_path / "o")
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()


@pytest.mark.ml
def test_reward_allow_modified_trains_and_records_the_new_hash(
    tmp_path, project, tiny_lm, monkeypatch
):
    from annotation.models import Export

    folder = write_export(tmp_path / "export")
    export = Export.objects.create(
        project=project, path=str(folder.resolve()), sha256=sha256_file(folder / "pairs.jsonl")
    )
    with (folder / "pairs.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "planted", "rejected": "x"}) + "\n")
    new = sha256_file(folder / "pairs.jsonl")
    out = StringIO()
    args = ("--allow-modified", "--max-steps", "1", "--max-length", "100000")
    reward_command(str(export.pk), tiny_lm, tmp_path / "o", *args, stdout=out)
    assert "modified after export" in out.getvalue()
    assert "exceeds the 256 positions" in out.getvalue()
    run = TrainingRun.objects.get(kind="reward")
    assert run.status == "succeeded"
    assert run.config["data_sha256"] == run.metrics["data_sha256"] == new
    assert run.config["max_length"] == 256
    assert {(m["sha256"], m["by"]) for m in run.config["data_modified"]} == {
        (new, "manifest.json"),
        (new, f"Export {export.pk}"),
    }
    assert run.source.export == export
    assert ModelVersion.objects.get(kind="reward").produced_by == run
    # The same export by its folder is the same run: the modified files it records are
    # named by their absolute paths, not as the export was given.
    monkeypatch.chdir(tmp_path)
    again = StringIO()
    reward_command("export", tiny_lm, tmp_path / "o", *args, stdout=again)
    assert "nothing to do" in again.getvalue()


@pytest.mark.ml
def test_the_reward_model_s_parent_is_its_base_model_however_it_is_spelled(
    tmp_path, tiny_lm, monkeypatch
):
    # Looked up by the path as typed, `./lm` missed the version stored as /abs/lm: the
    # reward model had no parent, its lineage cut.
    from lineage.services import model_version_register

    policy = model_version_register(path=str(tiny_lm))
    monkeypatch.chdir(tiny_lm.parent)
    export = write_export(tmp_path / "export")
    reward_command(str(export), "./lm", tmp_path / "rm", "--max-steps", "1", stdout=StringIO())
    assert ModelVersion.objects.get(kind="reward").parent == policy


@pytest.mark.ml
def test_reward_run_records_its_export_and_project_even_when_it_fails(
    tmp_path, project, tiny_lm, monkeypatch
):
    from annotation.models import Export

    folder = write_export(tmp_path / "export")
    export = Export.objects.create(
        project=project, path=str(folder.resolve()), sha256=sha256_file(folder / "pairs.jsonl")
    )

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr("training.reward.train_reward_model", out_of_memory)
    with pytest.raises(RuntimeError):
        reward_command(str(export.pk), tiny_lm, tmp_path / "o")
    run = TrainingRun.objects.get(kind="reward")
    assert run.status == "failed" and run.error == "RuntimeError: CUDA out of memory"
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


def test_ppo_bad_policy_or_reward_model_writes_no_rows(tmp_path, project, make_comparisons):
    """No ModelVersion rows for paths that do not hold a model (they used to be registered)."""
    make_comparisons(project, n=1)
    empty = tmp_path / "empty-rm"
    empty.mkdir()
    cases = [
        (str(tmp_path / "no-policy"), "training.demo_world.judge:judge", "does not exist"),
        (str(empty), "training.demo_world.judge:judge", "no config.json"),
    ]
    for policy, reward, message in cases:
        with pytest.raises(CommandError, match=message):
            ppo_command(policy, reward, tmp_path / "out")
    assert not ModelVersion.objects.exists() and not TrainingRun.objects.exists()


@pytest.mark.ml
def test_ppo_bad_reward_model_folder_writes_no_rows(tmp_path, project, make_comparisons, tiny_lm):
    make_comparisons(project, n=1)
    empty = tmp_path / "empty-rm"
    empty.mkdir()
    with pytest.raises(CommandError, match="no config.json"):
        ppo_command(str(tiny_lm), str(empty), tmp_path / "out")
    assert not ModelVersion.objects.exists() and not TrainingRun.objects.exists()


@pytest.mark.ml
def test_bad_ptx_data_or_scheduler_is_refused_before_any_row_or_folder(
    tmp_path, project, make_comparisons, tiny_lm
):
    # Both used to be found only once training started: a failed TrainingRun (and for PPO
    # an empty --out) stayed behind.
    make_comparisons(project, n=1)
    ptx = tmp_path / "ptx.jsonl"
    ptx.write_text('{"text": "fine"}\n{"prompt": "no response"}\n')
    out = tmp_path / "out"
    with pytest.raises(CommandError, match=r"ptx\.jsonl:2: a line needs"):
        call_command(
            "train_ppo", "--policy", str(tiny_lm), "--reward-model",
            "training.demo_world.judge:judge", "--prompts", "demo", "--out", str(out),
            "--ptx-data", str(ptx), "--ptx-coef", "0.5",
        )  # fmt: skip
    demos = tmp_path / "sft.jsonl"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    demos.write_text(json.dumps({"messages": chat}) + "\n")
    with pytest.raises(CommandError, match="lr_scheduler must be one of linear, cosine"):
        call_command(
            "train_sft", "--data", str(demos), "--base-model", str(tiny_lm),
            "--out", str(out), "--lr-scheduler", "bogus",
        )  # fmt: skip
    assert not out.exists()
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()


@pytest.mark.ml
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--num-eval-prompts", "3"], "holding out 3 eval prompts leaves none of the 3"),
        # As under `torchrun --nproc_per_node 4`: 6 rollouts do not split over 4 processes.
        (["--batch-size", "6", "--mini-batches", "1", "WORLD_SIZE=4"], "processes \\(4\\)"),
        (["--mixed-precision", "fp16", "--device", "cpu"], "fp16 needs CUDA"),
    ],
)
def test_ppo_settings_that_cannot_train_are_refused_before_any_row_or_folder(
    tmp_path, project, make_comparisons, tiny_lm, options, message, monkeypatch
):
    # Found only inside training, they left a failed TrainingRun, the parent ModelVersion
    # and (for the held-out prompts) an empty --out behind.
    make_comparisons(project, n=3)
    for setting in [o for o in options if "=" in o]:
        monkeypatch.setenv(*setting.split("="))
        options = [o for o in options if o != setting]
    out = tmp_path / "out"
    with pytest.raises(CommandError, match=message):
        call_command(
            "train_ppo", "--policy", str(tiny_lm), "--reward-model",
            "training.demo_world.judge:judge", "--prompts", "demo", "--out", str(out),
            "--eval-every", "1", *options,
        )  # fmt: skip
    assert not out.exists()
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()


def ppo_command(policy: str, reward: str, out) -> None:
    call_command(
        "train_ppo",
        "--policy",
        policy,
        "--reward-model",
        reward,
        "--prompts",
        "demo",
        "--out",
        str(out),
    )


def test_a_taken_name_is_refused_before_any_work(tmp_path, project, make_comparisons):
    # ModelVersion names are unique: a clash found after training used to be a traceback,
    # with the run failed and its weights unregistered.
    make_comparisons(project, n=1)
    ModelVersion.objects.create(name="taken", path="/models/elsewhere", kind="policy")
    export = write_export(tmp_path / "export")
    with pytest.raises(CommandError, match=r"--name 'taken' is taken by model version \d+"):
        reward_command(str(export), "any-base", tmp_path / "rm", "--name", "taken")
    with pytest.raises(CommandError, match="--name 'taken' is taken"):
        call_command(
            "train_ppo",
            *("--policy", "p", "--reward-model", "training.demo_world.judge:judge"),
            *("--prompts", "demo", "--out", str(tmp_path / "ppo"), "--name", "taken"),
        )
    with pytest.raises(CommandError, match="--name 'taken' is taken"):
        call_command("generate_candidates", "demo", "--model", "/models/other", "--name", "taken")
    assert not TrainingRun.objects.exists() and ModelVersion.objects.count() == 1
    assert not (tmp_path / "rm").exists() and not (tmp_path / "ppo").exists()
    # Sampling again from the model that holds the name is no clash: it is that version.
    with pytest.raises(CommandError, match="does not exist"):
        call_command(
            "generate_candidates", "demo", "--model", "/models/elsewhere", "--name", "taken"
        )


def test_an_out_dir_of_another_run_is_refused_before_any_row(tmp_path):
    # The trainer refuses to resume a checkpoint of a different run; the command says so
    # before it registers the base model or opens a run (it used to leave a failed run).
    export = write_export(tmp_path / "export")
    out = tmp_path / "rm"
    (out / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    previous = {"base_model": "another-base", "data_sha256": "0" * 64, "loss": "pairwise"}
    (out / "training_config.json").write_text(json.dumps({**previous, "lora": False}))
    with pytest.raises(
        CommandError,
        match=r"different run \(--base-model, the data of --export changed; it was trained "
        r"from another-base\)",
    ):
        reward_command(str(export), "any-base", out)
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()
    with pytest.raises(CommandError, match="does not exist"):  # starting over gets past it
        reward_command(str(export), tmp_path / "no-model", out, "--no-resume")


def old_checkpoint(out: Path, base_model: str, **config) -> dict:
    """An out_dir with a checkpoint and the training_config.json the code before
    `base_model_path` wrote: the base model only as typed."""
    (out / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    previous = {"base_model": base_model, "data_sha256": "0" * 64, "loss": "pairwise"}
    previous |= {"lora": False, **config}
    (out / "training_config.json").write_text(json.dumps(previous))
    return previous


def test_a_checkpoint_resumes_from_any_spelling_of_its_base_model_folder(tmp_path, monkeypatch):
    # `./m`, `m` and `/abs/m` are one model (README); compared as typed, a rerun spelled
    # otherwise was refused as "a different run (base_model changed)".
    from training.reward.train import refuse_foreign_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "other").mkdir()
    out = tmp_path / "rm"
    previous = old_checkpoint(out, "./m/")
    for spelling in ("m", "./m", str(tmp_path / "m")):
        refuse_foreign_checkpoint(out, {**previous, "base_model": spelling}, resume=True)
    # Another folder, or a hub id of the same name, is another base model.
    for other in ("other", "org/m"):
        with pytest.raises(ValueError, match=r"\(base_model changed; it was trained from /"):
            refuse_foreign_checkpoint(out, {**previous, "base_model": other}, resume=True)
    # A config that records the resolved path is read by it, from any directory.
    config = {**previous, "base_model": "m", "base_model_path": str(tmp_path / "m")}
    (out / "training_config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path / "other")
    refuse_foreign_checkpoint(out, {**previous, "base_model": "../m"}, resume=True)
    with pytest.raises(ValueError, match="base_model changed"):
        refuse_foreign_checkpoint(out, {**previous, "base_model": "m"}, resume=True)


def test_train_dpo_names_its_own_flags_for_a_checkpoint_of_another_run(tmp_path):
    export = write_export(tmp_path / "export")
    out = tmp_path / "dpo"
    old_checkpoint(out, "another-policy", loss="dpo-sigmoid")
    with pytest.raises(
        CommandError,
        match=r"different run \(--policy, the data of --export, --loss-type changed; it was "
        r"trained from another-policy\)",
    ):
        call_command(
            "train_dpo", "--export", str(export), "--policy", "any-policy", "--out", str(out),
            "--loss-type", "ipo",
        )  # fmt: skip
    assert not TrainingRun.objects.exists() and not ModelVersion.objects.exists()


@pytest.mark.ml
def test_a_second_run_into_its_own_out_resumes_and_is_not_refused(tmp_path, tiny_lm, caplog):
    # The command's early check must agree with the trainer's: the same export and base
    # model again is the same run.
    export = write_export(tmp_path / "export", n=16)
    out = tmp_path / "rm"
    args = ("--epochs", "1", "--batch-size", "4", "--save-steps", "2", "--max-length", "32",
            "--logging-steps", "1")  # fmt: skip
    reward_command(str(export), tiny_lm, out, *args)
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    # As if killed after step 2's checkpoint: no later checkpoint, no final weights.
    import shutil

    shutil.rmtree(out / "checkpoints" / "checkpoint-4", ignore_errors=True)
    (out / "model.safetensors").unlink()
    caplog.set_level("INFO", logger="training")
    reward_command(str(export), tiny_lm, out, *args)
    assert TrainingRun.objects.filter(status="succeeded").count() == 2
    assert f"resuming from {out / 'checkpoints'}" in caplog.text  # said, not only done
    # The resumed run's history holds every step, those before the interruption too.
    resumed = TrainingRun.objects.latest("id")
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert resumed.metrics_history == logged
    assert [r["step"] for r in logged if "loss" in r][:2] == [1, 2]  # from before the resume
