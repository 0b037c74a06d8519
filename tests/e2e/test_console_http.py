"""The web console over plain HTTP against the real server: sign-in, cookies, CSRF, headers, 403s,
and the actions going through the same commands and policy as chat (edits in bounds, step-up,
undo, pause and resume)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import httpx
import pytest

from bot.app import App
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from bot.web.console.security import CSP
from tests.e2e.test_approvals import POLICY, restarts, write_playbooks
from tests.harness import AM, running_app, running_standin

TOKENS = {"OODA_LEAD_TOKEN": "lead-token-0123456789", "OODA_LEAD2_TOKEN": "lead2-token-0123456789",
          "OODA_VIEWER_TOKEN": "viewer-token-0123456789", "OODA_ADMIN_TOKEN": "admin-token-x-0123456789"}
IDENTITIES = {"identities": [
    {"id": "lead", "display": "Lead", "roles": ["sre-lead", "oncall"], "api_token_env": "OODA_LEAD_TOKEN"},
    {"id": "lead-2", "display": "Lead two", "roles": ["sre-lead"], "api_token_env": "OODA_LEAD2_TOKEN"},
    {"id": "viewer", "display": "Viewer", "roles": [], "api_token_env": "OODA_VIEWER_TOKEN"},
    {"id": "admin", "display": "Admin", "roles": ["admin", "operator"], "api_token_env": "OODA_ADMIN_TOKEN"},
]}
RUNNER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")
HOSTILE = "<script>alert(1)</script>"


class Clock:
    """The App's clock, moved by the test (session expiry)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
async def env(tmp_path) -> AsyncIterator[tuple[App, Any, Clock]]:
    clock = Clock()
    overrides = {**POLICY, **IDENTITIES, "playbooks_dir": str(write_playbooks(tmp_path))}
    async with running_standin() as standin, running_app(tmp_path, standin, overrides, env=TOKENS,
                                                         clock=clock) as app:
        yield app, standin, clock


def browser(app: App, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}", timeout=10, headers=headers)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


@asynccontextmanager
async def signed_in(app: App, token_env: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client holding a session for that identity, and the session's CSRF token."""
    async with browser(app) as http:
        page = await http.get("/ui/login")
        r = await http.post("/ui/login", data={"csrf": csrf_of(page.text), "token": TOKENS[token_env]})
        assert r.status_code == 303, r.text
        yield http, csrf_of((await http.get("/ui/inbox")).text)


async def planned(app: App, playbook: str, **args: str) -> int:
    task = await app.commands.run_playbook(playbook, args, RUNNER)
    await app.engine.wait_idle()
    return task.id


async def state(app: App, task_id: int) -> TaskState:
    task = await app.store.get_task(task_id)
    assert task is not None
    return task.state


def cookie_flags(response: httpx.Response, name: str) -> list[str]:
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return [part.strip().lower() for part in header.split(";")]


async def audit_actions(app: App, task_id: int | None = None) -> list[tuple[str, str]]:
    return [(row[2], row[3]) async for row in app.store.audit_rows(task_id)]


async def test_pages_need_a_session_and_signing_in_sets_a_strict_cookie(env):
    app, _, _ = env
    async with browser(app) as http:
        r = await http.get("/ui/tasks/1")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2Ftasks%2F1"
        assert (await http.get("/ui/inbox/live")).status_code == 401  # a live refresh is told, not redirected

        page = await http.get("/ui/login")
        assert page.headers["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        assert {"httponly", "samesite=strict", "path=/ui"} <= set(cookie_flags(page, "ooda_signin"))
        assert "<script>" not in page.text and 'src="/ui/static/console.js"' in page.text

        wrong = await http.post("/ui/login", data={"csrf": csrf_of(page.text), "token": "not-a-token-at-all"})
        assert wrong.status_code == 401 and "belongs to no identity" in wrong.text
        assert "ooda_session" not in wrong.headers.get("set-cookie", "")

        page = await http.get("/ui/login")
        right = await http.post("/ui/login", data={"csrf": csrf_of(page.text), "token": TOKENS["OODA_LEAD_TOKEN"],
                                                   "next": "/ui/tasks/1"})
        assert right.status_code == 303 and right.headers["location"] == "/ui/tasks/1"
        flags = cookie_flags(right, "ooda_session")
        assert {"httponly", "samesite=strict", "path=/ui", "max-age=28800"} <= set(flags)
        assert "secure" not in flags  # plain HTTP here; see the HTTPS test below
        assert TOKENS["OODA_LEAD_TOKEN"] not in right.headers["set-cookie"]
        inbox = await http.get("/ui/inbox")
        assert inbox.status_code == 200 and "Lead" in inbox.text and inbox.headers["cache-control"] == "no-store"
    assert ("lead", "console.sign_in") in await audit_actions(app)


async def test_sign_in_refuses_a_form_without_its_token_or_from_another_site(env):
    app, _, _ = env
    async with browser(app) as http:
        page = await http.get("/ui/login")
        token = TOKENS["OODA_LEAD_TOKEN"]
        missing = await http.post("/ui/login", data={"token": token})
        assert missing.status_code == 403
        page = await http.get("/ui/login")
        elsewhere = await http.post("/ui/login", data={"csrf": csrf_of(page.text), "token": token},
                                    headers={"Origin": "https://evil.example"})
        assert elsewhere.status_code == 403
        assert "ooda_session" not in elsewhere.headers.get("set-cookie", "")
        page = await http.get("/ui/login")
        away = await http.post("/ui/login", data={"csrf": csrf_of(page.text), "token": token,
                                                  "next": "//evil.example/ui/x"})
        assert away.headers["location"] == "/ui/inbox"  # never off the console


async def test_over_https_the_session_cookie_is_secure(env):
    app, _, _ = env
    async with browser(app, **{"X-Forwarded-Proto": "https"}) as http:
        page = await http.get("/ui/login")
        assert "secure" in cookie_flags(page, "ooda_signin")
        # httpx keeps a Secure cookie for https URLs, so it is sent by hand over this plain test connection.
        form = {"csrf": csrf_of(page.text), "token": TOKENS["OODA_LEAD_TOKEN"]}
        r = await http.post("/ui/login", data=form, headers={"Cookie": f"ooda_signin={form['csrf']}"})
        assert "secure" in cookie_flags(r, "ooda_session")


async def test_a_session_expires_and_signing_out_ends_it(env):
    app, _, clock = env
    async with signed_in(app, "OODA_LEAD_TOKEN") as (http, csrf):
        clock.offset = timedelta(hours=8, seconds=1)
        assert (await http.get("/ui/inbox")).status_code == 303
    clock.offset = timedelta()
    async with signed_in(app, "OODA_LEAD_TOKEN") as (http, csrf):
        cookie = http.cookies["ooda_session"]
        r = await http.post("/ui/logout", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    async with browser(app) as replay:
        replay.cookies.set("ooda_session", cookie, path="/ui")
        assert (await replay.get("/ui/inbox")).status_code == 303  # the old cookie is worth nothing now
    assert ("lead", "console.sign_out") in await audit_actions(app)


async def test_an_action_without_the_csrf_token_or_from_another_origin_is_refused(env):
    app, standin, _ = env
    task_id = await planned(app, "restart", dep="api")
    async with signed_in(app, "OODA_LEAD_TOKEN") as (http, csrf):
        assert (await http.post(f"/ui/tasks/{task_id}/approve", data={"edit": "x"})).status_code == 403
        assert (await http.post(f"/ui/tasks/{task_id}/approve", data={"csrf": "guessed"})).status_code == 403
        r = await http.post(f"/ui/tasks/{task_id}/approve", data={"csrf": csrf},
                            headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert (await http.post(f"/ui/tasks/{task_id}/approve", json={"csrf": csrf})).status_code == 400
        assert await state(app, task_id) is TaskState.needs_approval and restarts(standin) == []

        r = await http.post(f"/ui/tasks/{task_id}/approve", data={"csrf": csrf},
                            headers={"Origin": f"http://127.0.0.1:{app.port}"})
        assert r.status_code == 303 and r.headers["location"] == f"/ui/tasks/{task_id}"
        await app.engine.wait_idle()
        assert len(restarts(standin)) == 1
        page = await http.get(f"/ui/tasks/{task_id}")
        assert "Approved by Lead" in page.text  # the flash, once
        assert "Approved by Lead" not in (await http.get(f"/ui/tasks/{task_id}")).text
    assert ("lead", "task.approval") in await audit_actions(app, task_id)


async def test_a_viewer_sees_no_button_and_a_post_from_one_is_403(env):
    app, standin, _ = env
    task_id = await planned(app, "restart", dep="api")
    async with signed_in(app, "OODA_VIEWER_TOKEN") as (http, csrf):
        page = await http.get(f"/ui/tasks/{task_id}")
        assert page.status_code == 200 and 'id="timeline"' in page.text
        assert not re.search(r'id="(approve|reject|undo|actions)"', page.text)
        policy = await http.get("/ui/policy")
        assert 'id="pause"' not in policy.text
        for action, form in (("approve", {}), ("reject", {"reason": "no"}), ("undo", {})):
            r = await http.post(f"/ui/tasks/{task_id}/{action}", data={"csrf": csrf, **form})
            assert r.status_code == 403, (action, r.text)
            assert "can read but not act" in r.text
        assert (await http.post("/ui/pause", data={"csrf": csrf, "reason": "x"})).status_code == 403
    assert await state(app, task_id) is TaskState.needs_approval and restarts(standin) == []
    assert not await app.core.load_kill_switch()
    refused = [a for a in await audit_actions(app, task_id) if a[1] == "command.refused"]
    assert refused == [("viewer", "command.refused")] * 3


async def test_edits_go_through_the_playbooks_bounds(env):
    app, standin, _ = env
    task_id = await planned(app, "throttle", flag="throttle-checkout")
    async with signed_in(app, "OODA_LEAD_TOKEN") as (http, csrf):
        page = await http.get(f"/ui/tasks/{task_id}")
        assert 'name="edit:throttle:rollout"' in page.text and 'min="10.0"' in page.text
        r = await http.post(f"/ui/tasks/{task_id}/approve", data={"csrf": csrf, "edit:throttle:rollout": "500"})
        assert r.status_code == 400 and "throttle.rollout must be at most 100, got 500" in r.text
        r = await http.post(f"/ui/tasks/{task_id}/approve", data={"csrf": csrf, "edit:throttle:enabled": "false"})
        assert r.status_code == 400 and "cannot be edited" in r.text
        assert await state(app, task_id) is TaskState.needs_approval

        r = await http.post(f"/ui/tasks/{task_id}/approve", data={"csrf": csrf, "edit:throttle:rollout": "25"})
        assert r.status_code == 303
        await app.engine.wait_idle()
        production = standin.flags["throttle-checkout"]["environments"][1]
        assert production["strategies"][0]["parameters"]["rollout"] == "25"

        # The flag is reversible: the task page offers undo, which runs the rollback.
        page = await http.get(f"/ui/tasks/{task_id}")
        assert 'id="undo"' in page.text
        r = await http.post(f"/ui/tasks/{task_id}/undo", data={"csrf": csrf})
        assert r.status_code == 303
        await app.engine.wait_idle()
        page = await http.get(f"/ui/tasks/{task_id}")
        assert 'data-kind="rollback"' in page.text and "Undone by Lead: flag throttle-checkout back to off" in page.text
    assert not standin.flags["throttle-checkout"]["environments"][1]["enabled"]
    assert ("lead", "step.edited") in await audit_actions(app, task_id)


async def test_a_critical_approval_needs_the_phrase_and_the_token_again(env):
    app, _, _ = env
    task_id = await planned(app, "restart-global", env="prod", dep="core")
    assert (await app.commands.show(task_id)).risk.band.value == "critical"
    async with signed_in(app, "OODA_LEAD_TOKEN") as (http, csrf):
        page = await http.get(f"/ui/tasks/{task_id}")
        assert 'name="confirmation"' in page.text and 'name="token"' in page.text
        phrase = f"approve {task_id}"
        r = await http.post(f"/ui/tasks/{task_id}/approve", data={"csrf": csrf, "confirmation": phrase})
        assert r.status_code == 403 and "step-up" in r.text
        r = await http.post(f"/ui/tasks/{task_id}/approve",
                            data={"csrf": csrf, "confirmation": phrase, "token": TOKENS["OODA_LEAD2_TOKEN"]})
        assert r.status_code == 403  # someone else's token is not a step-up
        r = await http.post(f"/ui/tasks/{task_id}/approve",
                            data={"csrf": csrf, "confirmation": "approve 999", "token": TOKENS["OODA_LEAD_TOKEN"]})
        assert r.status_code == 428 and phrase in r.text
        assert (await app.store.approvals_of_task(task_id)) == []
        r = await http.post(f"/ui/tasks/{task_id}/approve",
                            data={"csrf": csrf, "confirmation": phrase, "token": TOKENS["OODA_LEAD_TOKEN"]})
        assert r.status_code == 303
        assert "1 of 2" in (await http.get(f"/ui/tasks/{task_id}")).text
        assert [a.actor for a in await app.store.approvals_of_task(task_id)] == ["lead"]
        assert TOKENS["OODA_LEAD_TOKEN"] not in str(await audit_actions(app, task_id))


async def test_admins_pause_and_resume(env):
    app, _, _ = env
    async with signed_in(app, "OODA_LEAD_TOKEN") as (lead, lead_csrf):
        assert (await lead.post("/ui/pause", data={"csrf": lead_csrf})).status_code == 403  # not admin/operator
    async with signed_in(app, "OODA_ADMIN_TOKEN") as (http, csrf):
        r = await http.post("/ui/pause", data={"csrf": csrf, "reason": "bad deploy"})
        assert r.status_code == 303 and await app.core.load_kill_switch()
        page = await http.get("/ui/policy")
        assert "bad deploy" in page.text and 'id="resume"' in page.text and "kill-switch-banner" in page.text
        assert (await http.post("/ui/resume", data={"csrf": csrf})).status_code == 303
        assert not await app.core.load_kill_switch()
    assert [a for a in await audit_actions(app) if a[1].startswith("kill_switch")] == [
        ("admin", "kill_switch.on"), ("admin", "kill_switch.off")]


async def test_hostile_alert_text_is_escaped_everywhere_it_shows(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin, IDENTITIES, env=TOKENS) as app:
        await hostile_alert_everywhere(app)


async def hostile_alert_everywhere(app: App) -> None:
    body = json.loads((resources.files("bot") / "samples" / "alertmanager-kube-pod-crashlooping.json").read_text())
    body["alerts"][0]["labels"]["note"] = HOSTILE
    body["alerts"][0]["annotations"]["summary"] = HOSTILE
    async with browser(app) as plain:
        r = await plain.post("/webhooks/alertmanager", content=json.dumps(body), headers=AM)
        assert r.status_code == 202
    await app.engine.wait_idle()
    (task,) = await app.store.list_tasks()
    async with signed_in(app, "OODA_LEAD_TOKEN") as (http, _):
        for path in (f"/ui/tasks/{task.id}", f"/ui/tasks/{task.id}/live", "/ui/inbox", "/ui/audit", "/ui/digest",
                     "/ui/playbooks"):
            page = await http.get(path)
            assert page.status_code == 200
            assert "<script>alert" not in page.text, path
        assert "note=&lt;script&gt;alert(1)&lt;/script&gt;" in (await http.get(f"/ui/tasks/{task.id}")).text


async def test_bad_paths_and_queries_are_4xx_pages(env):
    app, _, _ = env
    async with signed_in(app, "OODA_LEAD_TOKEN") as (http, _):
        assert (await http.get("/ui/tasks/999")).status_code == 404
        assert (await http.get("/ui/tasks/abc")).status_code == 400
        assert (await http.get("/ui/audit?task=x")).status_code == 400
        assert (await http.get("/ui/audit?bogus=1")).status_code == 400
        assert (await http.get("/ui/nowhere")).status_code == 404
        assert (await http.get("/ui/static/nothing.js")).status_code == 404
        script = await http.get("/ui/static/console.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/ui/static/console.js", headers={"If-None-Match": script.headers["etag"]})
                ).status_code == 304
        for path in ("/ui/playbooks", "/ui/policy", "/ui/digest", "/ui/audit?task=1&actor=&tool="):
            assert (await http.get(path)).status_code == 200, path


async def test_the_digest_page_shows_its_sections_and_the_chart(env):
    app, _, _ = env
    await planned(app, "restart", dep="api")
    async with signed_in(app, "OODA_LEAD_TOKEN") as (http, _):
        page = await http.get("/ui/digest")
        assert page.status_code == 200
        assert "<h1>Ooda digest" in page.text and '<img src="/ui/digest/chart.png"' in page.text
        chart = await http.get("/ui/digest/chart.png")
        assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
        assert chart.content.startswith(b"\x89PNG\r\n\x1a\n")
    async with browser(app) as anonymous:
        assert (await anonymous.get("/ui/digest/chart.png")).status_code in (302, 303)
