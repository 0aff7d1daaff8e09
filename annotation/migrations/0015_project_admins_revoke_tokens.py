# Project admins may revoke API tokens (delete_apitoken). A group made before that got the
# permission only when the next staff account was created; this gives it at once. On a new
# database neither the group nor the permission exists yet, and nothing happens.

from django.db import migrations


def grant(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="project admins").first()
    permission = Permission.objects.filter(
        content_type__app_label="annotation", codename="delete_apitoken"
    ).first()
    if group is not None and permission is not None:
        group.permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0014_project_rating_labels"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
