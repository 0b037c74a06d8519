"""One OpenTelemetry trace per task, recorded with the SDK's in-memory exporter: the spans of one
whole task (alert -> proposal -> approval -> step -> verify -> undo), their parents and attributes,
and the trace id named in the logs, the audit records and the API's task view."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bot.model.tasks import Task, TaskState
from bot.policy.identity import Actor
from bot.tracing import trace_id_of
from tests.harness import ADMIN, AM, client, running_app, running_standin

SAMPLES = Path(__file__).resolve().parents[2] / "bot" / "samples"
REQUESTER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")
APPROVER = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead", "oncall"}), via="api")
TRACING = {"telemetry": {"service_name": "ooda-test"}}


async def test_one_whole_task_is_one_trace(tmp_path):
    exporter = InMemorySpanExporter()
    body = json.loads((SAMPLES / "alertmanager-kube-pod-crashlooping.json").read_text())
    async with running_standin() as standin, \
            running_app(tmp_path, standin, TRACING, span_exporter=exporter) as app, client(app) as http:
        assert (await http.post("/webhooks/alertmanager", json=body, headers=AM)).status_code == 202
        await app.engine.wait_idle()
        [task] = await app.store.list_tasks(open_only=False)
        if task.state is TaskState.needs_approval:
            await app.commands.approve(task.id, APPROVER)
            await app.engine.wait_idle()
        await app.span_recorder.drain()
        view = (await http.get(f"/api/v1/tasks/{task.id}", headers=ADMIN)).json()
        audit = [row async for row in app.store.audit_rows(task.id)]
        task = await app.store.get_task(task.id)

    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    names = [s.name for s in spans]
    root = by_name["task"]
    trace_id = root.context.trace_id
    task_spans = [s for s in spans if s.context.trace_id == trace_id]
    assert root.parent is None and root.attributes["ooda.task.id"] == task.id
    assert root.attributes["ooda.task.state"] == task.state.value
    for phase in ("intake", "match", "evidence", "decide"):
        assert by_name[phase].parent.span_id == root.context.span_id, phase
        assert by_name[phase].context.trace_id == trace_id
    assert by_name["evidence"].attributes["ooda.playbook"] == task.playbook_id
    assert by_name["intake"].attributes["alertname"] == body["alerts"][0]["labels"]["alertname"]
    steps = [s for s in task_spans if s.name.startswith("step ")]
    assert steps and all(s.parent.span_id == root.context.span_id for s in steps)
    tools = [s for s in task_spans if s.name.startswith("tool ")]
    parents = {s.context.span_id: s.name for s in task_spans}
    # Every tool call is a child of the phase that made it: a read, a dry run, a step, the verify.
    assert tools and {parents[t.parent.span_id].split(" ")[0] for t in tools} <= {"evidence", "decide", "step",
                                                                                     "verify"}
    assert any(parents[t.parent.span_id].startswith("step ") for t in tools)
    assert all("ooda.ok" in t.attributes for t in tools)
    if "approval wait" in by_name:
        assert by_name["approval wait"].attributes["decision"] == "approved"
        assert by_name["approval wait"].parent.span_id == root.context.span_id
    assert "verify" in names
    # The intake span runs from the alert's start at its source to its grouping, before the task
    # opened; the root runs from opened to closed (the verify's own commit closes it).
    assert by_name["intake"].start_time <= root.start_time <= by_name["evidence"].start_time
    assert by_name["verify"].start_time <= root.end_time
    # The HTTP requests have their own server spans, from the aiohttp instrumentation.
    assert any(s.kind is SpanKind.SERVER and s.context.trace_id != trace_id for s in spans)

    hex_id = f"{trace_id:032x}"
    assert view["trace_id"] == hex_id
    traced = [r for r in audit if json.loads(r[6]).get("trace_id") == hex_id]
    assert {r[3] for r in traced} >= {"task.proposal", "tool.call"}
    assert root.status.status_code is (StatusCode.UNSET if task.state is TaskState.completed else StatusCode.ERROR)


async def test_an_undo_is_part_of_the_task_trace(tmp_path):
    exporter = InMemorySpanExporter()
    async with running_standin() as standin, running_app(tmp_path, standin, span_exporter=exporter) as app:
        task = await app.commands.run_playbook("http-5xx-ratio", {"service": "checkout"}, REQUESTER)
        await app.engine.wait_idle()
        await app.commands.approve(task.id, APPROVER)
        await app.engine.wait_idle()
        await app.commands.undo(task.id, APPROVER)
        await app.engine.wait_idle()
        await app.span_recorder.drain()

    spans = exporter.get_finished_spans()
    [root] = [s for s in spans if s.name == "task"]  # recorded once, though the undo closed the task again
    undo = [s for s in spans if s.name.startswith("undo ")]
    assert [s.name for s in undo] == ["undo throttle"]
    assert undo[0].parent.span_id == root.context.span_id and undo[0].attributes["actor"] == "lead"
    [tool] = [s for s in spans if s.parent is not None and s.parent.span_id == undo[0].context.span_id]
    assert tool.name == "tool flags.set" and tool.attributes["ooda.ok"] is True


async def test_no_exporter_configured_records_nothing_and_still_names_the_trace(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app, client(app) as http:
        assert not app.core.tracing.enabled
        task = await app.commands.run_playbook("http-5xx-ratio", {"service": "checkout"}, APPROVER)
        await app.engine.wait_idle()
        view = (await http.get(f"/api/v1/tasks/{task.id}", headers=ADMIN)).json()
    assert len(view["trace_id"]) == 32 and int(view["trace_id"], 16) != 0


async def test_spans_go_to_the_otlp_endpoint_in_batches(tmp_path):
    from aiohttp import web

    from bot.tracing import TaskTracing

    received: list[bytes] = []
    arrived = asyncio.Event()

    async def collect(request: web.Request) -> web.Response:
        received.append(await request.read())
        arrived.set()
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        tracing = TaskTracing.create(otlp_endpoint=f"http://127.0.0.1:{port}/v1/traces")
        task = Task(id=1, playbook_id="disk", playbook_version="1", state=TaskState.completed, group_key="g",
                    title="t", environment="dev", severity="warning", requester="x", signal_count=1,
                    created_at=datetime(2026, 1, 15, 9, tzinfo=UTC), updated_at=datetime(2026, 1, 15, 9, 5, tzinfo=UTC),
                    closed_at=datetime(2026, 1, 15, 9, 5, tzinfo=UTC))
        with tracing.phase("evidence", task):
            pass
        tracing.end_task(task)
        await tracing.aclose()  # flushes the batch from the export thread while the loop serves the collector
        async with asyncio.timeout(5):
            await arrived.wait()
    finally:
        await runner.cleanup()
    request = ExportTraceServiceRequest.FromString(b"".join(received))
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(s.name for s in spans) == ["evidence", "task"]
    assert {s.trace_id.hex() for s in spans} == {trace_id_of(task)}
