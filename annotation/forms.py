"""The labeling form as a plain HTML post: what the page sends when JavaScript is off.

The form turns per-card fields (`rank_<id>`, `flag_<id>`, `rating_<id>`) into the arguments
of `ranking_submit`. It checks shapes only; the service checks the domain rules (every
candidate once, ties, flag codes, rating range), so both paths refuse the same things.
"""

from __future__ import annotations

from collections.abc import Iterable

from django import forms
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS

from annotation.models import Project, TaskType
from annotation.rules.ranking import TIME_SPENT_MAX_MS

# Pairwise buttons (SPEC section 2): A better, tie, B better, both bad.
PAIRWISE_CHOICES = [("a", "A is better"), ("tie", "Tie"), ("b", "B is better"), ("bad", "Both bad")]


def ordinal(n: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def pairwise_choice(ranking: list[list[int]], all_bad: bool, display_order: list[int]) -> str:
    """The pairwise button that stores this ranking ("a", "b", "tie" or "bad")."""
    if all_bad:
        return "bad"
    if len(ranking) == 1:
        return "tie"
    return "a" if ranking[0] == [display_order[0]] else "b"


def tiers_from_ranks(ranks: dict[int, int]) -> list[list[int]]:
    """Group candidates by rank number, best (lowest) first; equal numbers form a tie."""
    tiers: dict[int, list[int]] = {}
    for candidate_id, rank in ranks.items():
        tiers.setdefault(rank, []).append(candidate_id)
    return [tiers[rank] for rank in sorted(tiers)]


class SubmissionForm(forms.Form):
    """One answer to one assignment, with fields named after the candidates shown."""

    rationale = forms.CharField(required=False, strip=False, widget=forms.Textarea)
    all_bad = forms.BooleanField(required=False)
    client_token = forms.UUIDField()
    started_ms = forms.IntegerField(required=False, min_value=0)

    def __init__(self, *args, project: Project, display_order: list[int], now_ms: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        self.display_order = list(display_order)
        self.now_ms = now_ms
        # Inputs an error names beyond the fields' own errors (see `invalid_fields`).
        self.invalid_names: set[str] = set()
        # Built here, not at class level, so the limit is read per request (tests change it).
        self.fields["rationale"] = forms.CharField(
            required=False,
            strip=False,
            max_length=settings.RATIONALE_MAX_LENGTH,
            widget=forms.Textarea,
        )
        k = len(self.display_order)
        flag_choices = [(code, code) for code in project.flags or []]
        rating_choices = [("", "-"), *project.rating_choices()]
        if project.task_type == TaskType.PAIRWISE:
            self.fields["choice"] = forms.ChoiceField(choices=PAIRWISE_CHOICES)
        if project.task_type == TaskType.DEMONSTRATION:
            # Required-ness and trimming are the service's (annotation.rules.answers).
            self.fields["demonstration"] = forms.CharField(
                required=False, strip=False, max_length=settings.ANSWER_MAX_LENGTH
            )
        elif project.allow_edit:
            self.fields["edited_text"] = forms.CharField(
                required=False, strip=False, max_length=settings.ANSWER_MAX_LENGTH
            )
        written = project.task_type == TaskType.DEMONSTRATION
        for cid in self.display_order:
            if project.task_type != TaskType.PAIRWISE and not written:
                self.fields[f"rank_{cid}"] = forms.TypedChoiceField(
                    choices=[("", "-")] + [(str(i), ordinal(i)) for i in range(1, k + 1)],
                    coerce=int,
                    empty_value=None,
                    required=False,
                )
            self.fields[f"flag_{cid}"] = forms.MultipleChoiceField(
                choices=flag_choices, required=False
            )
            if project.rating_scale:
                self.fields[f"rating_{cid}"] = forms.TypedChoiceField(
                    choices=rating_choices, coerce=int, empty_value=None, required=False
                )

    def clean(self) -> dict:
        data = super().clean()
        if self.project.task_type == TaskType.PAIRWISE:
            self._clean_pairwise(data)
        elif self.project.task_type == TaskType.DEMONSTRATION:
            data["ranking"] = []  # nothing ranked: the candidates were references
        else:
            self._clean_ranking(data)
        return data

    def _clean_pairwise(self, data: dict) -> None:
        a, b = self.display_order
        choice = data.get("choice")
        if choice is None:
            return  # the field's own error says a choice is required
        data["ranking"] = {"a": [[a], [b]], "b": [[b], [a]]}.get(choice, [[a, b]])
        data["all_bad"] = choice == "bad"

    def _clean_ranking(self, data: dict) -> None:
        ranks = {
            cid: data[f"rank_{cid}"]
            for cid in self.display_order
            if data.get(f"rank_{cid}") is not None
        }
        if not ranks and data.get("all_bad"):
            # "All bad" with no ranking states no preference: one tier with everything.
            data["ranking"] = [list(self.display_order)]
            return
        missing = [n for n, cid in enumerate(self.display_order, start=1) if cid not in ranks]
        if missing:
            self.invalid_names.update(
                f"rank_{cid}" for cid in self.display_order if cid not in ranks
            )
            names = ", ".join(f"response {n}" for n in missing)
            raise forms.ValidationError(f"Rank every response (missing: {names}).")
        data["ranking"] = tiers_from_ranks(ranks)

    def mark_invalid(self, service_fields: Iterable[str]) -> None:
        """Mark the inputs behind the fields a service error names (`ServiceError.errors`)."""
        for name in service_fields:
            if name == "ranking":  # a ranking the service refused: every rank select
                self.invalid_names.update(n for n in self.fields if n.startswith("rank_"))
            elif name in self.fields:
                self.invalid_names.add(name)

    def invalid_fields(self) -> set[str]:
        """Names of the inputs the page's errors are about, to mark aria-invalid and point at
        the alert: fields with errors of their own, the responses a "Rank every response"
        error names, and the fields a service error named."""
        return {name for name in self.errors if name != NON_FIELD_ERRORS} | self.invalid_names

    def submission(self) -> dict:
        """Keyword arguments for `ranking_submit` (call after `is_valid()`)."""
        data = self.cleaned_data
        started = data.get("started_ms")
        spent = self.now_ms - started if started is not None else 0
        return {
            "ranking": data["ranking"],
            "flags": {
                str(cid): data[f"flag_{cid}"]
                for cid in self.display_order
                if data.get(f"flag_{cid}")
            },
            "ratings": {
                str(cid): data[f"rating_{cid}"]
                for cid in self.display_order
                if data.get(f"rating_{cid}") is not None
            },
            "all_bad": bool(data.get("all_bad")),
            "rationale": data.get("rationale") or "",
            # A tampered or skewed start time must not turn into a 500 or a negative value.
            "time_spent_ms": min(max(spent, 0), TIME_SPENT_MAX_MS),
            "client_token": data["client_token"],
            "demonstration": data.get("demonstration") or "",
            "edited_text": data.get("edited_text") or "",
        }
