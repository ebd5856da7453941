"""Checks that rendered HTML carries no active content, whatever text it shows escaped."""

from __future__ import annotations

from html.parser import HTMLParser

DANGEROUS_TAGS = {
    "script",
    "iframe",
    "object",
    "embed",
    "svg",
    "math",
    "form",
    "base",
    "meta",
    "link",
    "style",
}
URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "data"}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DANGEROUS_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            # hx-disable is the protective attribute on containers of untrusted output.
            if name == "hx-disable":
                continue
            if name.startswith("on") or name.startswith("hx-") or name.startswith("data-hx"):
                self.problems.append(f"{tag}[{name}]")
            if (
                name in URL_ATTRS
                and value
                and value.strip().lower().startswith(("javascript:", "data:", "vbscript:"))
            ):
                self.problems.append(f"{tag}[{name}={value}]")


def active_content(html: str) -> list[str]:
    collector = _Collector()
    collector.feed(html)
    return collector.problems
