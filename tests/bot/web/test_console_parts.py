"""The console's pieces without a server: value rendering, links, redirects after sign-in, sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources

from bot.web.console.render import environment
from bot.web.console.security import safe_next
from bot.web.console.sessions import SessionStore

HOSTILE = "<script>alert(1)</script>"


def test_values_render_readably_and_every_piece_is_escaped():
    value = environment().filters["value"]
    html = str(value({HOSTILE: [HOSTILE, {"n": 3, "ok": True, "none": None}], "log": "line 1\nline 2"}))
    assert "<script>" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2
    assert "<dt>n</dt><dd>3</dd>" in html and "<dd>true</dd>" in html and '<span class="none">none</span>' in html
    assert "<pre>line 1\nline 2</pre>" in html
    deep = str(value({"a": {"b": {"c": {"d": {"e": HOSTILE}}}}}))
    assert "<pre>" in deep and "&lt;script&gt;" in deep and "<script>" not in deep
    many = str(value(list(range(80))))
    assert many.count("<li>") == 50 and "and 30 more" in many


def test_only_web_links_are_links():
    web_url = environment().filters["web_url"]
    assert web_url("https://grafana.example/d/x") == "https://grafana.example/d/x"
    assert web_url("javascript:alert(1)") == "" and web_url("data:text/html,x") == "" and web_url(None) == ""


def test_after_sign_in_only_console_pages_are_destinations():
    assert safe_next("/ui/tasks/3?x=1") == "/ui/tasks/3?x=1"
    for elsewhere in ("//evil.example/ui/", "https://evil.example/ui/x", "/ui\\..\\evil", "/api/v1/tasks",
                      "/ui/x\r\nSet-Cookie: a=b", None, ""):
        assert safe_next(elsewhere) == "/ui/inbox", elsewhere


def test_sessions_end_at_their_expiry_or_when_signed_out():
    now = [datetime(2026, 1, 5, 9, 0, tzinfo=UTC)]
    sessions = SessionStore(lambda: now[0], ttl=timedelta(hours=8))
    first, second = sessions.create("lead"), sessions.create("lead")
    assert first.id != second.id and first.csrf != second.csrf
    assert sessions.get(first.id) is first
    sessions.end(second.id)
    assert sessions.get(second.id) is None
    now[0] += timedelta(hours=8)
    assert sessions.get(first.id) is None and sessions.get("made-up") is None


def test_every_template_a_page_names_ships_with_the_package():
    env = environment()
    shipped = {p.name for p in (resources.files("bot.web.console") / "templates").iterdir()}
    for name in sorted(shipped):
        env.get_template(name)  # parses, and so do the templates it includes or extends
    assert {"base.html", "inbox.html", "task.html", "audit.html", "playbooks.html", "policy.html",
            "digest.html", "login.html", "error.html"} <= shipped
    assert {"console.js", "console.css"} <= {p.name for p in (resources.files("bot.web.console") / "static").iterdir()}
