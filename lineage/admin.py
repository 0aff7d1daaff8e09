"""Admin for model versions and training runs: the lineage of every model."""

from __future__ import annotations

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from lineage.charts import metrics_charts_svg
from lineage.models import ModelVersion, TrainingRun


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
    readonly_fields = ("created_at", "lineage_display")

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
    readonly_fields = (
        "kind",
        "status",
        "project",
        "config",
        "input_export",
        "input_models",
        "output_model",
        "output_dir",
        "metrics",
        "metrics_history",
        "log",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "summary",
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
                )
            },
        ),
        (
            "Inputs and outputs",
            {"fields": ("input_export", "input_models", "output_model", "output_dir", "lineage")},
        ),
        ("Metrics", {"fields": ("summary", "charts", "metrics", "metrics_history")}),
        ("Configuration", {"fields": ("config",)}),
        ("Log", {"fields": ("error", "log")}),
    )

    def has_add_permission(self, request):
        return False

    @admin.display(description="project")
    def project(self, obj):
        return _admin_link(getattr(getattr(obj, "source", None), "project", None))

    @admin.display(description="input export")
    def input_export(self, obj):
        return _admin_link(getattr(getattr(obj, "source", None), "export", None))

    @admin.display(description="charts")
    def charts(self, obj):
        # The SVG holds numbers and escaped metric names only.
        return mark_safe(metrics_charts_svg(obj.metrics_history or [])) or "-"  # noqa: S308

    @admin.display(description="model lineage")
    def lineage(self, obj):
        if obj.output_model_id is None:
            return "-"
        return format_html_join(" ← ", "{}", ((v.name,) for v in obj.output_model.lineage()))

    @admin.display(description="final metrics")
    def summary(self, obj):
        return format_html_join(", ", "{}={}", sorted((obj.metrics or {}).items()))
