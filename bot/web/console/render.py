"""The console's Jinja2 environment: templates from the package, every value escaped.

Autoescape is on for every template (not only ``.html`` names), so an alert label, a tool's
output or a rejection reason always renders as text. Templates come from the installed package
(``importlib.resources``), never from a path on disk, so a wheel install serves them too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jinja2
from markupsafe import Markup, escape

from bot.jsoncodec import dumps_canonical
from bot.model.tasks import clock_text


def _when(value: datetime | str | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return clock_text(value)


def _ago(value: timedelta | datetime | None, now: datetime | None = None) -> str:
    """``4 min``, ``2 h 5 min``, ``3 d 4 h``: how long, to the unit people care about."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = (now or datetime.now(UTC)) - value
    seconds = int(abs(value.total_seconds()))
    if seconds < 60:
        text = f"{seconds} s"
    elif seconds < 3600:
        text = f"{seconds // 60} min"
    elif seconds < 86_400:
        text = f"{seconds // 3600} h {seconds % 3600 // 60} min"
    else:
        text = f"{seconds // 86_400} d {seconds % 86_400 // 3600} h"
    return text


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _as_json(value: Any) -> str:
    """Compact JSON with sorted keys: the exact params a step ran with, as one line."""
    return dumps_canonical(value)


CLIP_CHARS = 20_000


def _clip(text: str) -> str:
    """At most ``CLIP_CHARS`` of a tool's output on a page; the audit export has all of it."""
    return text if len(text) <= CLIP_CHARS else f"{text[:CLIP_CHARS]}\n… {len(text) - CLIP_CHARS:,} more characters"


def _web_url(url: str | None) -> str:
    """A link only if it is http(s): an alert's URL is the sender's text, ``javascript:`` included."""
    return url if url and urlsplit(url).scheme in {"http", "https"} else ""


MAX_DEPTH = 4
MAX_ITEMS = 50


def _value(value: Any, depth: int = 0) -> Markup:
    """Any JSON value as HTML people read: mappings as term lists, lists as numbered lists, long or
    multi-line text preformatted, deeper levels as compact JSON. Every piece of text goes through
    ``escape``; this is the one place HTML is built in Python, because evidence trees are large
    and a recursive template macro costs ten times as much per node."""
    parts: list[str] = []
    _append_value(parts, value, depth)
    return Markup("".join(parts))


def _append_value(out: list[str], value: Any, depth: int) -> None:
    if value is None:
        out.append('<span class="none">none</span>')
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, str):
        if "\n" in value or len(value) > 160:
            out.append(f"<pre>{escape(_clip(value))}</pre>")
        else:
            out.append(str(escape(value)))
    elif isinstance(value, dict | list) and not value:
        out.append('<span class="none">empty</span>' if isinstance(value, dict) else '<span class="none">none</span>')
    elif isinstance(value, dict | list) and depth >= MAX_DEPTH:
        out.append(f"<pre>{escape(_clip(_as_json(value)))}</pre>")
    elif isinstance(value, dict):
        out.append('<dl class="kv">')
        for key, item in value.items():
            out.append(f"<dt>{escape(str(key))}</dt><dd>")
            _append_value(out, item, depth + 1)
            out.append("</dd>")
        out.append("</dl>")
    elif isinstance(value, list):
        out.append('<ol class="items">')
        for item in value[:MAX_ITEMS]:
            out.append("<li>")
            _append_value(out, item, depth + 1)
            out.append("</li>")
        if len(value) > MAX_ITEMS:
            out.append(f'<li class="none">and {len(value) - MAX_ITEMS} more</li>')
        out.append("</ol>")
    else:
        out.append(str(escape(str(value))))


class _PackageLoader(jinja2.BaseLoader):
    """Templates from ``bot/web/console/templates`` inside the installed package."""

    def __init__(self) -> None:
        self._root = resources.files("bot.web.console") / "templates"

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        if "/" in template or "\\" in template or template.startswith("."):
            raise jinja2.TemplateNotFound(template)
        path = self._root / template
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        source = path.read_text(encoding="utf-8")
        return source, template, lambda: True  # packaged templates do not change while running


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=_PackageLoader(), autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    env.filters.update(when=_when, ago=_ago, seconds=_seconds, as_json=_as_json, clip=_clip, web_url=_web_url,
                       value=_value)
    return env
