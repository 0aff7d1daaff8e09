"""Production settings come from the environment and pass `check --deploy`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage(*args, env):
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_secret_and_hosts(tmp_path):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={
            "SECRET_KEY": "x" * 64 + "-a-long-random-production-key",
            "ALLOWED_HOSTS": "labels.example.com",
            "DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("key", [None, "   "], ids=["unset", "blank"])
def test_without_secret_key_and_debug_off_commands_refuse_to_start(tmp_path, key):
    # A key of spaces would sign sessions and pseudonymise exports as badly as none.
    env = {"DATA_DIR": str(tmp_path)} | ({} if key is None else {"SECRET_KEY": key})
    result = manage("check", env=env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: SECRET_KEY is not set: set it in the environment (any long random string), "
        "or DEBUG=1 for local development."
    ]


def test_check_deploy_flags_the_development_key_debug_falls_back_to(tmp_path):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={"DATA_DIR": str(tmp_path), "DEBUG": "1"},
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stdout + result.stderr


def test_settings_read_the_environment(tmp_path):
    code = (
        "from django.conf import settings as s;"
        "print(s.DEBUG, s.ALLOWED_HOSTS, s.DATA_DIR, s.DATABASES['default']['ENGINE'])"
    )
    result = manage(
        "shell",
        "-c",
        code,
        env={
            "DEBUG": "1",
            "ALLOWED_HOSTS": "a.example,b.example",
            "DATA_DIR": str(tmp_path),
            "DATABASE_URL": "sqlite:///" + str(tmp_path / "x.db"),
        },
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip().splitlines()[-1]
        == f"True ['a.example', 'b.example'] {tmp_path} django.db.backends.sqlite3"
    )
