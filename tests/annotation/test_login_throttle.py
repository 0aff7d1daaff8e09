"""Password guessing in the browser sign-in is stopped after LOGIN_FAILURE_LIMIT failures."""

import pytest
from django.core.cache import cache
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clear_cache():
    cache.clear()
    yield
    cache.clear()


def test_login_is_throttled_after_repeated_failures(client, make_labeler, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    make_labeler("bob", password="right-password-123")
    url = reverse("login")
    for _ in range(3):
        assert client.post(url, {"username": "bob", "password": "wrong"}).status_code == 200
    blocked = client.post(url, {"username": "bob", "password": "right-password-123"})
    assert blocked.status_code == 429 and "Too many sign-in attempts" in blocked.content.decode()
    other = client.post(
        url, {"username": "bob", "password": "right-password-123"}, REMOTE_ADDR="10.9.9.9"
    )
    assert other.status_code == 302  # another address is not blocked


def test_successful_logins_do_not_count(client, make_labeler, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    make_labeler("bob", password="right-password-123")
    for _ in range(4):
        response = client.post(
            reverse("login"), {"username": "bob", "password": "right-password-123"}
        )
        assert response.status_code == 302
        client.logout()
