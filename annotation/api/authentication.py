"""Token authentication for the API, with the lookup as one plain statement.

Every API call authenticates, and on the labeling hot path DRF's
`Token.objects.select_related("user").get(key=...)` cost more to build and compile than to
run. Same header, same answers (401 for a bad or inactive token) as DRF's class. The
statement's names come from `_meta` (`annotation.selectors.sql`), like the queue's.
"""

from __future__ import annotations

from functools import cache

from django.contrib.auth import get_user_model
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from annotation.selectors.sql import Table, fetchone, instance


@cache
def _user_by_token_sql() -> str:
    # Built on first use: the user model is a setting, resolved once apps are ready.
    u, t = Table(get_user_model(), "u"), Table(Token, "t")
    return f"SELECT {u.columns()} FROM {u} JOIN {t} ON {t.user} = {u.pk} WHERE {t.key} = %s"


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's TokenAuthentication."""

    def authenticate_credentials(self, key: str):
        row = fetchone(_user_by_token_sql(), [key])
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = instance(get_user_model(), row)
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        # request.auth: the token by its key (its `created` is not loaded; nothing reads it).
        return user, Token(key=key, user=user)
