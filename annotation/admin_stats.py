"""The admin statistics page: what each figure means, how it is shown, and its date filter.

The numbers come from the selectors (`project_stats`, `annotations_per_day`,
`project_model_leaderboard`), the same ones /stats/ and /models/ return; this module only
labels, formats and colours them for people.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.urls import reverse

from annotation.models import Project
from annotation.selectors.stats import (
    annotations_per_day,
    project_model_leaderboard,
    project_stats,
)
from lineage.charts import bar_chart_svg, fmt

# key -> (label, one-line explanation)
PROGRESS = {
    "comparisons": ("Comparisons", "Units of labeling work built from the prompts' candidates."),
    "complete": ("Complete", "Comparisons that collected every annotation they need."),
    "gold_comparisons": (
        "Gold comparisons",
        "Comparisons with a known answer, used to score labelers.",
    ),
    "annotations": (
        "Annotations counted",
        "Latest rankings in the date range; rejected ones left out.",
    ),
    "labelers": ("Active labelers", "Labelers with at least one counted annotation."),
    "assignments_submitted": ("Submitted", "Leases answered with a ranking (all time)."),
    "assignments_skipped": (
        "Skipped",
        "Leases a labeler passed on; the slot went back to the queue.",
    ),
    "assignments_leased": ("Open now", "Leases held by a labeler at this moment."),
    "assignments_expired": ("Expired", "Leases that ran out unanswered; their slots were freed."),
}
AGREEMENT = {
    "comparisons_annotated": (
        "Comparisons annotated",
        "Comparisons with at least one counted ranking.",
    ),
    "comparisons_shared": (
        "Comparisons shared",
        "Comparisons ranked by two labelers or more: agreement is measured on these.",
    ),
    "pairwise_agreement": (
        "Pairwise agreement",
        "Share of candidate pairs two labelers order the same way (1 = always).",
    ),
    "kendall_tau_b": (
        "Kendall's tau-b",
        "Rank correlation between labelers, corrected for ties (1 = same order, 0 = unrelated).",
    ),
    "krippendorff_alpha": (
        "Krippendorff's alpha",
        "Agreement beyond chance over the project (>= 0.67 is usually taken as reliable).",
    ),
}
LABELER_COLUMNS = [
    ("annotations", "Annotations", "Counted rankings by this labeler."),
    (
        "median_time_ms",
        "Median s/task",
        "Median seconds spent per task; very fast work was probably not read.",
    ),
    (
        "agreement_with_consensus",
        "Agreement with others",
        "Pairwise agreement with the consensus of each comparison's labelers.",
    ),
    ("gold_accuracy", "Gold accuracy", "Share of gold pairs ordered like the gold ranking."),
    (
        "first_shown_top_rate",
        "First shown wins",
        "How often the first candidate shown was ranked best (expected without bias in brackets).",
    ),
    ("flag_rate", "Flag rate", "Share of annotations with at least one flag."),
]


class DateRangeForm(forms.Form):
    """?since=&until=: the days counted, both included, both optional."""

    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("The end date is before the start date.")
        return data


def figure(value: Any) -> str:
    """Counts as integers, rates to 3 decimals, nothing measured as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:.3f}"
    return str(value)


def stats_page_context(project: Project, query) -> dict[str, Any]:
    """Everything the statistics template shows, for the date range in `query` (GET params)."""
    form = DateRangeForm(query or None)
    since = until = None
    if form.is_valid():
        since, until = form.cleaned_data.get("since"), form.cleaned_data.get("until")
    stats = project_stats(project, since=since, until=until)
    annotations_url = reverse("admin:annotation_annotation_changelist")
    labelers = []
    for row in stats["labelers"]:
        weak = set(row["weak"])
        cells = []
        for key, label, _ in LABELER_COLUMNS:
            value = row[key]
            if key == "median_time_ms" and value is not None:
                text = f"{value / 1000:.1f}"
            elif key == "first_shown_top_rate" and value is not None:
                text = f"{value:.3f} ({figure(row['first_shown_top_expected'])})"
            elif key == "gold_accuracy" and value is not None:
                text = f"{value:.3f} ({row['gold_annotations']} gold)"
            else:
                text = figure(value)
            cells.append({"text": text, "weak": key in weak, "label": label})
        query_string = urlencode(
            {"labeler__id__exact": row["labeler_id"], "comparison__project__id__exact": project.pk}
        )
        labelers.append(
            {
                "name": row["labeler"],
                "url": f"{annotations_url}?{query_string}",
                "cells": cells,
                "weak": bool(weak),
            }
        )
    days = annotations_per_day(project, since=since, until=until)
    trend = bar_chart_svg(
        [(day.isoformat(), n) for day, n in days],
        "Annotations per day",
        x_label="day",
        y_label="annotations",
    )
    thresholds = stats["thresholds"]
    return {
        "stats": stats,
        "form": form,
        "progress": [
            (*PROGRESS[k], figure(v)) for k, v in stats["progress"].items() if k in PROGRESS
        ],
        "agreement": [
            (*AGREEMENT[k], figure(v)) for k, v in stats["agreement"].items() if k in AGREEMENT
        ],
        "labeler_columns": LABELER_COLUMNS,
        "labelers": labelers,
        "pairs": [
            {
                "labelers": " · ".join(row["labelers"]),
                "shared": figure(row["shared_comparisons"]),
                "agreement": figure(row["pairwise_agreement"]),
                "tau": figure(row["kendall_tau_b"]),
            }
            for row in stats["labeler_pairs"]
        ],
        "trend": trend,
        "days": days,
        "thresholds": {
            "gold_accuracy": _plain(thresholds.get("gold_accuracy")),
            "agreement": _plain(thresholds.get("agreement_with_consensus")),
            "median_seconds": _plain(thresholds.get("median_seconds")),
        },
        "models": [
            {
                **asdict(row),
                **{
                    k: figure(getattr(row, k))
                    for k in ("win_rate", "ci_low", "ci_high", "strength")
                },
            }
            for row in project_model_leaderboard(project, since=since, until=until)
        ],
    }


def _plain(value) -> str:
    """A setting as people wrote it: 0.7, 5 (not 0.700, 5.000)."""
    return "–" if value is None else fmt(value)
