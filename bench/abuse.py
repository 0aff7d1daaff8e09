"""Replays the abuse cases of the hardening audit against a real server and prints "held" per case.

Everything stays on 127.0.0.1: `gunicorn config.wsgi` (DEBUG=0) on a free loopback port over
a fresh SQLite (or PostgreSQL with `--db postgres`) database, the same harness as
bench/serving.py. Every request loop is bounded in count and time.

Cases:
- oversized bodies: a 2 MiB body of empty JSON objects to the anonymous token endpoint, and
  a body over IMPORT_MAX_BYTES to the staff prompt import, answered 413 before parsing; a
  body of countless tiny values under the byte cap to the import, refused by the streaming
  parser's value budget; the gunicorn workers' peak memory is printed beside them;
- throttle races: N concurrent wrong passwords for one account on the token endpoint and on
  /admin/login/, of which at most LOGIN_FAILURE_LIMIT may get a password check;
- bad imports: `import_prompts` on files with invalid UTF-8, a NUL, a lone surrogate and
  deep nesting exits with one `file:line: reason` line, no traceback, and imports nothing.

    .venv/bin/python bench/abuse.py [--db sqlite|postgres] [--racers 60]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import database, gunicorn  # noqa: E402

LIMIT = 10  # LOGIN_FAILURE_LIMIT for the server under test
IMPORT_MAX = 4 * 1024**2  # IMPORT_MAX_BYTES for the server under test


def manage(db, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=db.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def workers_peak_rss_mb(master_pid: int | None) -> float:
    """Largest VmHWM (peak resident memory) among the gunicorn workers, in MB."""
    peaks = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if f"PPid:\t{master_pid}\n" in text and (m := re.search(r"VmHWM:\s+(\d+) kB", text)):
            peaks.append(int(m.group(1)) / 1024)
    return max(peaks, default=0.0)


def gunicorn_master() -> int | None:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            parts = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(p.endswith(b"gunicorn") for p in parts[:2]) and b"config.wsgi" in parts:
            pid = int(cmdline.parent.name)
            status = (cmdline.parent / "status").read_text()
            if f"PPid:\t{os.getpid()}\n" in status:
                return pid
    return None


def report(case: str, held: bool, detail: str) -> bool:
    print(f"{'held  ' if held else 'BROKEN'}  {case:<58} {detail}", flush=True)
    return held


def race(count: int, attempt) -> list:
    """Run `attempt()` in `count` threads released together; their results."""
    barrier = threading.Barrier(count)
    results: list = []
    lock = threading.Lock()

    def body():
        barrier.wait(timeout=30)
        result = attempt()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def body_cases(url: str, staff_token: str) -> list[bool]:
    import requests

    master = gunicorn_master()
    before = workers_peak_rss_mb(master)
    held = []
    junk = b"[" + b",".join([b"{}"] * (2 * 1024**2 // 3)) + b"]"
    r = requests.post(
        f"{url}/api/v1/auth/token/", data=junk, headers={"Content-Type": "application/json"}
    )
    held.append(
        report(
            "2 MiB of {} to the anonymous token endpoint",
            r.status_code == 413,
            f"{r.status_code} {r.text[:60]}",
        )
    )
    staff = {"Authorization": f"Token {staff_token}", "Content-Type": "application/json"}
    big = json.dumps({"prompts": [{"text": "x" * (IMPORT_MAX + 1024)}]}).encode()
    r = requests.post(f"{url}/api/v1/projects/abuse/prompts/", data=big, headers=staff)
    held.append(
        report(
            "import body over IMPORT_MAX_BYTES",
            r.status_code == 413,
            f"{r.status_code} {r.text[:60]}",
        )
    )
    tiny = b'{"prompts": [' + b",".join([b"{}"] * (IMPORT_MAX // 3 - 10)) + b"]}"
    r = requests.post(f"{url}/api/v1/projects/abuse/prompts/", data=tiny, headers=staff)
    held.append(
        report(
            f"{len(tiny) // 1024} KiB of {{}} to the import (value budget)",
            r.status_code in (400, 413),
            f"{r.status_code} {r.text[:60]}",
        )
    )
    after = workers_peak_rss_mb(master)
    held.append(
        report(
            "worker peak memory stays bounded",
            after - before < 200,
            f"peak RSS {before:.0f} -> {after:.0f} MB",
        )
    )
    return held


def throttle_cases(url: str, racers: int) -> list[bool]:
    import requests

    held = []

    def token_attempt():
        return requests.post(
            f"{url}/api/v1/auth/token/",
            json={"username": "target", "password": "guess"},
            timeout=60,
        ).status_code

    codes = race(racers, token_attempt)
    checked = codes.count(400)
    held.append(
        report(
            f"{racers} concurrent wrong passwords, token endpoint",
            checked <= LIMIT,
            f"{checked} password checks (limit {LIMIT}), {codes.count(429)} x 429",
        )
    )

    def admin_attempt():
        session = requests.Session()
        page = session.get(f"{url}/admin/login/", timeout=60)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        return session.post(
            f"{url}/admin/login/",
            data={
                "username": "admin-target",
                "password": "guess",
                "csrfmiddlewaretoken": csrf.group(1) if csrf else "",
            },
            headers={"Referer": f"{url}/admin/login/"},
            timeout=60,
        ).status_code

    codes = race(racers, admin_attempt)
    if set(codes) - {200, 429}:
        print(f"        /admin/login/ answered {sorted(set(codes))}", flush=True)
    checked = codes.count(200)
    held.append(
        report(
            f"{racers} concurrent wrong passwords, /admin/login/",
            checked <= LIMIT,
            f"{checked} password checks (limit {LIMIT}), {codes.count(429)} x 429",
        )
    )
    return held


BAD_IMPORTS = {
    "invalid UTF-8": b'{"text": "ok"}\n{"text": "caf\xe9"}\n',
    "a NUL character": b'{"text": "ok"}\n{"text": "a\\u0000b"}\n',
    "a lone surrogate": b'{"text": "ok"}\n{"text": "\\ud800"}\n',
    "deep nesting": b'{"text": "ok"}\n{"text": "x", "metadata": '
    + b'{"a": ' * 2000
    + b"1"
    + b"}" * 2001
    + b"\n",
}


def import_cases(db, folder: Path) -> list[bool]:
    held = []
    for name, content in BAD_IMPORTS.items():
        path = folder / f"bad-{name.replace(' ', '-')}.jsonl"
        path.write_bytes(content)
        done = manage(db, "import_prompts", "abuse", str(path))
        lines = done.stderr.strip().splitlines()
        one_line = len(lines) == 1 and f"{path.name}:2" in lines[0]
        ok = done.returncode != 0 and one_line and "Traceback" not in done.stderr
        held.append(
            report(f"import_prompts with {name}", ok, (lines[-1] if lines else "(no message)")[:90])
        )
    count = manage(
        db, "shell", "-c", "from annotation.models import Prompt; print(Prompt.objects.count())"
    )
    stored = (count.stdout.strip().splitlines() or ["?"])[-1]  # the shell prints a banner first
    held.append(
        report(
            "bad imports wrote nothing",
            stored == "0",
            f"{stored} prompts stored",
        )
    )
    return held


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--racers", type=int, default=60, help="concurrent sign-in attempts")
    args = parser.parse_args(argv)
    os.environ.update(
        LOGIN_FAILURE_LIMIT=str(LIMIT), IMPORT_MAX_BYTES=str(IMPORT_MAX), THROTTLE_TOKEN="1000/min"
    )
    with tempfile.TemporaryDirectory() as tmp, database(args.db) as db:
        # Production pages need the hashed static files (README's collectstatic step).
        os.environ["STATIC_ROOT"] = str(Path(tmp) / "static")
        assert manage(db, "collectstatic", "--noinput", "-v", "0").returncode == 0
        assert manage(db, "create_project", "abuse").returncode == 0
        made = manage(db, "create_labeler", "staff-abuse", "--project", "abuse", "--staff")
        staff_token = made.stdout.strip().splitlines()[-1]
        manage(
            db,
            "create_labeler",
            "target",
            "--project",
            "abuse",
            "--password",
            "the-right-password-1",
        )
        manage(
            db,
            "create_labeler",
            "admin-target",
            "--project",
            "abuse",
            "--staff",
            "--password",
            "the-right-password-2",
        )
        with gunicorn(db, workers=2, threads=8, token=staff_token) as url:
            held = body_cases(url, staff_token) + throttle_cases(url, args.racers)
        held += import_cases(db, Path(tmp))
    print(f"{sum(held)} held, {len(held) - sum(held)} broken ({args.db})")
    sys.exit(0 if all(held) else 1)


if __name__ == "__main__":
    main()
