"""Browser sign-in with a brake on password guessing.

Failed attempts are counted per client address in the shared cache (the database cache by
default, so every gunicorn worker and host sees the same count); past the limit the form
answers 429 until the window passes, even for the right password.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.shortcuts import render


def client_address(request) -> str:
    """The client's address; the right-most proxy-added one when NUM_PROXIES says proxies exist."""
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return request.META.get("REMOTE_ADDR", "unknown")


class ThrottledLoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def cache_key(self) -> str:
        return f"login-failures:{client_address(self.request)}"

    def post(self, request, *args, **kwargs):
        if cache.get(self.cache_key(), 0) >= settings.LOGIN_FAILURE_LIMIT:
            context = {"window": settings.LOGIN_FAILURE_WINDOW // 60}
            return render(request, "registration/login_throttled.html", context, status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = self.cache_key()
        cache.add(key, 0, timeout=settings.LOGIN_FAILURE_WINDOW)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW)
        return super().form_invalid(form)
