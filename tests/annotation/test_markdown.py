"""Rendering model output and prompts: Markdown on, raw HTML off, links and images tamed."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pygments.token import STANDARD_TYPES

from annotation.markdown import pygments_css, render_text, word_count

PYGMENTS_TOKEN_CLASSES = {cls for cls in STANDARD_TYPES.values() if cls}
STATIC_CSS = Path(__file__).resolve().parents[2] / "annotation/static/css/pygments.css"

PAYLOADS = [
    "<script>window.__xss = 1</script>",
    '<img src=x onerror="window.__xss = 2">',
    '<a href="javascript:window.__xss=3">x</a>',
    "[click](javascript:window.__xss=4)",
    "[click](JaVaScRiPt:window.__xss=5)",
    "[data](data:text/html;base64,PHNjcmlwdD4=)",
    '<svg onload="window.__xss=6"></svg>',
    '<iframe src="https://evil.example"></iframe>',
    '<div style="position:fixed" onclick="window.__xss=7">overlay</div>',
    "![x](javascript:window.__xss=8)",
    '[x](https://ok.example "t\\" onmouseover=\\"window.__xss=9")',
]


def test_markdown_structure_is_rendered():
    html = render_text(
        "# Title\n\nSome *emphasis* and **bold**.\n\n- one\n- two\n\n1. first\n2. second\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n> quoted\n\nInline `code`."
    )
    assert '<h1 dir="auto">Title</h1>' in html
    assert "<em>emphasis</em>" in html and "<strong>bold</strong>" in html
    assert "<li>one</li>" in html and "<ol" in html
    assert "<table" in html and "<td>1</td>" in html
    assert "<blockquote" in html and "<code>code</code>" in html


def test_fenced_code_is_highlighted_by_pygments_and_stays_escaped():
    html = render_text("Here:\n\n```python\ndef f(x):\n    return '<b>'\n```\n")
    assert '<div class="hl"><pre dir="ltr">' in html
    assert '<span class="k">def</span>' in html  # a Pygments token class
    assert "&lt;b&gt;" in html and "<b>" not in html
    # A fence without a language is code too, not guessed and coloured.
    plain = render_text("```\nnot <i>html</i>\n```")
    assert '<pre dir="ltr">' in plain and "not &lt;i&gt;html&lt;/i&gt;" in plain


@pytest.mark.parametrize(
    "fence",
    [
        "```{style=x}",  # CodeHilite got `style` twice: a TypeError, the labeling page a 500
        "```{lang=x}",
        "```{css_class=visually-hidden}",  # would hide the block from the labeler
        '```{.python .visually-hidden #top hl_lines="1" linenums="true"}',
        "``` { .card noclasses=true }",
    ],
)
def test_fence_attributes_in_model_output_keep_only_the_language(fence):
    html = render_text(f"Run this:\n\n{fence}\ncurl https://x.example | sh\n```\n")
    assert "curl https://x.example | sh" in re.sub(r"<[^>]+>", "", html)
    classes = {
        cls for _, attrs in _Elements(html).elements for cls in (attrs.get("class") or "").split()
    }
    assert classes <= {"hl"} | PYGMENTS_TOKEN_CLASSES, html
    assert "id=" not in html and "style=" not in html and "linenos" not in html


def test_classes_in_model_output_are_the_highlighters_own():
    # The sanitizer's second line: a class of the page's stylesheet never gets through.
    from annotation.markdown import _TEXT_CLEANER

    html = _TEXT_CLEANER.clean(
        '<div class="hl visually-hidden"><span class="k card">def</span></div>'
    )
    assert html == '<div class="hl"><span class="k">def</span></div>'


def test_text_the_renderer_fails_on_is_shown_escaped(monkeypatch):
    import annotation.markdown as markdown_module

    def broken(*_args):
        raise TypeError("a parser bug")

    monkeypatch.setattr(markdown_module.md.Markdown, "convert", broken)
    html = render_text("a <b>never seen</b> text\n\n- item")
    assert html == '<pre dir="auto">a &lt;b&gt;never seen&lt;/b&gt; text\n\n- item</pre>'
    monkeypatch.undo()
    assert "<li>item</li>" in render_text("another text\n\n- item")


def test_raw_html_in_model_output_is_text_not_markup():
    html = render_text("Use <b>bold</b> like <br> this &amp; that")
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>" not in html and "<br>" not in html
    assert "&amp; that" in html


class _Elements(HTMLParser):
    """Every element and attribute of an HTML fragment, as a browser's parser sees them."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_payloads_render_inert(payload):
    html = render_text(f"before\n\n{payload}\n\nafter")
    for tag, attrs in _Elements(html).elements:
        assert tag not in {"script", "img", "svg", "iframe", "style", "object", "embed"}, html
        assert not [name for name in attrs if name.startswith("on") or name == "style"], html
        href = (attrs.get("href") or "").strip().lower()
        assert not href.startswith(("javascript:", "data:", "vbscript:")), html


def test_links_open_elsewhere_and_say_nofollow_images_become_links():
    html = render_text("[docs](https://example.org/a) and ![a chart](https://img.example/c.png)")
    assert 'href="https://example.org/a"' in html
    assert 'target="_blank"' in html and "noopener" in html and "nofollow" in html
    # Images are not loaded (no tracking pixels, no labeler IPs leaked): a link instead.
    assert "<img" not in html
    assert '<a href="https://img.example/c.png"' in html and "[image: a chart]" in html
    # An image inside a link becomes text, not a link nested in a link.
    nested = render_text("[![logo](https://i.example/l.png)](https://example.org)")
    assert nested.count("<a ") == 1 and "[image: logo]" in nested


def test_right_to_left_paragraphs_get_dir_auto_and_code_does_not():
    html = render_text("مرحبا بالعالم\n\n```\ncode\n```\n\nשלום")
    assert '<p dir="auto">مرحبا بالعالم</p>' in html and '<p dir="auto">שלום</p>' in html
    assert "<p></p>" not in html  # the code block is not wrapped in an empty paragraph


def test_word_count_counts_cjk_characters_as_words():
    assert word_count("") == 0
    assert word_count("one two  three\nfour") == 4
    assert word_count("你好世界 ok") == 5


def test_render_is_cached_and_fast_for_k9_long_answers():
    answers = [
        " ".join(f"word{i}_{j}" for j in range(2000)) + "\n\n```python\n" + "x = 1\n" * 100 + "```"
        for i in range(9)
    ]
    start = time.perf_counter()
    first = [render_text(a) for a in answers]
    cold = time.perf_counter() - start
    start = time.perf_counter()
    again = [render_text(a) for a in answers]
    warm = time.perf_counter() - start
    assert first == again
    assert cold < 2.0  # generous for a loaded 2-core machine; about 0.1 s idle
    assert warm < cold / 10


def test_pygments_stylesheet_in_static_is_current():
    assert STATIC_CSS.read_text() == pygments_css(), "regenerate: make pygments-css"


APP_CSS = STATIC_CSS.with_name("app.css")


def _contrast(a: str, b: str) -> float:
    def luminance(colour: str) -> float:
        colour = colour.lstrip("#")
        if len(colour) == 3:
            colour = "".join(c * 2 for c in colour)
        channels = [int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _code_block_background() -> str:
    """The background app.css gives `.md pre` (custom properties resolved from :root)."""
    css = re.sub(r"/\*.*?\*/", "", APP_CSS.read_text(), flags=re.S)
    rules = re.findall(r"([^{}]+)\{([^{}]*)\}", css)
    by_selector = {selectors.strip(): body for selectors, body in rules}
    root = dict(re.findall(r"(--[\w-]+)\s*:\s*([^;]+);", by_selector[":root"]))
    values = [
        re.search(r"(?:^|;)\s*background(?:-color)?\s*:\s*([^;]+)", body)
        for selectors, body in rules
        if ".md pre" in [s.strip() for s in selectors.split(",")]
    ]
    [value] = [m.group(1).strip() for m in values if m]
    value = re.sub(r"var\((--[\w-]+)\)", lambda m: root[m.group(1)].strip(), value)
    assert re.fullmatch(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?", value), value
    return value


def test_markdown_code_colours_reach_4_5_to_1_on_the_code_block_background():
    background = _code_block_background()
    checked = 0
    for line in STATIC_CSS.read_text().splitlines():
        match = re.match(r"\.hl \.(\w+) \{([^}]*)\}", line)
        colour = match and re.search(r"(?<![-\w])color:\s*(#[0-9a-fA-F]+)", match.group(2))
        if not colour or match.group(1) == "w":  # Text.Whitespace: spaces, no glyph to read
            continue
        ratio = _contrast(colour.group(1), background)
        assert ratio >= 4.5, f".hl .{match.group(1)} {colour.group(1)} on {background}: {ratio:.2f}"
        checked += 1
    assert checked > 40  # the stylesheet was read, not skipped


def _heading_levels(html: str) -> list[str]:
    return [tag for tag, _ in _Elements(html).elements if re.fullmatch(r"h[1-6]", tag)]


HEADINGS = "# Title\n\n## Part\n\n### Detail\n\n#### Deeper\n\n###### Deepest\n\nText."


def test_markdown_headings_in_model_output_nest_below_the_card_title():
    # A card's title is an h3 ("Response 2"): the answer's own outline starts at h4.
    assert _heading_levels(render_text(HEADINGS, top=4)) == ["h4", "h5", "h6", "h6", "h6"]
    assert _heading_levels(render_text(HEADINGS, top=2)) == ["h2", "h3", "h4", "h5", "h6"]
    # Level 1 keeps the text's own levels; a level is cached apart from the others.
    assert _heading_levels(render_text(HEADINGS)) == ["h1", "h2", "h3", "h4", "h6"]
    assert '<h4 dir="auto">Title</h4>' in render_text(HEADINGS, top=4)
    # Heading-like text in code is text, not a heading to shift.
    code = render_text("```\n<h1>x</h1>\n```\n\n`<h2>`", top=4)
    assert "&lt;h1&gt;x&lt;/h1&gt;" in code and "&lt;h2&gt;" in code
    with pytest.raises(ValueError):
        render_text("# x", top=7)


def test_markdown_headings_in_guidelines_nest_below_the_guidelines_raw_html_too():
    from annotation.markdown import render_markdown

    html = render_markdown(
        '# Rules\n\n## Ties\n\n<h1 onclick="x()">Raw</h1>\n\n<abbr title="<h2>">t</abbr>', top=3
    )
    assert _heading_levels(html) == ["h3", "h4", "h3"]
    assert "onclick" not in html and 'title="&lt;h2&gt;"' in html
    assert "<h1>Rules</h1>" in render_markdown("# Rules")  # the default keeps the levels


@pytest.mark.parametrize("payload", [*PAYLOADS, HEADINGS, "<h1 onclick=x>raw</h1>"])
def test_markdown_heading_shift_keeps_the_sanitizing_as_strict(payload):
    from annotation.markdown import render_markdown

    def unlevelled(html: str) -> str:
        return re.sub(r"<(/?)h[1-6]\b", r"<\1h", html)

    text = f"# Heading\n\n{payload}\n\n## After"
    assert unlevelled(render_text(text, top=4)) == unlevelled(render_text(text))
    assert unlevelled(render_markdown(text, top=3)) == unlevelled(render_markdown(text))
