"""Admin site for project admins: progress at a glance, annotations read-only."""

from __future__ import annotations

import contextlib

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from annotation import converters  # noqa: F401 (registers <id:...>)
from annotation.errors import ServiceError
from annotation.models import (
    Annotation,
    ApiToken,
    Assignment,
    Candidate,
    Comparison,
    Export,
    Project,
    Prompt,
)
from annotation.selectors.stats import project_stats
from annotation.services.exports import ExportOptions, export_create


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "task_type", "num_candidates", "overlap", "active", "progress")
    list_filter = ("task_type", "active")
    search_fields = ("slug", "name")
    filter_horizontal = ("members",)
    readonly_fields = ("created_at", "progress_detail")
    actions = ["show_pipeline_commands", "export_preferences"]
    fieldsets = (
        (None, {"fields": ("slug", "name", "active", "guidelines", "progress_detail")}),
        (
            "Task",
            {
                "fields": (
                    "task_type",
                    "num_candidates",
                    "overlap",
                    "allow_ties",
                    "flags",
                    "rating_scale",
                    "lease_seconds",
                    "gold_rate",
                )
            },
        ),
        ("Labelers", {"fields": ("members",)}),
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_comparisons=Count("comparisons", distinct=True),
                n_complete=Count(
                    "comparisons",
                    filter=Q(comparisons__status=Comparison.Status.COMPLETE),
                    distinct=True,
                ),
            )
        )

    @admin.display(description="complete / comparisons")
    def progress(self, obj):
        total = getattr(obj, "n_comparisons", 0)
        done = getattr(obj, "n_complete", 0)
        pct = 100 * done / total if total else 0
        return format_html(
            '<progress value="{}" max="{}" aria-label="progress"></progress> {} / {} ({}%)',
            done,
            total or 1,
            done,
            total,
            f"{pct:.0f}",
        )

    @admin.display(description="progress")
    def progress_detail(self, obj):
        if obj.pk is None:
            return "-"
        prompts = obj.prompts.count()
        candidates = Candidate.objects.filter(prompt__project=obj).count()
        comparisons = obj.comparisons.count()
        complete = obj.comparisons.filter(status=Comparison.Status.COMPLETE).count()
        annotations = Annotation.objects.filter(comparison__project=obj).count()
        return format_html(
            '{} prompts, {} candidates, {} comparisons ({} complete), {} annotations · <a href="{}">statistics</a>',
            prompts,
            candidates,
            comparisons,
            complete,
            annotations,
            reverse("admin:annotation_project_stats", args=[obj.pk]),
        )

    def get_urls(self):
        stats = path(
            "<id:project_id>/stats/",
            self.admin_site.admin_view(self.stats_view),
            name="annotation_project_stats",
        )
        return [stats, *super().get_urls()]

    def stats_view(self, request, project_id: int):
        """Progress, agreement and per-labeler figures (the same numbers as the stats API)."""
        project = get_object_or_404(Project, pk=project_id)
        if not self.has_view_permission(request, project):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        stats = project_stats(project)
        most = max((row["annotations"] for row in stats["labelers"]), default=0) or 1
        labelers = [
            {
                **row,
                "bar": round(120 * row["annotations"] / most),
                "median_s": (row["median_time_ms"] or 0) / 1000,
            }
            for row in stats["labelers"]
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Statistics: {project.slug}",
            "project": project,
            "stats": stats,
            "labelers": labelers,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/annotation/project/stats.html", context)

    @admin.action(description="Export preferences (JSONL, all pairs, defaults)")
    def export_preferences(self, request, queryset):
        for project in queryset:
            try:
                export = export_create(
                    project=project, options=ExportOptions(), created_by=request.user
                )
            except ServiceError as exc:
                self.message_user(request, f"{project.slug}: {exc.detail}", messages.ERROR)
                continue
            self.message_user(
                request,
                f"{project.slug}: export {export.pk} with {export.rows} pairs in {export.path} "
                f"(train a reward model: manage.py train_reward_model --export {export.pk} ...)",
                messages.SUCCESS,
            )

    @admin.action(description="Show the pipeline commands for the selected projects")
    def show_pipeline_commands(self, request, queryset):
        for project in queryset:
            slug = project.slug
            self.message_user(
                request,
                format_html(
                    "<code>python manage.py import_prompts {} FILE</code> · "
                    "<code>python manage.py generate_candidates {} --model PATH_OR_ID</code> · "
                    "<code>python manage.py import_candidates {} FILE</code> · "
                    "<code>python manage.py build_comparisons {}</code> · "
                    "<code>python manage.py export_preferences {} --out DIR</code>",
                    slug,
                    slug,
                    slug,
                    slug,
                    slug,
                ),
                messages.INFO,
            )


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "external_id", "short_text", "source", "created_at")
    list_filter = ("project", "is_chat")
    search_fields = ("external_id", "messages")
    list_select_related = ("project",)
    readonly_fields = ("content_hash", "created_at")

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:80]


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ("id", "prompt", "model_label", "short_text", "created_at")
    list_filter = ("prompt__project", "model_version", "model_name")
    search_fields = ("text", "model_name", "prompt__external_id")
    list_select_related = ("prompt", "model_version")
    raw_id_fields = ("prompt",)
    readonly_fields = ("text_hash", "created_at")

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:80]


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "prompt", "status", "submitted_count", "required", "is_gold")
    list_filter = ("project", "status", "is_gold")
    search_fields = ("prompt__external_id",)
    list_select_related = ("project", "prompt")
    raw_id_fields = ("prompt", "candidates")
    readonly_fields = ("candidate_key", "created_at", "completed_at")


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("id", "comparison", "labeler", "status", "leased_at", "expires_at")
    list_filter = ("status", "comparison__project", "labeler")
    search_fields = ("labeler__username",)
    list_select_related = ("comparison", "labeler")
    raw_id_fields = ("comparison", "labeler")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Append-only records: visible, never edited or deleted from the admin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Annotation)
class AnnotationAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "comparison",
        "labeler",
        "ranking",
        "all_bad",
        "time_spent_ms",
        "created_at",
    )
    list_filter = ("comparison__project", "labeler", "all_bad")
    search_fields = ("labeler__username", "rationale")
    list_select_related = ("comparison", "labeler")


@admin.register(Export)
class ExportAdmin(ReadOnlyAdmin):
    list_display = ("id", "project", "format", "rows", "sha256", "created_by", "created_at")
    list_filter = ("project", "format")
    search_fields = ("sha256",)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """API tokens by prefix: keys are stored hashed, so none can be shown; deleting revokes.

    New tokens come from `create_labeler` or `POST /api/v1/auth/token/`, which show the key
    once; the admin cannot add one (it could not show the key).
    """

    list_display = ("prefix", "user", "created", "last_used")
    list_select_related = ("user",)
    search_fields = ("prefix", "user__username")
    readonly_fields = ("user", "prefix", "created", "last_used")
    exclude = ("digest",)
    actions = ["delete_selected"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


# DRF's own token admin shows keys in clear; its table is emptied by migration 0009.
with contextlib.suppress(admin.sites.NotRegistered):
    from rest_framework.authtoken.models import TokenProxy

    admin.site.unregister(TokenProxy)
