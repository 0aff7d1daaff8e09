# Hand-written: the first step of handing ModelVersion and TrainingRun to the `lineage` app.
# The tables (and the input_models M2M table) take lineage's names; the rows stay put.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelTable(name="modelversion", table="lineage_modelversion"),
        migrations.AlterModelTable(name="trainingrun", table="lineage_trainingrun"),
    ]
