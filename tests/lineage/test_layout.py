"""Apps depend one way: lineage on no project app, annotation on lineage only, simulation on
annotation (and training's Django-free helpers), training on all of them."""

import ast
from pathlib import Path

from django.apps import apps

PROJECT_APPS = {"annotation", "lineage", "training", "simulation"}
ROOT = Path(__file__).resolve().parents[2]


def _imported_packages(package: str) -> set[str]:
    """Top-level packages imported anywhere under `package` (its migrations aside)."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def _related_apps(label: str) -> set[str]:
    """Apps whose models the models of `label` point at."""
    return {
        field.related_model._meta.app_label
        for model in apps.get_app_config(label).get_models()
        for field in model._meta.get_fields()
        if field.is_relation and field.concrete and field.related_model is not None
    }


def test_lineage_imports_no_other_project_app():
    assert _imported_packages("lineage") & PROJECT_APPS <= {"lineage"}


def test_models_point_one_way():
    assert _related_apps("lineage") & PROJECT_APPS == {"lineage"}
    assert _related_apps("annotation") & PROJECT_APPS == {"annotation", "lineage"}
    assert not list(apps.get_app_config("training").get_models())


def test_annotation_imports_neither_training_nor_simulation():
    assert _imported_packages("annotation") & PROJECT_APPS <= {"annotation", "lineage"}


def test_training_never_imports_simulation():
    # The loop drives simulated labelers through their command, so the dependency stays one way.
    assert "simulation" not in _imported_packages("training")
