"""A run whose process was killed does not stay "running", two runs never write one folder,
and Ctrl-C / SIGTERM end a run as interrupted, with one line on how to resume."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from django.core.management.base import CommandError

from lineage.models import TrainingRun
from lineage.processes import is_alive, this_process
from lineage.services import runs_mark_interrupted, training_run

HOST = socket.gethostname()


def dead_process_tag() -> str:
    """The tag a run of a process that has ended would carry."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{HOST} {child.pid} 12345"


def test_process_tags_tell_live_from_gone():
    assert is_alive(this_process()) is True
    assert is_alive(dead_process_tag()) is False
    pid, start, _namespace = this_process().split()[1:]
    assert is_alive(f"{HOST} {pid} {int(start) + 1}") is False  # the pid, reused later
    assert is_alive(f"another-host {pid} {start}") is None  # nothing to tell from here
    assert is_alive(f"{HOST} {pid} {start} 4026531999") is None  # another pid namespace
    assert is_alive(f"{HOST} {pid} {start}") is True  # a tag of an earlier version
    assert is_alive("") is None


def test_a_killed_run_is_marked_interrupted_when_the_next_one_starts(db, tmp_path):
    killed = TrainingRun.objects.create(
        kind="ppo", status="running", output_dir=str(tmp_path / "a"), process=dead_process_tag()
    )
    elsewhere = TrainingRun.objects.create(
        kind="ppo", status="running", output_dir=str(tmp_path / "b"), process="gpu-7 42 99"
    )
    untagged = TrainingRun.objects.create(kind="ppo", status="running")  # an older version's
    with training_run(kind="ppo", config={}, output_dir=str(tmp_path / "a")) as run:
        assert run.run.process == this_process()
    killed.refresh_from_db()
    assert killed.status == "failed" and killed.finished_at is not None
    assert killed.error.startswith("interrupted: its process (pid ")
    assert "Run the same command again to resume" in killed.error
    for other in (elsewhere, untagged):
        other.refresh_from_db()
        assert other.status == "running"
    assert runs_mark_interrupted() == 0


def test_a_live_run_writing_the_folder_refuses_a_second_one(db, tmp_path):
    out = tmp_path / "ppo"
    out.mkdir()
    live = TrainingRun.objects.create(
        kind="ppo", status="running", output_dir=str(out), process=this_process()
    )
    refused = pytest.raises(ValueError, match=rf"is being written by ppo run {live.pk} \(pid ")
    with refused, training_run(kind="ppo", config={}, output_dir=str(out)):
        pass
    assert TrainingRun.objects.count() == 1
    with training_run(kind="ppo", config={}, output_dir=str(tmp_path / "other")):
        pass  # another folder is fine


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_marks_the_run_interrupted(db, how):
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), training_run(kind="reward", config={}):
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # deliver it now
    run = TrainingRun.objects.get()
    assert run.status == "failed"
    assert run.error.startswith("interrupted (Ctrl-C or SIGTERM)")
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back


def test_a_long_command_ends_on_ctrl_c_with_one_line_and_status_130():
    from training.management.interrupt import ResumableCommand

    class Command(ResumableCommand):
        def handle(self, *args, **options):
            raise KeyboardInterrupt

    with pytest.raises(CommandError, match="^interrupted: run the same command again") as caught:
        Command().execute(no_color=True, force_color=False, skip_checks=True)
    assert caught.value.returncode == 130


def test_the_admin_shows_a_killed_run_as_interrupted(admin_client):
    killed = TrainingRun.objects.create(kind="ppo", status="running", process=dead_process_tag())
    page = admin_client.get("/admin/lineage/trainingrun/").content.decode()
    assert '<td class="field-status">Failed</td>' in page  # not "Running"
    killed.refresh_from_db()
    assert killed.status == "failed"
    detail = admin_client.get(f"/admin/lineage/trainingrun/{killed.pk}/change/").content.decode()
    assert "interrupted: its process" in detail


def test_an_output_folder_is_one_folder_however_it_is_written(db, tmp_path, monkeypatch):
    from lineage.services import finished_run, model_version_register

    a, b = tmp_path / "a", tmp_path / "b"
    (a / "out").mkdir(parents=True)
    b.mkdir()
    (a / "out" / "model.safetensors").write_bytes(b"weights")
    monkeypatch.chdir(a)
    with training_run(kind="sft", config={"lr": 1}, output_dir="out") as run:
        model_version_register(path="out", produced_by=run.run)
    assert TrainingRun.objects.get().output_dir == str(a / "out")
    assert finished_run(kind="sft", output_dir="out", config={"lr": 1}) is not None
    assert finished_run(kind="sft", output_dir=str(a / "out"), config={"lr": 1}) is not None
    monkeypatch.chdir(b)  # the same command typed elsewhere: another folder, not done
    assert finished_run(kind="sft", output_dir="out", config={"lr": 1}) is None

    # A live run of "out" refuses a second one of the same folder written absolutely.
    monkeypatch.chdir(a)
    TrainingRun.objects.create(
        kind="ppo", status="running", output_dir=str(a / "out"), process=this_process()
    )
    refused = pytest.raises(ValueError, match="is being written by ppo run")
    with refused, training_run(kind="ppo", config={}, output_dir="./out"):
        pass
