"""Create the database cache table, so `migrate` alone sets up a deployment."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0005_open_lease_index_by_comparison")]
    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
