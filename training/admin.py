"""Admin for model versions and training runs: the lineage of every model."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from training.charts import metrics_charts_svg
from training.models import ModelVersion, TrainingRun


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
    list_filter = ("kind", "status", "project")
    search_fields = ("error", "output_dir")
    list_select_related = ("project", "output_model")
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
