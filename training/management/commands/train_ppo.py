import functools
import json
from pathlib import Path

from django.core.management.base import CommandError

from annotation.models import Project
from annotation.prompts import prompt_model_input
from annotation.services.runs import run_source_record
from lineage.models import ModelVersion, TrainingRun
from lineage.services import model_path, model_version_register, training_run
from training.cli import add_config_arguments
from training.distributed import is_main_process, wait_for_everyone, world_size
from training.management.interrupt import ResumableCommand
from training.management.ranks import train_on_another_rank
from training.ppo.config import PPOConfig


def load_prompts(value: str) -> tuple[list, Project | None]:
    """A project slug (its prompts) or a .jsonl file of {"text"} / {"messages"} records."""
    project = Project.objects.filter(slug=value).first()
    if project is not None:
        prompts = [p.as_model_input() for p in project.prompts.order_by("id")]
        if not prompts:
            raise CommandError(f"Project {value} has no prompts.")
        return prompts, project
    path = Path(value)
    if not path.is_file():
        raise CommandError(f"{value}: neither a project slug nor a prompts file.")
    from annotation.errors import ImportFileError
    from annotation.services.imports import parse_prompt_file

    try:
        records = parse_prompt_file(path)
    except ImportFileError as exc:
        raise CommandError(exc.detail) from None
    return [prompt_model_input(r.messages, is_chat=r.is_chat) for r in records], None


def _best_gold_metrics(result) -> dict:
    """The best_gold checkpoint for the run's metrics: recorded there, not registered as a
    ModelVersion (a run has one output model; the folder is one of its by-products)."""
    if result.best_gold_step is None:
        return {}
    from training.ppo.best_gold import BEST_GOLD_DIR

    return {
        "best_gold_step": result.best_gold_step,
        "best_gold_eval": result.best_gold,
        "best_gold_path": str(Path(result.output_dir) / BEST_GOLD_DIR),
    }


class Command(ResumableCommand):
    help = "PPO with a KL penalty against a reward model (or a module:function reward); registers the new policy."

    def add_arguments(self, parser):
        parser.add_argument(
            "--policy", required=True, help="hub id or local path of the starting policy"
        )
        parser.add_argument(
            "--reward-model", required=True, help="reward model folder or module:function"
        )
        parser.add_argument("--prompts", required=True, help="project slug or prompts .jsonl")
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--judge", help="module:function gold score, logged during training")
        parser.add_argument("--name", help="model version name (default: from --out)")
        # Every PPOConfig field, typed and documented from the dataclass.
        add_config_arguments(parser.add_argument_group("PPO hyperparameters"), PPOConfig)

    def handle(self, *args, **opts):
        from training.modeling import ModelLoadError, check_model_reference
        from training.ppo import CallableLoadError, check_setup, load_callable, train_ppo
        from training.ppo.checkpoint import prompts_sha256
        from training.ppo.ptx import check_ptx_data

        # Validate everything before writing anything (SPEC section 4): no ModelVersion or
        # TrainingRun rows for a policy or reward that cannot be loaded.
        prompts, project = load_prompts(opts["prompts"])
        try:
            config = PPOConfig.from_options(opts)
            self.check_name(opts["name"], out=opts["out"], kind=ModelVersion.Kind.POLICY)
            reward_spec = opts["reward_model"]
            is_callable = ":" in reward_spec and not Path(reward_spec).exists()
            reward = load_callable(reward_spec) if is_callable else reward_spec
            judge = load_callable(opts["judge"]) if opts["judge"] else None
            if config.ptx_data:
                check_ptx_data(config.ptx_data)
        except (CallableLoadError, TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if not is_callable and not Path(reward_spec).is_dir():
            raise CommandError(
                f"{reward_spec}: no reward model folder there (or give module:function)."
            )
        try:
            check_model_reference(opts["policy"], causal_lm=True)
            if not is_callable:
                check_model_reference(reward_spec)
        except ModelLoadError as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        try:
            check_setup(config, len(prompts), world_size())
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        run_config = {
            **json.loads(json.dumps(config.__dict__, default=str)),
            # Resolved, as lineage compares them (run_identity); `given`: as typed.
            "policy": model_path(opts["policy"]),
            "reward": model_path(reward_spec),
            "judge": opts["judge"],
            "given": {"--policy": opts["policy"], "--reward-model": reward_spec},
            "prompts": opts["prompts"],
            "prompts_sha256": prompts_sha256(prompts),
            "num_processes": world_size(),
        }
        reward_inputs = [] if is_callable else [reward_spec]
        if self.already_finished(
            kind=TrainingRun.Kind.PPO,
            out=opts["out"],
            config=run_config,
            inputs=[opts["policy"], *reward_inputs, *filter(None, [config.ptx_data])],
            resume=config.resume,
            name=opts["name"],
        ):
            return

        train = functools.partial(
            train_ppo, opts["policy"], reward, prompts, opts["out"], config, judge=judge
        )
        if not is_main_process():  # it trains its share of every rollout
            return train_on_another_rank(train, (ModelLoadError, ValueError))

        parent = model_version_register(path=opts["policy"], kind=ModelVersion.Kind.POLICY)
        inputs = [parent]
        if not is_callable:
            inputs.append(model_version_register(path=reward_spec, kind=ModelVersion.Kind.REWARD))
        try:
            with training_run(
                kind=TrainingRun.Kind.PPO,
                config=run_config,
                input_models=inputs,
                output_dir=opts["out"],
            ) as run:
                run_source_record(run=run.run, project=project)
                result = train(on_metrics=run.log)
                run.history_from(result.output_dir / "metrics.jsonl")  # all steps, if resumed
                run.run.metrics = {**result.metrics, **_best_gold_metrics(result)}
                run.flush()
                version = model_version_register(
                    path=str(result.output_dir),
                    kind=ModelVersion.Kind.POLICY,
                    name=opts["name"],
                    parent=parent,
                    produced_by=run.run,
                    metadata={"steps": result.steps, "episodes": result.episodes},
                )
        except (ModelLoadError, ValueError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        wait_for_everyone()  # the other ranks exit once the run is recorded
        self.stdout.write(
            self.style.SUCCESS(
                f"saved {result.output_dir} as {version.name} (parent {parent.name}); "
                f"next: generate_candidates SLUG --model {result.output_dir}"
            )
        )
        if result.best_gold_step is not None:
            self.stdout.write(
                f"best held-out gold {result.best_gold:.4f} at step {result.best_gold_step}: "
                f"{_best_gold_metrics(result)['best_gold_path']}"
            )
