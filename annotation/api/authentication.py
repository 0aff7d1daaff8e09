"""Token authentication for the API, with the lookup as one plain statement.

Every API call authenticates, and on the labeling hot path an ORM
`select_related("user").get(...)` cost more to build and compile than to run. Same header,
same answers (401 for a bad or inactive token) as DRF's class. Keys are stored hashed
(`annotation.models.ApiToken`): the presented key is hashed and its digest looked up, one
indexed statement. `last_used` is written at most once per LAST_USED_EVERY per token, so
the hot path stays a read. The statement's names come from `_meta`
(`annotation.selectors.sql`), like the queue's.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import authentication, exceptions

from annotation.models import ApiToken
from annotation.selectors.sql import Table, converted, fetchone, instance

LAST_USED_EVERY = timedelta(minutes=10)


@cache
def _user_by_token_sql() -> str:
    # Built on first use: the user model is a setting, resolved once apps are ready.
    u, t = Table(get_user_model(), "u"), Table(ApiToken, "t")
    return (
        f"SELECT {t.pk}, {t.last_used}, {u.columns()} FROM {u} JOIN {t} ON {t.user} = {u.pk} "
        f"WHERE {t.digest} = %s"
    )


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's TokenAuthentication, against hashed keys."""

    model = ApiToken

    def authenticate_credentials(self, key: str):
        row = fetchone(_user_by_token_sql(), [ApiToken.digest_of(key)])
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        token_id, last_used = row[0], row[1]
        user = instance(get_user_model(), row[2:])
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        now = timezone.now()
        (last_used,) = converted([ApiToken._meta.get_field("last_used")], [last_used])
        if last_used is None or now - last_used >= LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token_id).update(last_used=now)
        # request.auth: the token row by id and prefix (nothing reads more of it).
        return user, ApiToken(pk=token_id, user=user, prefix=key[: ApiToken.PREFIX_LENGTH])
