"""``k8s.workload_status`` and ``k8s.events``: what a workload and its pods are doing right now.

Both are reads for the evidence of a proposal. The status lists the workload's pods (found by the
workload's own selector, so a job's ``controller-uid`` label too) worst first, and says in one line
what an on-call engineer would look for first: how many are ready, which pods are stuck and why
their last container died.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from adapters.tools.kubernetes import (
    RESOURCES,
    KubernetesTool,
    Namespace,
    ObjectName,
    Op,
    WorkloadKind,
    iso,
    label_selector,
)
from adapters.tools.kubernetes_client import k8s
from bot.model.proposals import Category

MAX_PODS_LISTED = 50  # a large daemonset has one pod per node; the summary still counts them all
EVENT_PAGE = 500
EVENT_PAGES = 4  # events live about an hour; this many pages cover even a busy namespace


class WorkloadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    kind: WorkloadKind = "deployment"
    name: ObjectName


class Condition(BaseModel):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


class PodStatus(BaseModel):
    name: str
    phase: str | None = None
    ready: bool
    restarts: int
    waiting_reason: str | None = None
    last_terminated_reason: str | None = None
    last_exit_code: int | None = None
    node: str | None = None


class WorkloadStatusResult(BaseModel):
    kind: str
    namespace: str
    name: str
    desired: int
    ready: int
    updated: int
    available: int
    generation: int | None = None
    observed_generation: int | None = None
    conditions: list[Condition]
    pods: list[PodStatus]
    pods_total: int
    summary: str


def pod_status(pod: Any) -> PodStatus:
    statuses = (pod.status.container_statuses or []) if pod.status else []
    waiting = terminated = None
    for status in statuses:
        if waiting is None and status.state and status.state.waiting:
            waiting = status.state.waiting.reason
        # The last death explains a crash loop; a finished pod (a job's) only has its current state.
        ended = (status.last_state.terminated if status.last_state else None) or (
            status.state.terminated if status.state else None)
        if terminated is None and ended is not None:
            terminated = ended
    return PodStatus(
        name=pod.metadata.name,
        phase=pod.status.phase if pod.status else None,
        ready=bool(statuses) and all(s.ready for s in statuses),
        restarts=sum(s.restart_count or 0 for s in statuses),
        waiting_reason=waiting,
        last_terminated_reason=terminated.reason if terminated else None,
        last_exit_code=terminated.exit_code if terminated else None,
        node=pod.spec.node_name if pod.spec else None,
    )


def counts(kind: str, workload: Any) -> tuple[int, int, int, int]:
    """(desired, ready, updated, available) in the terms of each kind's status."""
    spec, status = workload.spec, workload.status
    if status is None:
        return (getattr(spec, "replicas", None) or 0, 0, 0, 0)
    if kind == "daemonset":
        return (status.desired_number_scheduled or 0, status.number_ready or 0,
                status.updated_number_scheduled or 0, status.number_available or 0)
    if kind == "job":
        # A job wants ``completions`` pods to succeed: ready = running and ready, updated = succeeded,
        # available = still active.
        return (spec.completions or 1, status.ready or 0, status.succeeded or 0, status.active or 0)
    desired = spec.replicas if spec.replicas is not None else 1
    return (desired, status.ready_replicas or 0, status.updated_replicas or 0, status.available_replicas or 0)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summarize(result: WorkloadStatusResult, all_pods: list[PodStatus]) -> str:
    head = f"{result.kind} {result.namespace}/{result.name}: "
    if result.kind == "job":
        failed = [c for c in result.conditions if c.type == "Failed" and c.status == "True"]
        state = f"failed ({failed[0].reason})" if failed else ("complete" if result.updated >= result.desired
                                                               else "running")
        parts = [f"{state}, {result.updated}/{result.desired} succeeded"]
        failed_pods = sum(1 for p in all_pods if p.phase == "Failed")
        if failed_pods:
            parts.append(f"{plural(failed_pods, 'pod')} failed")
    else:
        parts = [f"{result.ready}/{result.desired} ready"]
        if result.updated < result.desired:
            parts.append(f"{result.updated}/{result.desired} updated")
    if result.generation is not None and (result.observed_generation or 0) < result.generation:
        parts.append(f"rollout pending (generation {result.generation} not yet observed)")
    for reason, count in Counter(p.waiting_reason for p in all_pods if p.waiting_reason).most_common():
        example = next(p for p in all_pods if p.waiting_reason == reason)
        detail = f"{plural(count, 'pod')} in {reason}"
        if example.last_exit_code is not None:
            detail += f" (last exit {example.last_exit_code} {example.last_terminated_reason or ''})".replace(" )", ")")
        parts.append(detail)
    if result.kind == "job":
        exits = Counter((p.last_exit_code, p.last_terminated_reason) for p in all_pods if p.last_exit_code is not None)
        if exits:
            (code, why), _ = exits.most_common(1)[0]
            parts.append(f"last exit {code} {why or ''}".strip())
    restarts = sum(p.restarts for p in all_pods)
    if restarts:
        parts.append(plural(restarts, "restart"))
    for condition in result.conditions:
        if condition.status == "False" and condition.type in ("Available", "Progressing", "ReplicaFailure"):
            parts.append(f"{condition.type}=False ({condition.reason})")
    return head + ", ".join(parts)


class WorkloadStatusTool(KubernetesTool):
    name: ClassVar[str] = "k8s.workload_status"
    category: ClassVar[Category] = Category.read
    params_model: ClassVar[type[BaseModel]] = WorkloadParams
    result_model: ClassVar[type[BaseModel]] = WorkloadStatusResult
    supports_dry_run: ClassVar[bool] = True  # a read changes nothing, so its preview is the read
    idempotent: ClassVar[bool] = True

    async def read_workload(self, kind: str, namespace: str, name: str) -> Any:
        timeout = self.api.timeout

        async def read(api_client: k8s.ApiClient) -> Any:
            if kind == "job":
                return await k8s.BatchV1Api(api_client).read_namespaced_job(name, namespace, _request_timeout=timeout)
            apps = k8s.AppsV1Api(api_client)
            reader = {"deployment": apps.read_namespaced_deployment, "statefulset": apps.read_namespaced_stateful_set,
                      "daemonset": apps.read_namespaced_daemon_set}[kind]
            return await reader(name, namespace, _request_timeout=timeout)

        return await self.api.call(Op("get", kind, namespace, name), read)

    async def list_pods(self, namespace: str, selector: str) -> list[Any]:
        async def list_(api_client: k8s.ApiClient) -> Any:
            return await k8s.CoreV1Api(api_client).list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=self.api.timeout)

        return list((await self.api.call(Op("list", "pod", namespace), list_)).items or [])

    async def run(self, params: WorkloadParams, *, dry_run: bool) -> WorkloadStatusResult:
        workload = await self.read_workload(params.kind, params.namespace, params.name)
        selector = label_selector(workload.spec.selector) if workload.spec.selector else f"job-name={params.name}"
        pods = [pod_status(p) for p in await self.list_pods(params.namespace, selector)]
        pods.sort(key=lambda p: (p.ready, -p.restarts, p.name))  # the pods worth a look first
        desired, ready, updated, available = counts(params.kind, workload)
        conditions = [
            Condition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in (workload.status.conditions or [] if workload.status else [])
        ]
        result = WorkloadStatusResult(
            kind=params.kind, namespace=params.namespace, name=params.name,
            desired=desired, ready=ready, updated=updated, available=available,
            generation=workload.metadata.generation,
            observed_generation=getattr(workload.status, "observed_generation", None) if workload.status else None,
            conditions=conditions, pods=pods[:MAX_PODS_LISTED], pods_total=len(pods), summary="",
        )
        result.summary = summarize(result, pods)
        return result


class EventsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    name: ObjectName
    kind: WorkloadKind | None = None
    limit: int = Field(20, ge=1, le=200)


class EventRecord(BaseModel):
    time: str | None
    type: str | None
    reason: str | None
    object: str
    message: str | None
    count: int | None


class EventsResult(BaseModel):
    events: list[EventRecord]
    summary: str


NEVER = datetime.min.replace(tzinfo=UTC)


def event_time(event: Any) -> datetime | None:
    at = event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp
    return at if isinstance(at, datetime) else None


def concerns(event: Any, name: str, kind: str | None) -> bool:
    """The event is about the workload itself or something it owns (``name-…``: its ReplicaSets, pods)."""
    involved = event.involved_object
    if involved is None or not involved.name:
        return False
    if involved.name == name:
        return kind is None or (involved.kind or "").lower() == RESOURCES[kind][2].lower()
    return bool(involved.name.startswith(name + "-"))


class EventsTool(KubernetesTool):
    name: ClassVar[str] = "k8s.events"
    category: ClassVar[Category] = Category.read
    params_model: ClassVar[type[BaseModel]] = EventsParams
    result_model: ClassVar[type[BaseModel]] = EventsResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True

    async def list_events(self, namespace: str) -> list[Any]:
        # A field selector matches names exactly, and the pods' names are not known up front, so
        # the namespace's events are read page by page and matched here.
        events: list[Any] = []
        token: str | None = None
        for _ in range(EVENT_PAGES):
            async def page(api_client: k8s.ApiClient, after: str | None = token) -> Any:
                kwargs: dict[str, Any] = {"limit": EVENT_PAGE, "_request_timeout": self.api.timeout}
                if after:
                    kwargs["_continue"] = after
                return await k8s.CoreV1Api(api_client).list_namespaced_event(namespace, **kwargs)

            answer = await self.api.call(Op("list", "event", namespace), page)
            events += answer.items or []
            token = answer.metadata._continue if answer.metadata else None
            if not token:
                break
        return events

    async def run(self, params: EventsParams, *, dry_run: bool) -> EventsResult:
        events = await self.list_events(params.namespace)
        # Newest first; of events stamped in the same second, the one listed later is the newer.
        order = sorted(((event_time(e) or NEVER, index) for index, e in enumerate(events)
                        if concerns(e, params.name, params.kind)), reverse=True)
        matching = [events[index] for _, index in order]
        shown = [
            EventRecord(
                time=iso(event_time(e)), type=e.type, reason=e.reason, message=e.message, count=e.count,
                object=f"{(e.involved_object.kind or 'object').lower()}/{e.involved_object.name}",
            )
            for e in matching[: params.limit]
        ]
        what = f"{params.kind or 'workload'} {params.namespace}/{params.name}"
        if not shown:
            return EventsResult(events=[], summary=f"no recent events for {what} or its pods")
        warnings = sum(1 for e in matching if e.type == "Warning")
        newest = shown[0]
        summary = (
            f"{plural(len(matching), 'event')} for {what} ({plural(warnings, 'warning')}); newest: "
            f"{newest.type} {newest.reason} on {newest.object}"
            + (f" (x{newest.count})" if newest.count and newest.count > 1 else "")
            + f": {newest.message}"
        )
        return EventsResult(events=shown, summary=summary)
