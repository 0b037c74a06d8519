"""Prometheus metrics, on a registry of our own so tests and several apps in one process do not clash."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A store call takes from a fraction of a millisecond (a read on SQLite) to seconds (a digest's
# figures on a large store, or PostgreSQL's command timeout coming near).
STORE_BUCKETS = (*LATENCY_BUCKETS, 5.0)

# Alert names are chosen by whoever writes alerting rules, so the label is bounded: each distinct
# name is a time series Prometheus keeps, and a templated name must not grow them without end.
UNMATCHED_NAMES_MAX = 200
UNMATCHED_NAME_CHARS = 100
UNMATCHED_OVERFLOW = "other"
# Signal ids remembered as firing, so a redelivery of a firing alert is not counted again. Past
# this many the oldest is forgotten: a redelivery of it would count once more, which is cheaper
# than memory growing with every alert ever seen.
UNMATCHED_FIRING_MAX = 50_000


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.intake_requests = Counter(
            "ooda_intake_requests", "Webhook requests by source and outcome", ["source", "outcome"], registry=r
        )
        self.intake_signals = Counter("ooda_intake_signals", "Signals stored by source", ["source"], registry=r)
        self.intake_refused_alerts = Counter(
            "ooda_intake_refused_alerts", "Alert names seen in refused webhook deliveries (alerts the sender may "
            "never send again), by source, reason and alertname", ["source", "reason", "alertname"], registry=r,
        )
        self.intake_values_cut = Counter(
            "ooda_intake_values_cut", "Accepted signals with a label, annotation or title cut to "
            "intake.max_value_bytes", ["source"], registry=r,
        )
        self.intake_latency = Histogram(
            "ooda_intake_latency_seconds", "Webhook request latency (accepted requests)", ["source"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.api_requests = Counter("ooda_api_requests", "API requests by outcome", ["outcome"], registry=r)
        self.command_refusals = Counter("ooda_command_refusals", "Commands refused, by command and HTTP-like status",
                                        ["command", "status"], registry=r)
        self.http_connections_refused = Counter(
            "ooda_http_connections_refused", "Connections refused before reading a request, by reason", ["reason"],
            registry=r)
        self.http_timeouts = Counter(
            "ooda_http_timeouts", "Connections cut because a request was too slow to arrive, by the part that was "
            "late (header, body)", ["phase"], registry=r)
        self.http_connections_open = Gauge("ooda_http_connections_open", "Open HTTP connections", registry=r)
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
        self.store_seconds = Histogram(
            "ooda_store_seconds", "Store calls by backend and operation (the store port's method)",
            ["backend", "operation"], buckets=STORE_BUCKETS, registry=r,
        )
        self.work_items = Gauge(
            "ooda_work_items", "Work waiting in the store by kind: signals_ungrouped, outbox_pending, steps_running "
            "(read when /readyz or /metrics is)", ["kind"], registry=r)
        self.work_lag = Gauge(
            "ooda_work_lag_seconds", "How long the oldest item of each kind of work has waited (0: none waits)",
            ["kind"], registry=r)
        self.engine_queue_depth = Gauge("ooda_engine_queue_depth", "Signals waiting for the engine", registry=r)
        self.kill_switch = Gauge("ooda_kill_switch", "1 when the kill switch is on", registry=r)
        self.leader = Gauge("ooda_leader", "1 for the role this process has: leader (runs the scheduled jobs) "
                            "or standby", ["role"], registry=r)
        self.unmatched = UnmatchedCounter(Counter(
            "ooda_unmatched_signals", "Firing signals that matched no playbook, by alertname "
            f"(at most {UNMATCHED_NAMES_MAX} names; the rest count as {UNMATCHED_OVERFLOW!r})",
            ["alertname"], registry=r,
        ))

    def track_queue(self, gauge: Gauge, read: Callable[[], int]) -> None:
        gauge.set_function(read)

    def store_observer(self, backend: str) -> Callable[[str], Callable[[float], None]]:
        """What ``bot.store.timing.time_store_calls`` reports each call's seconds to, for one backend."""
        return lambda operation: FirstUseSeries(self.store_seconds, backend, operation).observe

    def record_work_lag(self, lag: Mapping[str, tuple[int, float]] | None) -> None:
        """Set the work gauges from (items, oldest age in seconds) by kind; None (the store did not
        answer) removes them rather than leave figures that are no longer true."""
        if lag is None:
            self.work_items.clear()
            self.work_lag.clear()
            return
        for kind, (items, age_s) in lag.items():
            self.work_items.labels(kind).set(items)
            self.work_lag.labels(kind).set(age_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class FirstUseSeries:
    """One labelled series of a histogram, created when first observed: /metrics lists the store
    operations that ran, not a row of empty buckets for each one that never ran."""

    __slots__ = ("_child", "_histogram", "_labels")

    def __init__(self, histogram: Histogram, *labels: str) -> None:
        self._histogram = histogram
        self._labels = labels
        self._child: Histogram | None = None

    def observe(self, seconds: float) -> None:
        if self._child is None:
            self._child = self._histogram.labels(*self._labels)
        self._child.observe(seconds)


class UnmatchedCounter:
    """``ooda_unmatched_signals_total{alertname}``: once per alert that starts firing and matches
    no playbook.

    A signal counts when it is seen firing and was not firing before, as far as this process
    remembers: redeliveries of a firing alert and its resolved delivery count nothing, and an
    alert that fires again after it resolved counts again.
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._names: set[str] = set()
        self._firing: OrderedDict[str, None] = OrderedDict()

    def observe(self, signals: Iterable[tuple[str, str, bool]]) -> None:
        """Count a batch of unmatched signals given as (signal id, alert name, firing).

        Args:
            signals: every signal of the batch no playbook matched, firing and resolved alike
                (a resolved one makes its next firing count again).
        """
        counts: dict[str, int] = defaultdict(int)
        for signal_id, alertname, firing in signals:
            if not firing:
                self._firing.pop(signal_id, None)
                continue
            if signal_id in self._firing:
                self._firing.move_to_end(signal_id)
                continue
            self._firing[signal_id] = None
            if len(self._firing) > UNMATCHED_FIRING_MAX:
                self._firing.popitem(last=False)
            counts[self._label(alertname)] += 1
        for label, count in counts.items():  # one labels() lookup per name, not per alert in a storm
            self.counter.labels(label).inc(count)

    def _label(self, alertname: str) -> str:
        name = alertname[:UNMATCHED_NAME_CHARS] or "(untitled)"
        if name in self._names:
            return name
        if len(self._names) >= UNMATCHED_NAMES_MAX:
            return UNMATCHED_OVERFLOW
        self._names.add(name)
        return name
