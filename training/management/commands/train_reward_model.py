from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Export
from annotation.services.runs import run_source_record
from lineage.models import ModelVersion, TrainingRun
from lineage.services import model_version_register, training_run
from training.cli import add_config_arguments
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


class Command(BaseCommand):
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
        # Every RewardConfig field, typed and documented from the dataclass.
        add_config_arguments(
            parser.add_argument_group("reward-model hyperparameters"), RewardConfig
        )

    def handle(self, *args, **opts):
        from training.modeling import ModelLoadError
        from training.reward import train_reward_model
        from training.reward.data import RewardDataError

        data, export = resolve_export(opts["export"])
        try:
            config = RewardConfig.from_options(opts)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        base = ModelVersion.objects.filter(path=opts["base_model"]).order_by("-id").first()
        try:
            with training_run(
                kind=TrainingRun.Kind.REWARD,
                config={**config.to_dict(), "export": data, "base_model": opts["base_model"]},
                input_models=[base] if base else [],
                output_dir=opts["out"],
            ) as run:
                run_source_record(
                    run=run.run, project=export.project if export else None, export=export
                )
                result = train_reward_model(
                    data, opts["base_model"], opts["out"], config, on_metrics=run.log
                )
                run.run.metrics = {
                    "accuracy": result.accuracy,
                    "eval_loss": result.eval_loss,
                    "bias": result.bias,
                    "std": result.std,
                    "truncated": result.truncated_count,
                    "train_pairs": result.num_train_pairs,
                    "eval_pairs": result.num_eval_pairs,
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
        accuracy = "n/a" if result.accuracy is None else f"{result.accuracy:.3f}"
        self.stdout.write(
            self.style.SUCCESS(
                f"saved {result.output_dir} as {version.name}, held-out accuracy {accuracy}"
            )
        )
