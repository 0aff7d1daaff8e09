"""A self-contained API reference page for staff, rendered from the OpenAPI schema.

Swagger UI and Redoc load their JavaScript from a CDN unless drf-spectacular-sidecar is
installed; this page needs neither: it walks the generated schema on the server and renders
plain HTML (no scripts), so it works offline and under a strict Content-Security-Policy.
"""

from __future__ import annotations

import json

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from drf_spectacular.generators import SchemaGenerator

METHODS = ("get", "post", "put", "patch", "delete")
STYLE = mark_safe("""
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-top:1px solid #ddd;padding-top:1rem;margin-top:2rem}
code,pre{font:13px ui-monospace,monospace;background:#f5f5f5}
pre{padding:.6rem;overflow:auto} .m{font-weight:bold;text-transform:uppercase;margin-right:.5rem}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
""")


def _resolve(schema: dict, node, depth: int = 0):
    """Inline `$ref`s so each operation shows its full shape (bounded against cycles)."""
    if depth > 8:
        return node
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _resolve(schema, schema["components"]["schemas"].get(name, {}), depth + 1)
        return {k: _resolve(schema, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(schema, v, depth + 1) for v in node]
    return node


def _shape(node) -> object:
    """A compact example-like view of a JSON schema: field -> type."""
    if not isinstance(node, dict):
        return node
    if node.get("type") == "array" or "items" in node:
        return [_shape(node.get("items", {}))]
    if "properties" in node:
        return {name: _shape(prop) for name, prop in node["properties"].items()}
    if "enum" in node:
        return " | ".join(str(v) for v in node["enum"] if v is not None)
    if "allOf" in node or "oneOf" in node:
        return _shape((node.get("allOf") or node.get("oneOf"))[0])
    if node.get("type") == "object" and "additionalProperties" in node:
        return {"<key>": _shape(node["additionalProperties"])}
    return node.get("format") or node.get("type") or "any"


def _operation_html(schema: dict, path: str, method: str, operation: dict) -> str:
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    request_shape = _shape(_resolve(schema, body.get("schema"))) if body else None
    rows = []
    for code, response in sorted(operation.get("responses", {}).items()):
        content = response.get("content", {})
        media = next(iter(content.values()), {}) if content else {}
        shape = _shape(_resolve(schema, media.get("schema"))) if media else None
        rows.append(
            (
                code,
                response.get("description", ""),
                json.dumps(shape, indent=1) if shape is not None else "",
            )
        )
    secured = "token or session" if operation.get("security") != [] else "none"
    return format_html(
        '<h3 id="{}"><span class="m">{}</span><code>{}</code></h3><p>{}</p><p>{}</p>'
        "<p>Auth: {}</p>{}<table><tr><th>status</th><th>meaning</th><th>body</th></tr>{}</table>",
        operation.get("operationId", ""),
        method,
        path,
        operation.get("summary", ""),
        operation.get("description", ""),
        secured,
        format_html("<p>Body:</p><pre>{}</pre>", json.dumps(request_shape, indent=1))
        if request_shape is not None
        else "",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>", rows),
    )


@staff_member_required
def api_docs(request: HttpRequest) -> HttpResponse:
    """The API reference generated from the live schema (staff only)."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    sections: dict[str, list[str]] = {}
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                sections.setdefault(tag, []).append(
                    _operation_html(schema, path, method, item[method])
                )
    body = format_html_join(
        "",
        "<h2>{}</h2>{}",
        ((tag, format_html_join("", "{}", ((op,) for op in ops))) for tag, ops in sections.items()),
    )
    info = schema.get("info", {})
    html = format_html(
        "<!doctype html><html><head><meta charset='utf-8'><title>{} {}</title>"
        "<style>{}</style></head><body><h1>{} <small>{}</small></h1><p>{}</p>"
        "<p>Machine-readable schema: <a href='{}'>OpenAPI 3 (YAML)</a>, "
        "<a href='{}?format=json'>JSON</a>. Authenticate with "
        "<code>Authorization: Token &lt;key&gt;</code> or a browser session (CSRF token "
        'required on writes). Errors are <code>{{"detail", "errors"}}</code>.</p>{}'
        "</body></html>",
        info.get("title", "API"),
        info.get("version", ""),
        STYLE,
        info.get("title", "API"),
        info.get("version", ""),
        info.get("description", ""),
        reverse("api:schema"),
        reverse("api:schema"),
        body,
    )
    return HttpResponse(html)
