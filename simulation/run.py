"""The one simulation loop: labelers rank what their backends serve, by the judge's scores.

`play` drives any `simulation.backends.Backend`, one labeler per backend, either in turns
(in process: overlapping annotations of a comparison then come from different labelers,
as with people working at once) or as concurrent threads (over HTTP, a load test). Either
way each comparison is scored by the judge once, the labeler's tie rule is the one in
`SimulatedLabeler.rank`, and agreement with the judge is measured the same way.

Django-free: `play_http` is the HTTP entry point; `simulation.services.labelers_simulate`
is the in-process one.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from simulation.backends import (
    ApiError,
    Backend,
    HttpBackend,
    LabelerClient,
    Outcome,
    Served,
)
from simulation.labelers import SimulatedLabeler, simulated_labelers
from training.evaluation import ranking_agreement_with_judge

JudgeFn = Callable[[list[Any], list[str]], Sequence[float]]


class JudgeError(ValueError):
    """A judge that raised, or returned something other than one finite number per response."""


def judge_scores(judge: JudgeFn, prompt: Any, responses: Sequence[str]) -> list[float]:
    """The judge's score of each response to one prompt, checked: one finite float each."""
    try:
        raw = judge([prompt] * len(responses), list(responses))
    except Exception as exc:  # noqa: BLE001 - user code: report it in one line
        name = getattr(judge, "__name__", repr(judge))
        raise JudgeError(f"the judge {name} raised {type(exc).__name__}: {exc}") from exc
    try:
        scores = [float(s) for s in raw]
    except (TypeError, ValueError) as exc:
        raise JudgeError(f"the judge must return a list of numbers, got {raw!r:.200}") from exc
    if len(scores) != len(responses):
        raise JudgeError(f"the judge returned {len(scores)} scores for {len(responses)} responses")
    if not all(math.isfinite(s) for s in scores):
        raise JudgeError(f"the judge returned a non-finite score: {scores}")
    return scores


@dataclass
class SimulationResult:
    """What a simulation did: acknowledged annotations, agreement with the judge, timings."""

    labelers: int = 0
    annotations: int = 0
    replays: int = 0
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)
    agree: float = 0.0
    judged_pairs: int = 0
    annotation_ids: list[int] = field(default_factory=list)
    round_trip_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    by_kind: dict[str, list[float]] = field(default_factory=dict)

    @property
    def agreement(self) -> float | None:
        """Agreement of the submitted rankings with the judge over the pairs it orders.

        A pair the labeler ties counts 1/2, so 0.5 is chance.
        """
        return self.agree / self.judged_pairs if self.judged_pairs else None

    @property
    def per_second(self) -> float:
        return self.annotations / self.seconds if self.seconds > 0 else 0.0

    def record(
        self,
        *,
        kind: str,
        annotation_id: int,
        created: bool,
        agree: float,
        judged: int,
        round_trip_ms: float | None = None,
    ) -> None:
        """Count one acknowledged submit (created, or a replay of a stored token)."""
        self.annotations += created
        self.replays += not created
        self.annotation_ids.append(annotation_id)
        if round_trip_ms is not None:
            self.round_trip_ms.append(round_trip_ms)
        self.agree += agree
        self.judged_pairs += judged
        totals = self.by_kind.setdefault(kind, [0.0, 0])
        totals[0] += agree
        totals[1] += judged

    def summary(self) -> str:
        """One line: annotations, rate and agreement with the judge (per kind when mixed)."""
        agreement = "n/a" if self.agreement is None else f"{self.agreement:.3f}"
        line = (
            f"{self.annotations} annotations by {self.labelers} labelers in {self.seconds:.1f}s "
            f"({self.per_second:.1f}/s); agreement with the judge {agreement} "
            f"over {self.judged_pairs} pairs"
        )
        if len(self.by_kind) > 1:
            parts = [
                f"{kind} {agree / judged:.3f}" if judged else f"{kind} n/a"
                for kind, (agree, judged) in sorted(self.by_kind.items())
            ]
            line += f" ({', '.join(parts)})"
        if self.conflicts:
            line += f"; {self.conflicts} conflicts skipped"
        if self.replays:
            line += f"; {self.replays} replays"
        return line


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


class _Turn(Enum):
    AGAIN = "again"  # the labeler may go on
    DONE = "done"  # nothing left for this labeler (or it stopped on an error)
    STOP = "stop"  # the whole simulation is out of annotations or time


class _Session:
    """State the labelers share: budget, judge (with its score cache) and the result."""

    def __init__(
        self,
        *,
        judge: JudgeFn,
        allow_ties: bool,
        labelers: int,
        max_annotations: int | None,
        max_seconds: float | None,
        stop_on: tuple[type[Exception], ...],
        on_progress: Callable[[int], None] | None,
    ):
        self.judge = judge
        self.allow_ties = allow_ties
        self.max_annotations = max_annotations
        self.stop_on = stop_on
        self.on_progress = on_progress
        self.result = SimulationResult(labelers=labelers)
        self.lock = threading.Lock()
        self.judge_lock = threading.Lock()  # judges need not be thread-safe (a model, a cache)
        # The judge's scores do not change between labelers: score each comparison once.
        self.scores_of: dict[int, dict[int, float]] = {}
        self.reserved = 0
        self.start = time.perf_counter()
        self.deadline = None if max_seconds is None else self.start + max_seconds

    def _reserve(self) -> bool:
        """Take one slot of max_annotations before asking for work; False when none is left."""
        with self.lock:
            if self.max_annotations is not None and self.reserved >= self.max_annotations:
                return False
            self.reserved += 1
            return True

    def _release(self) -> None:
        with self.lock:
            self.reserved -= 1

    def _scores(self, served: Served) -> dict[int, float]:
        with self.judge_lock:
            scores = self.scores_of.get(served.comparison_id)
            if scores is None:
                values = judge_scores(self.judge, served.prompt, served.texts)
                scores = self.scores_of[served.comparison_id] = dict(
                    zip(served.candidate_ids, values)
                )
            return scores

    def turn(self, labeler: SimulatedLabeler, backend: Backend) -> _Turn:
        """One assignment for this labeler: next, judge, rank, submit."""
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return _Turn.STOP
        if not self._reserve():
            return _Turn.STOP
        spent = False  # whether the reserved slot went to an acknowledged annotation
        try:
            t0 = time.perf_counter()
            served = backend.next()
            if served is None:
                return _Turn.DONE
            scores = self._scores(served)
            tiers = labeler.rank(
                served.candidate_ids,
                [scores[i] for i in served.candidate_ids],
                allow_ties=self.allow_ties,
            )
            submitted = backend.submit(served, tiers, uuid.uuid4())
            elapsed_ms = (time.perf_counter() - t0) * 1000
            if submitted.outcome is Outcome.CONFLICT:
                backend.skip(served)
                with self.lock:
                    self.result.conflicts += 1
                return _Turn.AGAIN
            spent = True
            agreement = ranking_agreement_with_judge(tiers, scores, judge_ties="exclude")
            with self.lock:
                self.result.record(
                    kind=labeler.kind.value,
                    annotation_id=submitted.annotation_id,
                    created=submitted.outcome is Outcome.CREATED,
                    agree=agreement.agree,
                    judged=agreement.pairs,
                    round_trip_ms=elapsed_ms,
                )
            if self.on_progress is not None:
                self.on_progress(1)
            return _Turn.AGAIN
        except self.stop_on as exc:
            with self.lock:
                self.result.errors.append(f"{labeler.name}: {type(exc).__name__}: {exc}")
            return _Turn.DONE
        finally:
            if not spent:
                self._release()


def play(
    players: Sequence[tuple[SimulatedLabeler, Backend]],
    *,
    judge: JudgeFn,
    allow_ties: bool,
    concurrent: bool = False,
    max_annotations: int | None = None,
    max_seconds: float | None = None,
    stop_on: tuple[type[Exception], ...] = (),
    on_progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Play each (labeler, backend) until the queue is empty, M annotations or the deadline.

    In turns (one comparison each per round) unless `concurrent` (one thread per labeler).
    Ties are given only where `allow_ties` (the project's setting) and the labeler has a
    tie epsilon. An error of a type in `stop_on` stops that labeler and is recorded in the
    result; the others go on. Any other error ends the simulation (in turns) or that thread.
    """
    session = _Session(
        judge=judge,
        allow_ties=allow_ties,
        labelers=len(players),
        max_annotations=max_annotations,
        max_seconds=max_seconds,
        stop_on=stop_on,
        on_progress=on_progress,
    )
    if concurrent:

        def work(labeler: SimulatedLabeler, backend: Backend) -> None:
            while session.turn(labeler, backend) is _Turn.AGAIN:
                pass

        threads = [
            threading.Thread(target=work, args=player, name=player[0].name, daemon=True)
            for player in players
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        active = list(players)
        while active:
            still_working = []
            for player in active:
                turn = session.turn(*player)
                if turn is _Turn.STOP:
                    still_working = []
                    break
                if turn is _Turn.AGAIN:
                    still_working.append(player)
            active = still_working
    session.result.seconds = time.perf_counter() - session.start
    return session.result


def play_http(
    *,
    url: str,
    slug: str,
    tokens: Sequence[str],
    judge: JudgeFn,
    noise: float,
    random_share: float = 0.0,
    adversarial_share: float = 0.0,
    max_annotations: int | None = None,
    seed: int = 0,
    tie_epsilon: float | None = None,
    max_seconds: float | None = None,
    timeout: float = 30.0,
    on_progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Play one labeler per token as concurrent HTTP clients until the queue is empty.

    Stops early after `max_annotations` acknowledged annotations or `max_seconds`. A labeler
    whose request fails for good stops and its error is recorded; the others go on.
    """
    if not tokens:
        raise ValueError("at least one token is needed")
    labelers = simulated_labelers(
        [f"http-{i}" for i in range(len(tokens))],
        noise=noise,
        random_share=random_share,
        adversarial_share=adversarial_share,
        seed=seed,
        tie_epsilon=tie_epsilon,
    )
    # Fail early, once, on a wrong URL, token or slug, and learn whether ties are allowed.
    probe = LabelerClient(url, tokens[0], timeout=timeout)
    try:
        allow_ties = bool(probe.project(slug).get("allow_ties"))
    finally:
        probe.close()
    clients = [LabelerClient(url, token, timeout=timeout) for token in tokens]
    try:
        return play(
            [(labeler, HttpBackend(client, slug)) for labeler, client in zip(labelers, clients)],
            judge=judge,
            allow_ties=allow_ties,
            concurrent=True,
            max_annotations=max_annotations,
            max_seconds=max_seconds,
            stop_on=(ApiError, JudgeError, KeyError, ValueError),
            on_progress=on_progress,
        )
    finally:
        for client in clients:
            client.close()
