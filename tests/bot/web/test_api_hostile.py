"""Hostile input to the API, through the real server: every bad query, path id and body is a 4xx
naming the problem, is checked before it reaches the store or the writer, and fails nobody else.

The wide randomised sweep lives in tests/fuzz; these are the named defects, one test each.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from bot.audit.chain import AuditEntry
from bot.errors import UnknownTask
from bot.store.sqlite_writer import Tx, WriteRefused
from tests.bot.web.test_api import bearer, metric, proposed_task, sample, served
from tests.harness import ADMIN, AM, ENV, running_app, running_standin


async def audit_actions(app: Any) -> list[str]:
    return [row[3] async for row in app.store.audit_rows()]


def alert(n: int) -> bytes:
    """A firing alert no playbook matches, distinct per ``n``: stored, and no task to wait for."""
    body = json.loads(sample("alertmanager-node-filesystem-space"))
    body["alerts"] = body["alerts"][:1]
    body["alerts"][0]["labels"].update(alertname="HostileSuiteNeighbour", instance=f"host-{n}:9100")
    body["alerts"][0].pop("fingerprint", None)
    return json.dumps(body).encode()


def assert_invalid(r: httpx.Response, parameter: str, *fragments: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_parameter" and body["parameter"] == parameter, body
    assert all(f in body["message"] for f in fragments), body["message"]


async def test_limit_state_and_unknown_query_parameters_are_400_naming_the_parameter(tmp_path):
    async with served(tmp_path) as (app, http):
        await proposed_task(app, http)
        before = await audit_actions(app)

        for value in ("abc", "-1", "0", "1001", "1e3", "99999999999999999999", " ", "1.5", "\uff11"):
            r = await http.get("/api/v1/tasks", params={"limit": value}, headers=ADMIN)
            assert_invalid(r, "limit", "limit must be a whole number from 1 to 1000, got")
        r = await http.get("/api/v1/tasks", params={"limit": "abc"}, headers=ADMIN)
        assert r.json() == {"error": "invalid_parameter", "parameter": "limit",
                            "message": "limit must be a whole number from 1 to 1000, got 'abc'"}
        assert_invalid(await http.get("/api/v1/tasks", params={"state": "bogus"}, headers=ADMIN),
                       "state", "state must be one of open, all", "'bogus'")
        assert_invalid(await http.get("/api/v1/tasks", params={"all": "maybe"}, headers=ADMIN), "all", "true, false")
        assert_invalid(await http.get("/api/v1/tasks", params={"all": "true", "state": "open"}, headers=ADMIN),
                       "all", "contradicts")
        assert_invalid(await http.get("/api/v1/tasks?limit=1&limit=2", headers=ADMIN), "limit", "once")
        assert_invalid(await http.get("/api/v1/tasks", params={"limt": "5"}, headers=ADMIN),
                       "limt", "unknown query parameter", "state, all, limit")
        assert_invalid(await http.get("/api/v1/status", params={"x": "1"}, headers=ADMIN), "x", "takes: none")
        assert_invalid(await http.post("/api/v1/pause", params={"reason": "q"}, json={}, headers=ADMIN), "reason")
        assert_invalid(await http.get("/api/v1/audit/verify", params={"expect_head": "1:" + "a" * 300},
                                      headers=ADMIN), "expect_head", "at most 200 characters")
        assert_invalid(await http.get("/api/v1/audit/verify", params={"expect_head": "latest"}, headers=ADMIN),
                       "expect_head", "SEQ:HASH")
        assert_invalid(await http.get("/api/v1/signals", params={"unmatched": "true", "since": "yesterday"},
                                      headers=ADMIN), "since", "ISO 8601")
        assert_invalid(await http.get("/api/v1/signals", params={"unmatched": "true", "limit": "1e3"},
                                      headers=ADMIN), "limit", "from 1 to 1000")

        # Refused before the audit: a bad read leaves no record of a read that did not happen.
        assert await audit_actions(app) == before
        assert await metric(http, "ooda_api_requests_total", outcome="bad_request") >= 20

        # The well-formed ones still answer, and state/limit do what they say.
        assert len((await http.get("/api/v1/tasks", params={"limit": "1000", "state": "all"},
                                   headers=ADMIN)).json()["tasks"]) == 1
        assert (await http.get("/api/v1/tasks", params={"all": "true", "limit": "1"}, headers=ADMIN)).status_code == 200


async def test_task_ids_in_paths_are_bounded_integers_checked_before_the_store(tmp_path):
    async with served(tmp_path) as (app, http):
        task_id = await proposed_task(app, http)
        before = await audit_actions(app)
        bad_ids = ["abc", "99999999999999999999999", "9223372036854775808", "0", "-1", "1.5", "\uff11", "%20"]
        for bad in bad_ids:
            for method, suffix in (("GET", ""), ("GET", "/bundle"), ("GET", "/policy"), ("POST", "/approve"),
                                   ("POST", "/reject"), ("POST", "/undo")):
                body = {"reason": "no"} if suffix == "/reject" else {}
                r = await http.request(method, f"/api/v1/tasks/{bad}{suffix}", json=body if method == "POST" else None,
                                       headers=ADMIN)
                assert_invalid(r, "id", "task id must be a whole number from 1 to 9223372036854775807")

        # The largest id SQLite holds is well-formed: simply not there.
        missing = await http.get("/api/v1/tasks/9223372036854775807", headers=ADMIN)
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        assert (await http.get(f"/api/v1/tasks/T{task_id}", headers=ADMIN)).status_code == 200
        r = await http.post("/api/v1/playbooks/" + "x" * 300 + "/run", json={}, headers=ADMIN)
        assert_invalid(r, "id", "playbook id")
        # No route, or not this method: answered in JSON like everything else.
        for path in ("/api/v1/tasks/", "/api/v1/nothing", "/api/v1/tasks/1/approve/again"):
            r = await http.get(path, headers=ADMIN)
            assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.text)
        r = await http.get("/api/v1/pause", headers=ADMIN)
        assert r.status_code == 405 and r.headers["Allow"] == "POST" and "takes POST" in r.json()["message"]
        r = await http.delete(f"/api/v1/tasks/{task_id}", headers=ADMIN)
        assert r.status_code == 405 and r.headers["Allow"] == "GET"

        # Nothing reached the writer from the refused ones: the only new records are the two good reads.
        assert (await audit_actions(app))[len(before):] == ["api.read", "api.read"]
        assert (await http.post("/webhooks/alertmanager", content=alert(1), headers=AM)).status_code == 202


async def test_request_bodies_are_bounded_in_size_and_depth_before_parsing(tmp_path):
    async with served(tmp_path) as (app, http):
        task_id = await proposed_task(app, http)
        deep = b"[" * 5000 + b"]" * 5000
        deep_object = b'{"edits": ' + b'{"a": ' * 40 + b"1" + b"}" * 41
        routes = [f"/api/v1/tasks/{task_id}/approve", f"/api/v1/tasks/{task_id}/reject",
                  f"/api/v1/tasks/{task_id}/undo", "/api/v1/playbooks/disk-cleanup/run",
                  "/api/v1/playbooks/replay", "/api/v1/pause"]
        json_type = {"Content-Type": "application/json", **ADMIN}
        for path in routes:
            for body in (deep, deep_object):
                r = await http.post(path, content=body, headers=json_type)
                assert r.status_code == 400 and "the limit is 32" in r.json()["message"], (path, r.text)
            for body, shape in ((b"[]", "list"), (b'"x"', "str"), (b"7", "int"), (b"null", "NoneType")):
                r = await http.post(path, content=body, headers=json_type)
                assert r.status_code == 400, (path, r.text)
                assert f"must be a JSON object ({{...}}), got a JSON {shape}" in r.json()["message"]
            r = await http.post(path, content=b'{"reason": "x"}', headers={"Content-Type": "text/plain", **ADMIN})
            assert r.status_code == 415 and "application/json" in r.json()["message"], (path, r.text)
            if not path.endswith("/replay"):  # it has a limit of its own, below
                r = await http.post(path, content=b'{"reason": "' + b"x" * 70_000 + b'"}', headers=json_type)
                assert r.status_code == 413, (path, r.text)
                assert r.json()["error"] == "payload_too_large" and "limit of 65536 bytes" in r.json()["message"]

        # Replay carries playbook files: past the API's limit is fine, past its own is not.
        bigger = {"files": {"p.yaml": "id: p\n" + "# padding\n" * 10_000}}
        assert (await http.post("/api/v1/playbooks/replay", json=bigger, headers=ADMIN)).status_code == 200
        huge = {"files": {"p.yaml": "id: p\n" + "# padding\n" * 250_000}}
        r = await http.post("/api/v1/playbooks/replay", json=huge, headers=ADMIN)
        assert r.status_code == 413 and "limit of 2097152 bytes" in r.json()["message"]
        r = await http.post("/api/v1/playbooks/replay", json={"files": {"p.yaml": "id: p\n"},
                                                              "task_ids": [99999999999999999999999]}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["field"] == "task_ids.0"

        # Values JSON allows but the store cannot hold, or that no client means.
        reject = f"/api/v1/tasks/{task_id}/reject"
        for body, problem in ((b'{"reason": NaN}', "NaN"), (b'{"reason": "\\ud800"}', "surrogate"),
                              (b'{"reason": 1e999999}', "Infinity"), (b"\xff\xfe", "not valid JSON")):
            r = await http.post(reject, content=body, headers=json_type)
            assert r.status_code == 400 and problem in r.json()["message"], (body, r.text)

        assert await app.store.approvals_of_task(task_id) == []
        assert (await app.store.get_task(task_id)).state.value == "needs_approval"
        assert await metric(http, "ooda_api_requests_total", outcome="payload_too_large") >= 5


async def test_reads_audit_parsed_redacted_params_and_never_the_query_string(tmp_path):
    token = ENV["OODA_API_TOKEN"]
    async with served(tmp_path) as (app, http):
        with capture_logs() as logs:
            assert (await http.get("/api/v1/tasks", params={"state": "all", "limit": "7"}, headers=ADMIN)).is_success
            r = await http.get("/api/v1/tasks", params={"token": token}, headers=ADMIN)
            assert_invalid(r, "token", "unknown query parameter")
            r = await http.get("/api/v1/signals", params={"unmatched": "true", "since": token}, headers=ADMIN)
            assert_invalid(r, "since")
        reads = [json.loads(row[6]) async for row in app.store.audit_rows() if row[3] == "api.read"]
        assert reads == [{"path": "/api/v1/tasks", "params": {"state": "all", "limit": 7}, "task": None,
                          "via": reads[0]["via"]}]
        everything = json.dumps(logs) + json.dumps(reads)
        assert token not in everything and "query" not in reads[0]


async def test_refusals_are_counted_and_logged_and_only_policy_refusals_of_a_task_audited(tmp_path):
    async with served(tmp_path) as (app, http):
        task_id = await proposed_task(app, http)
        viewer = bearer(tmp_path, "OODA_VIEWER_TOKEN")
        with capture_logs() as logs:
            assert (await http.post("/api/v1/tasks/9999/approve", json={}, headers=ADMIN)).status_code == 404
            assert (await http.post("/api/v1/pause", json={}, headers=viewer)).status_code == 403
            assert (await http.post(f"/api/v1/tasks/{task_id}/approve", json={}, headers=viewer)).status_code == 403
            assert (await http.post(f"/api/v1/tasks/{task_id}/reject", json={"reason": "noisy"},
                                    headers=ADMIN)).status_code == 200
            assert (await http.post(f"/api/v1/tasks/{task_id}/approve", json={}, headers=ADMIN)).status_code == 409

        refused = [(e["command"], e["status"]) for e in logs if e["event"] == "command.refused"]
        assert refused == [("approve", 404), ("pause", 403), ("approve", 403), ("approve", 409)]
        for command, status in refused:
            assert await metric(http, "ooda_command_refusals_total", command=command, status=str(status)) >= 1
        assert await metric(http, "ooda_command_refusals_total", command="approve", status="409") == 1
        # The one policy decision about a task is on that task's trail; the mistakes and races are not.
        audited = [(row[2], row[4], json.loads(row[6])["command"]) async for row in app.store.audit_rows()
                   if row[3] == "command.refused"]
        assert audited == [("viewer", task_id, "approve")]


async def test_one_bad_write_in_a_batch_of_webhooks_fails_alone(tmp_path):
    """The writer isolates an item SQLite refuses: the webhooks sharing its batch are stored and
    answered 202, the bad one gets its own error. (Validation keeps such items out of the API now;
    this is the net under it, so the bad item is submitted to the writer directly.)"""

    async def overflowing_record(tx: Tx) -> None:
        # What GET /api/v1/tasks/99999999999999999999999 once wrote: a task id past SQLite's INTEGER.
        tx.audit(AuditEntry("hostile", "api.read", 99999999999999999999999, {}))

    async with served(tmp_path) as (app, http):
        with capture_logs() as logs:
            outcomes = await asyncio.gather(
                *(http.post("/webhooks/alertmanager", content=alert(n), headers=AM) for n in range(40)),
                *(app.store.transact(overflowing_record) for _ in range(10)),
                return_exceptions=True,
            )
        webhooks, bad = outcomes[:40], outcomes[40:]
        assert all(isinstance(r, httpx.Response) and r.status_code == 202 for r in webhooks), webhooks
        assert all(isinstance(e, WriteRefused) and "64-bit range" in str(e) for e in bad), bad
        assert await app.store.signal_count() == 40
        assert any(e["event"] == "store.batch_split" for e in logs)  # they did share a batch
        assert app.store.writer.healthy
        assert (await http.get("/api/v1/audit/verify", headers=ADMIN)).json()["ok"] is True


async def test_a_chat_or_cli_task_id_past_sqlites_range_is_an_unknown_task(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        actor = app.identities.by_id("local-admin", via="cli")
        assert actor is not None
        with pytest.raises(UnknownTask, match="there is no task 99999999999999999999"):
            await app.commands.approve(99999999999999999999, actor)
