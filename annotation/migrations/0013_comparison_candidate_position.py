"""Comparison candidates: candidate_ids is the one source; the many-to-many becomes a derived
through model (ComparisonCandidate) on the same table, with each row's position in
candidate_ids. The rows are kept: the table is adopted as it is (state only), then `position`
is added and filled from candidate_ids. Reversible: the reverse drops `position` and hands the
table back to the implicit many-to-many.
"""

import django.db.models.deletion
from django.db import migrations, models


def fill_positions(apps, schema_editor):
    """position = index of the candidate in its comparison's candidate_ids (rows kept as they are)."""
    Comparison = apps.get_model("annotation", "Comparison")
    ComparisonCandidate = apps.get_model("annotation", "ComparisonCandidate")
    batch = []
    for comparison_id, ids in Comparison.objects.values_list("id", "candidate_ids").iterator(
        chunk_size=2000
    ):
        place = {int(cid): n for n, cid in enumerate(ids)}
        extra = len(ids)
        for row in ComparisonCandidate.objects.filter(comparison_id=comparison_id).order_by("pk"):
            # A row candidate_ids does not hold (drift from the old admin) goes after the rest:
            # kept, unique, and visible to whoever audits it.
            if row.candidate_id in place:
                row.position = place[row.candidate_id]
            else:
                row.position, extra = extra, extra + 1
            batch.append(row)
        if len(batch) >= 2000:
            ComparisonCandidate.objects.bulk_update(batch, ["position"])
            batch = []
    if batch:
        ComparisonCandidate.objects.bulk_update(batch, ["position"])


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0012_comparison_priority"),
    ]

    operations = [
        migrations.AlterField(
            model_name="comparison",
            name="candidate_ids",
            field=models.JSONField(
                default=list,
                editable=False,
                help_text="The K candidate ids in canonical (built) order.",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ComparisonCandidate",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "candidate",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                to="annotation.candidate",
                            ),
                        ),
                        (
                            "comparison",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                to="annotation.comparison",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "annotation_comparison_candidates",
                        "unique_together": {("comparison", "candidate")},
                    },
                ),
                migrations.AlterField(
                    model_name="comparison",
                    name="candidates",
                    field=models.ManyToManyField(
                        related_name="comparisons",
                        through="annotation.ComparisonCandidate",
                        to="annotation.candidate",
                    ),
                ),
            ],
            database_operations=[],
        ),
        migrations.AddField(
            model_name="comparisoncandidate",
            name="position",
            field=models.PositiveSmallIntegerField(
                default=0, help_text="Index of the candidate in the comparison's candidate_ids."
            ),
            preserve_default=False,
        ),
        migrations.RunPython(fill_positions, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="comparisoncandidate",
            constraint=models.UniqueConstraint(
                fields=("comparison", "position"), name="comparison_candidate_unique_position"
            ),
        ),
    ]
