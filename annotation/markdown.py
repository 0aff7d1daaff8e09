"""Text rendering for the labeling UI: project guidelines as sanitized Markdown, and model
output split into prose and fenced code so code stays readable.

Guidelines are written by staff, yet still sanitized: an admin account can be phished, and
guidelines are shown to every labeler. Model output is never rendered as HTML at all;
`text_segments` only decides which escaped pieces are shown in a monospace block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import markdown as md
import nh3
from django.utils.safestring import SafeString, mark_safe

# What guidelines need: structure, emphasis, links, tables, code and images by URL.
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt",
    "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "mark", "ol",
    "p", "pre", "s", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody",
    "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"align"},
    "th": {"align"},
    "ol": {"start"},
    "code": {"class"},
}
# No javascript:, data: or vbscript: URLs; relative URLs stay allowed.
URL_SCHEMES = {"http", "https", "mailto"}
MARKDOWN_EXTENSIONS = ["fenced_code", "tables", "sane_lists"]


def render_markdown(text: str) -> SafeString:
    """Guidelines Markdown as HTML that is safe to insert into a page."""
    html = md.markdown(text or "", extensions=MARKDOWN_EXTENSIONS, output_format="html")
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        # Drop these with their content: stripping only the tag would show script source.
        clean_content_tags={"script", "style"},
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - sanitized by nh3 just above


@dataclass(frozen=True)
class Segment:
    """A run of model output: prose (`kind="text"`) or a fenced code block (`kind="code"`)."""

    kind: str
    text: str
    lang: str = ""


# An opening fence: ``` or ~~~ (3+) at the start of a line, optional info string.
_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)[^\n]*$", re.MULTILINE)


def text_segments(text: str) -> list[Segment]:
    """Split model output on Markdown code fences; an unclosed fence runs to the end.

    Mirrored by `segments()` in annotation/static/js/label.js so tasks fetched without a reload
    look the same as server-rendered ones.
    """
    segments: list[Segment] = []
    pos = 0
    while True:
        opening = _FENCE.search(text, pos)
        if opening is None:
            break
        fence = opening.group("fence")
        body_start = opening.end() + 1  # past the newline ending the fence line
        closing = re.compile(
            rf"^{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE
        ).search(text, body_start)
        if opening.start() > pos:
            segments.append(Segment("text", text[pos : opening.start()].rstrip("\n")))
        if closing is None:
            segments.append(Segment("code", text[body_start:], opening.group("lang")))
            pos = len(text)
            break
        segments.append(
            Segment("code", text[body_start : closing.start()].rstrip("\n"), opening.group("lang"))
        )
        pos = closing.end() + 1
    if pos < len(text):
        # Blank lines around a fence are layout, not content; text without fences stays as is.
        rest = text[pos:].strip("\n") if segments else text[pos:]
        if rest:
            segments.append(Segment("text", rest))
    return [s for s in segments if s.kind == "code" or s.text] or [Segment("text", text)]
