"""The labeling domain: projects, prompts, candidates, comparisons, leases and annotations.

Models hold fields and constraints only; the rules that span rows live in `services/`
(writes) and `selectors/` (reads). Every invariant of SPEC section 2 that a constraint can
hold is a database constraint here, so a race that slips past a service check still fails.
"""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from annotation.prompts import ModelInput, prompt_model_input

DEFAULT_FLAGS = ["unhelpful", "untruthful", "harmful"]


def default_flags() -> list[str]:
    return list(DEFAULT_FLAGS)


def text_sha256(text: str) -> str:
    """Hash used for uniqueness of long texts (btree indexes cannot hold unbounded text)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def messages_sha256(messages: list[dict]) -> str:
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text_sha256(canonical)


class TaskType(models.TextChoices):
    RANKING = "ranking", "Ranking of K candidates"
    PAIRWISE = "pairwise", "Pairwise (A or B)"
    # The labeler writes the answer; the comparison's candidates (0..K) are references only.
    DEMONSTRATION = "demonstration", "Demonstration (write the answer)"


class Project(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    guidelines = models.TextField(blank=True, help_text="Markdown, rendered sanitized.")
    task_type = models.CharField(max_length=16, choices=TaskType.choices, default=TaskType.RANKING)
    num_candidates = models.PositiveSmallIntegerField(
        default=4, validators=[MinValueValidator(2), MaxValueValidator(9)]
    )
    overlap = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="Annotations wanted per comparison."
    )
    allow_ties = models.BooleanField(default=True)
    allow_edit = models.BooleanField(
        default=False,
        help_text="Ranking projects: the labeler may rewrite the best answer (edited_text).",
    )
    flags = models.JSONField(default=default_flags, blank=True)
    rating_scale = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(10)], help_text="0 = off, else a 1..N score."
    )
    rating_labels = models.JSONField(
        default=list,
        blank=True,
        help_text="Optional anchors for the rating scale: one short label per point, lowest "
        'first (e.g. ["Unusable", "Poor", "OK", "Good", "Excellent"]).',
    )
    lease_seconds = models.PositiveIntegerField(default=600, validators=[MinValueValidator(10)])
    gold_rate = models.FloatField(
        default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="labeling_projects"
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(num_candidates__gte=2, num_candidates__lte=9),
                name="project_num_candidates_2_to_9",
            ),
            models.CheckConstraint(
                condition=~Q(task_type=TaskType.PAIRWISE) | Q(num_candidates=2),
                name="project_pairwise_means_k2",
            ),
            models.CheckConstraint(
                condition=~Q(task_type=TaskType.DEMONSTRATION) | Q(allow_edit=False),
                name="project_allow_edit_not_on_demonstrations",
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_at_least_1"),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0.0, gold_rate__lte=1.0), name="project_gold_rate_0_to_1"
            ),
            models.CheckConstraint(
                condition=Q(rating_scale__lte=10), name="project_rating_scale_at_most_10"
            ),
            models.CheckConstraint(
                condition=Q(lease_seconds__gte=10), name="project_lease_min_10s"
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        if self.task_type == TaskType.PAIRWISE and self.num_candidates != 2:
            raise ValidationError({"num_candidates": "A pairwise project compares exactly 2."})
        if self.task_type == TaskType.DEMONSTRATION and self.allow_edit:
            raise ValidationError(
                {"allow_edit": "allow_edit is for ranking projects; a demonstration is written."}
            )
        if not isinstance(self.flags, list) or not all(
            isinstance(f, str) and f.strip() for f in self.flags
        ):
            raise ValidationError({"flags": "Flags must be a list of non-empty codes."})
        if len(set(self.flags)) != len(self.flags):
            raise ValidationError({"flags": "Flag codes must be unique."})
        self.clean_rating_labels()
        self.clean_locked_settings()

    def clean_rating_labels(self) -> None:
        labels = self.rating_labels
        if labels in (None, []):
            self.rating_labels = []
            return
        if not isinstance(labels, list) or not all(
            isinstance(label, str) and label.strip() and len(label) <= 60 for label in labels
        ):
            raise ValidationError(
                {"rating_labels": "Rating labels must be a list of texts of 1-60 characters."}
            )
        if len(labels) != self.rating_scale:
            raise ValidationError(
                {
                    "rating_labels": f"{len(labels)} labels for a rating scale of "
                    f"{self.rating_scale}: give one per point (or none)."
                }
            )

    def rating_choices(self) -> list[tuple[str, str]]:
        """(value, text) per rating point: "3" or "3 · Good" where the project names it."""
        labels = self.rating_labels or []
        return [
            (str(i), f"{i} · {labels[i - 1]}" if len(labels) >= i else str(i))
            for i in range(1, self.rating_scale + 1)
        ]

    # Settings that shape stored rankings (SPEC section 11): fixed once comparisons exist.
    LOCKED_SETTINGS = ("task_type", "num_candidates", "allow_ties", "allow_edit", "rating_scale")

    def clean_locked_settings(self) -> None:
        """Refuse changes to the settings that shape stored rankings once comparisons exist.

        Flags may gain codes, but no code in use may go: stored annotations carry them.
        """
        if self.pk is None:
            return
        stored = Project.objects.filter(pk=self.pk).values(*self.LOCKED_SETTINGS, "flags").first()
        if stored is None or not self.comparisons.exists():
            return
        errors = {}
        for name in self.LOCKED_SETTINGS:
            if getattr(self, name) != stored[name]:
                errors[name] = (
                    f"{name} cannot change once the project has comparisons "
                    f"(it is {stored[name]!r}); create a new project instead."
                )
        flags = self.flags if isinstance(self.flags, list) else []
        removed = [code for code in stored["flags"] or [] if code not in flags]
        if removed:
            errors["flags"] = (
                f"Flag codes in use cannot be removed once the project has comparisons "
                f"(removed: {', '.join(removed)}); adding codes is fine."
            )
        if errors:
            raise ValidationError(errors)


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    external_id = models.CharField(max_length=255, null=True, blank=True)
    messages = models.JSONField(help_text="A chat: list of {role, content}.")
    is_chat = models.BooleanField(
        default=False, help_text="False when imported as plain text (one user message)."
    )
    content_hash = models.CharField(max_length=64, editable=False)
    metadata = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"],
                condition=Q(external_id__isnull=False),
                name="prompt_unique_external_id_per_project",
            ),
            models.UniqueConstraint(
                fields=["project", "content_hash"],
                condition=Q(external_id__isnull=True),
                name="prompt_unique_content_without_external_id",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id or f"prompt {self.pk}"

    @property
    def text(self) -> str:
        """The last user turn: what a one-line listing shows."""
        users = [m["content"] for m in self.messages if m.get("role") == "user"]
        return users[-1] if users else ""

    def as_model_input(self) -> ModelInput:
        """The prompt as SPEC section 4 hands it to policies, rewards and judges."""
        return prompt_model_input(self.messages, is_chat=self.is_chat)


class Candidate(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="candidates")
    text = models.TextField()
    text_hash = models.CharField(max_length=64, editable=False)
    model_version = models.ForeignKey(
        "lineage.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="candidates",
    )
    model_name = models.CharField(
        max_length=255, blank=True, help_text="Free-text model name for imported outputs."
    )
    generation_params = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "text_hash"], name="candidate_unique_text_per_prompt"
            ),
        ]

    def __str__(self) -> str:
        return f"candidate {self.pk}"

    @property
    def model_label(self) -> str:
        return self.model_version.name if self.model_version_id else self.model_name


class Comparison(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETE = "complete", "Complete"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    # candidate_ids is the one source of a comparison's candidates; candidate_key and the
    # ComparisonCandidate rows behind `candidates` are derived from it, written together by
    # annotation.services.comparisons.comparisons_insert and never changed afterwards.
    candidate_ids = models.JSONField(
        default=list,
        editable=False,
        help_text="The K candidate ids in canonical (built) order.",
    )
    candidate_key = models.CharField(
        max_length=255, editable=False, help_text="Sorted candidate ids: one comparison per set."
    )
    candidates = models.ManyToManyField(
        Candidate, through="ComparisonCandidate", related_name="comparisons"
    )
    required = models.PositiveSmallIntegerField(default=1)
    submitted_count = models.PositiveSmallIntegerField(default=0)
    priority = models.FloatField(
        default=0.0,
        help_text="Served highest first: 0 for random builds, (0, 1] by informativeness "
        "for `build_comparisons --strategy uncertainty` (SPEC section 11).",
    )
    is_gold = models.BooleanField(default=False)
    gold_ranking = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "candidate_key"], name="comparison_unique_candidate_set"
            ),
            models.CheckConstraint(condition=Q(required__gte=1), name="comparison_required_ge_1"),
            models.CheckConstraint(
                condition=Q(submitted_count__lte=F("required")),
                name="comparison_never_over_annotated",
            ),
            models.CheckConstraint(
                condition=Q(is_gold=False) | Q(gold_ranking__isnull=False),
                name="comparison_gold_has_ranking",
            ),
        ]
        indexes = [
            # The queue: open comparisons of a project, highest priority first, then fewest
            # annotations, then oldest.
            models.Index(
                fields=["project", "status", "is_gold", "-priority", "submitted_count", "id"],
                name="comparison_queue_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"comparison {self.pk}"

    @staticmethod
    def key_for(candidate_ids) -> str:
        return ",".join(str(i) for i in sorted(candidate_ids))


class ComparisonCandidate(models.Model):
    """One candidate of a comparison at its place in `Comparison.candidate_ids` (derived).

    An index for the queries that go from candidates to comparisons (the pool of candidates
    not yet compared, the export's text lookup), not a second source: rows are written only
    with their comparison, from its candidate_ids.
    """

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE)
    # RESTRICT: a compared candidate cannot be deleted on its own (its comparison's
    # candidate_ids and annotations would name a text that is gone); deleting its prompt or
    # project, which deletes the comparison too, still can.
    candidate = models.ForeignKey(Candidate, on_delete=models.RESTRICT)
    position = models.PositiveSmallIntegerField(
        help_text="Index of the candidate in the comparison's candidate_ids."
    )

    class Meta:
        # The table of the implicit many-to-many this replaced (migration 0011 kept its rows).
        db_table = "annotation_comparison_candidates"
        unique_together = [("comparison", "candidate")]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "position"], name="comparison_candidate_unique_position"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"candidate {self.candidate_id} at {self.position} in comparison {self.comparison_id}"
        )


class Assignment(models.Model):
    """A lease of one comparison to one labeler; at most one per (comparison, labeler)."""

    class Status(models.TextChoices):
        LEASED = "leased", "Leased"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"
        # Staff rejected the annotation (review): its slot went back to the comparison and
        # the labeler is not served the comparison again nor may correct it.
        REJECTED = "rejected", "Rejected"

    # The states that keep a comparison away from its labeler for good (SPEC section 11: an
    # expired lease does not; an open lease does while it lasts).
    DONE_STATUSES = (Status.SUBMITTED, Status.SKIPPED, Status.REJECTED)

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    display_order = models.JSONField(help_text="Candidate ids in the order this labeler sees.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.LEASED)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "labeler"], name="assignment_one_per_comparison_labeler"
            ),
        ]
        indexes = [
            models.Index(fields=["labeler", "status"], name="assignment_labeler_status_idx"),
            models.Index(fields=["comparison", "status"], name="assignment_comp_status_idx"),
            # Open leases only (a small, hot set): the queue counts a comparison's unexpired
            # leases from it, and `leases_expire` reads it instead of every assignment.
            models.Index(
                fields=["comparison", "expires_at"],
                condition=Q(status="leased"),
                name="assignment_open_lease_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk}"


class LabelerQueue(models.Model):
    """One labeler's place in one project's queue.

    Its row lock serializes a labeler's own `assignment_next` calls (two tabs never lease two
    comparisons at once), and its counters decide when a gold comparison is due without
    counting the labeler's assignments on every request.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labeler_queues")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="labeler_queues"
    )
    served = models.PositiveIntegerField(default=0, help_text="Leases created for this labeler.")
    served_gold = models.PositiveIntegerField(default=0, help_text="Of which gold comparisons.")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "labeler"], name="labeler_queue_unique"),
            models.CheckConstraint(
                condition=Q(served_gold__lte=F("served")), name="labeler_queue_gold_le_served"
            ),
        ]

    def __str__(self) -> str:
        return f"queue of {self.labeler_id} in {self.project_id}"


class Annotation(models.Model):
    """One labeler's answer to one assignment. Append-only: corrections supersede."""

    assignment = models.ForeignKey(Assignment, on_delete=models.PROTECT, related_name="annotations")
    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="annotations")
    labeler = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations"
    )
    ranking = models.JSONField(
        help_text="Tiers best first: list of lists of candidate ids ([] for a demonstration)."
    )
    # Demonstration projects: the answer the labeler wrote (the next assistant turn).
    demonstration = models.TextField(blank=True)
    # Ranking projects with allow_edit: the labeler's rewrite of the best answer; exports add
    # pairs edited > each candidate.
    edited_text = models.TextField(blank=True)
    ratings = models.JSONField(default=dict, blank=True)
    flags = models.JSONField(default=dict, blank=True)
    all_bad = models.BooleanField(default=False)
    rationale = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(default=0)
    client_token = models.UUIDField()
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Review (annotation/services/review.py): a rejected annotation is kept, but leaves
    # exports and agreement figures and gives its slot back to the comparison.
    rejected_at = models.DateTimeField(null=True, blank=True)
    rejected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="rejected_annotations",
    )
    rejection_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["labeler", "client_token"], name="annotation_unique_client_token"
            ),
            # One first answer per assignment; each later one is a correction that
            # supersedes the one before (a chain: `supersedes` is one-to-one).
            models.UniqueConstraint(
                fields=["assignment"],
                condition=Q(supersedes__isnull=True),
                name="annotation_one_original_per_assignment",
            ),
            models.CheckConstraint(
                condition=Q(rejected_at__isnull=True) | ~Q(rejection_reason=""),
                name="annotation_rejection_has_reason",
            ),
        ]
        indexes = [
            models.Index(fields=["comparison", "id"], name="annotation_comparison_idx"),
            models.Index(fields=["labeler", "created_at"], name="annotation_labeler_time_idx"),
        ]

    def __str__(self) -> str:
        return f"annotation {self.pk}"


class Export(models.Model):
    """An immutable snapshot of labeled data: preference pairs written by
    `export_preferences`, or SFT conversations written by `export_demonstrations`."""

    class Kind(models.TextChoices):
        PREFERENCES = "preferences", "Preference pairs and rankings"
        SFT = "sft", "SFT conversations (sft.jsonl)"

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON Lines"
        PARQUET = "parquet", "Parquet"
        HF = "hf", "datasets save_to_disk folder"

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="exports")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PREFERENCES)
    options = models.JSONField(default=dict)
    format = models.CharField(max_length=16, choices=Format.choices, default=Format.JSONL)
    path = models.CharField(max_length=1024, help_text="Folder holding pairs, rankings, manifest.")
    rows = models.PositiveIntegerField(default=0, help_text="Number of pairs (SFT: of rows).")
    counts = models.JSONField(default=dict, blank=True)
    sha256 = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"export {self.pk} of {self.project_id}"


class RunSource(models.Model):
    """The labeling data a training run worked from: the project and the export it read.

    Kept on this side so that `lineage` depends on no app and `annotation` only on
    `lineage`. One row per run at most (the run is the key); an export a run trained on
    cannot be deleted, a deleted project leaves the run without one.
    """

    run = models.OneToOneField(
        "lineage.TrainingRun", primary_key=True, on_delete=models.CASCADE, related_name="source"
    )
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="run_sources"
    )
    export = models.ForeignKey(
        Export, null=True, blank=True, on_delete=models.PROTECT, related_name="run_sources"
    )

    def __str__(self) -> str:
        return f"source of run {self.run_id}"


class SignInThrottle(models.Model):
    """Sign-in attempts counted per key ("pair:<user>|<address>", "user:...", "address:...")
    in a fixed window; rows are bumped with one UPDATE so concurrent attempts cannot slip past
    the limit (annotation/services/signin.py)."""

    key = models.CharField(max_length=255, unique=True)
    attempts = models.PositiveIntegerField(default=0)
    window_ends = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.key}: {self.attempts}"


class ApiToken(models.Model):
    """An API token, stored as the sha256 of its key: the key itself is shown once, when it
    is issued (`annotation.services.tokens`), and never stored. `prefix` (the key's first
    characters) tells tokens apart in the admin; deleting a row revokes that token."""

    PREFIX_LENGTH = 8

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    digest = models.CharField(max_length=64, unique=True, help_text="sha256 hex of the key")
    prefix = models.CharField(max_length=PREFIX_LENGTH, help_text="the key's first characters")
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.prefix}... ({self.user})"

    @staticmethod
    def digest_of(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
