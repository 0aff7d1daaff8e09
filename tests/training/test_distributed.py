"""`torchrun --nproc_per_node 2 manage.py train_ppo / train_reward_model` on CPU (gloo).

Two real processes share the work and the test database (a file SQLite or PostgreSQL, the
one pytest-django set up; `transaction=True` so the processes see committed rows and the
test sees theirs): each rank samples its own prompts, metrics are the mean over ranks, rank 0
alone writes the one TrainingRun and ModelVersion, and a 2-process checkpoint resumes exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lineage.models import ModelVersion, TrainingRun

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.ml, pytest.mark.django_db(transaction=True)]

# Figures that differ between two runs of the same maths (wall-clock time).
TIMING = {"step_time", "episodes_per_s", "time_generation", "time_scoring", "time_update"}


def database_url() -> str:
    """The URL of the test database this test's connection uses, for the child processes."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        name = str(s["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            pytest.skip("an in-memory SQLite database cannot be shared with other processes")
        return f"sqlite:///{name}"
    if s["ENGINE"] == "django.db.backends.postgresql":
        auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
        return f"postgresql://{auth}@{s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"
    pytest.skip(f"no URL form for {s['ENGINE']}")


def torchrun(command: str, *args: str, log_dir: Path) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 manage.py COMMAND ARGS` against the test DB."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": database_url(),
        "DIST_REWARD_LOG": str(log_dir),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    # `python -m torch.distributed.run` is the `torchrun` script, without relying on PATH.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, "manage.py", command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    texts = [f"question {i} a kind answer no" for i in range(50)]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm", texts, vocab_size=200)


def test_train_ppo_two_processes_share_the_work_and_write_one_run(tmp_path, tiny_lm):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": f"question {i}"}) + "\n" for i in range(8)))
    # PPO-ptx too: its loss goes through the one forward DDP wraps, its batches per rank.
    ptx = tmp_path / "ptx.jsonl"
    ptx.write_text(
        "".join(json.dumps({"text": f"question {i} a kind answer"}) + "\n" for i in range(20))
    )
    logs = tmp_path / "reward-calls"
    logs.mkdir()
    out = tmp_path / "ppo"
    args = [
        "--policy", str(tiny_lm),
        "--reward-model", "tests.training.dist_reward:score",
        "--prompts", str(prompts),
        "--out", str(out),
        "--total-episodes", "12", "--batch-size", "4", "--mini-batches", "1",
        "--ppo-epochs", "1", "--response-length", "8",
        "--save-every", "1", "--eval-every", "0", "--no-progress",
        "--ptx-data", str(ptx),
    ]  # fmt: skip
    done = torchrun("train_ppo", *args, log_dir=logs)
    assert done.stdout.count("saved ") == 1  # one process reports, after the run is recorded

    # One run, one new model version, written by rank 0 with every step's metrics.
    run = TrainingRun.objects.get()
    assert (run.kind, run.status, run.config["num_processes"]) == ("ppo", "succeeded", 2)
    produced = ModelVersion.objects.get(produced_by=run)
    assert run.output_model == produced and produced.path == str(out)
    assert ModelVersion.objects.count() == 2  # the starting policy and the trained one
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in run.metrics_history] == [1, 2, 3]
    assert run.metrics["score"] == rows[-1]["score"]
    assert all(r["ptx_loss"] > 0 for r in rows)

    # Sharding: per step each rank scored its own 2 of the step's 4 distinct prompts.
    calls = {rank: read_jsonl(logs / f"rank{rank}.jsonl") for rank in (0, 1)}
    assert len(calls[0]) == len(calls[1]) == 3
    for step, (mine, theirs) in enumerate(zip(calls[0], calls[1], strict=True)):
        assert len(mine["prompts"]) == len(theirs["prompts"]) == 2
        assert not set(mine["prompts"]) & set(theirs["prompts"]), f"step {step + 1} overlaps"
        # Averaged: rank 1 scores 10 more by construction, so rank 0 alone would be ~10 off.
        local_means = [sum(c["scores"]) / 2 for c in (mine, theirs)]
        assert rows[step]["score"] == pytest.approx(sum(local_means) / 2)

    # The same command again has nothing to do: the run finished and its model is there.
    again = torchrun("train_ppo", *args, log_dir=logs)
    assert again.stdout.count("nothing to do") == 1 and TrainingRun.objects.count() == 1

    # Resume: killed before the final save (its weights gone), the same command continues
    # from the 2-process checkpoint of step 2 and redoes step 3 exactly (every rank's RNG,
    # optimizer and weights were restored).
    assert (out / "checkpoints" / "step-2").is_dir()
    (out / "model.safetensors").unlink()
    torchrun("train_ppo", *args, log_dir=logs)
    second = TrainingRun.objects.exclude(pk=run.pk).get()
    assert second.status == "succeeded"
    # Its history is the whole run's: steps 1-2 from before, step 3 redone.
    assert [r["step"] for r in second.metrics_history] == [1, 2, 3]
    redone = {k: v for k, v in second.metrics_history[-1].items() if k not in TIMING}
    assert redone == pytest.approx({k: v for k, v in rows[-1].items() if k not in TIMING})
    for rank in (0, 1):
        again = read_jsonl(logs / f"rank{rank}.jsonl")
        assert len(again) == 4 and again[3] == calls[rank][2]
    assert ModelVersion.objects.filter(produced_by=second).count() == 1


def test_two_processes_keep_one_best_gold(tmp_path, tiny_lm):
    """With a judge, rank 0 alone evaluates the held-out prompts and writes best_gold."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": f"question {i}"}) + "\n" for i in range(10)))
    logs = tmp_path / "reward-calls"
    logs.mkdir()
    out = tmp_path / "ppo"
    torchrun(
        "train_ppo",
        "--policy", str(tiny_lm),
        "--reward-model", "tests.training.dist_reward:score",
        "--judge", "tests.training.test_ppo_best_gold:count_e",
        "--prompts", str(prompts),
        "--out", str(out),
        "--total-episodes", "8", "--batch-size", "4", "--mini-batches", "1",
        "--ppo-epochs", "1", "--response-length", "6",
        "--save-every", "0", "--eval-every", "1", "--num-eval-prompts", "2", "--no-progress",
        log_dir=logs,
    )  # fmt: skip
    rows = read_jsonl(out / "metrics.jsonl")
    record = json.loads((out / "best_gold" / "best_gold.json").read_text())
    assert record["step"] == max(rows, key=lambda r: r["eval_gold"])["step"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("best_gold")) == ["best_gold"]
    run = TrainingRun.objects.get()
    assert run.metrics["best_gold_step"] == record["step"]
    assert run.metrics["best_gold_path"] == str(out / "best_gold")


def test_train_reward_model_two_processes_split_the_pairs_and_write_one_run(tmp_path, tiny_lm):
    export = tmp_path / "export"
    export.mkdir()
    rows = [
        {"prompt": f"question {i}", "chosen": "a kind answer", "rejected": "no", "split": "train"}
        for i in range(16)
    ]
    (export / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rm"
    done = torchrun(
        "train_reward_model",
        "--export", str(export / "pairs.jsonl"),
        "--base-model", str(tiny_lm),
        "--out", str(out),
        "--batch-size", "2", "--logging-steps", "1", "--max-length", "64",
        log_dir=tmp_path,
    )  # fmt: skip
    assert done.stdout.count("saved ") == 1

    run = TrainingRun.objects.get()
    assert (run.kind, run.status, run.config["num_processes"]) == ("reward", "succeeded", 2)
    assert ModelVersion.objects.get() == run.output_model
    # 16 pairs, 2 per process and step: 4 optimizer steps (one process would take 8), each
    # logged once, by rank 0, with the loss averaged over both processes by the trainer.
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4]
    assert json.loads((out / "training_config.json").read_text())["num_processes"] == 2
    assert [r["step"] for r in run.metrics_history if "loss" in r] == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory) -> Path:
    from training.tiny import build_tiny_causal_lm

    texts = [f"say {i} ok {i}" for i in range(40)]
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("tiny") / "chat", texts, chat_template=True, vocab_size=200
    )


def _one_run_and_one_version(kind: str, out: Path) -> TrainingRun:
    """One TrainingRun and ModelVersion for the job, and 16 rows at 2 per process and step:
    4 optimizer steps (one process would take 8), each logged once, in the file and the run."""
    run = TrainingRun.objects.get()  # not one per process
    assert (run.kind, run.status, run.config["num_processes"]) == (kind, "succeeded", 2)
    assert list(ModelVersion.objects.filter(produced_by__isnull=False)) == [run.output_model]
    assert json.loads((out / "training_config.json").read_text())["num_processes"] == 2
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in run.metrics_history if "loss" in r] == [1, 2, 3, 4]
    return run


def test_train_sft_two_processes_write_one_run(tmp_path, chat_lm):
    data = tmp_path / "sft.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"say {i}"},
                {"role": "assistant", "content": f"ok {i}"},
            ]
        }
        for i in range(16)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft"
    done = torchrun(
        "train_sft",
        "--data", str(data), "--base-model", str(chat_lm), "--out", str(out),
        "--epochs", "1", "--batch-size", "2", "--logging-steps", "1", "--max-length", "64",
        log_dir=tmp_path,
    )  # fmt: skip
    assert done.stdout.count("saved ") == 1
    _one_run_and_one_version("sft", out)
    assert (out / "config.json").is_file()


def test_train_dpo_two_processes_write_one_run(tmp_path, chat_lm):
    export = tmp_path / "export"
    export.mkdir()
    rows = [
        {"prompt": f"say {i}", "chosen": f"ok {i}", "rejected": "no", "split": "train"}
        for i in range(16)
    ]
    (export / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "dpo"
    done = torchrun(
        "train_dpo",
        "--export", str(export / "pairs.jsonl"), "--policy", str(chat_lm), "--out", str(out),
        "--batch-size", "2", "--logging-steps", "1",
        log_dir=tmp_path,
    )  # fmt: skip
    assert done.stdout.count("saved ") == 1
    _one_run_and_one_version("dpo", out)
    assert (out / "config.json").is_file()
