"""Long commands: Ctrl-C ends them with one line that says how to go on, not a traceback; a
training command run again after it finished has nothing to do."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.distributed import process_rank


class ResumableCommand(BaseCommand):
    """A command whose work resumes when run again (checkpoints, or work already stored).

    Ctrl-C (and SIGTERM, which `lineage.services.training_run` turns into the same) ends it
    with exit status 130 and `resume_hint`; the run it was recording is marked interrupted.
    """

    resume_hint = "run the same command again to resume from its last checkpoint"

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except KeyboardInterrupt:
            raise CommandError(f"interrupted: {self.resume_hint}", returncode=130) from None

    def already_finished(
        self, *, kind: str, out, config: dict, inputs: list, resume: bool, name: str | None
    ) -> bool:
        """Say so and return True when `out` holds this very run's model, finished and
        unchanged (`lineage.services.finished_run`); `--no-resume` trains it again. Else,
        about to train, refuse an `out` a live run writes and a `--name` already taken."""
        from lineage.services import finished_run

        run = (
            finished_run(kind=kind, output_dir=out, config=config, inputs=inputs)
            if resume
            else None
        )
        if run is None:
            if process_rank() == 0:  # the others would find rank 0's own run writing `out`
                self.refuse_busy(out)
                self.refuse_unsafe_output(out, inputs, kind=kind)
            self.check_name(name)
            return False
        if process_rank() == 0:  # under torchrun, every rank finds the same and stops
            self.stdout.write(
                f"{out} already holds {run.output_model.name}, made by {kind} run {run.pk} "
                f"from these inputs and settings ({run.finished_at:%Y-%m-%d %H:%M}): nothing "
                "to do (--no-resume trains it again)"
            )
        return True

    def refuse_busy(self, out) -> None:
        """Refuse, before any work, an `out` a live run is writing."""
        from lineage.services import refuse_busy_output

        try:
            refuse_busy_output(out)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    def refuse_unsafe_output(self, out, inputs: list, *, kind: str) -> None:
        """Refuse, before any work, an `out` training would damage or cannot write
        (`training.outputs.refuse_unsafe_output`), and one holding another kind's run."""
        from lineage.models import TrainingRun
        from lineage.services import folder_path
        from training.outputs import refuse_unsafe_output

        try:
            refuse_unsafe_output(out, inputs)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        # The folder's latest run wrote what is there now (an earlier one of another kind
        # may be long gone, deleted with the folder).
        last = (
            TrainingRun.objects.filter(output_dir__in={str(out), folder_path(out)})
            .order_by("-id")
            .first()
        )
        folder = Path(out).expanduser()
        if last is not None and last.kind != kind and folder.is_dir() and any(folder.iterdir()):
            raise CommandError(
                f"--out {out} holds the output of {last.kind} run {last.pk}: training would "
                "overwrite it; choose another output folder"
            )

    def check_name(self, name: str | None, *, out=None, kind: str | None = None) -> None:
        """Refuse a `--name` another model version holds, before any work.

        With `out`, the name of the version already in that folder passes: the run may be
        finished (nothing to do); the strict check follows once it is known not to be.
        """
        from lineage.services import check_model_version_name

        try:
            if out is not None:
                check_model_version_name(name, path=out, kind=kind)
            else:
                check_model_version_name(name)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
