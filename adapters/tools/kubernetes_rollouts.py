"""``k8s.rollout_history``, ``k8s.rollout_restart`` and ``k8s.rollout_undo``: a workload's revisions.

A Deployment's history is its ReplicaSets: each carries the pod template of one revision and the
``deployment.kubernetes.io/revision`` annotation. Undo does what ``kubectl rollout undo
--to-revision`` does (kubectl's ``DeploymentRollbacker``): it copies that ReplicaSet's template,
without the ``pod-template-hash`` label, back into the Deployment with a JSON patch that also
restores the ReplicaSet's annotations; the controller then makes it the newest revision. Restart
does what ``kubectl rollout restart`` does: it stamps ``kubectl.kubernetes.io/restartedAt`` on the
pod template, so the controller replaces every pod under the workload's rollout strategy.

Both writes preview with the API server's own dry run (``dryRun=All``): the server validates and
answers with the object it would store, and stores nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from adapters.tools.kubernetes import (
    CHANGE_CAUSE_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL,
    RESTARTED_AT_ANNOTATION,
    KubernetesApi,
    KubernetesTool,
    Namespace,
    ObjectName,
    Op,
    container_images,
    iso,
    label_selector,
    owned_by,
    revision_of,
)
from adapters.tools.kubernetes_client import k8s
from bot.errors import ToolError
from bot.model.proposals import Category

log = structlog.get_logger(__name__)

# Annotations that describe the Deployment rather than a revision: kept from the Deployment, never
# copied from the ReplicaSet (kubectl's annotationsToSkip).
DEPLOYMENT_OWN_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
})


async def read_deployment(api: KubernetesApi, namespace: str, name: str) -> Any:
    async def read(api_client: k8s.ApiClient) -> Any:
        return await k8s.AppsV1Api(api_client).read_namespaced_deployment(name, namespace,
                                                                          _request_timeout=api.timeout)

    return await api.call(Op("get", "deployment", namespace, name), read)


async def deployment_replicasets(api: KubernetesApi, deployment: Any) -> list[Any]:
    """The ReplicaSets this Deployment controls (matching its selector *and* owned by it)."""
    namespace = deployment.metadata.namespace
    selector = label_selector(deployment.spec.selector)

    async def list_(api_client: k8s.ApiClient) -> Any:
        return await k8s.AppsV1Api(api_client).list_namespaced_replica_set(
            namespace, label_selector=selector, _request_timeout=api.timeout)

    answer = await api.call(Op("list", "replicaset", namespace), list_)
    return [rs for rs in answer.items or [] if owned_by(rs, deployment.metadata.uid)]


class HistoryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    deployment: ObjectName


class RevisionRecord(BaseModel):
    revision: int
    replicaset: str
    images: list[str]
    created: str | None = None
    change_cause: str | None = None


class HistoryResult(BaseModel):
    namespace: str
    deployment: str
    current_revision: int
    revisions: list[RevisionRecord]  # newest first
    previous_revision: int | None = None


class RolloutHistoryTool(KubernetesTool):
    name: ClassVar[str] = "k8s.rollout_history"
    category: ClassVar[Category] = Category.read
    params_model: ClassVar[type[BaseModel]] = HistoryParams
    result_model: ClassVar[type[BaseModel]] = HistoryResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True

    async def run(self, params: HistoryParams, *, dry_run: bool) -> HistoryResult:
        deployment = await read_deployment(self.api, params.namespace, params.deployment)
        records = [
            RevisionRecord(
                revision=number, replicaset=rs.metadata.name, images=container_images(rs.spec.template),
                created=iso(rs.metadata.creation_timestamp),
                change_cause=(rs.metadata.annotations or {}).get(CHANGE_CAUSE_ANNOTATION),
            )
            for rs in await deployment_replicasets(self.api, deployment)
            if (number := revision_of(rs)) is not None
        ]
        records.sort(key=lambda r: r.revision, reverse=True)
        current = revision_of(deployment) or (records[0].revision if records else 0)
        previous = next((r.revision for r in records if r.revision < current), None)
        return HistoryResult(namespace=params.namespace, deployment=params.deployment, current_revision=current,
                             revisions=records, previous_revision=previous)


class RestartParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    kind: Literal["deployment", "statefulset", "daemonset"] = "deployment"
    name: ObjectName


class RestartResult(BaseModel):
    kind: str
    namespace: str
    name: str
    restarted_at: str
    dry_run: bool
    preview: str


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RolloutRestartTool(KubernetesTool):
    name: ClassVar[str] = "k8s.rollout_restart"
    category: ClassVar[Category] = Category.write_irreversible  # the old pods are gone for good
    params_model: ClassVar[type[BaseModel]] = RestartParams
    result_model: ClassVar[type[BaseModel]] = RestartResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = False  # every call replaces every pod once more

    async def run(self, params: RestartParams, *, dry_run: bool) -> RestartResult:
        kind, ns, name = params.kind, params.namespace, params.name
        timeout = self.api.timeout

        def methods(api_client: k8s.ApiClient) -> tuple[Any, Any]:
            apps = k8s.AppsV1Api(api_client)
            return {
                "deployment": (apps.read_namespaced_deployment, apps.patch_namespaced_deployment),
                "statefulset": (apps.read_namespaced_stateful_set, apps.patch_namespaced_stateful_set),
                "daemonset": (apps.read_namespaced_daemon_set, apps.patch_namespaced_daemon_set),
            }[kind]

        async def read(api_client: k8s.ApiClient) -> Any:
            return await methods(api_client)[0](name, ns, _request_timeout=timeout)

        workload = await self.api.call(Op("get", kind, ns, name), read)
        if getattr(workload.spec, "paused", False):
            raise ToolError(f"{kind} {ns}/{name} is paused; resume its rollout first (a paused restart does nothing)")
        restarted_at = now_rfc3339()
        # A dict body makes the client send a strategic merge patch, exactly what kubectl sends.
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: restarted_at}}}}}

        async def apply(api_client: k8s.ApiClient) -> Any:
            extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
            return await methods(api_client)[1](name, ns, patch, _request_timeout=timeout, **extra)

        await self.api.call(Op("patch", kind, ns, name), apply)
        pods = getattr(workload.status, "replicas", None) or getattr(workload.status, "current_number_scheduled", 0)
        change = (f"set spec.template.metadata.annotations[{RESTARTED_AT_ANNOTATION!r}] = {restarted_at!r} on "
                  f"{kind} {ns}/{name}, so its {pods or 0} pod(s) are replaced one by one per its update strategy")
        preview = ("dry run accepted by the API server: would " + change) if dry_run else ("restarted: " + change)
        if not dry_run:
            log.info("k8s.rollout_restart_done", kind=kind, namespace=ns, name=name, restarted_at=restarted_at)
        return RestartResult(kind=kind, namespace=ns, name=name, restarted_at=restarted_at, dry_run=dry_run,
                             preview=preview)


class UndoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace
    deployment: ObjectName
    to_revision: int = Field(ge=1)


class UndoResult(BaseModel):
    namespace: str
    deployment: str
    from_revision: int | None
    to_revision: int
    images_before: list[str]
    images_after: list[str]
    changed: bool  # false when the deployment already runs that revision's template
    dry_run: bool
    preview: str


def without_hash_label(template: dict[str, Any]) -> dict[str, Any]:
    labels = dict(template.get("metadata", {}).get("labels") or {})
    labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return {**template, "metadata": {**template.get("metadata", {}), "labels": labels}}


class RolloutUndoTool(KubernetesTool):
    name: ClassVar[str] = "k8s.rollout_undo"
    category: ClassVar[Category] = Category.write_irreversible
    params_model: ClassVar[type[BaseModel]] = UndoParams
    result_model: ClassVar[type[BaseModel]] = UndoResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = False  # a repeat makes yet another revision

    async def run(self, params: UndoParams, *, dry_run: bool) -> UndoResult:
        ns, name, wanted = params.namespace, params.deployment, params.to_revision
        deployment = await read_deployment(self.api, ns, name)
        if deployment.spec.paused:
            raise ToolError(f"deployment {ns}/{name} is paused; resume its rollout first, then undo")
        sets = await deployment_replicasets(self.api, deployment)
        target = next((rs for rs in sets if revision_of(rs) == wanted), None)
        if target is None:
            known = sorted({r for rs in sets if (r := revision_of(rs)) is not None})
            raise ToolError(
                f"deployment {ns}/{name} has no revision {wanted}; known revisions: "
                f"{', '.join(map(str, known)) or 'none'} (see k8s.rollout_history)"
            )
        api_client = await self.api.client()
        current_template = api_client.sanitize_for_serialization(deployment.spec.template)
        template = without_hash_label(api_client.sanitize_for_serialization(target.spec.template))
        before, after = container_images(deployment.spec.template), container_images(target.spec.template)
        result = UndoResult(namespace=ns, deployment=name, from_revision=revision_of(deployment), to_revision=wanted,
                            images_before=before, images_after=after, changed=False, dry_run=dry_run, preview="")
        if without_hash_label(current_template) == template:
            result.preview = f"deployment {ns}/{name} already runs the template of revision {wanted}; nothing to undo"
            return result

        own = deployment.metadata.annotations or {}
        annotations = {k: v for k, v in own.items() if k in DEPLOYMENT_OWN_ANNOTATIONS}
        annotations |= {k: v for k, v in (target.metadata.annotations or {}).items()
                        if k not in DEPLOYMENT_OWN_ANNOTATIONS}
        # A list body makes the client send a JSON patch: the whole template is replaced, not merged,
        # so containers, env and volumes come back exactly as that revision had them.
        patch = [{"op": "replace", "path": "/spec/template", "value": template},
                 {"op": "replace", "path": "/metadata/annotations", "value": annotations}]

        async def apply(client: k8s.ApiClient) -> Any:
            extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
            return await k8s.AppsV1Api(client).patch_namespaced_deployment(
                name, ns, patch, _request_timeout=self.api.timeout, **extra)

        patched = await self.api.call(Op("patch", "deployment", ns, name), apply)
        result.images_after = container_images(patched.spec.template) or after
        result.changed = True
        change = (f"deployment {ns}/{name} from revision {result.from_revision} "
                  f"({', '.join(before)}) to the template of revision {wanted} ({', '.join(result.images_after)})")
        done = "dry run accepted by the API server: would roll back " if dry_run else "rolled back "
        result.preview = done + change
        if not dry_run:
            log.info("k8s.rollout_undo_done", namespace=ns, deployment=name, from_revision=result.from_revision,
                     to_revision=wanted)
        return result
