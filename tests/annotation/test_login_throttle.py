"""Password guessing is stopped on every sign-in path (site, admin, token), atomically."""

import threading
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

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


def test_a_typo_streak_locks_the_pair_not_the_office(client, make_labeler, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    make_labeler("bob", password="right-password-123")
    make_labeler("carol", password="carols-password-456")
    url = reverse("login")
    for _ in range(4):
        client.post(url, {"username": "bob", "password": "wrong"})
    colleague = client.post(url, {"username": "carol", "password": "carols-password-456"})
    assert colleague.status_code == 302  # same address, another account: not blocked


def test_one_address_spraying_many_accounts_is_stopped(client, make_labeler, settings):
    settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS = 5
    make_labeler("bob", password="right-password-123")
    url = reverse("login")
    statuses = [
        client.post(url, {"username": f"user{i}", "password": "guess"}).status_code
        for i in range(5)
    ]
    assert statuses == [200] * 5
    blocked = client.post(url, {"username": "bob", "password": "right-password-123"})
    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) > 0


def test_a_refused_spray_adds_no_rows_and_ended_windows_are_deleted(client, make_labeler, settings):
    from annotation.models import SignInThrottle

    settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS = 3
    url = reverse("login")
    statuses = [
        client.post(url, {"username": f"user{i}", "password": "guess"}).status_code
        for i in range(50)
    ]
    assert statuses == [200] * 3 + [429] * 47
    # 3 attempts counted (pair and user rows each, one address row); the 47 refused by the
    # full address count made no rows (each used to add two).
    assert SignInThrottle.objects.count() == 7
    SignInThrottle.objects.update(window_ends=timezone.now() - timedelta(seconds=1))
    assert client.post(url, {"username": "new", "password": "guess"}).status_code == 200
    assert sorted(SignInThrottle.objects.values_list("key", flat=True)) == [
        "address:127.0.0.1",
        "pair:new|127.0.0.1",
        "user:new",
    ]


def test_one_account_guessed_from_many_addresses_is_stopped(client, make_labeler, settings):
    settings.LOGIN_FAILURE_LIMIT_PER_USER = 4
    make_labeler("bob", password="right-password-123")
    url = reverse("login")
    for i in range(4):
        client.post(url, {"username": "bob", "password": "guess"}, REMOTE_ADDR=f"10.0.0.{i}")
    blocked = client.post(
        url, {"username": "bob", "password": "right-password-123"}, REMOTE_ADDR="10.0.1.1"
    )
    assert blocked.status_code == 429


def test_admin_login_is_throttled_like_the_site(client, make_labeler, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    make_labeler("root", staff=True, password="right-password-123")
    for _ in range(3):
        response = client.post("/admin/login/", {"username": "root", "password": "wrong"})
        assert response.status_code == 200
    blocked = client.post("/admin/login/", {"username": "root", "password": "right-password-123"})
    assert blocked.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still signed out


def test_admin_login_still_signs_staff_in(client, make_labeler):
    make_labeler("root", staff=True, password="right-password-123")
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "root", "password": "right-password-123"}
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_token_endpoint_shares_the_sign_in_counts(client, make_labeler, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    make_labeler("bob", password="right-password-123")
    for _ in range(3):
        client.post(reverse("login"), {"username": "bob", "password": "wrong"})
    response = client.post(
        "/api/v1/auth/token/",
        {"username": "bob", "password": "right-password-123"},
        content_type="application/json",
    )
    assert response.status_code == 429
    assert set(response.json()) == {"detail", "errors"}
    assert "Retry-After" in response


def test_a_new_window_starts_after_the_last_one_ends(client, make_labeler, settings):
    from annotation.models import SignInThrottle

    settings.LOGIN_FAILURE_LIMIT = 2
    make_labeler("bob", password="right-password-123")
    url = reverse("login")
    for _ in range(3):
        client.post(url, {"username": "bob", "password": "wrong"})
    assert (
        client.post(url, {"username": "bob", "password": "right-password-123"}).status_code == 429
    )
    SignInThrottle.objects.update(window_ends=timezone.now() - timedelta(seconds=1))
    assert (
        client.post(url, {"username": "bob", "password": "right-password-123"}).status_code == 302
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_attempts_never_get_past_the_limit(make_labeler, settings):
    from django.contrib.auth import authenticate
    from django.test import RequestFactory

    from tests.annotation.test_labeling_concurrency import _sqlite_in_memory, run_threads

    if _sqlite_in_memory():
        pytest.skip("needs a file-backed SQLite test database")
    settings.LOGIN_FAILURE_LIMIT = 10
    make_labeler("bob", password="right-password-123")
    checked = []
    lock = threading.Lock()
    from django.contrib.auth.backends import ModelBackend

    original = ModelBackend.authenticate

    def counting(self, request, username=None, password=None, **kwargs):
        with lock:
            checked.append(username)
        return original(self, request, username, password, **kwargs)

    ModelBackend.authenticate = counting
    try:
        factory = RequestFactory()

        def attempt(index):
            request = factory.post("/accounts/login/", REMOTE_ADDR="10.1.1.1")
            authenticate(request, username="bob", password=f"guess-{index}")

        errors = run_threads(40, attempt)
    finally:
        ModelBackend.authenticate = original
    assert not errors, errors
    assert len(checked) == 10  # exactly the limit got to try a password
