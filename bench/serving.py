"""Serving benchmarks: the labeling round trip over real HTTP behind gunicorn (SPEC section 9).

(a) `single`: one labeler's next + submit round trip, p50/p95, on SQLite and PostgreSQL, with
    a project of N comparisons (run at 10k and 1M to see that the hot path does not grow
    with the project). Target p50 <= 15 ms, p95 <= 40 ms, within 1.5x from 10k to 1M.
(b) `concurrent`: 8 and 64 labelers at once on PostgreSQL (gunicorn, 2+ workers, threads),
    annotations/s and p50/p99 of the round trip, then an audit of the database: comparisons
    holding more annotations than required, duplicate (labeler, comparison) annotations,
    and annotations a client was told were stored but that are missing. Target >= 150
    annotations/s on 2 cores; the audit must find zero of each.

Label Studio 1.23.2 on the same machine and flow (next task + submit, K=4): 155 ms median
round trip on SQLite, 195 ms on PostgreSQL, 9.8 annotations/s with 8 labelers on PostgreSQL.

Each run gets a fresh database: a SQLite file in a temporary folder, or a throwaway
PostgreSQL database `rlhf_bench_<pid>_<n>` on 127.0.0.1:5432 (user postgres, trust auth),
dropped at the end. The server is `gunicorn config.wsgi` on a free 127.0.0.1 port with
DEBUG=0; the project is seeded with bulk_create (K=4 candidates per prompt). Everything is
loopback and every loop is bounded by a count or a deadline.

    .venv/bin/python bench/serving.py                        # (a) and (b) at the default sizes
    .venv/bin/python bench/serving.py single --comparisons 10000,1000000
    .venv/bin/python bench/serving.py single --db sqlite --rounds 100
    .venv/bin/python bench/serving.py concurrent --labelers 8,64 --seconds 30
    .venv/bin/python bench/serving.py concurrent --db sqlite,postgres --labelers 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
K = 4
SLUG = "bench"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SEED_BATCH = 5000

TARGET_P50_MS = 15.0
TARGET_P95_MS = 40.0
TARGET_SCALING = 1.5
TARGET_RATE = 150.0
LABEL_STUDIO_P50_MS = {"sqlite": 155.0, "postgres": 195.0}
LABEL_STUDIO_RATE_8 = 9.8


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation, as numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---------------------------------------------------------------------------------------
# Inside a database: seeding and the audit (run as subprocesses with Django set up)
# ---------------------------------------------------------------------------------------


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def seed(comparisons: int, overlap: int, labelers: int) -> dict:
    """Create the bench project, `labelers` accounts and `comparisons` comparisons of K."""
    _django()
    from django.db import transaction

    from annotation.models import Candidate, Comparison, Prompt, messages_sha256, text_sha256
    from annotation.services.comparisons import comparisons_insert
    from annotation.services.projects import labeler_create, project_create

    start = time.perf_counter()
    project = project_create(slug=SLUG, num_candidates=K, overlap=overlap, allow_ties=False)
    tokens = [
        labeler_create(username=f"bench{i}", projects=[project], new_token=True)[1]
        for i in range(labelers)
    ]
    for first in range(0, comparisons, SEED_BATCH):
        n = min(SEED_BATCH, comparisons - first)
        with transaction.atomic():
            prompts = []
            for i in range(first, first + n):
                messages = [
                    {
                        "role": "user",
                        "content": f"Question {i}: explain in two sentences why the sky "
                        f"looks blue at noon and red at sunset, for a curious child.",
                    }
                ]
                prompts.append(
                    Prompt(
                        project=project,
                        external_id=f"b{i}",
                        messages=messages,
                        content_hash=messages_sha256(messages),
                        source="bench",
                    )
                )
            prompts = Prompt.objects.bulk_create(prompts)
            candidates = []
            for prompt in prompts:
                for j in range(K):
                    text = (
                        f"Answer {j} to {prompt.external_id}: sunlight scatters off air "
                        f"molecules, short blue waves the most, so the sky looks blue; "
                        f"at sunset the light crosses more air and the blue is lost. " * (1 + j % 2)
                    )
                    candidates.append(
                        Candidate(
                            prompt=prompt,
                            text=text,
                            text_hash=text_sha256(text),
                            model_name=f"m{j % 2}",
                        )
                    )
            candidates = Candidate.objects.bulk_create(candidates)
            rows = []
            for index, prompt in enumerate(prompts):
                ids = [c.pk for c in candidates[index * K : (index + 1) * K]]
                rows.append(
                    Comparison(
                        project=project,
                        prompt=prompt,
                        candidate_ids=ids,
                        required=overlap,
                    )
                )
            rows = comparisons_insert(comparisons=rows)
    return {"tokens": tokens, "seconds": time.perf_counter() - start}


def audit(acknowledged: list[int]) -> dict:
    """Count what must never happen: over-assignment, duplicates, lost annotations."""
    _django()
    from django.db.models import Count, F, Q

    from annotation.models import Annotation, Assignment, Comparison

    comparisons = Comparison.objects.filter(project__slug=SLUG)
    # Originals only: a correction supersedes an annotation and does not count twice.
    originals = Annotation.objects.filter(comparison__project__slug=SLUG, supersedes__isnull=True)
    over_annotations = (
        comparisons.annotate(n=Count("annotations", filter=Q(annotations__supersedes__isnull=True)))
        .filter(n__gt=F("required"))
        .count()
    )
    over_assignments = (
        comparisons.annotate(
            n=Count("assignments", filter=Q(assignments__status=Assignment.Status.SUBMITTED))
        )
        .filter(n__gt=F("required"))
        .count()
    )
    counter_mismatch = (
        comparisons.annotate(
            n=Count("assignments", filter=Q(assignments__status=Assignment.Status.SUBMITTED))
        )
        .exclude(n=F("submitted_count"))
        .count()
    )
    duplicates = (
        originals.values("labeler_id", "comparison_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    stored = set(originals.values_list("id", flat=True))
    acked = set(acknowledged)
    return {
        "annotations": len(stored),
        "over_assigned": over_annotations + over_assignments,
        "duplicates": duplicates,
        "lost": len(acked - stored),
        "unacknowledged": len(stored - acked),
        "counter_mismatch": counter_mismatch,
        "open_comparisons": comparisons.filter(status=Comparison.Status.OPEN).count(),
    }


# ---------------------------------------------------------------------------------------
# Databases and the server
# ---------------------------------------------------------------------------------------


@dataclass
class Database:
    kind: str  # "sqlite" or "postgres"
    url: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
        }
        env.update(
            DATABASE_URL=self.url,
            DATA_DIR=str(self.data_dir),
            DJANGO_SETTINGS_MODULE="config.settings",
            DEBUG="0",
            SECURE_SSL_REDIRECT="0",
            SESSION_COOKIE_SECURE="0",
            CSRF_COOKIE_SECURE="0",
            SECRET_KEY="bench-only-secret-key-not-for-production-0123456789",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="ERROR",
            PYTHONPATH=str(ROOT),
        )
        return env


_counter = iter(range(1_000_000))


@contextlib.contextmanager
def database(kind: str) -> Iterator[Database]:
    """A fresh, migrated database of this kind, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-") as tmp:
        data_dir = Path(tmp)
        if kind == "sqlite":
            db = Database(kind, f"sqlite:///{data_dir / 'bench.sqlite3'}", data_dir)
            _migrate(db)
            yield db
            return
        if kind != "postgres":
            raise SystemExit(f"unknown database {kind!r} (sqlite or postgres)")
        import psycopg

        name = f"rlhf_bench_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            db = Database(kind, f"postgresql://postgres@127.0.0.1:5432/{name}", data_dir)
            _migrate(db)
            yield db
        finally:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(db: Database) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        env=db.env(),
        cwd=ROOT,
        check=True,
    )


def _in_db(db: Database, *args: str, stdin: str | None = None) -> dict:
    """Run `seed` or `audit` in a subprocess bound to `db`; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, __file__, *args],
        env=db.env(),
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn(db: Database, *, workers: int, threads: int, token: str) -> Iterator[str]:
    """`gunicorn config.wsgi` on a free loopback port; yields its base URL once it answers."""
    import requests

    port = _free_port()
    log = db.data_dir / "gunicorn.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--worker-class",
                "gthread",
                "--threads",
                str(threads),
                "--timeout",
                "120",
                "--log-level",
                "warning",
            ],
            env=db.env(),
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"gunicorn exited:\n{log.read_text()[-3000:]}")
                try:
                    response = requests.get(
                        f"{url}/api/v1/projects/",
                        headers={"Authorization": f"Token {token}"},
                        timeout=10,
                    )
                    if response.status_code == 200:
                        break
                except requests.RequestException:
                    pass  # still booting (a worker importing Django can take seconds)
                if time.monotonic() > deadline:
                    raise SystemExit(f"gunicorn did not answer in 60 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _length_judge(prompts: list, responses: list[str]) -> list[float]:
    return [float(len(r)) for r in responses]


# ---------------------------------------------------------------------------------------
# (a) one labeler
# ---------------------------------------------------------------------------------------


def run_single(kind: str, comparisons: int, args) -> dict:
    """p50/p95 of one labeler's next + submit round trip against a project of N comparisons."""
    from simulation.backends import LabelerClient

    with database(kind) as db:
        seeded = _in_db(db, "_seed", str(comparisons), str(args.overlap), "1")
        token = seeded["tokens"][0]
        with gunicorn(db, workers=args.workers, threads=args.threads, token=token) as url:
            client = LabelerClient(url, token)
            times: list[float] = []
            try:
                for round_ in range(args.warmup + args.rounds):
                    t0 = time.perf_counter()
                    assignment = client.next(SLUG)
                    if assignment is None:
                        break  # the project ran dry: fewer comparisons than rounds
                    ranking = [[c["id"]] for c in assignment["comparison"]["candidates"]]
                    code, _ = client.submit(assignment["id"], ranking, str(uuid.uuid4()))
                    elapsed = (time.perf_counter() - t0) * 1000
                    if code != 201:
                        raise SystemExit(f"submit answered {code}")
                    if round_ >= args.warmup:
                        times.append(elapsed)
            finally:
                client.close()
    return {
        "db": kind,
        "comparisons": comparisons,
        "rounds": len(times),
        "p50": percentile(times, 50),
        "p95": percentile(times, 95),
        "mean": statistics.fmean(times) if times else float("nan"),
        "seed_s": seeded["seconds"],
    }


def report_single(rows: list[dict]) -> None:
    print()
    print("(a) one labeler, next + submit round trip over HTTP (K=4), milliseconds")
    print(
        f"{'db':<9}{'comparisons':>12}{'rounds':>8}{'p50':>8}{'p95':>8}{'mean':>8}{'seed s':>8}"
        f"   target p50<={TARGET_P50_MS:g} p95<={TARGET_P95_MS:g}   Label Studio 1.23.2 p50"
    )
    for r in rows:
        ok = r["p50"] <= TARGET_P50_MS and r["p95"] <= TARGET_P95_MS
        print(
            f"{r['db']:<9}{r['comparisons']:>12,}{r['rounds']:>8}{r['p50']:>8.1f}{r['p95']:>8.1f}"
            f"{r['mean']:>8.1f}{r['seed_s']:>8.0f}   {'met' if ok else 'MISSED':<27}"
            f"{LABEL_STUDIO_P50_MS[r['db']]:>6.0f}"
        )
    for kind in sorted({r["db"] for r in rows}):
        sizes = sorted((r for r in rows if r["db"] == kind), key=lambda r: r["comparisons"])
        if len(sizes) > 1:
            small, large = sizes[0], sizes[-1]
            ratio = large["p50"] / small["p50"]
            verdict = "met" if ratio <= TARGET_SCALING else "MISSED"
            print(
                f"{kind}: p50 at {large['comparisons']:,} / at {small['comparisons']:,} = "
                f"{ratio:.2f}x (target <= {TARGET_SCALING}x: {verdict})"
            )


# ---------------------------------------------------------------------------------------
# (b) many labelers
# ---------------------------------------------------------------------------------------


def run_concurrent(kind: str, labelers: int, args) -> dict:
    """N labelers at once until the queue drains or the deadline; then audit the database."""
    from simulation.run import play_http

    with database(kind) as db:
        seeded = _in_db(
            db, "_seed", str(args.concurrent_comparisons), str(args.overlap), str(labelers)
        )
        tokens = seeded["tokens"]
        with gunicorn(db, workers=args.workers, threads=args.threads, token=tokens[0]) as url:
            result = play_http(
                url=url,
                slug=SLUG,
                tokens=tokens,
                judge=_length_judge,
                noise=1.0,
                max_seconds=args.seconds,
                timeout=60,
            )
        found = _in_db(db, "_audit", stdin=json.dumps(result.annotation_ids))
    return {
        "db": kind,
        "labelers": labelers,
        "annotations": result.annotations,
        "seconds": result.seconds,
        "rate": result.per_second,
        "p50": percentile(result.round_trip_ms, 50),
        "p99": percentile(result.round_trip_ms, 99),
        "conflicts": result.conflicts,
        "errors": result.errors,
        **{f"audit_{k}": v for k, v in found.items()},
    }


def report_concurrent(rows: list[dict]) -> None:
    print()
    print("(b) concurrent labelers over HTTP (K=4), gunicorn; audit from the database afterwards")
    print(
        f"{'db':<9}{'labelers':>9}{'ann':>7}{'secs':>7}{'ann/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'over':>6}{'dup':>5}{'lost':>6}{'409':>5}   target >={TARGET_RATE:g}/s, 0 over/dup/lost"
    )
    for r in rows:
        clean = r["audit_over_assigned"] == r["audit_duplicates"] == r["audit_lost"] == 0
        verdict = (
            "met"
            if clean and r["rate"] >= TARGET_RATE
            else ("rate MISSED" if clean else "AUDIT FAILED")
        )
        print(
            f"{r['db']:<9}{r['labelers']:>9}{r['annotations']:>7}{r['seconds']:>7.1f}"
            f"{r['rate']:>8.1f}{r['p50']:>8.1f}{r['p99']:>8.1f}{r['audit_over_assigned']:>6}"
            f"{r['audit_duplicates']:>5}{r['audit_lost']:>6}{r['conflicts']:>5}   {verdict}"
        )
        extra = []
        if r["audit_counter_mismatch"]:
            extra.append(f"{r['audit_counter_mismatch']} comparisons whose counter disagrees")
        if r["audit_unacknowledged"]:
            extra.append(f"{r['audit_unacknowledged']} stored but never acknowledged")
        if r["audit_open_comparisons"]:
            extra.append(f"{r['audit_open_comparisons']} comparisons still open at the deadline")
        if r["errors"]:
            extra.append(f"{len(r['errors'])} labelers stopped, first: {r['errors'][0]}")
        for line in extra:
            print(f"    {line}")
    print(
        f"Label Studio 1.23.2, same machine: {LABEL_STUDIO_RATE_8} annotations/s with 8 labelers on PostgreSQL"
    )


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def _ints(value: str) -> list[int]:
    return [int(v.replace("_", "")) for v in value.split(",") if v]


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # Internal steps, run by the benchmark itself inside a database's environment.
    if argv[:1] == ["_seed"]:
        comparisons, overlap, labelers = (int(a) for a in argv[1:4])
        print(json.dumps(seed(comparisons, overlap, labelers)))
        return
    if argv[:1] == ["_audit"]:
        print(json.dumps(audit(json.loads(sys.stdin.read() or "[]"))))
        return

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="?", choices=["single", "concurrent", "all"], default="all")
    parser.add_argument(
        "--db", type=_names, help="sqlite,postgres (default: both for (a), postgres for (b))"
    )
    parser.add_argument(
        "--comparisons",
        type=_ints,
        default=[10_000],
        help="(a): project sizes to measure, e.g. 10000,1000000",
    )
    parser.add_argument(
        "--concurrent-comparisons",
        type=int,
        default=1500,
        help="(b): comparisons in the project the labelers drain",
    )
    parser.add_argument("--overlap", type=int, default=2, help="annotations per comparison")
    parser.add_argument("--rounds", type=int, default=300, help="(a): timed round trips")
    parser.add_argument("--warmup", type=int, default=30, help="(a): untimed round trips first")
    parser.add_argument("--labelers", type=_ints, default=[8, 64], help="(b): concurrent labelers")
    parser.add_argument("--seconds", type=float, default=60.0, help="(b): deadline of each run")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    print(
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}; "
        f"gunicorn {args.workers} workers x {args.threads} threads (gthread)"
    )
    if args.which in ("single", "all"):
        rows = []
        for kind in args.db or ["sqlite", "postgres"]:
            for n in args.comparisons:
                rows.append(run_single(kind, n, args))
                print(f"  done: (a) {kind}, {n:,} comparisons", flush=True)
        report_single(rows)
    if args.which in ("concurrent", "all"):
        rows = []
        for kind in args.db or ["postgres"]:
            for n in args.labelers:
                rows.append(run_concurrent(kind, n, args))
                print(f"  done: (b) {kind}, {n} labelers", flush=True)
        report_concurrent(rows)


if __name__ == "__main__":
    main()
