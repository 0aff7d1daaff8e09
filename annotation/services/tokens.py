"""API tokens: issued once, stored hashed (`annotation.models.ApiToken`).

A key is 40 random hex characters, as DRF's were, so `Authorization: Token <key>` is
unchanged. Only its sha256 is stored; the key is returned by `api_token_issue` and
nowhere else, so it cannot be shown again: a lost key is replaced by issuing a new one.
"""

from __future__ import annotations

import secrets

from django.db import transaction

from annotation.models import ApiToken


def api_token_issue(user, *, replace: bool = False) -> str:
    """A new key for `user` (returned, never stored). `replace` revokes the user's others."""
    key = secrets.token_hex(20)
    with transaction.atomic():
        if replace:
            ApiToken.objects.filter(user=user).delete()
        ApiToken.objects.create(
            user=user, digest=ApiToken.digest_of(key), prefix=key[: ApiToken.PREFIX_LENGTH]
        )
    return key
