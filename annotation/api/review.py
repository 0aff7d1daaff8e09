"""Staff review endpoints (SPEC section 11): gold rankings, and rejecting / restoring annotations.

Thin views as in `annotation.api.views`: parse, call one service (annotation/services/gold.py,
annotation/services/review.py), render. Unknown ids are 404; service errors map to 400/409
in `annotation.api.exceptions`.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.permissions import IsStaff
from annotation.api.serializers import MAX_CANDIDATES, ErrorSerializer, StrictInput, TextField
from annotation.api.views import BAD_INPUT, ERRORS_STAFF, NOT_FOUND
from annotation.models import Annotation, Comparison
from annotation.services.gold import comparison_gold_clear, comparison_gold_set
from annotation.services.review import REASON_MAX_LENGTH, annotation_reject, annotation_restore

CONFLICT = {409: OpenApiResponse(ErrorSerializer, description="Conflicts with the current state.")}


class GoldInput(StrictInput):
    ranking = serializers.ListField(
        child=serializers.ListField(
            child=serializers.IntegerField(), allow_empty=False, max_length=MAX_CANDIDATES
        ),
        allow_empty=False,
        max_length=MAX_CANDIDATES,
        help_text="Tiers best first naming every candidate of the comparison once.",
    )


class GoldOutput(serializers.Serializer):
    comparison_id = serializers.IntegerField(source="pk")
    is_gold = serializers.BooleanField()
    gold_ranking = serializers.JSONField(allow_null=True)


class RejectInput(StrictInput):
    reason = TextField(max_length=REASON_MAX_LENGTH)


class ReviewOutput(serializers.Serializer):
    annotation_id = serializers.IntegerField()
    rejected = serializers.BooleanField()
    rejected_at = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    changed = serializers.BooleanField(help_text="False when it already was in that state.")
    comparison = serializers.DictField(help_text="{id, submitted_count, required, status}")


def _review_payload(result) -> dict:
    annotation = result.annotation
    comparison = Comparison.objects.get(pk=annotation.comparison_id)
    return {
        "annotation_id": annotation.pk,
        "rejected": annotation.rejected_at is not None,
        "rejected_at": annotation.rejected_at,
        "reason": annotation.rejection_reason,
        "changed": result.changed,
        "comparison": {
            "id": comparison.pk,
            "submitted_count": comparison.submitted_count,
            "required": comparison.required,
            "status": comparison.status,
        },
    }


class ComparisonGoldApi(APIView):
    """Mark a comparison gold with a validated ranking (POST), or remove the mark (DELETE)."""

    permission_classes = [IsStaff]
    required_permission = "annotation.change_comparison"

    @extend_schema(
        tags=["review"],
        summary="Save a gold ranking",
        request=GoldInput,
        responses={200: GoldOutput, **BAD_INPUT, **ERRORS_STAFF, **NOT_FOUND},
    )
    def post(self, request: Request, comparison_id: int) -> Response:
        comparison = get_object_or_404(Comparison, pk=comparison_id)
        data = GoldInput(data=request.data)
        data.is_valid(raise_exception=True)
        comparison = comparison_gold_set(
            comparison=comparison, ranking=data.validated_data["ranking"]
        )
        return Response(GoldOutput(comparison).data)

    @extend_schema(
        tags=["review"],
        summary="Remove the gold mark",
        request=None,
        responses={200: GoldOutput, **ERRORS_STAFF, **NOT_FOUND},
    )
    def delete(self, request: Request, comparison_id: int) -> Response:
        comparison = get_object_or_404(Comparison, pk=comparison_id)
        comparison = comparison_gold_clear(comparison=comparison)
        return Response(GoldOutput(comparison).data)


class AnnotationRejectApi(APIView):
    """Reject an annotation: kept, but out of exports and agreement; its slot reopens."""

    permission_classes = [IsStaff]
    required_permission = "annotation.change_annotation"

    @extend_schema(
        tags=["review"],
        summary="Reject an annotation",
        request=RejectInput,
        responses={200: ReviewOutput, **BAD_INPUT, **ERRORS_STAFF, **NOT_FOUND, **CONFLICT},
    )
    def post(self, request: Request, annotation_id: int) -> Response:
        annotation = get_object_or_404(Annotation, pk=annotation_id)
        data = RejectInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = annotation_reject(
            annotation=annotation, reason=data.validated_data["reason"], by=request.user
        )
        return Response(_review_payload(result))


class AnnotationRestoreApi(APIView):
    """Undo a rejection; 409 when others have filled the comparison meanwhile."""

    permission_classes = [IsStaff]
    required_permission = "annotation.change_annotation"

    @extend_schema(
        tags=["review"],
        summary="Restore a rejected annotation",
        request=None,
        responses={200: ReviewOutput, **ERRORS_STAFF, **NOT_FOUND, **CONFLICT},
    )
    def post(self, request: Request, annotation_id: int) -> Response:
        annotation = get_object_or_404(Annotation, pk=annotation_id)
        return Response(_review_payload(annotation_restore(annotation=annotation)))
