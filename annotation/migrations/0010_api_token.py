"""API tokens stored hashed: DRF's clear-text keys become sha256 digests, and go."""

import hashlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def tokens_to_digests(apps, schema_editor):
    Token = apps.get_model("authtoken", "Token")
    ApiToken = apps.get_model("annotation", "ApiToken")
    for token in Token.objects.all().iterator():
        row = ApiToken.objects.create(
            user_id=token.user_id,
            digest=hashlib.sha256(token.key.encode("utf-8")).hexdigest(),
            prefix=token.key[:8],
        )
        ApiToken.objects.filter(pk=row.pk).update(created=token.created)  # not auto_now_add
    # The keys were stored in clear: keep none of them (existing keys keep working, hashed).
    Token.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0009_review_rejection"),
        ("authtoken", "0004_alter_tokenproxy_options"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("digest", models.CharField(help_text="sha256 hex of the key", max_length=64, unique=True)),
                ("prefix", models.CharField(help_text="the key's first characters", max_length=8)),
                ("created", models.DateTimeField(auto_now_add=True)),
                ("last_used", models.DateTimeField(blank=True, null=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_tokens",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"verbose_name": "API token", "ordering": ["-created"]},
        ),
        migrations.RunPython(tokens_to_digests, migrations.RunPython.noop),
    ]
