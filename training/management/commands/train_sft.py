from pathlib import Path

from django.core.management.base import CommandError

from annotation.models import Export
from annotation.services.runs import run_source_record
from lineage.models import ModelVersion, TrainingRun
from lineage.services import folder_path, model_path, model_version_register, training_run
from training.cli import add_config_arguments
from training.management.interrupt import ResumableCommand
from training.management.ranks import train_on_another_rank
from training.sft import SFTTrainConfig


def resolve_data(value: str) -> tuple[str, Export | None]:
    """An Export id (its folder) or a path to sft.jsonl / its folder; a known export folder is linked."""
    if value.isdigit():
        export = Export.objects.filter(pk=int(value)).first()
        if export is None:
            raise CommandError(f"No export with id {value}.")
        return export.path, export
    path = Path(value).expanduser()
    if not path.exists():
        raise CommandError(
            f"{value}: no such file or folder (give sft.jsonl, its folder or an Export id)."
        )
    folder = path if path.is_dir() else path.parent
    return str(path), Export.objects.filter(path=str(folder.resolve())).order_by("-id").first()


# The run's identity (training.reward.train.RUN_IDENTITY) as this command's flags name it.
FLAGS = {
    "base_model": "--base-model",
    "data_sha256": "the data of --data",
    "loss": "the training method",
    "lora": "--lora",
}


class Command(ResumableCommand):
    help = (
        "Supervised fine-tuning on demonstrations (sft.jsonl from export_demonstrations) with trl's "
        "SFTTrainer, loss on the assistant turns only; registers a policy ModelVersion."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--data", required=True, help="Export id, export folder, or an sft.jsonl file"
        )
        parser.add_argument(
            "--base-model", required=True, help="hub id or local path (a causal LM)"
        )
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--name", help="model version name (default: from --out)")
        add_config_arguments(parser.add_argument_group("SFT hyperparameters"), SFTTrainConfig)

    def handle(self, *args, **opts):
        from training.distributed import is_main_process, wait_for_everyone, world_size
        from training.modeling import ModelLoadError, check_model_reference
        from training.reward.train import refuse_foreign_checkpoint
        from training.sft import SFTDataError, load_demonstrations, train_sft

        # Validate everything before writing anything: no run, no output folder on bad input.
        data, export = resolve_data(opts["data"])
        try:
            config = SFTTrainConfig.from_options(opts)
            self.check_name(opts["name"], out=opts["out"], kind=ModelVersion.Kind.POLICY)
            demos = load_demonstrations(data)
            identity = {"base_model": str(opts["base_model"]), "data_sha256": demos.sha256}
            identity |= {"loss": "sft", "lora": config.lora}
            refuse_foreign_checkpoint(opts["out"], identity, config.resume, flags=FLAGS)
            check_model_reference(opts["base_model"], causal_lm=True)
        except (SFTDataError, ModelLoadError, TypeError, ValueError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        run_config = {
            **config.to_dict(),
            # Resolved, as lineage compares them (run_identity); `given`: as typed.
            "data": folder_path(demos.source),
            "base_model": model_path(opts["base_model"]),
            "given": {"--data": opts["data"], "--base-model": opts["base_model"]},
            "data_sha256": demos.sha256,
            "num_processes": world_size(),
        }
        if self.already_finished(
            kind=TrainingRun.Kind.SFT,
            out=opts["out"],
            config=run_config,
            inputs=[opts["base_model"]],
            resume=config.resume,
            name=opts["name"],
        ):
            return

        if not is_main_process():  # it trains on its share of the demonstrations
            return train_on_another_rank(
                lambda: train_sft(demos, opts["base_model"], opts["out"], config),
                (SFTDataError, ModelLoadError, ValueError),
            )

        base = model_version_register(path=opts["base_model"], kind=ModelVersion.Kind.POLICY)
        try:
            with training_run(
                kind=TrainingRun.Kind.SFT,
                config=run_config,
                input_models=[base],
                output_dir=opts["out"],
            ) as run:
                run_source_record(
                    run=run.run, project=export.project if export else None, export=export
                )
                result = train_sft(
                    demos, opts["base_model"], opts["out"], config, on_metrics=run.log
                )
                run.history_from(result.output_dir / "metrics.jsonl")  # all steps, if resumed
                run.run.metrics = {
                    "train_loss": result.train_loss,
                    "first_loss": result.first_loss,
                    "last_loss": result.last_loss,
                    "examples": result.num_examples,
                    "steps": result.global_step,
                    "masking": result.mode,
                    "data_sha256": demos.sha256,
                }
                run.flush()
                version = model_version_register(
                    path=str(result.output_dir),
                    kind=ModelVersion.Kind.POLICY,
                    name=opts["name"],
                    parent=base,
                    produced_by=run.run,
                    metadata={"method": "sft", "lora": config.lora, "masking": result.mode},
                )
        except (SFTDataError, ModelLoadError, ValueError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        wait_for_everyone()  # the other ranks exit once the run is recorded
        loss = "n/a" if result.train_loss is None else f"{result.train_loss:.3f}"
        self.stdout.write(
            self.style.SUCCESS(
                f"saved {result.output_dir} as {version.name} (parent {base.name}), "
                f"{result.num_examples} examples, train loss {loss}; "
                f"next: generate_candidates SLUG --model {result.output_dir}"
            )
        )
