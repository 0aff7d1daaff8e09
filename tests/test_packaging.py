"""The wheel carries what the site needs: built and installed away from the checkout, it serves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from django.apps import apps
from django.template.loader import get_template

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter whose only copy of the project is the installed wheel.
SITE_CHECK = r"""
import json, re, sys
import django
from django.conf import settings
from django.core.management import call_command
from django.template.loader import get_template
from django.test import Client

django.setup()
import annotation

call_command("migrate", interactive=False, verbosity=0)
if not settings.DEBUG:
    call_command("collectstatic", interactive=False, verbosity=0)
client = Client()
page = client.get("/accounts/login/", secure=True)
html = page.content.decode()
css = re.search(r'<link rel="stylesheet" href="([^"]+)"', html)
static = client.get(css.group(1), secure=True) if css else None
body = b"".join(static.streaming_content) if static and static.status_code == 200 else b""
stats = get_template("admin/annotation/project/stats.html").origin.name
print(json.dumps({
    "annotation": annotation.__file__,
    "stats_template": stats,
    "login_status": page.status_code,
    "login_form": 'name="password"' in html,
    "css": css and css.group(1),
    "css_status": static and static.status_code,
    "css_body": body.decode(),
}))
"""


def _project_asset_files() -> set[str]:
    """Every templates/ and static/ file inside the project's packages, as wheel paths."""
    files = set()
    for package in ROOT.glob("*/__init__.py"):
        for kind in ("templates", "static"):
            for path in (package.parent / kind).rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    files.add(path.relative_to(ROOT).as_posix())
    return files


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, target): the wheel built from a copy of the checkout, installed into a bare folder."""
    # Built with this environment's setuptools (no download); pyproject asks for 77+.
    if int(metadata.version("setuptools").split(".")[0]) < 77:
        pytest.skip("building the wheel offline needs setuptools>=77 in this environment")
    base = tmp_path_factory.mktemp("wheel")
    # A copy, so the build's build/ and egg-info never land in (or race inside) the checkout.
    source = base / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "var", "build", "dist", "*.egg-info", "staticfiles",
            "__pycache__", ".pytest_cache", ".ruff_cache", "test-results", "node_modules",
        ),
    )  # fmt: skip
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    offline = ["--no-deps", "--no-index"]
    dist = base / "dist"
    subprocess.run(
        [*pip, "wheel", *offline, "--no-build-isolation", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("rlhf_studio-*.whl")
    target = base / "site"
    subprocess.run(
        [*pip, "install", *offline, "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return wheel, target


def test_the_wheel_carries_every_template_and_static_file(installed_wheel):
    wheel, _ = installed_wheel
    assets = _project_asset_files()
    assert {"annotation/templates/base.html", "annotation/static/css/app.css"} <= assets
    with zipfile.ZipFile(wheel) as archive:
        assert not assets - set(archive.namelist())


@pytest.mark.parametrize("debug", [True, False], ids=["debug-finders", "production-collectstatic"])
def test_the_installed_wheel_serves_the_login_page_and_its_css(installed_wheel, tmp_path, debug):
    _, target = installed_wheel
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PYTHONPATH"}}
    env.update(
        PYTHONPATH=str(target),
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="1" if debug else "0",
        SECRET_KEY="wheel-test-" + "x" * 50,
        ALLOWED_HOSTS="testserver",
        DATA_DIR=str(tmp_path / "data"),
        STATIC_ROOT=str(tmp_path / "static"),
    )
    # -P: the working directory (outside the checkout) is not put on sys.path either.
    proc = subprocess.run(
        [sys.executable, "-P", "-c", SITE_CHECK],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["annotation"]).is_relative_to(target)
    assert Path(result["stats_template"]).is_relative_to(target)
    assert result["login_status"] == 200 and result["login_form"]
    # Production names the manifest's hashed copy; DEBUG the file itself.
    assert result["css"].startswith("/static/css/app.")
    assert (result["css"] == "/static/css/app.css") is debug
    assert result["css_status"] == 200
    assert result["css_body"] == (ROOT / "annotation/static/css/app.css").read_text()


def test_no_app_template_is_shadowed_by_an_app_listed_before_it():
    """Templates come from app folders in INSTALLED_APPS order, so an earlier app wins a name."""
    for config in apps.get_app_configs():
        folder = Path(config.path) / "templates"
        if not Path(config.path).is_relative_to(ROOT) or not folder.is_dir():
            continue
        for path in folder.rglob("*.html"):
            name = path.relative_to(folder).as_posix()
            assert get_template(name).origin.name == str(path), name
