"""``k8s.scale``: set a Deployment's or StatefulSet's replica count through its ``scale`` subresource.

The scale subresource is what ``kubectl scale`` and autoscalers use; an RBAC role can grant it
without granting edits of the whole workload. The call writes an absolute count, so repeating it is
harmless (idempotent), and it records the count it replaced so its rollback is another
``k8s.scale`` back to that number.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from adapters.tools.kubernetes import KubernetesTool, Namespace, ObjectName, Op
from adapters.tools.kubernetes_client import k8s
from bot.model.proposals import Category
from bot.ports import StepCall

log = structlog.get_logger(__name__)


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    kind: Literal["deployment", "statefulset"] = "deployment"
    name: ObjectName
    replicas: int = Field(ge=0, le=1000)


class ScaleResult(BaseModel):
    kind: str
    namespace: str
    name: str
    replicas: int
    previous_replicas: int
    changed: bool
    dry_run: bool
    preview: str


class ScaleTool(KubernetesTool):
    name: ClassVar[str] = "k8s.scale"
    category: ClassVar[Category] = Category.write_reversible
    params_model: ClassVar[type[BaseModel]] = ScaleParams
    result_model: ClassVar[type[BaseModel]] = ScaleResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True  # an absolute count: applying it twice ends in the same state

    def rollback_for(self, params: ScaleParams, result: ScaleResult) -> StepCall | None:
        if result.dry_run or not result.changed:
            return None
        return StepCall(tool=self.name, params={"namespace": result.namespace, "kind": result.kind,
                                                "name": result.name, "replicas": result.previous_replicas})

    async def run(self, params: ScaleParams, *, dry_run: bool) -> ScaleResult:
        kind, ns, name, replicas = params.kind, params.namespace, params.name, params.replicas
        timeout = self.api.timeout

        def methods(api_client: k8s.ApiClient) -> tuple[Any, Any]:
            apps = k8s.AppsV1Api(api_client)
            if kind == "statefulset":
                return apps.read_namespaced_stateful_set_scale, apps.patch_namespaced_stateful_set_scale
            return apps.read_namespaced_deployment_scale, apps.patch_namespaced_deployment_scale

        async def read(api_client: k8s.ApiClient) -> Any:
            return await methods(api_client)[0](name, ns, _request_timeout=timeout)

        scale = await self.api.call(Op("get", kind, ns, name, subresource="scale"), read)
        previous = scale.spec.replicas if scale.spec and scale.spec.replicas is not None else 0
        what = f"{kind} {ns}/{name}"
        if previous == replicas:
            return ScaleResult(kind=kind, namespace=ns, name=name, replicas=replicas, previous_replicas=previous,
                               changed=False, dry_run=dry_run, preview=f"{what} already has {replicas} replicas")

        async def apply(api_client: k8s.ApiClient) -> Any:
            extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
            return await methods(api_client)[1](name, ns, {"spec": {"replicas": replicas}},
                                                _request_timeout=timeout, **extra)

        await self.api.call(Op("patch", kind, ns, name, subresource="scale"), apply)
        change = f"{what} from {previous} to {replicas} replicas"
        if not dry_run:
            log.info("k8s.scale_done", kind=kind, namespace=ns, name=name, replicas=replicas, previous=previous)
        return ScaleResult(kind=kind, namespace=ns, name=name, replicas=replicas, previous_replicas=previous,
                           changed=True, dry_run=dry_run,
                           preview=("dry run accepted by the API server: would scale " if dry_run else "scaled ")
                           + change)
