"""A brake on password guessing, shared by every sign-in path (site, admin, API token).

Each attempt is counted *before* the password is checked, in one atomic UPDATE per key, so
of any number of concurrent attempts at most the limit get to try; a successful sign-in
then takes its attempt back. Three keys, checked in this order:

- (username, address), limit LOGIN_FAILURE_LIMIT: a typo streak locks out that person on
  that machine, not the office behind the same address;
- username, LOGIN_FAILURE_LIMIT_PER_USER: guessing one account from many addresses;
- address, LOGIN_FAILURE_LIMIT_PER_ADDRESS: one address trying many accounts.

An attempt that a full user or address count refuses anyway is refused before any row is
made for it (a spray of new usernames would add two rows an attempt), and rows whose window
has ended are deleted when a new one is made: the table holds the current windows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from annotation.models import SignInThrottle


@dataclass(frozen=True)
class SignInDecision:
    allowed: bool
    retry_after: int = 0  # seconds until the window that refused this attempt ends
    keys: tuple[str, ...] = ()


def _keys(username: str, address: str) -> list[tuple[str, int]]:
    username = username.strip().lower()[:100]
    return [
        (f"pair:{username}|{address}", settings.LOGIN_FAILURE_LIMIT),
        (f"user:{username}", settings.LOGIN_FAILURE_LIMIT_PER_USER),
        (f"address:{address}", settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS),
    ]


def _bump(key: str, now) -> SignInThrottle:
    """Count one attempt on `key` (a new window if the last one ended) and return the row."""
    window_ends = now + timedelta(seconds=settings.LOGIN_FAILURE_WINDOW)
    with transaction.atomic():
        updated = SignInThrottle.objects.filter(key=key).update(
            attempts=Case(When(window_ends__lte=now, then=Value(1)), default=F("attempts") + 1),
            window_ends=Case(
                When(window_ends__lte=now, then=Value(window_ends)), default=F("window_ends")
            ),
        )
        if not updated:
            SignInThrottle.objects.filter(window_ends__lte=now).delete()
            try:
                with transaction.atomic():
                    return SignInThrottle.objects.create(
                        key=key, attempts=1, window_ends=window_ends
                    )
            except IntegrityError:  # another attempt created it first: count on its row
                return _bump(key, now)
        return SignInThrottle.objects.get(key=key)


def signin_attempt(*, username: str, address: str) -> SignInDecision:
    """Count an attempt to sign in as `username` from `address`; refused past any limit."""
    now = timezone.now()
    keys = _keys(username, address)
    full = SignInThrottle.objects.filter(
        key__in=[key for key, _ in keys[1:]], window_ends__gt=now
    ).values_list("key", "attempts", "window_ends")
    limits = dict(keys)
    for key, attempts, ends in full:
        if attempts >= limits[key]:
            # Refused whatever the other counts say: nothing to count it on.
            return SignInDecision(
                allowed=False, retry_after=max(1, int((ends - now).total_seconds()))
            )
    counted = []
    for key, limit in keys:
        row = _bump(key, now)
        counted.append(key)
        if row.attempts > limit:
            retry = max(1, int((row.window_ends - now).total_seconds()))
            return SignInDecision(allowed=False, retry_after=retry, keys=tuple(counted))
    return SignInDecision(allowed=True, keys=tuple(counted))


def signin_succeeded(*, decision: SignInDecision) -> None:
    """A right password: the attempt was no guess, so take it back from every count."""
    pair, *others = decision.keys
    SignInThrottle.objects.filter(key=pair).delete()
    SignInThrottle.objects.filter(key__in=others, attempts__gt=0).update(attempts=F("attempts") - 1)
