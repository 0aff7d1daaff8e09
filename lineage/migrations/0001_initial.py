# Hand-written: ModelVersion and TrainingRun move here from `training`. The tables already
# exist (training 0001 created them, training 0002 renamed them), so only the state is
# created; TrainingRun's project and input_export are left behind and become
# annotation.RunSource (annotation 0007). The content types follow, so staff permissions
# and admin history on these models carry over.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


MOVED = ["modelversion", "trainingrun"]


def move_content_types(apps, schema_editor, old="training", new="lineage"):
    """Relabel the models' content types (and so their permissions) from `old` to `new`."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.using(schema_editor.connection.alias)
    for model in MOVED:
        if not types.filter(app_label=new, model=model).exists():
            types.filter(app_label=old, model=model).update(app_label=new)


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, old="lineage", new="training")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("training", "0002_lineage_tables"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    state_operations = [
        migrations.CreateModel(
            name="ModelVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=255, unique=True)),
                ("path", models.CharField(help_text="Hub id or local directory.", max_length=1024)),
                ("kind", models.CharField(choices=[("policy", "Policy"), ("reward", "Reward model")], default="policy", max_length=16)),
                ("metadata", models.JSONField(blank=True, default=dict)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("parent", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="children", to="lineage.modelversion")),
            ],
            options={
                "ordering": ["-id"],
            },
        ),
        migrations.CreateModel(
            name="TrainingRun",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=[("generate", "Candidate generation"), ("reward", "Reward model"), ("ppo", "PPO"), ("sft", "SFT"), ("dpo", "DPO"), ("loop", "Full loop")], max_length=16)),
                ("status", models.CharField(choices=[("pending", "Pending"), ("running", "Running"), ("succeeded", "Succeeded"), ("failed", "Failed")], default="pending", max_length=16)),
                ("config", models.JSONField(blank=True, default=dict)),
                ("output_dir", models.CharField(blank=True, max_length=1024)),
                ("metrics", models.JSONField(blank=True, default=dict, help_text="Final metrics.")),
                ("metrics_history", models.JSONField(blank=True, default=list)),
                ("log", models.TextField(blank=True)),
                ("error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("created_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                ("input_models", models.ManyToManyField(blank=True, related_name="consumed_by", to="lineage.modelversion")),
                ("output_model", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to="lineage.modelversion")),
            ],
            options={
                "ordering": ["-id"],
                "indexes": [models.Index(fields=["kind", "status"], name="run_kind_status_idx")],
            },
        ),
        migrations.AddField(
            model_name="modelversion",
            name="produced_by",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="produced_versions", to="lineage.trainingrun"),
        ),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=state_operations),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
