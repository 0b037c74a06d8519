"""Prometheus metrics, on a registry of our own so tests and several apps in one process do not clash."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.intake_requests = Counter(
            "ooda_intake_requests", "Webhook requests by source and outcome", ["source", "outcome"], registry=r
        )
        self.intake_signals = Counter("ooda_intake_signals", "Signals stored by source", ["source"], registry=r)
        self.intake_latency = Histogram(
            "ooda_intake_latency_seconds", "Webhook request latency (accepted requests)", ["source"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.api_requests = Counter("ooda_api_requests", "API requests by outcome", ["outcome"], registry=r)
        self.tasks_created = Counter("ooda_tasks_created", "Tasks created by playbook", ["playbook"], registry=r)
        self.task_transitions = Counter("ooda_task_transitions", "Task state changes", ["state"], registry=r)
        self.event_deliveries = Counter("ooda_event_deliveries", "Event batches sent to event sinks, by outcome",
                                        ["sink", "outcome"], registry=r)
        self.policy_decisions = Counter("ooda_policy_decisions", "Policy decisions", ["verdict"], registry=r)
        self.tool_calls = Counter("ooda_tool_calls", "Tool calls by tool and outcome", ["tool", "outcome"], registry=r)
        self.chat_deliveries = Counter(
            "ooda_chat_deliveries", "Chat deliveries by surface and outcome", ["surface", "outcome"], registry=r
        )
        self.proposal_latency = Histogram(
            "ooda_proposal_latency_seconds", "Signal stored to proposal created", buckets=LATENCY_BUCKETS, registry=r
        )
        self.store_queue_depth = Gauge("ooda_store_queue_depth", "Writes waiting for the store writer", registry=r)
        self.engine_queue_depth = Gauge("ooda_engine_queue_depth", "Signals waiting for the engine", registry=r)
        self.kill_switch = Gauge("ooda_kill_switch", "1 when the kill switch is on", registry=r)

    def track_queue(self, gauge: Gauge, read: Callable[[], int]) -> None:
        gauge.set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)
