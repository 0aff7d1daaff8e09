"""Simulated labelers: rank candidates by sampling from a judge's scores (SPEC section 7).

A *noisy* labeler samples a Plackett-Luce order from `scores / T`: the best candidate is drawn
with probability proportional to `exp(score / T)`, then the next among the rest, and so on.
T -> 0 gives the judge's order exactly; T -> infinity gives a uniform order. A *random*
labeler ranks uniformly at random whatever the scores; an *adversarial* one reverses the
judge's order. Sampling uses the Gumbel-max trick (order by `score / T + Gumbel noise`),
which is exactly Plackett-Luce and never overflows, even for tiny T.

Also here, because the HTTP mode needs no Django: `load_callable` for `module:function`
judges, `judge_scores` to call one safely, `pairwise_agreement_with_scores` to score a ranking
against the judge, and `play_http`, which runs N labelers as concurrent HTTP clients against
the v1 API (SPEC section 3).

Pure Python: no Django, no torch (`requests` is imported only by the HTTP client).
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from training.callables import CallableLoadError, load_callable  # noqa: F401  (re-exported)

JudgeFn = Callable[[list[Any], list[str]], Sequence[float]]


class LabelerKind(StrEnum):
    NOISY = "noisy"
    RANDOM = "random"
    ADVERSARIAL = "adversarial"


class JudgeError(ValueError):
    """A judge that raised, or returned something other than one finite number per response."""


# ---------------------------------------------------------------------------------------
# Orders
# ---------------------------------------------------------------------------------------


def _check_scores(scores: Sequence[float]) -> list[float]:
    values = [float(s) for s in scores]
    bad = [s for s in values if not math.isfinite(s)]
    if bad:
        raise ValueError(f"scores must be finite numbers, got {bad[0]!r}")
    return values


def judge_order(scores: Sequence[float], rng: random.Random) -> list[int]:
    """Indices best first by score; equal scores are put in a random order."""
    values = _check_scores(scores)
    tiebreak = [rng.random() for _ in values]
    return sorted(range(len(values)), key=lambda i: (-values[i], tiebreak[i]))


def _gumbel(rng: random.Random) -> float:
    u = rng.random()
    while u == 0.0:  # random() is in [0, 1); log(0) would be -inf
        u = rng.random()
    return -math.log(-math.log(u))


def plackett_luce_order(
    scores: Sequence[float], temperature: float, rng: random.Random
) -> list[int]:
    """Indices best first, sampled from Plackett-Luce with utilities `scores / temperature`.

    Temperature 0 is the judge's order (ties broken at random); infinity is a uniform order.
    """
    if math.isnan(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    values = _check_scores(scores)
    if temperature == 0:
        return judge_order(values, rng)
    if math.isinf(temperature):
        order = list(range(len(values)))
        rng.shuffle(order)
        return order
    # Gumbel-max: argsort of utility + i.i.d. Gumbel(0, 1) noise is a Plackett-Luce sample.
    keys = [v / temperature + _gumbel(rng) for v in values]
    return sorted(range(len(values)), key=lambda i: -keys[i])


def labeler_order(
    kind: LabelerKind | str, scores: Sequence[float], *, temperature: float, rng: random.Random
) -> list[int]:
    """The order (indices best first) a labeler of this kind gives candidates with these scores."""
    kind = LabelerKind(kind)
    if kind is LabelerKind.NOISY:
        return plackett_luce_order(scores, temperature, rng)
    if kind is LabelerKind.RANDOM:
        order = list(range(len(_check_scores(scores))))
        rng.shuffle(order)
        return order
    return judge_order(scores, rng)[::-1]


def order_to_tiers(
    order: Sequence[int],
    scores: Mapping[int, float] | Sequence[float],
    *,
    ties: bool = False,
    epsilon: float = 0.0,
) -> list[list[int]]:
    """Turn an order of candidates into tiers, best first.

    Strict (one candidate per tier) unless `ties`: then each candidate whose score is within
    `epsilon` of its tier's first joins that tier, so only near-equal neighbours tie.
    `scores[item]` is the judge's score of each item of `order`.
    """
    if not ties:
        return [[item] for item in order]
    tiers: list[list[int]] = []
    for item in order:
        if tiers and abs(scores[item] - scores[tiers[-1][0]]) <= epsilon:
            tiers[-1].append(item)
        else:
            tiers.append([item])
    return tiers


def kinds_for(labelers: int, *, random_share: float = 0.0, adversarial_share: float = 0.0) -> list:
    """The kind of each of `labelers` labelers: noisy first, then random, then adversarial.

    Shares are rounded to whole labelers (a share above 0 gets at least one labeler).
    """
    if labelers < 1:
        raise ValueError("at least one labeler is needed")
    for name, share in (("random_share", random_share), ("adversarial_share", adversarial_share)):
        if math.isnan(share) or not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {share!r}")
    if random_share + adversarial_share > 1.0 + 1e-9:
        raise ValueError("random_share + adversarial_share must not exceed 1")

    def count(share: float) -> int:
        return 0 if share == 0 else max(1, round(share * labelers))

    n_random, n_adversarial = count(random_share), count(adversarial_share)
    if n_random + n_adversarial > labelers:
        raise ValueError(
            f"{labelers} labelers cannot hold {n_random} random and {n_adversarial} adversarial ones"
        )
    n_noisy = labelers - n_random - n_adversarial
    return (
        [LabelerKind.NOISY] * n_noisy
        + [LabelerKind.RANDOM] * n_random
        + [LabelerKind.ADVERSARIAL] * n_adversarial
    )


@dataclass
class SimulatedLabeler:
    """One simulated labeler: a kind, a noise temperature and its own random stream."""

    name: str
    kind: LabelerKind
    temperature: float
    rng: random.Random
    ties: bool = False
    tie_epsilon: float = 0.0

    def rank(self, candidate_ids: Sequence[int], scores: Sequence[float]) -> list[list[int]]:
        """Tiers of candidate ids, best first, given the judge's score of each candidate."""
        if len(candidate_ids) != len(scores):
            raise ValueError("one score per candidate is needed")
        order = labeler_order(self.kind, scores, temperature=self.temperature, rng=self.rng)
        by_id = dict(zip(candidate_ids, scores))
        return order_to_tiers(
            [candidate_ids[i] for i in order], by_id, ties=self.ties, epsilon=self.tie_epsilon
        )


def simulated_labelers(
    names: Sequence[str],
    *,
    noise: float,
    random_share: float = 0.0,
    adversarial_share: float = 0.0,
    seed: int = 0,
    ties: bool = False,
    tie_epsilon: float = 0.0,
) -> list[SimulatedLabeler]:
    """Labelers named `names`, kinds by share, each with a random stream seeded by (seed, i)."""
    if math.isnan(noise) or noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    kinds = kinds_for(len(names), random_share=random_share, adversarial_share=adversarial_share)
    return [
        SimulatedLabeler(
            name=name,
            kind=kind,
            temperature=noise,
            # A string seed is hashed deterministically (unlike hash()), so runs repeat.
            rng=random.Random(f"simulate:{seed}:{i}"),
            ties=ties,
            tie_epsilon=tie_epsilon,
        )
        for i, (name, kind) in enumerate(zip(names, kinds))
    ]


# ---------------------------------------------------------------------------------------
# Agreement with the judge
# ---------------------------------------------------------------------------------------


def pairwise_agreement_with_scores(
    tiers: Sequence[Sequence[int]], scores: dict[int, float]
) -> tuple[float, int]:
    """(agreeing, judged) pairs: over pairs the judge orders strictly, how many the tiers match.

    A pair tied in the tiers counts half, so a coin-flip labeler sits at 0.5 of `judged`.
    """
    tier_of = {cid: t for t, tier in enumerate(tiers) for cid in tier}
    ids = list(tier_of)
    agree = 0.0
    judged = 0
    for x in range(len(ids)):
        for y in range(x + 1, len(ids)):
            a, b = ids[x], ids[y]
            if scores[a] == scores[b]:
                continue
            judged += 1
            if tier_of[a] == tier_of[b]:
                agree += 0.5
            elif (tier_of[a] < tier_of[b]) == (scores[a] > scores[b]):
                agree += 1
    return agree, judged


# ---------------------------------------------------------------------------------------
# Judges
# ---------------------------------------------------------------------------------------


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


def prompt_for_judge(messages: list[dict], is_chat: bool | None = None) -> str | list[dict]:
    """A prompt as SPEC section 4 hands it to judges: plain text, or the whole chat.

    When `is_chat` is unknown (the v1 API does not say), a lone user message is taken as a
    plain-text prompt, which is how plain text is stored.
    """
    if is_chat is None:
        is_chat = not (len(messages) == 1 and messages[0].get("role") == "user")
    return messages if is_chat else messages[0]["content"]


# ---------------------------------------------------------------------------------------
# Over HTTP
# ---------------------------------------------------------------------------------------


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
        """Pairwise agreement of the submitted rankings with the judge (0.5 = chance)."""
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


class ApiError(RuntimeError):
    """The server answered something a well-behaved client cannot go on from."""


class LabelerClient:
    """A labeler's view of the v1 API over one keep-alive HTTP session."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0, retries: int = 3):
        try:
            import requests
        except ImportError as exc:  # pragma: no cover - requests ships with the dev extras
            raise ApiError("the HTTP mode needs the `requests` package") from exc
        self._requests = requests
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Token {token.strip()}", "Accept": "application/json"}
        )

    def _post(self, path: str, body: dict | None = None):
        last: Exception | None = None
        # Retrying is safe: `next` renews the same lease and `submit` is idempotent by token.
        for attempt in range(self.retries):
            try:
                return self.session.post(self.base + path, json=body, timeout=self.timeout)
            except (self._requests.ConnectionError, self._requests.Timeout) as exc:
                last = exc
                time.sleep(0.05 * 2**attempt)
        raise ApiError(f"POST {path}: {last}")

    def project(self, slug: str) -> dict:
        """The project as `GET /api/v1/projects/` lists it for this labeler."""
        try:
            response = self.session.get(self.base + "/api/v1/projects/", timeout=self.timeout)
        except self._requests.RequestException as exc:
            raise ApiError(f"GET /api/v1/projects/: {exc}") from exc
        if response.status_code != 200:
            raise ApiError(f"projects: HTTP {response.status_code}: {response.text[:200]}")
        for project in response.json():
            if project.get("slug") == slug:
                return project
        raise ApiError(f"project {slug!r} is not among this labeler's projects at {self.base}")

    def next(self, slug: str) -> dict | None:
        """The next assignment payload, or None when the project has nothing left for us."""
        response = self._post(f"/api/v1/projects/{slug}/assignments/next/")
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise ApiError(f"next: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()["assignment"]

    def submit(self, assignment_id: int, ranking: list[list[int]], client_token: str):
        """(status, annotation id or None): 201 stored, 200 replay, 409 conflict."""
        response = self._post(
            f"/api/v1/assignments/{assignment_id}/submit/",
            {"ranking": ranking, "client_token": client_token},
        )
        if response.status_code in (200, 201):
            return response.status_code, response.json()["annotation_id"]
        if response.status_code == 409:
            return 409, None
        raise ApiError(f"submit: HTTP {response.status_code}: {response.text[:200]}")

    def skip(self, assignment_id: int) -> None:
        """Give an assignment back (after a conflict) so the labeler is not served it again."""
        response = self._post(f"/api/v1/assignments/{assignment_id}/skip/")
        if response.status_code not in (200, 409):
            raise ApiError(f"skip: HTTP {response.status_code}: {response.text[:200]}")

    def close(self) -> None:
        self.session.close()


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
    ties: bool = False,
    tie_epsilon: float = 0.0,
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
        ties=ties,
        tie_epsilon=tie_epsilon,
    )
    # Fail early, once, on a wrong URL, token or slug, and learn whether ties are allowed.
    probe = LabelerClient(url, tokens[0], timeout=timeout)
    try:
        if not probe.project(slug).get("allow_ties"):
            for labeler in labelers:
                labeler.ties = False
    finally:
        probe.close()
    result = SimulationResult(labelers=len(labelers))
    lock = threading.Lock()
    judge_lock = threading.Lock()  # judges need not be thread-safe (a model, a cache)
    budget = {"reserved": 0}
    start = time.perf_counter()
    deadline = None if max_seconds is None else start + max_seconds

    def reserve() -> bool:
        with lock:
            if max_annotations is not None and budget["reserved"] >= max_annotations:
                return False
            budget["reserved"] += 1
            return True

    def release() -> None:
        with lock:
            budget["reserved"] -= 1

    def run(labeler: SimulatedLabeler, token: str) -> None:
        client = LabelerClient(url, token, timeout=timeout)
        held = False  # whether this thread holds a reserved slot of max_annotations
        try:
            while deadline is None or time.perf_counter() < deadline:
                if not reserve():
                    return
                held = True
                t0 = time.perf_counter()
                assignment = client.next(slug)
                if assignment is None:
                    return
                comparison = assignment["comparison"]
                ids = [c["id"] for c in comparison["candidates"]]
                texts = [c["text"] for c in comparison["candidates"]]
                prompt = prompt_for_judge(
                    comparison["prompt"]["messages"], comparison["prompt"].get("is_chat")
                )
                with judge_lock:
                    scores = judge_scores(judge, prompt, texts)
                tiers = labeler.rank(ids, scores)
                code, annotation_id = client.submit(assignment["id"], tiers, str(uuid.uuid4()))
                elapsed_ms = (time.perf_counter() - t0) * 1000
                if code == 409:
                    with lock:
                        result.conflicts += 1
                    client.skip(assignment["id"])
                    release()
                    held = False
                    continue
                held = False  # the slot is spent on an acknowledged annotation
                agree, judged = pairwise_agreement_with_scores(tiers, dict(zip(ids, scores)))
                with lock:
                    result.record(
                        kind=labeler.kind.value,
                        annotation_id=annotation_id,
                        created=code == 201,
                        agree=agree,
                        judged=judged,
                        round_trip_ms=elapsed_ms,
                    )
                if on_progress is not None:
                    on_progress(1)
        except (ApiError, JudgeError, KeyError, ValueError) as exc:
            with lock:
                result.errors.append(f"{labeler.name}: {type(exc).__name__}: {exc}")
        finally:
            if held:
                release()
            client.close()

    threads = [
        threading.Thread(target=run, args=(labeler, token), name=labeler.name, daemon=True)
        for labeler, token in zip(labelers, tokens)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - start
    return result
