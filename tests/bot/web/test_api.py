"""The HTTP API and the operational endpoints, through the real server.

Identities are the example's two plus two test ones: ``viewer`` (no role at all) and ``pager``
(oncall only). Their tokens are the dev secrets the App generates under the data dir, which is
how a fresh dev install hands out tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.app import App
from tests.harness import ADMIN, AM, ENV, client, running_app, running_standin

IDENTITIES = {
    "identities": [
        {"id": "local-admin", "display": "Local admin", "roles": ["admin", "operator", "oncall", "sre", "sre-lead"],
         "api_token_env": "OODA_API_TOKEN"},
        {"id": "second-approver", "display": "Second approver", "roles": ["oncall", "sre", "sre-lead"],
         "api_token_env": "OODA_API_TOKEN_2"},
        {"id": "viewer", "display": "Viewer", "roles": [], "api_token_env": "OODA_VIEWER_TOKEN"},
        {"id": "pager", "display": "Pager", "roles": ["oncall"], "api_token_env": "OODA_PAGER_TOKEN"},
    ]
}


def sample(name: str) -> bytes:
    return (resources.files("bot") / "samples" / f"{name}.json").read_bytes()


def bearer(tmp_path: Path, env_name: str) -> dict[str, str]:
    token = (tmp_path / "data" / "secrets" / env_name).read_text().strip()
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    async with running_standin() as standin, running_app(tmp_path, standin, IDENTITIES) as app, client(app) as http:
        yield app, http


async def metric(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families((await http.get("/metrics")).text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def proposed_task(app: App, http: httpx.AsyncClient) -> int:
    r = await http.post("/webhooks/alertmanager", content=sample("alertmanager-node-filesystem-space"), headers=AM)
    assert r.status_code == 202
    await app.engine.wait_idle()
    (task,) = (await http.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
    assert task["state"] == "needs_approval"
    return int(task["id"])


async def paused(http: httpx.AsyncClient) -> bool:
    return bool((await http.get("/api/v1/status", headers=ADMIN)).json()["paused"])


async def test_missing_or_unknown_token_is_401_and_changes_nothing(tmp_path):
    async with served(tmp_path) as (_, http):
        attempts = [
            await http.get("/api/v1/tasks"),
            await http.get("/api/v1/tasks", headers={"Authorization": "Bearer not-a-known-token"}),
            await http.get("/api/v1/tasks", headers={"Authorization": f"Basic {ENV['OODA_API_TOKEN']}"}),
            await http.get("/api/v1/tasks", headers={"Authorization": "Bearer"}),
            await http.post("/api/v1/pause", json={"reason": "no token"}),
            # A webhook token is not an API token.
            await http.post("/api/v1/pause", json={}, headers=AM),
        ]
        for r in attempts:
            assert r.status_code == 401, r.text
            assert r.json()["error"] == "unauthorized"
            assert all(secret not in r.text for secret in ENV.values())
        assert await metric(http, "ooda_api_requests_total", outcome="unauthorized") == len(attempts)
        assert await paused(http) is False


async def test_identity_without_the_role_cannot_approve_and_is_told_why(tmp_path):
    async with served(tmp_path) as (app, http):
        task_id = await proposed_task(app, http)

        r = await http.post(f"/api/v1/tasks/{task_id}/approve", json={}, headers=bearer(tmp_path, "OODA_VIEWER_TOKEN"))

        assert r.status_code == 403, r.text
        assert r.json()["error"] == "forbidden"
        assert "needs the role" in r.json()["message"] and "Viewer has no roles" in r.json()["message"]
        assert await app.store.approvals_of_task(task_id) == []
        assert (await app.store.get_task(task_id)).state.value == "needs_approval"
        assert await metric(http, "ooda_api_requests_total", outcome="forbidden") == 1

        # The same request from someone holding the role goes through: the 403 was about the actor.
        ok = await http.post(f"/api/v1/tasks/{task_id}/approve", json={}, headers=ADMIN)
        assert ok.status_code == 200, ok.text
        assert [a.actor for a in await app.store.approvals_of_task(task_id)] == ["local-admin"]


async def test_unknown_task_is_404_and_a_bad_id_is_400(tmp_path):
    async with served(tmp_path) as (_, http):
        r = await http.post("/api/v1/tasks/9999/approve", json={}, headers=ADMIN)
        assert r.status_code == 404, r.text
        assert r.json()["error"] == "not_found" and "9999" in r.json()["message"]
        assert (await http.get("/api/v1/tasks/9999", headers=ADMIN)).status_code == 404
        assert (await http.get("/api/v1/tasks/9999/bundle", headers=ADMIN)).status_code == 404
        bad = await http.post("/api/v1/tasks/abc/approve", json={}, headers=ADMIN)
        assert bad.status_code == 400 and "abc" in bad.json()["message"]


async def test_request_bodies_are_validated_with_the_field_named(tmp_path):
    async with served(tmp_path) as (app, http):
        task_id = await proposed_task(app, http)
        r = await http.post(f"/api/v1/tasks/{task_id}/reject", json={"reason": ""}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["field"] == "reason"
        r = await http.post(f"/api/v1/tasks/{task_id}/approve", json={"aprove": True}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["field"] == "aprove"
        r = await http.post(f"/api/v1/tasks/{task_id}/approve", content=b"{not json", headers=ADMIN)
        assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
        assert (await app.store.get_task(task_id)).state.value == "needs_approval"


async def test_kill_switch_pull_needs_a_role_and_release_needs_admin_or_operator(tmp_path):
    async with served(tmp_path) as (app, http):
        viewer = bearer(tmp_path, "OODA_VIEWER_TOKEN")
        pager = bearer(tmp_path, "OODA_PAGER_TOKEN")

        r = await http.post("/api/v1/pause", json={"reason": "viewer tries"}, headers=viewer)
        assert r.status_code == 403 and "no role" in r.json()["message"]
        assert await paused(http) is False

        r = await http.post("/api/v1/pause", json={"reason": "bad deploy"}, headers=pager)
        assert r.status_code == 200, r.text
        assert r.json()["paused"] is True and r.json()["paused_reason"] == "bad deploy"

        for who in (viewer, pager):
            r = await http.post("/api/v1/resume", headers=who)
            assert r.status_code == 403, r.text
            assert "admin or operator" in r.json()["message"]
        assert await paused(http) is True

        r = await http.post("/api/v1/resume", headers=ADMIN)
        assert r.status_code == 200 and r.json()["paused"] is False

        switches = [(row[2], row[3]) async for row in app.store.audit_rows() if row[3].startswith("kill_switch")]
        assert switches == [("pager", "kill_switch.on"), ("local-admin", "kill_switch.off")]


async def test_paused_bot_refuses_approvals(tmp_path):
    async with served(tmp_path) as (app, http):
        task_id = await proposed_task(app, http)
        assert (await http.post("/api/v1/pause", json={}, headers=ADMIN)).status_code == 200
        r = await http.post(f"/api/v1/tasks/{task_id}/approve", json={}, headers=ADMIN)
        assert r.status_code == 403 and "kill switch" in r.json()["message"]
        assert await app.store.approvals_of_task(task_id) == []


async def test_health_readiness_and_metrics(tmp_path):
    async with served(tmp_path) as (app, http):
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["store"] == "writable"

        await http.post("/webhooks/alertmanager", content=sample("alertmanager-node-filesystem-space"), headers=AM)
        await http.post("/webhooks/alertmanager", content=b"{}", headers={"Authorization": "Bearer wrong"})
        metrics = await http.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert await metric(http, "ooda_intake_requests_total", source="alertmanager", outcome="accepted") == 1
        assert await metric(http, "ooda_intake_requests_total", source="alertmanager", outcome="unauthorized") == 1
        assert await metric(http, "ooda_intake_signals_total", source="alertmanager") == 1
        assert await metric(http, "ooda_intake_latency_seconds_count", source="alertmanager") == 1
        for name in ("ooda_store_queue_depth", "ooda_engine_queue_depth", "ooda_kill_switch",
                     "ooda_api_requests_total", "ooda_tasks_created_total"):
            assert name in metrics.text

        # The store stops taking writes: not ready, but alive (a restart, not a reroute, is the fix).
        await app.store.writer.stop()
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["store"] == "not writable"
        assert (await http.get("/healthz")).status_code == 200


async def test_audit_verify_endpoint_reports_an_intact_chain(tmp_path):
    async with served(tmp_path) as (app, http):
        await proposed_task(app, http)
        r = await http.get("/api/v1/audit/verify", headers=ADMIN)
        assert r.status_code == 200
        assert r.json()["ok"] is True
        assert r.json()["checked"] == len([row async for row in app.store.audit_rows()]) > 1


async def test_audit_verify_endpoint_checks_an_expected_head(tmp_path):
    async with served(tmp_path) as (app, http):
        await proposed_task(app, http)
        head = (await http.get("/api/v1/audit/verify", headers=ADMIN)).json()
        logged = f"{head['head_seq']}:{head['head_hash']}"

        r = await http.get("/api/v1/audit/verify", params={"expect_head": logged}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["ok"] is True

        beyond = f"{head['head_seq'] + 50}:{head['head_hash']}"  # a record this log never reached
        r = await http.get("/api/v1/audit/verify", params={"expect_head": beyond}, headers=ADMIN)
        assert r.status_code == 409 and "cut off its end" in r.json()["reason"]

        r = await http.get("/api/v1/audit/verify", params={"expect_head": "latest"}, headers=ADMIN)
        assert r.status_code == 400 and "SEQ:HASH" in r.json()["message"]


async def test_reads_are_audited_with_who_looked_at_what(tmp_path):
    async with served(tmp_path) as (app, http):
        task_id = await proposed_task(app, http)
        viewer = bearer(tmp_path, "OODA_VIEWER_TOKEN")
        assert (await http.get(f"/api/v1/tasks/{task_id}/bundle", headers=viewer)).status_code == 200
        reads = [row async for row in app.store.audit_rows() if row[3] == "api.read"]
        exported = [row for row in reads if row[2] == "viewer"]
        assert len(exported) == 1
        assert f"/api/v1/tasks/{task_id}/bundle" in exported[0][6]
        assert await http.get("/api/v1/tasks") is not None  # unauthenticated: refused, so not audited
        assert len([row async for row in app.store.audit_rows() if row[3] == "api.read"]) == len(reads)


async def test_replay_endpoint_refuses_what_it_cannot_replay_with_the_reason(tmp_path):
    async with served(tmp_path) as (_, http):
        empty = await http.post("/api/v1/playbooks/replay", json={"files": {}}, headers=ADMIN)
        assert empty.status_code == 400 and empty.json()["field"] == "files"

        broken = await http.post("/api/v1/playbooks/replay", json={"files": {"p.yaml": "id: p\nsteps: [\n"}},
                                 headers=ADMIN)
        assert broken.status_code == 400 and broken.json()["error"] == "invalid_playbooks"
        assert broken.json()["problems"][0].startswith("p.yaml:")

        nothing = await http.post("/api/v1/playbooks/replay", json={"files": {"p.yaml": "id: p\n"}}, headers=ADMIN)
        assert nothing.status_code == 200 and nothing.json() == {"results": []}  # no past task of p

        assert (await http.post("/api/v1/playbooks/replay", json={"files": {"p.yaml": "id: p\n"}})).status_code == 401
