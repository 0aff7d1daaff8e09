"""Sign-in with a brake on password guessing, on every path that checks a password.

`ThrottledModelBackend` counts each attempt (annotation/services/signin.py) before the
password is checked, so the site's login form, the admin's and the API token endpoint
share one atomic limit. A refused attempt marks the request (`request.signin_refused`);
the views answer it with 429 instead of "wrong password".
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.shortcuts import render

from annotation.services.signin import signin_attempt, signin_succeeded


def client_address(request) -> str:
    """The client's address; the right-most proxy-added one when NUM_PROXIES says proxies exist."""
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return request.META.get("REMOTE_ADDR", "unknown")


class ThrottledModelBackend(ModelBackend):
    """ModelBackend that refuses to check a password past the sign-in limits."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None or username is None or password is None:
            return super().authenticate(request, username, password, **kwargs)
        decision = signin_attempt(username=str(username), address=client_address(request))
        if not decision.allowed:
            request.signin_refused = decision
            raise PermissionDenied  # authenticate() stops here: no other backend tries
        user = super().authenticate(request, username, password, **kwargs)
        if user is not None:
            signin_succeeded(decision=decision)
        return user


def signin_refused(request):
    """The refusal that an attempt of this request met, or None."""
    return getattr(request, "signin_refused", None)


def throttled_page(request, decision):
    context = {"window": max(1, -(-decision.retry_after // 60))}
    response = render(request, "registration/login_throttled.html", context, status=429)
    response["Retry-After"] = str(decision.retry_after)
    return response


class ThrottledLoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def form_invalid(self, form):
        if decision := signin_refused(self.request):
            return throttled_page(self.request, decision)
        # The page's one message (#alert) is about both fields: mark them and point at it.
        for name in ("username", "password"):
            form.fields[name].widget.attrs.update(
                {"aria-invalid": "true", "aria-describedby": "alert"}
            )
        return super().form_invalid(form)


def admin_login(request, extra_context=None):
    """The admin's own login view, answering 429 once the sign-in limits refuse."""
    response = admin.site.login(request, extra_context)
    if decision := signin_refused(request):
        return throttled_page(request, decision)
    return response
