# Hand-written: the last step of handing ModelVersion and TrainingRun to `lineage`. The
# project and input_export columns go (annotation 0007 copied them into RunSource), then
# the models leave this app's state; their tables now belong to lineage 0001.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0002_lineage_tables"),
        ("lineage", "0001_initial"),
        ("annotation", "0007_lineage"),
    ]

    operations = [
        migrations.RemoveField(model_name="trainingrun", name="project"),
        migrations.RemoveField(model_name="trainingrun", name="input_export"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="modelversion", name="produced_by"),
                migrations.DeleteModel(name="TrainingRun"),
                migrations.DeleteModel(name="ModelVersion"),
            ],
        ),
    ]
