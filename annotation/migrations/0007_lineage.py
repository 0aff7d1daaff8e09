# Hand-written: annotation now depends on `lineage` only. Candidate.model_version points at
# lineage.ModelVersion (the same table, renamed by training 0002), and a run's project and
# export move from TrainingRun's own columns into RunSource, copied here before training
# 0003 drops those columns.

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Q


def copy_run_sources(apps, schema_editor):
    """One RunSource per old run that had a project or an input export."""
    OldRun = apps.get_model("training", "TrainingRun")
    RunSource = apps.get_model("annotation", "RunSource")
    db = schema_editor.connection.alias
    rows = (
        OldRun.objects.using(db)
        .filter(Q(project__isnull=False) | Q(input_export__isnull=False))
        .values_list("id", "project_id", "input_export_id")
    )
    RunSource.objects.using(db).bulk_create(
        (RunSource(run_id=run, project_id=project, export_id=export) for run, project, export in rows.iterator()),
        batch_size=1000,
    )


def restore_run_columns(apps, schema_editor):
    """Back to the old columns, for a migrate backwards."""
    OldRun = apps.get_model("training", "TrainingRun")
    RunSource = apps.get_model("annotation", "RunSource")
    db = schema_editor.connection.alias
    for source in RunSource.objects.using(db).iterator():
        OldRun.objects.using(db).filter(pk=source.run_id).update(
            project_id=source.project_id, input_export_id=source.export_id
        )


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0006_cache_table"),
        ("lineage", "0001_initial"),
        ("training", "0002_lineage_tables"),
    ]

    operations = [
        migrations.AlterField(
            model_name="candidate",
            name="model_version",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="candidates", to="lineage.modelversion"),
        ),
        migrations.CreateModel(
            name="RunSource",
            fields=[
                ("run", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name="source", serialize=False, to="lineage.trainingrun")),
                ("export", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="run_sources", to="annotation.export")),
                ("project", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="run_sources", to="annotation.project")),
            ],
        ),
        # Last: on PostgreSQL, rows written here must not be followed by DDL in this transaction.
        migrations.RunPython(copy_run_sources, restore_run_columns),
    ]
