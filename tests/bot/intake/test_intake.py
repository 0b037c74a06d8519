"""Webhook intake through the real server: refusals write nothing, acceptances are committed first.

Every request goes over HTTP to the App from ``bot/app.py`` on the example config; requests are
signed with the schemes the CLI's ``sign_headers`` uses (the same ones the adapters verify).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from dataclasses import field as dc_field
from importlib import resources
from typing import Any

import aiosqlite
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from bot.app import App
from bot.cli import sign_headers
from tests.harness import AM, ENV, client, running_app, running_standin

SECRETS = list(ENV.values())
WRONG_TOKEN = "presented-but-wrong-token-5678"
SMALL_LIMIT = 1024  # the lowest intake.max_body_bytes the config accepts


def sample(name: str) -> bytes:
    return (resources.files("bot") / "samples" / f"{name}.json").read_bytes()


def signed(kind: str, body: bytes, secret: str | None = None) -> dict[str, str]:
    env = {"pagerduty": "OODA_PAGERDUTY_SECRET", "generic": "OODA_GENERIC_SECRET", "grafana": "OODA_GRAFANA_TOKEN"}
    return {"Content-Type": "application/json", **sign_headers(kind, body, secret or ENV[env[kind]])}


@asynccontextmanager
async def served(tmp_path, overrides: dict[str, Any] | None = None) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    async with running_standin() as standin, running_app(tmp_path, standin, overrides) as app, client(app) as http:
        yield app, http


async def db_rows(app: App, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows as another connection sees them: committed data only."""
    async with aiosqlite.connect(app.store.path) as conn, conn.execute(sql, params) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def stored_counts(app: App) -> tuple[int, int]:
    await app.engine.wait_idle()
    return await app.store.signal_count(), len([r async for r in app.store.audit_rows()])


async def metric(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


# -- refusals ---------------------------------------------------------------------------------------

def oversized_body() -> bytes:
    payload = json.loads(sample("alertmanager-node-filesystem-space"))
    payload["alerts"][0]["annotations"]["description"] = "x" * (2 * SMALL_LIMIT)
    return json.dumps(payload).encode()


async def chunks(body: bytes, size: int = 600) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i:i + size]


def stale_generic_headers(body: bytes) -> dict[str, str]:
    # The documented scheme, signed an hour ago: a captured request replayed later.
    ts = str(int(time.time()) - 3600)
    mac = hmac.new(ENV["OODA_GENERIC_SECRET"].encode(), f"{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Ooda-Timestamp": ts, "X-Ooda-Signature": f"v1={mac}"}


def bad_status_alert() -> bytes:
    payload = json.loads(sample("alertmanager-node-filesystem-space"))
    payload["alerts"][0]["status"] = "burning"
    return json.dumps(payload).encode()


def generic_without_title() -> bytes:
    payload = json.loads(sample("generic-backup"))
    del payload["title"]
    return json.dumps(payload).encode()


async def stop_writer(app: App) -> None:
    await app.store.writer.stop()


Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass
class Refusal:
    id: str
    send: Send
    status: int
    source: str  # the metric's source label
    outcome: str
    field: str | None = None
    overrides: dict[str, Any] = dc_field(default_factory=dict)
    setup: Callable[[App], Awaitable[None]] | None = None


def post(path: str, body: Any, headers: dict[str, str] | Callable[[], dict[str, str]] | None = None) -> Send:
    """``headers`` may be a function: signed when sent, since the generic scheme's timestamp
    expires 300 s after signing and a test may run later than that after collection."""
    async def send(http: httpx.AsyncClient) -> httpx.Response:
        content = body() if callable(body) else body
        sent = headers() if callable(headers) else headers
        return await http.post(path, content=content, headers=sent or {})

    return send


AM_BODY = sample("alertmanager-node-filesystem-space")
PD_BODY = sample("pagerduty-triggered")
GENERIC_BODY = sample("generic-backup")
GRAFANA_HMAC = {"intake": {"sources": {"grafana": {"auth": "hmac"}}}}
TAMPERED_GENERIC = GENERIC_BODY.replace(b"Nightly backup missing", b"Nightly backup is fine")

REFUSALS = [
    Refusal("missing-bearer", post("/webhooks/alertmanager", AM_BODY), 401, "alertmanager", "unauthorized"),
    Refusal("wrong-bearer", post("/webhooks/alertmanager", AM_BODY, {"Authorization": f"Bearer {WRONG_TOKEN}"}),
            401, "alertmanager", "unauthorized"),
    Refusal("token-without-bearer-scheme",
            post("/webhooks/alertmanager", AM_BODY, {"Authorization": ENV["OODA_ALERTMANAGER_TOKEN"]}),
            401, "alertmanager", "unauthorized"),
    Refusal("pagerduty-wrong-hmac", post("/webhooks/pagerduty", PD_BODY, signed("pagerduty", PD_BODY, WRONG_TOKEN)),
            401, "pagerduty", "unauthorized"),
    Refusal("pagerduty-unsigned", post("/webhooks/pagerduty", PD_BODY), 401, "pagerduty", "unauthorized"),
    Refusal("generic-wrong-hmac",
            post("/webhooks/generic", GENERIC_BODY, lambda: signed("generic", GENERIC_BODY, WRONG_TOKEN)),
            401, "generic", "unauthorized"),
    Refusal("generic-body-changed-after-signing",
            post("/webhooks/generic", TAMPERED_GENERIC, lambda: signed("generic", GENERIC_BODY)), 401, "generic",
            "unauthorized"),
    Refusal("generic-replayed-an-hour-later",
            post("/webhooks/generic", GENERIC_BODY, stale_generic_headers(GENERIC_BODY)), 401, "generic",
            "unauthorized"),
    Refusal("grafana-wrong-hmac",
            post("/webhooks/grafana", sample("grafana-disk-space"),
                 signed("grafana", sample("grafana-disk-space"), WRONG_TOKEN)),
            401, "grafana", "unauthorized", overrides=GRAFANA_HMAC),
    Refusal("unknown-source", post("/webhooks/nagios", AM_BODY, AM), 404, "unknown", "not_found"),
    Refusal("too-large-with-content-length", post("/webhooks/alertmanager", oversized_body(), AM), 413,
            "alertmanager", "payload_too_large", overrides={"intake": {"max_body_bytes": SMALL_LIMIT}}),
    Refusal("too-large-chunked", post("/webhooks/alertmanager", lambda: chunks(oversized_body()), AM), 413,
            "alertmanager", "payload_too_large", overrides={"intake": {"max_body_bytes": SMALL_LIMIT}}),
    Refusal("malformed-json", post("/webhooks/alertmanager", b'{"alerts": [{"status": "fir', AM), 400,
            "alertmanager", "invalid_payload"),
    Refusal("alertmanager-schema-violation", post("/webhooks/alertmanager", bad_status_alert(), AM), 400,
            "alertmanager", "invalid_payload", field="alerts.0.status"),
    Refusal("generic-schema-violation",
            post("/webhooks/generic", generic_without_title(), lambda: signed("generic", generic_without_title())), 400,
            "generic", "invalid_payload", field="title"),
    Refusal("store-unavailable", post("/webhooks/alertmanager", AM_BODY, AM), 503, "alertmanager",
            "store_unavailable", setup=stop_writer),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[c.id for c in REFUSALS])
async def test_refused_request_answers_its_status_and_writes_nothing(tmp_path, case: Refusal):
    async with served(tmp_path, case.overrides) as (app, http):
        if case.setup:
            await case.setup(app)
        before = await stored_counts(app)

        with capture_logs() as logs:
            r = await case.send(http)

        assert r.status_code == case.status, r.text
        body = r.json()
        assert body["error"] == case.outcome
        assert body["message"]
        if case.field:
            assert body["field"] == case.field
            assert case.field in body["message"]
        assert await stored_counts(app) == before
        assert await metric(http, "ooda_intake_requests_total", source=case.source, outcome=case.outcome) == 1
        assert await metric(http, "ooda_intake_requests_total", outcome="accepted") == 0

        refused = [e for e in logs if e["event"] == "intake.refused"]
        assert [(e["source"], e["status"], e["reason"]) for e in refused] == [(case.source, case.status, case.outcome)]
        for text in (str(logs), r.text, str(dict(r.headers))):
            for secret in [*SECRETS, WRONG_TOKEN]:
                assert secret not in text


async def test_chunked_case_really_sends_no_content_length(tmp_path):
    # Guards the case above: without this, httpx could buffer the generator and send a length.
    async with served(tmp_path, {"intake": {"max_body_bytes": SMALL_LIMIT}}) as (_, http):
        r = await http.post("/webhooks/alertmanager", content=chunks(oversized_body()), headers=AM)
    assert r.status_code == 413
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"


async def test_body_at_the_limit_is_accepted_and_one_byte_more_is_not(tmp_path):
    payload = json.loads(AM_BODY)
    base = len(json.dumps(payload).encode())
    payload["alerts"][0]["annotations"]["description"] += "y" * (SMALL_LIMIT * 4 - base)
    exact = json.dumps(payload).encode()
    assert len(exact) == SMALL_LIMIT * 4
    async with served(tmp_path, {"intake": {"max_body_bytes": SMALL_LIMIT * 4}}) as (_, http):
        assert (await http.post("/webhooks/alertmanager", content=exact, headers=AM)).status_code == 202
        over = exact + b" "  # still valid JSON, one byte over
        r = await http.post("/webhooks/alertmanager", content=chunks(over), headers=AM)
        assert r.status_code == 413


# -- acceptances ------------------------------------------------------------------------------------

async def test_alertmanager_group_is_committed_before_the_202(tmp_path):
    group = sample("alertmanager-group")
    alerts = json.loads(group)["alerts"]
    async with served(tmp_path) as (app, http):
        r = await http.post("/webhooks/alertmanager", content=group, headers=AM)

        assert r.status_code == 202, r.text
        body = r.json()
        assert body["accepted"] == len(alerts) == len(set(body["signal_ids"])) > 1
        # Read by a separate connection right after the answer: only committed rows are visible.
        rows = dict(await db_rows(app, "SELECT id, status FROM signals"))
        assert set(rows) == set(body["signal_ids"])
        assert sorted(rows.values()) == sorted(a["status"] for a in alerts)
        received = [r for r in await db_rows(app, "SELECT actor, action, data FROM audit")
                    if r[1] == "signals.received"]
        assert received[0][0] == "source:alertmanager"
        assert json.loads(received[0][2])["signal_ids"] == body["signal_ids"]
        assert await metric(http, "ooda_intake_requests_total", source="alertmanager", outcome="accepted") == 1
        assert await metric(http, "ooda_intake_signals_total", source="alertmanager") == len(alerts)


async def test_same_alert_twice_is_one_row_and_resolved_updates_it(tmp_path):
    async with served(tmp_path) as (app, http):
        first = await http.post("/webhooks/alertmanager", content=AM_BODY, headers=AM)
        again = await http.post("/webhooks/alertmanager", content=AM_BODY, headers=AM)
        assert first.status_code == again.status_code == 202
        assert first.json()["signal_ids"] == again.json()["signal_ids"]
        (signal_id,) = first.json()["signal_ids"]
        assert await db_rows(app, "SELECT id, status, deliveries FROM signals") == [(signal_id, "firing", 2)]

        resolved = await http.post("/webhooks/alertmanager",
                                   content=sample("alertmanager-node-filesystem-space-resolved"),
                                   headers=AM)
        assert resolved.json()["signal_ids"] == [signal_id]
        assert await db_rows(app, "SELECT id, status, deliveries FROM signals") == [(signal_id, "resolved", 3)]


async def test_pagerduty_signed_incident_then_its_resolution_update_one_row(tmp_path):
    resolved_body = sample("pagerduty-resolved")
    async with served(tmp_path) as (app, http):
        r = await http.post("/webhooks/pagerduty", content=PD_BODY, headers=signed("pagerduty", PD_BODY))
        assert r.status_code == 202, r.text
        r2 = await http.post("/webhooks/pagerduty", content=resolved_body, headers=signed("pagerduty", resolved_body))
        assert r2.status_code == 202, r2.text
        assert r.json()["signal_ids"] == r2.json()["signal_ids"]
        rows = await db_rows(app, "SELECT source, status FROM signals")
        assert rows == [("pagerduty", "resolved")]


async def test_generic_signed_alert_is_stored_with_its_source_label(tmp_path):
    async with served(tmp_path) as (app, http):
        r = await http.post("/webhooks/generic", content=GENERIC_BODY, headers=signed("generic", GENERIC_BODY))
        assert r.status_code == 202, r.text
        (row,) = await db_rows(app, "SELECT id, source, fingerprint, labels FROM signals")
        assert row[0] == r.json()["signal_ids"][0]
        assert row[1:3] == ("generic", "cron-check:backup-2026-01-05")
        assert json.loads(row[3])["source"] == "cron-check"


async def test_grafana_with_bearer_and_with_hmac(tmp_path):
    body = sample("grafana-disk-space")
    bearer = {"Authorization": f"Bearer {ENV['OODA_GRAFANA_TOKEN']}", "Content-Type": "application/json"}
    (tmp_path / "bearer").mkdir()
    (tmp_path / "hmac").mkdir()
    async with served(tmp_path / "bearer") as (app, http):
        r = await http.post("/webhooks/grafana", content=body, headers=bearer)
        assert r.status_code == 202, r.text
        assert await db_rows(app, "SELECT source, severity FROM signals") == [("grafana", "warning")]
    async with served(tmp_path / "hmac", GRAFANA_HMAC) as (app, http):
        assert (await http.post("/webhooks/grafana", content=body, headers=bearer)).status_code == 401
        r = await http.post("/webhooks/grafana", content=body, headers=signed("grafana", body))
        assert r.status_code == 202, r.text
        assert await app.store.signal_count() == 1


async def test_accepted_request_logs_no_secret_and_binds_a_correlation_id(tmp_path):
    async with served(tmp_path) as (app, http):
        with capture_logs() as logs:
            r = await http.post("/webhooks/alertmanager", content=AM_BODY, headers={**AM, "X-Request-Id": "req-42"})
            await app.engine.wait_idle()
        assert r.status_code == 202
        assert r.headers["X-Request-Id"] == "req-42"
        audit = await db_rows(app, "SELECT correlation_id FROM audit WHERE action = 'signals.received'")
        assert audit == [("req-42",)]
        for secret in SECRETS:
            assert secret not in str(logs)


async def test_intake_stores_the_normalized_labels_playbooks_key_on(tmp_path):
    body = sample("alertmanager-kube-pod-crashlooping")
    async with served(tmp_path) as (app, http):
        r = await http.post("/webhooks/alertmanager", content=body, headers=AM)
        assert r.status_code == 202, r.text
        ((labels, fingerprint),) = await db_rows(app, "SELECT labels, fingerprint FROM signals")

    labels = json.loads(labels)
    sent = json.loads(body)["alerts"][0]
    assert labels.items() >= {k: v for k, v in sent["labels"].items() if k != "env"}.items()
    # The pod checkout-6f9c7b8d5-x7k2p belongs to the Deployment checkout; cluster staging-eu-1 is staging.
    assert (labels["workload"], labels["workload_kind"], labels["env"]) == ("checkout", "deployment", "staging")
    assert fingerprint == sent["fingerprint"]  # Alertmanager's own, from the labels it sent
