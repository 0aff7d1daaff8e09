"""Django-free modules stay Django-free: each, imported alone in a fresh interpreter, loads no django.

The lists below are the one place to update when modules move. Every module of a package in
DJANGO_FREE_PACKAGES is covered unless its glue set names it (or the subpackage it sits in);
pure modules inside Django apps are named one by one in PURE_APP_MODULES.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> its modules and subpackages that may touch Django (the glue).
DJANGO_FREE_PACKAGES: dict[str, set[str]] = {
    "training": {"apps", "management", "migrations", "loop", "loop_dpo", "active"},
    "annotation.rules": set(),
    "annotation.datafiles": set(),
    "simulation": {"apps", "management", "services"},
}

# Pure modules inside Django apps; a new one goes here. Not listed: annotation.markdown
# (returns Django's SafeString for templates).
PURE_APP_MODULES = [
    "annotation.errors",
    "annotation.prompts",
    "lineage.charts",
]

CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
loaded = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
sys.exit(f"{sys.argv[1]} loads {', '.join(loaded[:5])}" if loaded else 0)
"""


def discovered_modules() -> list[str]:
    """Every module of DJANGO_FREE_PACKAGES outside its glue, found on disk."""
    modules = []
    for package, glue in DJANGO_FREE_PACKAGES.items():
        depth = package.count(".") + 1
        for path in sorted(ROOT.joinpath(*package.split(".")).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if len(parts) > depth and parts[depth] in glue:
                continue
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_every_glue_entry_still_exists():
    """An entry outliving its module would exempt whatever later takes the name."""
    for package, glue in DJANGO_FREE_PACKAGES.items():
        for name in glue:
            folder = ROOT.joinpath(*package.split("."))
            assert (folder / f"{name}.py").is_file() or (folder / name).is_dir(), (
                f"{package}.{name} is gone: drop it from DJANGO_FREE_PACKAGES"
            )


@pytest.mark.parametrize("module", discovered_modules() + PURE_APP_MODULES)
def test_module_imports_without_django(module):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, module],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
