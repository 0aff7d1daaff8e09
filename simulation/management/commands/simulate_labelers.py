import math
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.management.base import get_project, service_errors
from simulation.backends import ApiError
from simulation.run import JudgeError, play_http
from simulation.services import labelers_simulate, simulation_remaining
from training.callables import CallableLoadError, load_callable


def share(value: str) -> float:
    number = float(value)
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise ValueError(value)
    return number


def non_negative(value: str) -> float:
    number = float(value)
    if math.isnan(number) or number < 0:
        raise ValueError(value)
    return number


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Play N simulated labelers that rank by sampling Plackett-Luce orders from a judge's "
        "scores / T, through the services in process, or over HTTP with --url and --tokens."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--judge",
            required=True,
            help="module:function(prompts, responses) -> list[float], e.g. "
            "training.demo_world.judge:judge",
        )
        parser.add_argument("--labelers", type=positive_int, required=True, help="N labelers")
        parser.add_argument(
            "--noise",
            type=non_negative,
            required=True,
            help="Plackett-Luce temperature T (0 = the judge's order exactly)",
        )
        parser.add_argument(
            "--random-share", type=share, default=0.0, help="share of uniformly random labelers"
        )
        parser.add_argument(
            "--adversarial-share",
            type=share,
            default=0.0,
            help="share of labelers who reverse the judge's order",
        )
        parser.add_argument("--url", help="base URL of a running server (HTTP mode)")
        parser.add_argument(
            "--tokens", type=Path, help="file with one API token per line (HTTP mode)"
        )
        parser.add_argument("--max-annotations", type=positive_int, help="stop after M annotations")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--tie-epsilon",
            type=non_negative,
            help="tie candidates whose judge scores are within this (projects with ties only)",
        )

    def handle(self, *args, **opts):
        if bool(opts["url"]) != bool(opts["tokens"]):
            raise CommandError("--url and --tokens go together (HTTP mode needs both).")
        try:
            judge = load_callable(opts["judge"])
        except CallableLoadError as exc:
            raise CommandError(f"--judge: {exc}") from None
        try:
            result = self._run_http(judge, opts) if opts["url"] else self._run_local(judge, opts)
        except JudgeError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(result.summary()))

    def _progress(self, opts, total: int | None) -> tqdm:
        return tqdm(
            total=total,
            unit="ann",
            desc=f"simulate {opts['slug']}",
            file=sys.stderr,
            disable=opts["verbosity"] < 1,
        )

    def _run_local(self, judge, opts):
        project = get_project(opts["slug"])
        total = simulation_remaining(project=project, labelers=opts["labelers"])
        if opts["max_annotations"] is not None:
            total = min(total, opts["max_annotations"])
        with self._progress(opts, total) as bar, service_errors():
            return labelers_simulate(
                project=project,
                judge=judge,
                labelers=opts["labelers"],
                noise=opts["noise"],
                random_share=opts["random_share"],
                adversarial_share=opts["adversarial_share"],
                max_annotations=opts["max_annotations"],
                seed=opts["seed"],
                tie_epsilon=opts["tie_epsilon"],
                on_progress=bar.update,
            )

    def _run_http(self, judge, opts):
        try:
            lines = opts["tokens"].read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CommandError(f"--tokens: cannot read {opts['tokens']}: {exc.strerror}") from None
        tokens = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if len(tokens) < opts["labelers"]:
            raise CommandError(
                f"--tokens: {opts['tokens']} holds {len(tokens)} tokens, "
                f"{opts['labelers']} labelers need one each"
            )
        with self._progress(opts, opts["max_annotations"]) as bar:
            try:
                result = play_http(
                    url=opts["url"],
                    slug=opts["slug"],
                    tokens=tokens[: opts["labelers"]],
                    judge=judge,
                    noise=opts["noise"],
                    random_share=opts["random_share"],
                    adversarial_share=opts["adversarial_share"],
                    max_annotations=opts["max_annotations"],
                    seed=opts["seed"],
                    tie_epsilon=opts["tie_epsilon"],
                    on_progress=bar.update,
                )
            except ApiError as exc:
                raise CommandError(f"--url: {exc}") from None
            except ValueError as exc:
                raise CommandError(f"Invalid simulation: {exc}") from None
        for error in result.errors:
            self.stderr.write(f"labeler stopped: {error}")
        if result.errors and len(result.errors) >= result.labelers:
            raise CommandError(f"every labeler stopped on an error; first: {result.errors[0]}")
        return result
