"""API tokens stored hashed: migration 0010 turns DRF's clear keys into digests."""

from __future__ import annotations

import hashlib

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from rest_framework.test import APIClient

BEFORE = [("annotation", "0009_review_rejection"), ("authtoken", "0004_alter_tokenproxy_options")]
AFTER = [("annotation", "0010_api_token")]


@pytest.mark.django_db(transaction=True)
def test_migration_turns_clear_tokens_into_digests_that_still_work():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    user = old.get_model("auth", "User").objects.create(username="legacy")
    key = "0123456789abcdef0123456789abcdef01234567"
    old.get_model("authtoken", "Token").objects.create(key=key, user=user)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # back to the latest schema

    from rest_framework.authtoken.models import Token

    from annotation.models import ApiToken

    (token,) = ApiToken.objects.filter(user_id=user.pk)
    assert token.digest == hashlib.sha256(key.encode()).hexdigest()
    assert token.prefix == key[:8]
    assert not Token.objects.exists()  # no clear key is left behind
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/projects/").status_code == 200
