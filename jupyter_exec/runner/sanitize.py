"""Make display bundles from the sandbox safe to show in the notebook.

HTML in a notebook output runs with the user's rights in Jupyter: a ``<script>`` or an
``onerror=`` from sandboxed code would act as the user in the browser, which is an
escape from the sandbox. So HTML from the sandbox is re-written through an allowlist of
tags and attributes (tables, text, images with ``data:`` sources, links to http(s)),
like JupyterLab's sanitiser for untrusted notebooks, unless the user passed ``--trust``.
"""

from __future__ import annotations

import base64
import binascii
import html
from html.parser import HTMLParser

__all__ = ["sanitize_bundle", "sanitize_html"]

_ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "code",
    "col",
    "colgroup",
    "dd",
    "del",
    "details",
    "div",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "mark",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "samp",
    "small",
    "span",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
_VOID_TAGS = {"br", "col", "hr", "img"}
_DROP_CONTENT = {"script", "style", "iframe", "object", "embed", "template", "noscript", "svg", "math"}
_ALLOWED_ATTRS = {"class", "title", "colspan", "rowspan", "align", "alt", "width", "height", "href", "src", "border"}
_IMAGE_TYPES = ("image/png", "image/jpeg")


def _safe_url(name: str, value: str) -> bool:
    value = value.strip().lower()
    if name == "href":
        return value.startswith(("http://", "https://", "#"))
    return value.startswith(tuple(f"data:{t};base64," for t in _IMAGE_TYPES))


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.dropping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_CONTENT:
            self.dropping += tag not in _VOID_TAGS
            return
        if self.dropping or tag not in _ALLOWED_TAGS:
            return
        kept = [
            (n, v or "")
            for n, v in attrs
            if n in _ALLOWED_ATTRS and (n not in ("href", "src") or _safe_url(n, v or ""))
        ]
        rendered = "".join(f' {n}="{html.escape(v, quote=True)}"' for n, v in kept)
        if tag == "a":
            rendered += ' rel="noopener noreferrer" target="_blank"'
        self.out.append(f"<{tag}{rendered}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_CONTENT:
            self.dropping = max(self.dropping - 1, 0)
        elif not self.dropping and tag in _ALLOWED_TAGS and tag not in _VOID_TAGS:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.out.append(html.escape(data, quote=False))


def sanitize_html(text: str) -> str:
    parser = _Sanitizer()
    parser.feed(text)
    parser.close()
    return "".join(parser.out)


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def sanitize_bundle(bundle: dict[str, str], trust: bool) -> dict[str, str]:
    """Keep text, sanitised HTML, valid images and JSON; everything as-is with ``trust``."""
    if trust:
        return dict(bundle)
    safe = {"text/plain": str(bundle.get("text/plain", ""))}
    if isinstance(bundle.get("text/html"), str):
        safe["text/html"] = sanitize_html(bundle["text/html"])
    for mime in _IMAGE_TYPES:
        if isinstance(bundle.get(mime), str) and _is_base64(bundle[mime]):
            safe[mime] = bundle[mime]
    return safe
