"""Token authentication for the API, with the lookup as one plain statement.

Every API call authenticates, and on the labeling hot path DRF's
`Token.objects.select_related("user").get(key=...)` cost more to build and compile than to
run. Same header, same answers (401 for a bad or inactive token) as DRF's class.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token


def _user_by_token_sql() -> str:
    user = get_user_model()._meta
    return (
        f"SELECT u.* FROM {user.db_table} u "
        f"JOIN {Token._meta.db_table} t ON t.user_id = u.{user.pk.column} WHERE t.key = %s"
    )


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's TokenAuthentication."""

    def authenticate_credentials(self, key: str):
        user = next(iter(get_user_model().objects.raw(_user_by_token_sql(), [key])), None)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        # request.auth: the token by its key (its `created` is not loaded; nothing reads it).
        return user, Token(key=key, user=user)
