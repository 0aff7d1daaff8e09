# After training 0003: on SQLite its RemoveField rebuilds the table from the training app's
# state of the model, which would drop a column added before it.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("lineage", "0001_initial"),
        ("training", "0003_lineage_handed_over"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="process",
            field=models.CharField(
                blank=True,
                help_text="Host, pid and start time of the process running it: a run whose "
                "process is gone without finishing is marked failed (interrupted).",
                max_length=300,
            ),
        ),
    ]
