import dataclasses
from pathlib import Path

from django.core.management.base import CommandError

from annotation.models import Export
from annotation.services.runs import run_source_record
from lineage.models import ModelVersion, TrainingRun
from lineage.services import folder_path, model_path, model_version_register, training_run
from training.cli import add_config_arguments
from training.distributed import is_main_process, wait_for_everyone, world_size
from training.management.interrupt import ResumableCommand
from training.management.ranks import train_on_another_rank
from training.reward.config import RewardConfig


def resolve_export(value: str) -> tuple[str, Export | None]:
    """An Export id or a path; a path of a known export is linked to its row."""
    if value.isdigit():
        export = Export.objects.filter(pk=int(value)).first()
        if export is None:
            raise CommandError(f"No export with id {value}.")
        return export.path, export
    path = Path(value).expanduser()
    if not path.exists():
        raise CommandError(f"{value}: no such export file or folder (give a path or an Export id).")
    folder = path if path.is_dir() else path.parent
    return str(path), Export.objects.filter(path=str(folder.resolve())).order_by("-id").first()


def check_export_row(export: Export, prefs, *, allow_modified: bool) -> None:
    """Compare the export's pairs table with the sha256 its Export row recorded at export time.

    The manifest sits beside the files and can be edited with them; the row cannot.
    """
    from annotation.datafiles.digest import sha256_path
    from training.reward.data import find_table

    pairs = find_table(Path(export.path), "pairs")
    if pairs is None or not export.sha256:
        return
    same = Path(prefs.source).resolve() == pairs.resolve()
    actual = prefs.sha256 if same else sha256_path(pairs)
    prefs.check_digest(
        pairs, actual, export.sha256, by=f"Export {export.pk}", allow_modified=allow_modified
    )


# The run's identity (training.reward.train.RUN_IDENTITY) as this command's flags name it.
FLAGS = {
    "base_model": "--base-model",
    "data_sha256": "the data of --export",
    "loss": "--loss",
    "lora": "--lora",
}


class Command(ResumableCommand):
    help = "Fit a reward model on an export written by export_preferences; registers a reward ModelVersion."

    def add_arguments(self, parser):
        parser.add_argument(
            "--export", required=True, help="Export id, export folder, or pairs/rankings file"
        )
        parser.add_argument(
            "--base-model", required=True, help="hub id or local path (a causal LM or an encoder)"
        )
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--name", help="model version name (default: from --out)")
        parser.add_argument(
            "--allow-modified",
            action="store_true",
            help="train on an export whose files changed since it was written (the run records "
            "the new sha256); refused otherwise",
        )
        # Every RewardConfig field, typed and documented from the dataclass.
        add_config_arguments(
            parser.add_argument_group("reward-model hyperparameters"), RewardConfig
        )

    def handle(self, *args, **opts):
        from training.modeling import ModelLoadError, check_model_reference
        from training.reward import train_reward_model
        from training.reward.data import RewardDataError, load_preferences
        from training.reward.train import model_max_positions, refuse_foreign_checkpoint

        # Validate everything before writing anything (SPEC section 4): a bad or modified
        # export, or a base model that cannot load, leaves no TrainingRun behind.
        data, export = resolve_export(opts["export"])
        try:
            config = RewardConfig.from_options(opts)
            self.check_name(opts["name"], out=opts["out"], kind=ModelVersion.Kind.REWARD)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        allow_modified = opts["allow_modified"]
        try:
            prefs = load_preferences(data, loss=config.loss, allow_modified=allow_modified)
            if export is not None:
                check_export_row(export, prefs, allow_modified=allow_modified)
            identity = {"base_model": str(opts["base_model"]), "data_sha256": prefs.sha256}
            identity |= {"loss": config.loss, "lora": config.lora}
            refuse_foreign_checkpoint(opts["out"], identity, config.resume, flags=FLAGS)
            check_model_reference(opts["base_model"])
            limit = model_max_positions(opts["base_model"])
        except (RewardDataError, ModelLoadError, ValueError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        notes = []
        if limit is not None and config.max_length > limit:
            notes.append(
                f"note: --max-length {config.max_length} exceeds the {limit} positions of "
                f"{opts['base_model']}: using {limit}"
            )
            config = dataclasses.replace(config, max_length=limit)
        for item in prefs.modified:
            notes.append(
                f"note: training on {item['file']} although it was modified after export "
                f"(sha256 {item['sha256']}, {item['by']} recorded {item['recorded']})"
            )
        run_config = {
            **config.to_dict(),
            # Resolved, as lineage compares them (run_identity); `given`: as typed.
            "export": folder_path(data),
            "base_model": model_path(opts["base_model"]),
            "given": {"--export": opts["export"], "--base-model": opts["base_model"]},
            "data_sha256": prefs.sha256,
            "data_modified": prefs.modified,
            "num_processes": world_size(),
        }
        if self.already_finished(
            kind=TrainingRun.Kind.REWARD,
            out=opts["out"],
            config=run_config,
            inputs=[opts["base_model"]],
            resume=config.resume,
            name=opts["name"],
        ):
            return
        for note in notes:
            self.stdout.write(note)

        if not is_main_process():  # it trains on its shard of the pairs
            return train_on_another_rank(
                lambda: train_reward_model(prefs, opts["base_model"], opts["out"], config),
                (RewardDataError, ModelLoadError, ValueError),
            )

        # A version stores a local folder resolved (model_path); one stored as typed still counts.
        paths = {model_path(opts["base_model"]), opts["base_model"]}
        base = ModelVersion.objects.filter(path__in=paths).order_by("-id").first()
        try:
            with training_run(
                kind=TrainingRun.Kind.REWARD,
                config=run_config,
                input_models=[base] if base else [],
                output_dir=opts["out"],
            ) as run:
                for note in notes:
                    run.append_log(note)
                run_source_record(
                    run=run.run, project=export.project if export else None, export=export
                )
                result = train_reward_model(
                    prefs, opts["base_model"], opts["out"], config, on_metrics=run.log
                )
                run.history_from(result.output_dir / "metrics.jsonl")  # all steps, if resumed
                agreement = export_labeler_agreement(export) if export is not None else None
                run.run.metrics = {
                    "accuracy": result.accuracy,
                    # The ceiling beside the score (training.evaluation.labeler_agreement).
                    "labeler_agreement": agreement,
                    "best_epoch": result.best_epoch,
                    "epochs_run": len(result.epoch_evaluations) or None,
                    "selection_split": result.selection_split,
                    "validation_pairs": result.num_validation_pairs,
                    "eval_loss": result.eval_loss,
                    "bias": result.bias,
                    "std": result.std,
                    "truncated": result.truncated_count,
                    "train_pairs": result.num_train_pairs,
                    "eval_pairs": result.num_eval_pairs,
                    "data_sha256": prefs.sha256,
                }
                run.flush()
                version = model_version_register(
                    path=str(result.output_dir),
                    kind=ModelVersion.Kind.REWARD,
                    name=opts["name"],
                    parent=base,
                    produced_by=run.run,
                    metadata={"accuracy": result.accuracy, "loss": config.loss},
                )
        except (RewardDataError, ModelLoadError, ValueError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        wait_for_everyone()  # the other ranks exit once the run is recorded
        from training.reward.schedule import accuracy_warnings

        for warning in accuracy_warnings(result.accuracy, agreement):
            self.stdout.write(self.style.WARNING(warning))
        accuracy = "n/a" if result.accuracy is None else f"{result.accuracy:.3f}"
        if agreement is not None:
            accuracy += f" (labelers agree with each other {agreement:.3f})"
        self.stdout.write(
            self.style.SUCCESS(
                f"saved {result.output_dir} as {version.name}, held-out accuracy {accuracy}"
            )
        )


def export_labeler_agreement(export) -> float | None:
    """`labeler_agreement` of the annotations of an export's project (the latest, not
    rejected), over comparisons with two labelers or more; None when there are none."""
    from itertools import groupby

    from annotation.models import Annotation
    from training.evaluation import labeler_agreement

    rows = (
        Annotation.objects.filter(
            comparison__project_id=export.project_id,
            superseded_by__isnull=True,
            rejected_at__isnull=True,
        )
        .order_by("comparison_id", "id")
        .values_list("comparison_id", "ranking")
    )
    comparisons = [
        rankings
        for _, group in groupby(rows.iterator(), key=lambda r: r[0])
        if len(rankings := [ranking for _, ranking in group]) > 1
    ]
    result = labeler_agreement(comparisons)
    return result.rate if result.pairs else None
