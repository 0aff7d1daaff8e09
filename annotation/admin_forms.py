"""Forms behind the admin's export and import pages: they parse, the services decide."""

from __future__ import annotations

from django import forms
from django.conf import settings

from annotation.datafiles.export import FORMATS
from annotation.rules.pairs import PAIRINGS
from annotation.rules.splits import DEFAULT_TEST_FRACTION
from annotation.services.exports import AGGREGATES, ExportOptions

PAIRING_HELP = {
    "all_pairs": "all pairs across tiers (InstructGPT: C(K,2) per strict ranking)",
    "best_vs_rest": "best vs rest (K-1 per ranking)",
}
AGGREGATE_HELP = {
    "none": "none: every annotation gives its own rows",
    "consensus": "consensus: one Bradley-Terry ranking per comparison",
}


class ExportForm(forms.Form):
    """The options of SPEC section 5, with the defaults of `export_preferences`."""

    pairing = forms.ChoiceField(choices=[(p, PAIRING_HELP.get(p, p)) for p in PAIRINGS])
    aggregate = forms.ChoiceField(choices=[(a, AGGREGATE_HELP.get(a, a)) for a in AGGREGATES])
    min_agreement = forms.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        help_text="Leave out annotations agreeing less than this with their comparison's "
        "consensus (0 to 1; empty: keep all).",
    )
    include_flagged = forms.BooleanField(
        required=False, help_text="Keep pairs whose candidates a labeler flagged."
    )
    include_gold = forms.BooleanField(
        required=False, help_text="Keep the labelers' rankings of gold comparisons."
    )
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS])
    test_fraction = forms.FloatField(
        initial=DEFAULT_TEST_FRACTION,
        min_value=0.0,
        max_value=1.0,
        help_text="Share of prompts held out as the test split.",
    )

    def options(self) -> ExportOptions:
        """The cleaned form as the export service's options."""
        data = self.cleaned_data
        return ExportOptions(
            format=data["format"],
            pairing=data["pairing"],
            aggregate=data["aggregate"],
            include_flagged=data["include_flagged"],
            include_gold=data["include_gold"],
            min_agreement=data["min_agreement"],
            test_fraction=data["test_fraction"],
        )


class ImportForm(forms.Form):
    """One prompts or candidates file, as the import commands read it."""

    KINDS = [("prompts", "Prompts (.jsonl or .csv)"), ("candidates", "Candidates (.jsonl)")]

    kind = forms.ChoiceField(choices=KINDS)
    file = forms.FileField()

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > settings.IMPORT_MAX_BYTES:
            raise forms.ValidationError(
                f"{upload.name} is {upload.size:,} bytes; the limit is "
                f"{settings.IMPORT_MAX_BYTES:,} (IMPORT_MAX_BYTES)."
            )
        return upload
