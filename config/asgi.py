"""ASGI entry point, with the request-body cap applied while the body streams in.

Django's ASGI handler reads a whole body (to a temporary file) before any middleware runs,
and a chunked upload declares no Content-Length for `RequestBodyLimitMiddleware` to check.
`BodyLimit` counts the bytes as they arrive and answers 413 once a request passes its
path's limit (`config.middleware.body_limit_for`), so an upload cannot fill the disk. The
production server is gunicorn with `config.wsgi`, where chunked bodies are not read at all.
"""

import json
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from config.middleware import body_limit_for  # noqa: E402  (needs the settings loaded)


class BodyLimit:
    """Wrap an ASGI app: an HTTP body longer than its path's limit gets 413, not read on."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit_for(scope.get("path", "/"))
        received = 0
        over = False
        started = False

        async def limited_receive():
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True  # Django then stops reading: the client "went away"
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracked_send)
        if over and not started:  # the same answer as RequestBodyLimitMiddleware's
            message = f"Request body is larger than {limit} bytes."
            if scope.get("path", "").startswith("/api/"):
                body = json.dumps({"detail": message, "errors": {}}).encode()
                headers = [(b"content-type", b"application/json")]
            else:
                body = message.encode()
                headers = [(b"content-type", b"text/plain; charset=utf-8")]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})


application = BodyLimit(django_application)
