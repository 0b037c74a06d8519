"""OpenTelemetry traces: one trace per task, the same timeline people see in chat and the API.

    task (root: opened -> closed)
      intake          the first alert received -> the task opened (the queue before grouping)
      match           grouping the signals into the task (the engine's batch)
      evidence        the playbook's read steps (each tool call a child)
      decide          rendering, risk and policy for each step, the dry runs
      approval wait   proposed -> a person's decision (recorded when the decision arrives)
      step <name>     one step run (its tool call a child)
      verify          the verify step's reads
      undo            the rollbacks of an undo

A task can wait hours for a person and survive restarts, so no span is kept open across a wait:
each phase is its own span, recorded when it ends, and all share the task's trace. The trace id
and the root span id are derived from the task (its id and the moment it was opened), so every
process that touches the task, before or after a restart, puts its spans in the same trace, and
the trace id can be named in logs, audit records and the API's task view even when no exporter is
configured. The root ``task`` span is recorded when the task reaches a final state.

Export is off by default. With ``telemetry.otlp_endpoint`` set, spans go over OTLP/HTTP through a
``BatchSpanProcessor``: ending a span only queues it, and a background thread sends batches, so the
event loop never waits on the collector. HTTP requests get their server spans from OpenTelemetry's
aiohttp server instrumentation (``http_middleware``).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode, TraceFlags

from bot.model.tasks import Task

log = structlog.get_logger(__name__)

ROOTS_REMEMBERED = 10_000
FINAL_STATES = {"completed", "failed_terminal", "rejected", "cancelled", "escalated_to_human"}
# Ids the next span must take (trace id, span id): only for the task's root span, whose ids are
# derived from the task rather than drawn at random.
_FORCED_IDS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("ooda_forced_ids", default=None)


class _TaskIds(RandomIdGenerator):
    def generate_trace_id(self) -> int:
        forced = _FORCED_IDS.get()
        return forced[0] if forced else super().generate_trace_id()

    def generate_span_id(self) -> int:
        forced = _FORCED_IDS.get()
        return forced[1] if forced else super().generate_span_id()


def task_ids(task_id: int, opened_at: datetime) -> tuple[int, int]:
    """(trace id, root span id) of a task: the same in every process, never zero."""
    digest = hashlib.sha256(f"ooda-task/{task_id}/{opened_at.isoformat()}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def trace_id_of(task: Task) -> str:
    """The task's trace id as backends show it (32 hex digits)."""
    return f"{task_ids(task.id, task.created_at)[0]:032x}"


def bind_task_trace(task: Task) -> None:
    """Name the task's trace in every log line from here on (structlog's context)."""
    structlog.contextvars.bind_contextvars(trace_id=trace_id_of(task))


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


class TaskTracing:
    """The tracer for task spans; ``TaskTracing()`` records nothing (no exporter configured)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer: trace.Tracer = provider.get_tracer("ooda") if provider else trace.NoOpTracer()

    @classmethod
    def create(cls, *, otlp_endpoint: str | None = None, exporter: SpanExporter | None = None,
               service_name: str = "ooda", environment: str = "dev") -> TaskTracing:
        """Export to ``otlp_endpoint`` (batched, off the loop) and/or to ``exporter`` (tests: at once)."""
        if otlp_endpoint is None and exporter is None:
            return cls()
        provider = TracerProvider(resource=Resource.create({"service.name": service_name,
                                                            "deployment.environment": environment}),
                                  id_generator=_TaskIds())
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        if otlp_endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def task_context(self, task: Task) -> Context:
        """A context whose parent is the task's root span, wherever and whenever this runs."""
        trace_id, root = task_ids(task.id, task.created_at)
        parent = SpanContext(trace_id, root, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        return trace.set_span_in_context(NonRecordingSpan(parent))

    @contextmanager
    def phase(self, name: str, task: Task, **attributes: Any) -> Iterator[Span]:
        """A span for work done now on ``task``: spans started inside (tool calls) are its children."""
        attrs = {"ooda.task.id": task.id, "ooda.playbook": task.playbook_id, **_clean(attributes)}
        with self.tracer.start_as_current_span(name, context=self.task_context(task), attributes=attrs) as span:
            yield span

    @contextmanager
    def tool_call(self, tool: str, **attributes: Any) -> Iterator[Span]:
        """A tool call, a child of whatever phase is current (the gateway does not know the task)."""
        with self.tracer.start_as_current_span(f"tool {tool}", attributes={"ooda.tool": tool,
                                                                            **_clean(attributes)}) as span:
            yield span

    def record(self, name: str, task: Task, start: datetime, end: datetime, **attributes: Any) -> None:
        """A span for a wait that already happened (the queue before grouping, an approval wait)."""
        if not self.enabled:
            return
        attrs = {"ooda.task.id": task.id, "ooda.playbook": task.playbook_id, **_clean(attributes)}
        span = self.tracer.start_span(name, context=self.task_context(task), start_time=_ns(start), attributes=attrs)
        span.end(end_time=max(_ns(end), _ns(start)))

    def end_task(self, task: Task) -> None:
        """The task's root span, from opened to closed, once it reached a final state."""
        if not self.enabled or task.state.value not in FINAL_STATES:
            return
        closed = task.closed_at or task.updated_at
        token = _FORCED_IDS.set(task_ids(task.id, task.created_at))
        try:
            span = self.tracer.start_span("task", context=Context(), start_time=_ns(task.created_at), attributes={
                "ooda.task.id": task.id, "ooda.playbook": task.playbook_id, "ooda.task.state": task.state.value,
                "ooda.environment": task.environment, "ooda.severity": task.severity,
                "ooda.signal_count": task.signal_count, "ooda.outcome": task.outcome or ""})
        finally:
            _FORCED_IDS.reset(token)
        if task.state.value != "completed":
            span.set_status(Status(StatusCode.ERROR, task.outcome or task.state.value))
        span.end(end_time=max(_ns(closed), _ns(task.created_at)))

    def http_middleware(self) -> Any:
        """OpenTelemetry's aiohttp server middleware bound to this provider, or None when off.

        The instrumentor's ``instrument`` sets the module state the middleware reads and swaps
        ``web.Application`` for a subclass process-wide; it is undone at once, so only Ooda's own
        app gets the middleware, explicitly.
        """
        if self.provider is None:
            return None
        from opentelemetry.instrumentation.aiohttp_server import (
            AioHttpServerInstrumentor,
            create_aiohttp_middleware,
        )

        instrumentor = AioHttpServerInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            with warnings.catch_warnings():
                # Its web.Application subclass draws aiohttp's warning against subclassing; the
                # subclass is dropped again right below and never used.
                warnings.simplefilter("ignore", DeprecationWarning)
                instrumentor.instrument(tracer_provider=self.provider)
            instrumentor.uninstrument()
        return create_aiohttp_middleware(tracer_provider=self.provider)

    async def aclose(self) -> None:
        """Send what is queued and stop the export thread, in a worker thread: a collector that is
        down costs the exporter's timeout there, not a stalled event loop."""
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """Span attributes take str, bool, int and float; None is left out, anything else is text."""
    return {k: v if isinstance(v, str | bool | int | float) else str(v) for k, v in attributes.items()
            if v is not None}


class TaskSpanRecorder:
    """Records the spans that are waits, not work, from the task events after they commit: the
    approval wait (proposed -> a person's decision) and the root ``task`` span at a final state.

    Bus subscribers must be quick, so each event only queues a small coroutine that reads the
    task and records; ``drain`` awaits those still running (at stop, and in tests).
    """

    def __init__(self, tracing: TaskTracing, store: Any) -> None:
        self.tracing = tracing
        self.store = store
        self._pending: set[asyncio.Task[None]] = set()
        # Tasks whose root span was recorded: an undo reopens a task and closes it again, and the
        # root must be recorded once (in this process; after a restart an undo records it again).
        self._closed: OrderedDict[int, None] = OrderedDict()

    def watch(self, bus: Any) -> None:
        if self.tracing.enabled:
            bus.subscribe("ops.agent_task.", self._on_event)

    def _on_event(self, event: Any) -> None:
        if event.task_id is None:
            return
        name = event.name.removeprefix("ops.agent_task.")
        if name in ("approved", "rejected") or (name == "state_changed" and event.payload.get("to") in FINAL_STATES):
            job = asyncio.get_running_loop().create_task(self._record(name, event.task_id, event.at))
            self._pending.add(job)
            job.add_done_callback(self._pending.discard)

    async def _record(self, name: str, task_id: int, at: datetime) -> None:
        try:
            task = await self.store.get_task(task_id)
            if task is None:
                return
            if name == "state_changed":
                if task_id not in self._closed:
                    self._closed[task_id] = None
                    if len(self._closed) > ROOTS_REMEMBERED:
                        self._closed.popitem(last=False)
                    self.tracing.end_task(task)
                return
            proposed = [e for e in await self.store.events_of_task(task_id)
                        if e["name"] == "ops.agent_task.proposed_action" and e["at"] <= at.isoformat()]
            if proposed:
                self.tracing.record("approval wait", task, datetime.fromisoformat(proposed[-1]["at"]), at,
                                    decision=name)
        except Exception:
            log.exception("tracing.record_failed", task_id=task_id, event=name)

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
