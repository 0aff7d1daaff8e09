from pathlib import Path

from django.core.management.base import CommandError

from annotation.services.runs import run_source_record
from lineage.models import ModelVersion, TrainingRun
from lineage.services import folder_path, model_path, model_version_register, training_run
from training.cli import add_config_arguments
from training.dpo import DPOTrainConfig
from training.management.commands.train_reward_model import check_export_row, resolve_export
from training.management.interrupt import ResumableCommand
from training.management.ranks import train_on_another_rank

# The run's identity (training.reward.train.RUN_IDENTITY) as this command's flags name it.
FLAGS = {
    "base_model": "--policy",
    "data_sha256": "the data of --export",
    "loss": "--loss-type",
    "lora": "--lora",
}


class Command(ResumableCommand):
    help = (
        "DPO (trl's DPOTrainer) from a policy on a pairs export written by export_preferences; "
        "registers the new policy like train_ppo."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--export", required=True, help="Export id, export folder, or pairs file"
        )
        parser.add_argument(
            "--policy", required=True, help="hub id or local path of the starting policy"
        )
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--name", help="model version name (default: from --out)")
        parser.add_argument(
            "--allow-modified",
            action="store_true",
            help="train on an export whose files changed since it was written; refused otherwise",
        )
        add_config_arguments(parser.add_argument_group("DPO hyperparameters"), DPOTrainConfig)

    def handle(self, *args, **opts):
        from training.distributed import is_main_process, wait_for_everyone, world_size
        from training.dpo import train_dpo
        from training.modeling import ModelLoadError, check_model_reference
        from training.reward.data import RewardDataError, load_preferences
        from training.reward.train import refuse_foreign_checkpoint

        # Validate everything before writing anything: no run, no output folder on bad input.
        data, export = resolve_export(opts["export"])
        allow_modified = opts["allow_modified"]
        try:
            config = DPOTrainConfig.from_options(opts)
            self.check_name(opts["name"], out=opts["out"], kind=ModelVersion.Kind.POLICY)
            prefs = load_preferences(data, loss="pairwise", allow_modified=allow_modified)
            if export is not None:
                check_export_row(export, prefs, allow_modified=allow_modified)
            identity = {"base_model": str(opts["policy"]), "data_sha256": prefs.sha256}
            identity |= {"loss": f"dpo-{config.loss_type}", "lora": config.lora}
            refuse_foreign_checkpoint(opts["out"], identity, config.resume, flags=FLAGS)
            check_model_reference(opts["policy"], causal_lm=True)
        except (RewardDataError, ModelLoadError, TypeError, ValueError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        run_config = {
            **config.to_dict(),
            # Resolved, as lineage compares them (run_identity); `given`: as typed.
            "export": folder_path(data),
            "policy": model_path(opts["policy"]),
            "given": {"--export": opts["export"], "--policy": opts["policy"]},
            "data_sha256": prefs.sha256,
            "data_modified": prefs.modified,
            "num_processes": world_size(),
        }
        if self.already_finished(
            kind=TrainingRun.Kind.DPO,
            out=opts["out"],
            config=run_config,
            inputs=[opts["policy"]],
            resume=config.resume,
            name=opts["name"],
        ):
            return
        if prefs.rankings:
            # A rankings file serves too: its pairs are derived (all pairs across tiers).
            self.stdout.write(f"note: {prefs.source} is a rankings file: training on its pairs")

        if not is_main_process():  # it trains on its share of the pairs
            return train_on_another_rank(
                lambda: train_dpo(prefs, opts["policy"], opts["out"], config),
                (RewardDataError, ModelLoadError, ValueError),
            )

        parent = model_version_register(path=opts["policy"], kind=ModelVersion.Kind.POLICY)
        try:
            with training_run(
                kind=TrainingRun.Kind.DPO,
                config=run_config,
                input_models=[parent],
                output_dir=opts["out"],
            ) as run:
                run_source_record(
                    run=run.run, project=export.project if export else None, export=export
                )
                result = train_dpo(prefs, opts["policy"], opts["out"], config, on_metrics=run.log)
                run.history_from(result.output_dir / "metrics.jsonl")  # all steps, if resumed
                run.run.metrics = {
                    "train_loss": result.train_loss,
                    "first_loss": result.first_loss,
                    "last_loss": result.last_loss,
                    "eval_loss": result.eval_loss,
                    "eval_accuracy": result.eval_accuracy,
                    "eval_margin": result.eval_margin,
                    "train_pairs": result.num_train_pairs,
                    "eval_pairs": result.num_eval_pairs,
                    "steps": result.global_step,
                    "data_sha256": prefs.sha256,
                }
                run.flush()
                version = model_version_register(
                    path=str(result.output_dir),
                    kind=ModelVersion.Kind.POLICY,
                    name=opts["name"],
                    parent=parent,
                    produced_by=run.run,
                    metadata={
                        "method": "dpo",
                        "beta": config.beta,
                        "loss_type": config.loss_type,
                        "lora": config.lora,
                    },
                )
        except (RewardDataError, ModelLoadError, ValueError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        wait_for_everyone()  # the other ranks exit once the run is recorded
        accuracy = "n/a" if result.eval_accuracy is None else f"{result.eval_accuracy:.3f}"
        self.stdout.write(
            self.style.SUCCESS(
                f"saved {result.output_dir} as {version.name} (parent {parent.name}), "
                f"held-out preference accuracy {accuracy}; "
                f"next: generate_candidates SLUG --model {result.output_dir}"
            )
        )
