"""Under ASGI the body cap holds while the body streams in, chunked uploads included."""

from __future__ import annotations

import asyncio
import json

from config.asgi import application


def post(path: str, chunks: list[bytes]) -> tuple[list[dict], int]:
    """Send a chunked POST (no Content-Length) through the ASGI app; (sent messages, chunks
    never read)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(60)  # a client that stays connected (Django cancels this wait)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(application(scope, receive, send))
    return sent, len(messages)


def status(sent: list[dict]) -> int:
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_a_chunked_body_past_the_cap_is_413_and_not_read_on(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    sent, unread = post("/api/v1/no-such-endpoint/", [b"x" * 600] * 10)
    assert status(sent) == 413
    body = json.loads(
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    )
    assert body == {"detail": "Request body is larger than 1000 bytes.", "errors": {}}
    assert unread == 8  # stopped after the chunk that passed the limit


def test_bodies_within_the_cap_reach_django(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    sent, unread = post("/api/v1/no-such-endpoint/", [b"x" * 300] * 3)
    assert status(sent) == 404 and unread == 0  # Django answered: no such URL
