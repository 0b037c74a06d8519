"""``k8s.logs``: the last lines a pod's container wrote, by default those of the container that died.

For a crash-looping pod the useful logs are the previous container's (``previous: true``, what
``kubectl logs --previous`` shows): the current one has only just started. The pod is read first,
so that a pod that never restarted gets a plain answer instead of an API error, and the container
is chosen the way kubectl chooses it. The text is capped at ``tools.kubernetes.max_log_bytes``,
keeping the end, where the stack trace is.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from adapters.tools.kubernetes import ContainerName, KubernetesTool, Namespace, ObjectName, Op
from adapters.tools.kubernetes_client import k8s
from bot.errors import ToolError
from bot.model.proposals import Category

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
# Memory guard for one answer: tail_lines bounds the lines, not how long one line may be.
READ_CAP_BYTES = 1 << 20


class LogsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    pod: ObjectName
    container: ContainerName | None = None
    previous: bool = True
    tail_lines: int = Field(50, ge=1, le=5000)


class LogsResult(BaseModel):
    pod: str
    container: str
    previous: bool
    text: str
    truncated: bool


def choose_container(pod: Any, wanted: str | None) -> str:
    names = [c.name for c in pod.spec.containers]
    if wanted is not None:
        if wanted not in names:
            raise ToolError(
                f"pod {pod.metadata.namespace}/{pod.metadata.name} has no container {wanted!r}; "
                f"its containers are: {', '.join(names)}"
            )
        return wanted
    default = (pod.metadata.annotations or {}).get(DEFAULT_CONTAINER_ANNOTATION)
    return str(default) if default in names else str(names[0])


def check_previous(pod: Any, container: str) -> None:
    statuses = (pod.status.container_statuses or []) if pod.status else []
    status = next((s for s in statuses if s.name == container), None)
    if status is None or status.last_state is None or status.last_state.terminated is None:
        restarts = status.restart_count if status is not None else 0
        raise ToolError(
            f"container {container!r} of pod {pod.metadata.namespace}/{pod.metadata.name} has no previous container: "
            f"it has not been restarted (restart count {restarts}), so there are no earlier logs to read; "
            "ask with previous: false for the current container's logs"
        )


def cap(data: bytes, limit: int) -> tuple[str, bool]:
    """The last ``limit`` bytes, starting at a line boundary when there is one."""
    if len(data) <= limit:
        return data.decode("utf-8", "replace"), False
    tail = data[-limit:]
    newline = tail.find(b"\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1:]
    return tail.decode("utf-8", "replace"), True


class LogsTool(KubernetesTool):
    name: ClassVar[str] = "k8s.logs"
    category: ClassVar[Category] = Category.read
    params_model: ClassVar[type[BaseModel]] = LogsParams
    result_model: ClassVar[type[BaseModel]] = LogsResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True

    async def run(self, params: LogsParams, *, dry_run: bool) -> LogsResult:
        timeout = self.api.timeout

        async def read_pod(api_client: k8s.ApiClient) -> Any:
            return await k8s.CoreV1Api(api_client).read_namespaced_pod(params.pod, params.namespace,
                                                                        _request_timeout=timeout)

        pod = await self.api.call(Op("get", "pod", params.namespace, params.pod), read_pod)
        container = choose_container(pod, params.container)
        if params.previous:
            check_previous(pod, container)

        async def read_log(api_client: k8s.ApiClient) -> bytes:
            # Unparsed: the client would otherwise try the text as JSON, and a JSON log line would
            # come back as the repr of a dict.
            # Unparsed, the answer is the aiohttp response itself (the client's stubs say str).
            response = cast(aiohttp.ClientResponse, await k8s.CoreV1Api(api_client).read_namespaced_pod_log(
                params.pod, params.namespace, container=container, previous=params.previous,
                tail_lines=params.tail_lines, limit_bytes=READ_CAP_BYTES,
                _preload_content=False, _request_timeout=timeout))
            async with response:
                data = await response.read()
            if response.status >= 400:
                error = k8s.ApiException(status=response.status, reason=response.reason)
                error.body = data
                raise error
            return data

        data = await self.api.call(Op("get", "pod", params.namespace, params.pod, subresource="log"), read_log)
        text, truncated = cap(data, self.config.max_log_bytes)
        return LogsResult(pod=params.pod, container=container, previous=params.previous, text=text,
                          truncated=truncated)
