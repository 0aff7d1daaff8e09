"""Admin for model versions and training runs: the lineage of every model."""

from __future__ import annotations

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from lineage.charts import reward_vs_kl_svg, run_charts_svg
from lineage.models import ModelVersion, TrainingRun
from lineage.services import runs_mark_interrupted


def _cell(value) -> str:
    """A metric or config value for a table cell: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return "–" if value is None else str(value)


def _table(data: dict) -> str:
    """A dict as a two-column table, keys sorted (values escaped)."""
    if not data:
        return "-"
    rows = format_html_join(
        "",
        '<tr><th scope="row">{}</th><td>{}</td></tr>',
        ((k, _cell(data[k])) for k in sorted(data)),
    )
    return format_html('<table class="run-table">{}</table>', rows)


def _admin_link(obj):
    """A link to `obj`'s admin page, as Django shows a read-only foreign key."""
    if obj is None:
        return "-"
    meta = obj._meta
    try:
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return str(obj)
    return format_html('<a href="{}">{}</a>', url, obj)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "parent", "produced_by", "path", "created_at")
    list_filter = ("kind",)
    search_fields = ("name", "path")
    list_select_related = ("parent", "produced_by")
    # Path and parent are what lineage and every consumer of the version rely on: fixed once
    # registered. Name (a label) and metadata stay editable.
    readonly_fields = ("path", "kind", "parent", "produced_by", "created_at", "lineage_display")

    def has_add_permission(self, request):
        return False  # versions are registered by the commands that make them

    @admin.display(description="lineage")
    def lineage_display(self, obj):
        if obj.pk is None:
            return "-"
        return format_html_join(" ← ", "{}", ((v.name,) for v in obj.lineage()))


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "project", "output_model", "created_at", "finished_at")
    # The run's project and export live on the labeling side (`annotation.RunSource`, the
    # reverse one-to-one `source`); they are read by lookup name so this app imports none.
    list_filter = ("kind", "status", "source__project")
    search_fields = ("error", "output_dir")
    list_select_related = ("source__project", "output_model")

    def get_queryset(self, request):
        # The list shows neither the log nor the per-step history (hundreds of KB a run).
        return super().get_queryset(request).defer("log", "metrics_history")

    readonly_fields = (
        "kind",
        "status",
        "project",
        "config",
        "input_export",
        "input_models",
        "output_model",
        "output_dir",
        "metrics_table",
        "config_table",
        "steps",
        "log",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "process",
        "charts",
        "lineage",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "kind",
                    "status",
                    "project",
                    "created_by",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "process",
                )
            },
        ),
        (
            "Inputs and outputs",
            {"fields": ("input_export", "input_models", "output_model", "output_dir", "lineage")},
        ),
        ("Metrics", {"fields": ("steps", "charts", "metrics_table")}),
        ("Configuration", {"fields": ("config_table",)}),
        ("Log", {"fields": ("error", "log")}),
    )

    # A killed process never recorded its end: say so rather than show it "running".
    def changelist_view(self, request, extra_context=None):
        runs_mark_interrupted()
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        runs_mark_interrupted()
        return super().change_view(request, object_id, form_url, extra_context)

    # A run is a record of what happened: viewed, never edited or deleted from here.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="project")
    def project(self, obj):
        return _admin_link(getattr(getattr(obj, "source", None), "project", None))

    @admin.display(description="input export")
    def input_export(self, obj):
        return _admin_link(getattr(getattr(obj, "source", None), "export", None))

    @admin.display(description="charts")
    def charts(self, obj):
        history = obj.metrics_history or []
        charts = run_charts_svg(obj.kind, history)
        if obj.kind == TrainingRun.Kind.PPO and (plot := reward_vs_kl_svg(history)):
            charts.append(plot)
        # The SVG holds numbers and escaped titles only (lineage.charts escapes every label).
        if not charts:
            return "-"
        return mark_safe(  # noqa: S308
            '<div style="display:flex;flex-wrap:wrap;gap:4px">' + "".join(charts) + "</div>"
        )

    @admin.display(description="steps logged")
    def steps(self, obj):
        history = obj.metrics_history or []
        if not history:
            return "-"
        first, last = history[0].get("step", 0), history[-1].get("step", len(history) - 1)
        return f"{len(history)} rows, steps {_cell(first)}–{_cell(last)}"

    @admin.display(description="final metrics")
    def metrics_table(self, obj):
        return _table(obj.metrics or {})

    @admin.display(description="configuration")
    def config_table(self, obj):
        return _table(obj.config or {})

    @admin.display(description="model lineage")
    def lineage(self, obj):
        if obj.output_model_id is None:
            return "-"
        return format_html_join(" ← ", "{}", ((v.name,) for v in obj.output_model.lineage()))
