"""Admin site for project admins: progress at a glance, annotations read-only."""

from __future__ import annotations

import contextlib

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from annotation import converters  # noqa: F401 (registers <id:...>)
from annotation.admin_forms import ExportForm, ImportForm
from annotation.admin_stats import stats_page_context
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
from annotation.selectors.queue import candidate_texts
from annotation.selectors.review import (
    annotation_ranked,
    annotations_disagreeing,
    candidates_of,
    comparison_review,
    ranked,
)
from annotation.services.exports import ExportOptions, export_create
from annotation.services.gold import comparison_gold_clear, comparison_gold_set
from annotation.services.imports import import_upload
from annotation.services.review import (
    REASON_MAX_LENGTH,
    annotation_restore,
    annotations_reject,
    annotations_reject_since,
)


class DeletesItsCandidates:
    """Deleting a project or a prompt takes its candidates with it, and their comparisons.

    Candidates cannot be deleted on their own (comparisons name them), so the admin's check of
    what a delete cascades into refused every project or prompt that had candidates, even to
    a superuser. Here they count as covered by the permission to delete the parent. What was
    labeled stays protected: annotations and exports refuse the delete, as before.
    """

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(Candidate._meta.verbose_name)
        return deleted, counts, perms_needed, protected


@admin.register(Project)
class ProjectAdmin(DeletesItsCandidates, admin.ModelAdmin):
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
                    "allow_edit",
                    "flags",
                    "rating_scale",
                    "rating_labels",
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
            '{} prompts, {} candidates, {} comparisons ({} complete), {} annotations · <a href="{}">statistics</a>'
            ' · <a href="{}">export…</a> · <a href="{}">import a file…</a>',
            prompts,
            candidates,
            comparisons,
            complete,
            annotations,
            reverse("admin:annotation_project_stats", args=[obj.pk]),
            reverse("admin:annotation_project_export", args=[obj.pk]),
            reverse("admin:annotation_project_import", args=[obj.pk]),
        )

    def get_urls(self):
        stats = path(
            "<id:project_id>/stats/",
            self.admin_site.admin_view(self.stats_view),
            name="annotation_project_stats",
        )
        export = path(
            "<id:project_id>/export/",
            self.admin_site.admin_view(self.export_view),
            name="annotation_project_export",
        )
        upload = path(
            "<id:project_id>/import/",
            self.admin_site.admin_view(self.import_view),
            name="annotation_project_import",
        )
        return [stats, export, upload, *super().get_urls()]

    def _project_for(self, request, project_id: int, *, change: bool) -> Project:
        project = get_object_or_404(Project, pk=project_id)
        allowed = (
            self.has_change_permission(request, project)
            if change
            else self.has_view_permission(request, project)
        )
        if not allowed:
            raise PermissionDenied
        return project

    def export_view(self, request, project_id: int):
        """The export options as a form; a valid post calls the export service once."""
        project = self._project_for(request, project_id, change=True)
        form = ExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                export = export_create(
                    project=project, options=form.options(), created_by=request.user
                )
            except ServiceError as exc:
                for name, problems in (exc.errors or {}).items():
                    field = name if name in form.fields else None
                    for problem in problems if isinstance(problems, list) else [problems]:
                        form.add_error(field, str(problem))
                if not exc.errors:
                    form.add_error(None, exc.detail)
            else:
                self.message_user(request, _export_message(export), messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse("admin:annotation_export_change", args=[export.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Export preferences: {project.slug}",
            "project": project,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/annotation/project/export.html", context)

    def import_view(self, request, project_id: int):
        """Upload a prompts or candidates file: validated whole, imported all or nothing."""
        project = self._project_for(request, project_id, change=True)
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = import_upload(
                    project=project,
                    kind=form.cleaned_data["kind"],
                    name=upload.name,
                    chunks=upload.chunks(),
                )
            except ServiceError as exc:
                form.add_error("file", f"{exc.detail} Nothing was imported.")
            else:
                self.message_user(
                    request,
                    f"Imported {upload.name}: {result.created} created, {result.unchanged} unchanged.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:annotation_project_change", args=[project.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import into {project.slug}",
            "project": project,
            "form": form,
            "max_bytes": settings.IMPORT_MAX_BYTES,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/annotation/project/import.html", context)

    def stats_view(self, request, project_id: int):
        """Progress, agreement and per-labeler figures (the same numbers as the stats API)."""
        project = get_object_or_404(Project, pk=project_id)
        if not self.has_view_permission(request, project):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            **stats_page_context(project, request.GET),
            "title": f"Statistics: {project.slug}",
            "project": project,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/annotation/project/stats.html", context)

    # The export page asks for change permission; so does its one-click form here.
    @admin.action(
        description="Export preferences (JSONL, all pairs, defaults)", permissions=["change"]
    )
    def export_preferences(self, request, queryset):
        for project in queryset:
            try:
                export = export_create(
                    project=project, options=ExportOptions(), created_by=request.user
                )
            except ServiceError as exc:
                self.message_user(request, f"{project.slug}: {exc.detail}", messages.ERROR)
                continue
            self.message_user(request, _export_message(export), messages.SUCCESS)

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


def _render(template: str, **context) -> str:
    """A read-only admin field rendered from a template (autoescaped: texts are untrusted)."""
    return mark_safe(render_to_string(template, context))  # noqa: S308 - the template escapes


@admin.register(Prompt)
class PromptAdmin(DeletesItsCandidates, admin.ModelAdmin):
    """Messages are read-only: the content hash, re-import idempotency and what annotations
    ranked depend on them. Prompts come in through import_prompts and the API."""

    # No COUNT(*) of the whole table beside a filtered one: on a big table it cost seconds.
    show_full_result_count = False

    list_display = ("id", "project", "external_id", "short_text", "source", "created_at")
    list_filter = ("project", "is_chat")
    search_fields = ("external_id", "messages")
    list_select_related = ("project",)
    fields = (
        "project",
        "external_id",
        "chat",
        "is_chat",
        "metadata",
        "source",
        "content_hash",
        "created_at",
    )
    readonly_fields = ("project", "external_id", "chat", "is_chat", "content_hash", "created_at")

    def has_add_permission(self, request):
        return False

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:80]

    @admin.display(description="messages")
    def chat(self, obj):
        return _render("admin/annotation/_prompt.html", messages=obj.messages)


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    """Read-only: annotations ranked this text from this model, its hash keeps imports
    idempotent, and the leaderboard and exports name the model."""

    # No COUNT(*) of the whole table beside a filtered one: on a big table it cost seconds.
    show_full_result_count = False

    list_display = ("id", "prompt", "model_label", "short_text", "created_at")
    list_filter = ("prompt__project", "model_version", "model_name")
    search_fields = ("text", "model_name", "prompt__external_id")
    list_select_related = ("prompt", "model_version")
    readonly_fields = (
        "prompt",
        "text",
        "text_hash",
        "model_version",
        "model_name",
        "generation_params",
        "created_at",
    )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Deleting would cascade into comparisons whose candidate_ids and rankings name it.
        return False

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:80]


class GoldFilter(admin.SimpleListFilter):
    title = "gold"
    parameter_name = "gold"

    def lookups(self, request, model_admin):
        return [("yes", "gold"), ("no", "regular")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(is_gold=self.value() == "yes")
        return queryset


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    """Everything is read-only: counts, status and candidates change through the services
    (labeling, review, gold), which hold the queue's invariants under row locks."""

    list_display = (
        "id",
        "project",
        "prompt",
        "status",
        "priority",
        "submitted_count",
        "required",
        "is_gold",
    )
    list_filter = ("project", "status", "is_gold")
    search_fields = ("prompt__external_id",)
    list_select_related = ("project", "prompt")
    fields = (
        "project",
        "prompt",
        "prompt_text",
        "status",
        "priority",
        "submitted_count",
        "required",
        "is_gold",
        "gold_ranking_view",
        "created_at",
        "completed_at",
        "review",
    )
    readonly_fields = fields
    actions = ["save_as_gold", "remove_gold"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Save as gold… (rank one comparison)", permissions=["change"])
    def save_as_gold(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one comparison to rank.", messages.WARNING)
            return None
        return HttpResponseRedirect(
            reverse("admin:annotation_comparison_gold", args=[queryset.get().pk])
        )

    @admin.action(description="Remove the gold mark", permissions=["change"])
    def remove_gold(self, request, queryset):
        count = 0
        for comparison in queryset.filter(is_gold=True):
            comparison_gold_clear(comparison=comparison)
            count += 1
        self.message_user(request, f"{count} comparison{'' if count == 1 else 's'} no longer gold.")

    @admin.display(description="prompt text")
    def prompt_text(self, obj):
        return _render("admin/annotation/_prompt.html", messages=obj.prompt.messages)

    @admin.display(description="gold ranking")
    def gold_ranking_view(self, obj):
        if not obj.is_gold:
            return "–"
        return _render("admin/annotation/_ranked.html", ranked=_ranked_gold(obj))

    @admin.display(description="candidates and annotations side by side")
    def review(self, obj):
        return _render("admin/annotation/comparison/_review.html", review=comparison_review(obj))

    def get_urls(self):
        gold = path(
            "<id:comparison_id>/gold/",
            self.admin_site.admin_view(self.gold_view),
            name="annotation_comparison_gold",
        )
        return [gold, *super().get_urls()]

    def gold_view(self, request, comparison_id: int):
        """Rank the candidates and save the ranking as gold (validated like a submission)."""
        comparison = get_object_or_404(
            Comparison.objects.select_related("project", "prompt"), pk=comparison_id
        )
        if not self.has_change_permission(request, comparison):
            raise PermissionDenied
        candidates = candidates_of(comparison)
        ranks = {cid: n for n, tier in enumerate(comparison.gold_ranking or [], 1) for cid in tier}
        errors: list[str] = []
        if request.method == "POST":
            change = reverse("admin:annotation_comparison_change", args=[comparison.pk])
            if "clear" in request.POST:
                comparison_gold_clear(comparison=comparison)
                self.message_user(request, f"{comparison} is no longer gold.", messages.SUCCESS)
                return HttpResponseRedirect(change)
            try:
                ranks = {cid: int(request.POST.get(f"rank-{cid}", "")) for cid in candidates}
                tiers = [
                    [cid for cid in candidates if ranks[cid] == n]
                    for n in sorted(set(ranks.values()))
                ]
                comparison_gold_set(comparison=comparison, ranking=tiers)
            except ValueError:
                errors.append("Every candidate needs a rank.")
            except ServiceError as exc:
                errors.extend([m for ms in exc.errors.values() for m in ms] or [exc.detail])
            else:
                self.message_user(request, f"{comparison} saved as gold.", messages.SUCCESS)
                return HttpResponseRedirect(change)
        positions = list(range(1, len(candidates) + 1))
        rows = [
            {"candidate": c, "rank": ranks.get(cid, i)}
            for i, (cid, c) in enumerate(candidates.items(), 1)
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Gold ranking for {comparison}",
            "comparison": comparison,
            "project": comparison.project,
            "rows": rows,
            "positions": positions,
            "errors": errors,
            "opts": self.model._meta,
        }
        return TemplateResponse(
            request, "admin/annotation/comparison/gold.html", context, status=400 if errors else 200
        )


def _ranked_gold(comparison: Comparison):
    return ranked(comparison.gold_ranking, candidates_of(comparison))


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    """Leases are the queue's state: read-only here (status and times move through services)."""

    list_display = ("id", "comparison", "labeler", "status", "leased_at", "expires_at")
    list_filter = ("status", "comparison__project", "labeler")
    search_fields = ("labeler__username",)
    list_select_related = ("comparison", "labeler")
    readonly_fields = (
        "comparison",
        "labeler",
        "display_order",
        "status",
        "leased_at",
        "expires_at",
        "submitted_at",
    )

    def has_add_permission(self, request):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Append-only records: visible, never edited or deleted from the admin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class FlaggedFilter(admin.SimpleListFilter):
    title = "flagged"
    parameter_name = "flagged"

    def lookups(self, request, model_admin):
        return [("yes", "flags a candidate"), ("no", "no flags")]

    def queryset(self, request, queryset):
        # Stored flags hold only non-empty code lists, so "flagged" is "flags is not {}".
        if self.value() == "yes":
            return queryset.exclude(flags={})
        if self.value() == "no":
            return queryset.filter(flags={})
        return queryset


class FasterThanFilter(admin.SimpleListFilter):
    """Annotations made in under N seconds (`?faster_than=N` takes any whole N)."""

    title = "time spent"
    parameter_name = "faster_than"

    def lookups(self, request, model_admin):
        return [(str(n), f"faster than {n} s") for n in (2, 5, 10, 30)]

    def queryset(self, request, queryset):
        value = self.value()
        if value and value.isascii() and value.isdigit() and len(value) < 7:
            return queryset.filter(time_spent_ms__lt=int(value) * 1000)
        return queryset


class DisagreesFilter(admin.SimpleListFilter):
    """Annotations that disagree with their comparison's consensus (pairwise agreement < 50%)."""

    title = "consensus"
    parameter_name = "disagrees"

    def lookups(self, request, model_admin):
        return [("yes", "disagrees with consensus")]

    def queryset(self, request, queryset):
        if self.value() != "yes":
            return queryset
        project = request.GET.get("comparison__project__id__exact", "")
        project_id = (
            int(project) if project.isascii() and project.isdigit() and len(project) < 19 else None
        )
        return queryset.filter(pk__in=annotations_disagreeing(project_id=project_id))


class RejectedFilter(admin.SimpleListFilter):
    title = "review"
    parameter_name = "rejected"

    def lookups(self, request, model_admin):
        return [("yes", "rejected"), ("no", "not rejected")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(rejected_at__isnull=self.value() == "no")
        return queryset


class RejectForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=REASON_MAX_LENGTH,
        help_text="Why: kept with the annotation, shown to reviewers.",
    )


class RejectSinceForm(RejectForm):
    project = forms.ModelChoiceField(queryset=Project.objects.all())
    labeler = forms.ModelChoiceField(queryset=get_user_model().objects.order_by("username"))
    since = forms.DateTimeField(help_text="YYYY-MM-DD or YYYY-MM-DD HH:MM (server time zone).")
    field_order = ["project", "labeler", "since", "reason"]


@admin.register(Annotation)
class AnnotationAdmin(ReadOnlyAdmin):
    """Annotations as texts, reviewable: reject (kept, slot reopened) and restore."""

    # No COUNT(*) of the whole table beside a filtered one: on a big table it cost seconds.
    show_full_result_count = False

    list_display = (
        "id",
        "comparison",
        "labeler",
        "prompt_short",
        "ranked_short",
        "all_bad",
        "seconds",
        "review_state",
        "created_at",
    )
    list_filter = (
        # Every project, not only those with annotations: "only related" ran a DISTINCT over
        # the whole annotation table on every page view.
        "comparison__project",
        ("labeler", admin.RelatedOnlyFieldListFilter),
        FlaggedFilter,
        FasterThanFilter,
        DisagreesFilter,
        RejectedFilter,
        "all_bad",
    )
    search_fields = ("labeler__username", "rationale")
    list_select_related = ("comparison__prompt", "labeler")
    actions = ["reject_selected", "restore_selected"]
    fields = (
        "comparison",
        "labeler",
        "prompt_view",
        "ranking_view",
        "all_bad",
        "rationale",
        "time_spent_ms",
        "created_at",
        "supersedes",
        "review_view",
    )
    readonly_fields = fields

    def has_review_permission(self, request) -> bool:
        # Annotations are never edited, so the change permission stands for "may review".
        return request.user.has_perm("annotation.change_annotation")

    @admin.display(description="prompt")
    def prompt_short(self, obj):
        return obj.comparison.prompt.text[:60]

    def get_changelist(self, request, **kwargs):
        return AnnotationChangeList

    @admin.display(description="ranking")
    def ranked_short(self, obj):
        texts = getattr(obj, "page_texts", None) or candidate_texts_of(obj)
        tiers = [" = ".join(texts.get(c, str(c))[:40] for c in tier) for tier in obj.ranking]
        return " > ".join(tiers)

    @admin.display(description="seconds", ordering="time_spent_ms")
    def seconds(self, obj):
        return f"{obj.time_spent_ms / 1000:.1f}"

    @admin.display(description="review")
    def review_state(self, obj):
        return "rejected" if obj.rejected_at else ""

    @admin.display(description="prompt")
    def prompt_view(self, obj):
        return _render("admin/annotation/_prompt.html", messages=obj.comparison.prompt.messages)

    @admin.display(description="ranking, best first")
    def ranking_view(self, obj):
        return _render("admin/annotation/_ranked.html", ranked=annotation_ranked(obj))

    @admin.display(description="review")
    def review_view(self, obj):
        comparison = reverse("admin:annotation_comparison_change", args=[obj.comparison_id])
        if obj.rejected_at:
            return format_html(
                'Rejected by {} on {}: {} · <a href="{}">restore…</a> · <a href="{}">comparison</a>',
                getattr(obj.rejected_by, "username", "–"),
                obj.rejected_at,
                obj.rejection_reason,
                reverse("admin:annotation_annotation_restore", args=[obj.pk]),
                comparison,
            )
        return format_html(
            'Counted · <a href="{}">reject…</a> · <a href="{}">comparison side by side</a>',
            reverse("admin:annotation_annotation_reject", args=[obj.pk]),
            comparison,
        )

    # -- review views and actions ---------------------------------------------------------

    def get_urls(self):
        def view(func, route, name):
            return path(
                route, self.admin_site.admin_view(func), name=f"annotation_annotation_{name}"
            )

        return [
            view(self.reject_since_view, "reject-since/", "reject_since"),
            view(self.reject_view, "<id:annotation_id>/reject/", "reject"),
            view(self.restore_view, "<id:annotation_id>/restore/", "restore"),
            *super().get_urls(),
        ]

    def _review_context(self, request, **extra):
        if not self.has_review_permission(request):
            raise PermissionDenied
        return {**self.admin_site.each_context(request), "opts": self.model._meta, **extra}

    def _reject(self, request, annotations, reason: str) -> None:
        try:
            done, refused = annotations_reject(
                ids=[a.pk for a in annotations], reason=reason, by=request.user
            )
        except ServiceError as exc:
            done, refused = 0, [exc.detail]
        self.message_user(
            request, f"Rejected {done} annotation{'' if done == 1 else 's'}.", messages.SUCCESS
        )
        for detail in refused:
            self.message_user(request, detail, messages.ERROR)

    @admin.action(description="Reject selected annotations…", permissions=["review"])
    def reject_selected(self, request, queryset):
        form = RejectForm(request.POST if "apply" in request.POST else None)
        queryset = queryset.select_related("labeler", "comparison").order_by("comparison_id", "id")
        if form.is_bound and form.is_valid():
            self._reject(request, queryset, form.cleaned_data["reason"])
            return None
        context = self._review_context(
            request,
            title="Reject annotations",
            annotations=list(queryset),
            form=form,
            action="reject_selected",
            post_url="",
        )
        return TemplateResponse(request, "admin/annotation/annotation/reject.html", context)

    @admin.action(description="Restore selected rejected annotations", permissions=["review"])
    def restore_selected(self, request, queryset):
        done = 0
        for annotation in queryset.order_by("comparison_id", "id"):
            try:
                done += annotation_restore(annotation=annotation).changed
            except ServiceError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
        self.message_user(
            request, f"Restored {done} annotation{'' if done == 1 else 's'}.", messages.SUCCESS
        )

    def reject_view(self, request, annotation_id: int):
        annotation = get_object_or_404(
            Annotation.objects.select_related("labeler", "comparison"), pk=annotation_id
        )
        form = RejectForm(request.POST if request.method == "POST" else None)
        context = self._review_context(
            request,
            title=f"Reject {annotation}",
            annotations=[annotation],
            form=form,
            action="",
            post_url="",
        )
        if form.is_bound and form.is_valid():
            self._reject(request, [annotation], form.cleaned_data["reason"])
            return HttpResponseRedirect(
                reverse("admin:annotation_annotation_change", args=[annotation.pk])
            )
        return TemplateResponse(request, "admin/annotation/annotation/reject.html", context)

    def restore_view(self, request, annotation_id: int):
        annotation = get_object_or_404(
            Annotation.objects.select_related("rejected_by", "comparison"), pk=annotation_id
        )
        context = self._review_context(
            request, title=f"Restore {annotation}", annotation=annotation
        )
        if request.method == "POST":
            try:
                annotation_restore(annotation=annotation)
            except ServiceError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                self.message_user(request, f"Restored {annotation}.", messages.SUCCESS)
            return HttpResponseRedirect(
                reverse("admin:annotation_annotation_change", args=[annotation.pk])
            )
        return TemplateResponse(request, "admin/annotation/annotation/restore.html", context)

    def reject_since_view(self, request):
        """Reject all of one labeler's work in a project since a date: preview, then confirm."""
        if not self.has_review_permission(request):  # before the confirming post acts
            raise PermissionDenied
        initial = {k: request.GET[k] for k in ("project", "labeler", "since") if k in request.GET}
        form = RejectSinceForm(request.POST if request.method == "POST" else None, initial=initial)
        preview = None
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            if request.POST.get("confirm"):
                count = annotations_reject_since(
                    project=data["project"],
                    labeler=data["labeler"],
                    since=data["since"],
                    reason=data["reason"],
                    by=request.user,
                )
                self.message_user(
                    request,
                    f"Rejected {count} annotation{'' if count == 1 else 's'} of {data['labeler']} since {data['since']:%Y-%m-%d %H:%M}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:annotation_annotation_changelist")
                    + f"?labeler__id__exact={data['labeler'].pk}&rejected=yes"
                )
            preview = Annotation.objects.filter(
                comparison__project=data["project"],
                labeler=data["labeler"],
                created_at__gte=data["since"],
                superseded_by__isnull=True,
                rejected_at__isnull=True,
            ).count()
        context = self._review_context(
            request, title="Reject a labeler's work", form=form, preview=preview
        )
        return TemplateResponse(request, "admin/annotation/annotation/reject_since.html", context)


def candidate_texts_of(annotation: Annotation) -> dict[int, str]:
    return candidate_texts(annotation.comparison.candidate_ids)


class AnnotationChangeList(ChangeList):
    """The annotations list, with every candidate text of the page read in one query (one
    per row made a page of 200 cost 200 queries)."""

    def get_results(self, request):
        super().get_results(request)
        ids = sorted({c for row in self.result_list for c in row.comparison.candidate_ids})
        texts = candidate_texts(ids)
        for row in self.result_list:
            row.page_texts = texts


@admin.register(Export)
class ExportAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "project",
        "kind",
        "format",
        "rows",
        "short_sha256",
        "download",
        "created_by",
        "created_at",
    )
    list_filter = ("project", "kind", "format")
    search_fields = ("sha256",)

    @admin.display(description="file")
    def download(self, obj):
        # The staff API endpoint: the admin's session signs it in (a zip for folder formats).
        url = reverse("api:export-download", kwargs={"export_id": obj.pk})
        return format_html('<a href="{}" download>download</a>', url)

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "download"]

    @admin.display(description="sha256", ordering="sha256")
    def short_sha256(self, obj):
        return format_html('<code title="{}">{}…</code>', obj.sha256, obj.sha256[:12])


def _export_message(export: Export) -> str:
    return format_html(
        'Export {} of {}: {} pair{}. <a href="{}">Download</a>',
        export.pk,
        export.project.slug,
        export.rows,
        "" if export.rows == 1 else "s",
        reverse("api:export-download", kwargs={"export_id": export.pk}),
    )


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

    def get_queryset(self, request):
        # Project admins manage labelers' tokens and their own; another admin's, like a
        # superuser's, are that account's business (revoking them would lock a peer out).
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(user__is_superuser=False).filter(
            Q(user__is_staff=False) | Q(user=request.user)
        )


# DRF's own token admin shows keys in clear; its table is emptied by migration 0010.
with contextlib.suppress(admin.sites.NotRegistered):
    from rest_framework.authtoken.models import TokenProxy

    admin.site.unregister(TokenProxy)
