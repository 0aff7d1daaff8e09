"""Request and response shapes of the v1 API (SPEC section 3).

Input serializers check types and sizes only; every domain rule (which candidates a ranking
must name, which flags exist, whether an external_id clashes) is the services' job, so the
browser UI, commands and the API refuse the same things with the same messages.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.validators import MaxLengthValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.api.exceptions import PayloadTooLarge
from annotation.datafiles.export import FORMATS
from annotation.models import Assignment, Candidate, TaskType
from annotation.rules.pairs import PAIRINGS
from annotation.rules.ranking import TIME_SPENT_MAX_MS
from annotation.rules.splits import DEFAULT_TEST_FRACTION
from annotation.selectors.queue import candidate_texts
from annotation.services.exports import AGGREGATES
from annotation.services.imports import candidate_record, prompt_record

# A comparison holds at most 9 candidates (SPEC section 2), so no valid ranking is longer.
MAX_CANDIDATES = 9


# ---------------------------------------------------------------------------------------
# Errors and small outputs
# ---------------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """Every error answer: a one-line `detail` and `errors` naming fields, items or ids."""

    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.JSONField())


class StrictInput(serializers.Serializer):
    """A request body that refuses keys it does not know (400 naming them).

    DRF drops unknown keys silently, so a misspelt field (`"flag"` for `"flags"`,
    `"pairng"`) would store or export something other than what the client meant.
    """

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(str(key)[:50] for key in data if key not in self.fields)
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown[:10]})
        return super().to_internal_value(data)


class TokenInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, style={"input_type": "password"})


class TokenOutput(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")


# ---------------------------------------------------------------------------------------
# Projects
# ---------------------------------------------------------------------------------------


class ProjectOutput(serializers.Serializer):
    """A project the user labels, with progress; renders `{"project": Project, **progress}`."""

    slug = serializers.SlugField(source="project.slug")
    name = serializers.CharField(source="project.name")
    guidelines = serializers.CharField(source="project.guidelines", help_text="Markdown.")
    task_type = serializers.ChoiceField(source="project.task_type", choices=TaskType.choices)
    num_candidates = serializers.IntegerField(source="project.num_candidates")
    allow_ties = serializers.BooleanField(source="project.allow_ties")
    allow_edit = serializers.BooleanField(
        source="project.allow_edit", help_text="Submits may carry `edited_text`."
    )
    flags = serializers.ListField(child=serializers.CharField(), source="project.flags")
    rating_scale = serializers.IntegerField(source="project.rating_scale", help_text="0 = off.")
    rating_labels = serializers.ListField(
        child=serializers.CharField(),
        source="project.rating_labels",
        help_text="One label per rating point, lowest first; empty when the project names none.",
    )
    lease_seconds = serializers.IntegerField(source="project.lease_seconds")
    comparisons = serializers.IntegerField(help_text="Comparisons in the project.")
    complete = serializers.IntegerField(help_text="Comparisons with all their annotations.")
    mine = serializers.IntegerField(help_text="Comparisons this user has submitted.")


# ---------------------------------------------------------------------------------------
# Assignments
# ---------------------------------------------------------------------------------------


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.CharField()


class PromptOutput(serializers.Serializer):
    id = serializers.IntegerField()
    messages = MessageSerializer(many=True)
    is_chat = serializers.BooleanField(
        help_text="False for a prompt imported as plain text (one user message), which "
        "models and judges get as its text; true for a chat, which they get whole."
    )


class CandidateOutput(serializers.ModelSerializer):
    class Meta:
        model = Candidate
        fields = ["id", "text"]


class ComparisonOutput(serializers.Serializer):
    id = serializers.IntegerField()
    prompt = PromptOutput()
    candidates = serializers.SerializerMethodField()

    @extend_schema_field(CandidateOutput(many=True))
    def get_candidates(self, comparison) -> list[dict]:
        # Shown in this labeler's stored display order (SPEC section 2: shuffled per labeler).
        order = self.context["display_order"]
        by_id = {c.pk: c for c in comparison.candidates.all()}
        return CandidateOutput([by_id[i] for i in order if i in by_id], many=True).data


class AssignmentOutput(serializers.ModelSerializer):
    comparison = serializers.SerializerMethodField()
    task_type = serializers.ChoiceField(
        source="comparison.project.task_type",
        choices=TaskType.choices,
        help_text="`demonstration`: write the answer in `demonstration` (the candidates are "
        "references); else rank the candidates.",
    )
    allow_edit = serializers.BooleanField(
        source="comparison.project.allow_edit",
        help_text="Ranking projects: `edited_text` may rewrite the best answer.",
    )

    class Meta:
        model = Assignment
        fields = ["id", "expires_at", "task_type", "allow_edit", "comparison"]

    @extend_schema_field(ComparisonOutput)
    def get_comparison(self, assignment: Assignment) -> dict:
        context = {**self.context, "display_order": assignment.display_order}
        return ComparisonOutput(assignment.comparison, context=context).data


class AssignmentNextOutput(serializers.Serializer):
    assignment = AssignmentOutput()


_DATETIME = serializers.DateTimeField()


def assignment_payload(assignment: Assignment, project=None) -> dict:
    """`AssignmentOutput(assignment).data`, built by hand for the labeling hot path.

    Nested DRF serializers cost more than the database work of a lease; this renders the
    same JSON (a test holds the two equal) with one plain query for the candidates' texts.
    """
    comparison = assignment.comparison
    project = project or comparison.project  # the caller's copy saves a query
    prompt = comparison.prompt
    texts = candidate_texts(comparison.candidate_ids)
    return {
        "id": assignment.pk,
        "expires_at": _DATETIME.to_representation(assignment.expires_at),
        "task_type": project.task_type,
        "allow_edit": project.allow_edit,
        "comparison": {
            "id": comparison.pk,
            "prompt": {
                "id": prompt.pk,
                "messages": [{"role": m["role"], "content": m["content"]} for m in prompt.messages],
                "is_chat": prompt.is_chat,
            },
            "candidates": [
                {"id": pk, "text": texts[pk]} for pk in assignment.display_order if pk in texts
            ],
        },
    }


class TextField(serializers.CharField):
    """A CharField that takes JSON strings only (DRF's turns 12 into "12")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class SubmitInput(StrictInput):
    """A ranking as tiers, best first (ids are candidate ids of the comparison), or on a
    demonstration project the written answer."""

    ranking = serializers.ListField(
        child=serializers.ListField(
            child=serializers.IntegerField(), allow_empty=False, max_length=MAX_CANDIDATES
        ),
        required=False,
        default=list,
        allow_empty=True,
        max_length=MAX_CANDIDATES,
        help_text="Tiers best first, e.g. [[12], [14, 13], [11]]; a tier of several ids is a tie. "
        "Required on ranking and pairwise projects; [] or absent on demonstration projects.",
    )
    demonstration = TextField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text="Demonstration projects: the answer you wrote (the next assistant turn). "
        "Required there, refused elsewhere.",
    )
    edited_text = TextField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text="Ranking projects with allow_edit: your rewrite of the best answer (optional).",
    )
    flags = serializers.DictField(
        child=serializers.ListField(
            child=serializers.CharField(max_length=64), max_length=32, allow_empty=True
        ),
        required=False,
        default=dict,
        help_text="Candidate id -> list of the project's flag codes.",
    )
    ratings = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=100),
        required=False,
        default=dict,
        help_text="Candidate id -> score 1..rating_scale (projects with ratings only).",
    )
    all_bad = serializers.BooleanField(required=False, default=False)
    rationale = TextField(required=False, allow_blank=True, default="", trim_whitespace=False)
    time_spent_ms = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=TIME_SPENT_MAX_MS
    )
    client_token = serializers.UUIDField(
        help_text="A UUID the client makes per answer: the same token again replays the answer."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read at request time so tests and deployments can change the limit.
        self.fields["rationale"].max_length = settings.RATIONALE_MAX_LENGTH
        self.fields["rationale"].validators.append(
            MaxLengthValidator(settings.RATIONALE_MAX_LENGTH)
        )
        for name in ("demonstration", "edited_text"):
            self.fields[name].max_length = settings.ANSWER_MAX_LENGTH
            self.fields[name].validators.append(MaxLengthValidator(settings.ANSWER_MAX_LENGTH))


class SubmitOutput(serializers.Serializer):
    annotation_id = serializers.IntegerField()


class SkipOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()


class RenewOutput(serializers.Serializer):
    id = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


# ---------------------------------------------------------------------------------------
# Bulk imports
# ---------------------------------------------------------------------------------------


class RecordListField(serializers.ListField):
    """A bounded list of raw import items, each parsed by the import service's record parser.

    Errors are collected for every item, keyed by its 0-based index, so one answer lists all
    problems of a payload: `{"prompts": {"3": ["'text' must be non-empty text"]}}`. The items
    that did parse stay in `parsed`, for checks against the database to join that answer.
    """

    def __init__(self, *, parse: Callable, unique_key: str | None = None, **kwargs):
        kwargs.setdefault("child", serializers.JSONField())
        super().__init__(**kwargs)
        self.parse = parse
        self.unique_key = unique_key

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        if not data:
            self.fail("empty")
        limit = settings.BULK_IMPORT_MAX_ITEMS
        if len(data) > limit:
            # Checked before parsing anything: a huge list costs only its JSON decoding.
            raise PayloadTooLarge(
                f"{len(data)} items is more than the limit of {limit} per request; "
                "split the import into several requests.",
                {self.field_name: [f"at most {limit} items"]},
            )
        records, errors, seen = [], {}, {}
        self.parsed = records
        for index, raw in enumerate(data):
            try:
                record = self.parse(raw, line=index)
            except ValueError as exc:
                errors[str(index)] = [str(exc)]
                continue
            key = getattr(record, self.unique_key, None) if self.unique_key else None
            if key is not None:
                if key in seen:
                    errors[str(index)] = [
                        f"duplicate {self.unique_key} {key!r} (first at item {seen[key]})"
                    ]
                    continue
                seen[key] = index
            records.append(record)
        if errors:
            raise serializers.ValidationError(errors)
        return records


class PromptItem(serializers.Serializer):
    """One prompt to import: `text` or `messages`, optional `external_id` and `metadata`."""

    external_id = serializers.CharField(required=False, allow_null=True, max_length=255)
    text = serializers.CharField(required=False)
    messages = MessageSerializer(many=True, required=False)
    metadata = serializers.DictField(required=False)


class CandidateItem(serializers.Serializer):
    """One candidate to import, attached to a prompt by `prompt_external_id` or `prompt_id`."""

    prompt_external_id = serializers.CharField(required=False)
    prompt_id = serializers.IntegerField(required=False)
    text = serializers.CharField()
    model = serializers.CharField(required=False, max_length=255)
    params = serializers.DictField(required=False, help_text="Generation parameters.")


@extend_schema_field(PromptItem(many=True))
class PromptRecordsField(RecordListField):
    """Prompt items parsed by `prompt_record`; an external_id may appear once per payload."""

    def __init__(self, **kwargs):
        super().__init__(parse=prompt_record, unique_key="external_id", **kwargs)


@extend_schema_field(CandidateItem(many=True))
class CandidateRecordsField(RecordListField):
    """Candidate items parsed by `candidate_record`."""

    def __init__(self, **kwargs):
        super().__init__(parse=candidate_record, **kwargs)


class PromptsImportInput(StrictInput):
    prompts = PromptRecordsField()


class CandidatesImportInput(StrictInput):
    candidates = CandidateRecordsField()


class ImportOutput(serializers.Serializer):
    created = serializers.IntegerField()
    unchanged = serializers.IntegerField(help_text="Items already present (idempotent re-import).")


class BuildOutput(serializers.Serializer):
    created = serializers.IntegerField(help_text="Comparisons created.")
    prompts_short = serializers.IntegerField(
        help_text="Prompts with unused candidates but fewer than K of them."
    )


# ---------------------------------------------------------------------------------------
# Exports and stats
# ---------------------------------------------------------------------------------------


class ExportInput(StrictInput):
    """Export options (SPEC section 5); the export service re-checks them."""

    format = serializers.ChoiceField(choices=list(FORMATS), default="jsonl")
    pairing = serializers.ChoiceField(choices=list(PAIRINGS), default="all_pairs")
    aggregate = serializers.ChoiceField(choices=list(AGGREGATES), default="none")
    min_agreement = serializers.FloatField(
        required=False,
        allow_null=True,
        default=None,
        min_value=0.0,
        max_value=1.0,
        help_text="Drop comparisons whose labelers agree less than this share.",
    )
    include_flagged = serializers.BooleanField(required=False, default=False)
    include_gold = serializers.BooleanField(required=False, default=False)
    test_fraction = serializers.FloatField(
        required=False,
        default=DEFAULT_TEST_FRACTION,
        min_value=0.0,
        max_value=1.0,
        help_text="Share of prompts in the test split.",
    )


class ExportOutput(serializers.Serializer):
    id = serializers.IntegerField()
    rows = serializers.IntegerField(help_text="Number of pairs.")
    sha256 = serializers.CharField()
    download_url = serializers.URLField()
