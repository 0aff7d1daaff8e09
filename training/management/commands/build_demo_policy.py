from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from lineage.models import ModelVersion, TrainingRun
from lineage.services import model_version_register, training_run


def demo_policy_dir() -> Path:
    return Path(settings.DATA_DIR) / "models" / "demo-policy"


class Command(BaseCommand):
    help = "Train the demo world's tiny policy on CPU (cached in DATA_DIR/models/demo-policy)."

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, default=None)
        parser.add_argument(
            "--steps", type=int, help="optimizer steps (default: the full demo build)"
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--force", action="store_true", help="rebuild even when cached")

    def handle(self, *args, **opts):
        from training.demo_world.policy import (
            DemoPolicyConfig,
            build_demo_policy,
            demo_policy_ready,
        )

        out = opts["out"] or demo_policy_dir()
        overrides = {"seed": opts["seed"], **({"steps": opts["steps"]} if opts["steps"] else {})}
        config = DemoPolicyConfig(**overrides)
        run = None
        if demo_policy_ready(out, config) and not opts["force"]:
            self.stdout.write(f"demo policy already built in {out}")
        else:
            self.stdout.write(f"training the demo policy ({config.steps} steps) into {out}")
            with training_run(kind=TrainingRun.Kind.SFT, config=config, output_dir=out) as run:
                build_demo_policy(out, config=config, force=opts["force"], on_metrics=run.log)
                run.flush()
        # The build run is the version's producer and the run's output: lineage reaches the run
        # that made the demo policy, and the run page names what it made.
        version = model_version_register(
            path=str(out),
            kind=ModelVersion.Kind.POLICY,
            name=None,
            produced_by=run.run if run is not None else None,
        )
        self.stdout.write(self.style.SUCCESS(f"demo policy: {out} (model version {version.name})"))
