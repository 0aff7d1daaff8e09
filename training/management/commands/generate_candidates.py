from django.core.management.base import CommandError
from django.db import transaction

from annotation.management.base import get_project, service_errors
from annotation.models import Prompt
from annotation.services.imports import CandidateRecord, candidates_import
from annotation.services.runs import run_source_record
from lineage.models import ModelVersion, TrainingRun
from lineage.services import check_model_version_name, model_version_register, training_run
from training.management.interrupt import ResumableCommand


class Command(ResumableCommand):
    resume_hint = "run the same command again: prompts that have their candidates are skipped"
    help = (
        "Sample K distinct candidates per prompt from a policy model. Prompts that already have "
        "candidates from this model version are skipped, so an interrupted run resumes."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--model", required=True, help="hub id or local directory")
        parser.add_argument("--name", help="model version name (default: from the path)")
        parser.add_argument("--num-candidates", type=int, help="K (default: the project's K)")
        parser.add_argument("--max-new-tokens", type=int, default=128)
        parser.add_argument("--temperature", type=float, default=1.0)
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--device", default="auto")
        parser.add_argument("--limit", type=int, help="at most this many prompts")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts):
        from training.generation import GenerationConfig, generate_candidates
        from training.modeling import ModelLoadError, load_causal_lm

        project = get_project(opts["slug"])
        try:
            config = GenerationConfig(
                num_candidates=(
                    project.num_candidates
                    if opts["num_candidates"] is None
                    else opts["num_candidates"]  # 0 is refused like a negative, not the default
                ),
                max_new_tokens=opts["max_new_tokens"],
                temperature=opts["temperature"],
                top_p=opts["top_p"],
                batch_size=opts["batch_size"],
                seed=opts["seed"],
                device=opts["device"],
            )
            check_model_version_name(
                opts["name"], path=opts["model"], kind=ModelVersion.Kind.POLICY
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            model, tokenizer = load_causal_lm(
                opts["model"], device=config.device, dtype=config.dtype
            )
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from None

        version = model_version_register(
            path=opts["model"], kind=ModelVersion.Kind.POLICY, name=opts["name"]
        )
        prompts = Prompt.objects.filter(project=project)
        todo = list(prompts.exclude(candidates__model_version=version).order_by("id"))
        done = prompts.count() - len(todo)
        if opts["limit"]:
            todo = todo[: opts["limit"]]
        if not todo:
            self.stdout.write(
                f"every prompt of {project.slug} already has candidates from {version.name}"
            )
            return
        resumed = f" ({done} prompts already have them: skipped)" if done else ""
        self.stdout.write(
            f"generating {config.num_candidates} candidates for {len(todo)} prompts with "
            f"{version.name}{resumed}"
        )
        stored = {"created": 0}

        def store(indices, candidates):
            """Commit each finished chunk: a crash loses at most the chunk in flight."""
            records = [
                CandidateRecord(
                    line=todo[i].pk,
                    prompt_ref=("id", todo[i].pk),
                    text=candidate.text,
                    model=version.name,
                    params=candidate.metadata,
                )
                for i, chunk in zip(indices, candidates)
                for candidate in chunk
            ]
            with transaction.atomic(), service_errors():
                stored["created"] += candidates_import(
                    project=project, records=records, model_version=version, where="prompt"
                ).created

        with training_run(
            kind=TrainingRun.Kind.GENERATE, config=config, input_models=[version]
        ) as run:
            run_source_record(run=run.run, project=project)
            result = generate_candidates(
                (model, tokenizer),
                [p.as_model_input() for p in todo],
                config,
                model_name=version.name,
                on_batch=store,
                progress=not opts["no_progress"],
            )
            run.run.metrics = {
                "prompts": len(todo),
                "candidates": stored["created"],
                "prompts_short": len(result.short),
                "prompts_truncated": len(result.truncated),
                "seconds": round(result.seconds, 2),
            }
        self.stdout.write(
            self.style.SUCCESS(
                f"stored {stored['created']} candidates for {len(todo)} prompts from {version.name}"
            )
        )
        if result.short:
            self.stdout.write(
                f"{len(result.short)} prompts got fewer than {config.num_candidates} distinct candidates"
            )
