"""Page titles: each names the page, then the site once; admin pages keep the admin's suffix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.urls import reverse

TEMPLATES = Path(__file__).resolve().parents[2] / "annotation/templates"
SITE = "rlhf-studio"
ADMIN_SUFFIX = "| {{ site_title|default:_('Django site admin') }}"


def _title_block(source: str) -> str | None:
    match = re.search(r"{%\s*block title\s*%}(.*?){%\s*endblock", source, re.S)
    return match.group(1).strip() if match else None


def _templates_with_a_title() -> list[Path]:
    return sorted(
        path
        for path in TEMPLATES.rglob("*.html")
        if path.name != "base.html" and _title_block(path.read_text()) is not None
    )


def _title(html: str) -> str:
    return re.search(r"<title>(.*?)</title>", html, re.S).group(1).strip()


@pytest.mark.parametrize("path", _templates_with_a_title(), ids=lambda p: p.name)
def test_a_title_block_adds_no_suffix_of_its_own(path):
    source = path.read_text()
    title = _title_block(source)
    if '{% extends "base.html" %}' in source:
        # base.html adds " · rlhf-studio" after the block.
        assert SITE not in title, f"{path.name}: {title!r}"
    elif '{% extends "admin/base_site.html" %}' in source:
        # The admin's block is the whole title: it must end with the site's name itself.
        assert title.endswith(ADMIN_SUFFIX) and title.count(" | ") == 1, f"{path.name}: {title!r}"
        assert "{% load i18n %}" in source
    else:
        pytest.fail(f"{path.name} extends neither base.html nor admin/base_site.html")


@pytest.mark.django_db
def test_the_throttled_sign_in_page_names_the_site_once(client, make_labeler, settings):
    cache.clear()
    settings.LOGIN_FAILURE_LIMIT = 1
    make_labeler("bob", password="right-password-123")
    client.post(reverse("login"), {"username": "bob", "password": "wrong"})
    blocked = client.post(reverse("login"), {"username": "bob", "password": "wrong"})
    cache.clear()
    assert blocked.status_code == 429
    assert _title(blocked.content.decode()) == "Too many attempts · rlhf-studio"


@pytest.mark.django_db
def test_admin_project_pages_end_with_the_admin_site_name(client, project):
    superuser = get_user_model().objects.create_superuser("root", "r@example.com", "pw-root-123")
    client.force_login(superuser)
    for name, page in [("stats", "Statistics"), ("import", "Import into"), ("export", "Export")]:
        html = client.get(reverse(f"admin:annotation_project_{name}", args=[project.pk]))
        assert _title(html.content.decode()).startswith(page)
        assert _title(html.content.decode()).endswith(" | Django site admin")
