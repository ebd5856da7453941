"""Content Security Policy: the header on pages, and templates that need no inline code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import login

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
# The evaluation report is a file people download and open offline (served as an attachment, never
# as a page of the app), so its CSS and scripts must be inline; every page template is checked.
EXEMPT = {"evaluation/report.html"}
INLINE_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"<[^>]*\sstyle\s*=", re.IGNORECASE)
STYLE_ELEMENT = re.compile(r"<style[\s>]", re.IGNORECASE)
SCRIPT_ELEMENT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.IGNORECASE | re.DOTALL)
JS_URL = re.compile(r"""(href|src|action)\s*=\s*["']\s*javascript:""", re.IGNORECASE)


def _templates() -> list[Path]:
    return sorted(
        p for p in TEMPLATES.rglob("*.html") if p.relative_to(TEMPLATES).as_posix() not in EXEMPT
    )


def _problems(text: str) -> list[str]:
    problems = []
    if INLINE_HANDLER.search(text):
        problems.append("inline event handler")
    if STYLE_ATTRIBUTE.search(text):
        problems.append("style attribute")
    if STYLE_ELEMENT.search(text):
        problems.append("<style> element")
    if JS_URL.search(text):
        problems.append("javascript: URL")
    for attrs, body in SCRIPT_ELEMENT.findall(text):
        if body.strip() and "application/json" not in attrs:
            problems.append("inline <script> body")
    return problems


def test_the_scanner_finds_what_it_looks_for():
    assert _problems('<form onsubmit="return confirm(1)">') == ["inline event handler"]
    assert _problems('<div class="x" style="width: 3%">') == ["style attribute"]
    assert _problems("<style>p{}</style>") == ["<style> element"]
    assert _problems("<script>alert(1)</script>") == ["inline <script> body"]
    assert _problems('<a href="javascript:go()">') == ["javascript: URL"]
    assert _problems('<script src="/static/js/app.js" defer></script>') == []
    assert _problems('<select data-autosubmit name="onchange">') == []


def test_no_template_has_inline_scripts_handlers_or_styles():
    found = {
        str(path.relative_to(TEMPLATES)): problems
        for path in _templates()
        if (problems := _problems(path.read_text()))
    }
    assert len(_templates()) > 20
    assert not found, found


def _directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/login/", "/", "/account/tokens/", "/api/v1/docs", "/nowhere/"])
def test_pages_carry_a_strict_policy(alice, url):
    response = login(alice).get(url)
    directives = _directives(response["Content-Security-Policy"])
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    header = response["Content-Security-Policy"]
    assert "unsafe-inline" not in header and "unsafe-eval" not in header


@pytest.mark.django_db
def test_htmx_is_configured_to_need_no_inline_styles_or_eval(alice):
    html = login(alice).get("/").content.decode()
    assert (
        """<meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false}'>"""
        in html
    )
    assert re.search(r'<script src="/static/[^"]*htmx[^"]*\.js"', html)
