"""A demo Kubernetes API: the few endpoints the ``k8s.*`` tools call, over real HTTP, from memory.

The quick start has no cluster, so the stand-in serves this one (``add_routes``), seeded with a
small story: ``shop/checkout`` crash-looping on revision 5 (one pod OOMKilled, exit 137),
``data/warehouse-loader`` healthy, and the failed job ``batch/nightly-report-29145600``. The tests'
fake API server (``tests/fakes/kubernetes.py``) is this same server with its own seed.

Objects are kept in the JSON shapes the real API returns, so kubernetes_asyncio deserializes them
into its typed models. A tiny "controller" runs after every change: a new pod template makes (or
revives) a ReplicaSet with the next revision and healthy pods, as the deployment controller would
once a rollout finishes, so a verify read after a restart, scale or undo sees the new state.
Patches are applied as JSON merge patches (enough for the annotation and replica fields the tools
change) or as JSON patches; ``?dryRun=All`` answers with the would-be object and changes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

Obj = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

APPS = "/apis/apps/v1/namespaces/{ns}"
CORE = "/api/v1/namespaces/{ns}"
KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet",
         "replicasets": "ReplicaSet", "jobs": "Job", "pods": "Pod"}
API_VERSIONS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
                "ReplicaSet": "apps/v1", "Job": "batch/v1", "Pod": "v1"}
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
           422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}
NODES = ("node-a", "node-b", "node-c")

def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def digest(*parts: str, length: int = 10) -> str:
    """Stable lowercase names (hashes, pod suffixes) so demo objects never change between runs."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for generated names
    number = int(hashlib.sha256("/".join(parts).encode()).hexdigest(), 16)
    out = []
    for _ in range(length):
        number, index = divmod(number, len(alphabet))
        out.append(alphabet[index])
    return "".join(out)


def status_body(code: int, message: str, details: Obj | None = None) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": REASONS.get(code, "Unknown"), "details": details or {}, "code": code}


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class PodState:
    """How one seeded pod looks. Defaults: a running, ready pod that never restarted."""

    name: str | None = None
    ready: bool = True
    phase: str = "Running"
    restarts: int = 0
    waiting_reason: str | None = None  # e.g. CrashLoopBackOff
    terminated_reason: str | None = None  # the current state, for finished pods (a job's Error)
    last_reason: str | None = None  # the last termination, e.g. OOMKilled
    exit_code: int | None = None
    log: str = "ready to serve\n"
    previous_log: str | None = None


@dataclass
class Revision:
    number: int
    image: str
    hash: str | None = None
    change_cause: str | None = None
    age: timedelta = field(default_factory=lambda: timedelta(days=1))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902 ``add``/``replace``/``remove``/``test`` on object members (what kubectl sends)."""
    doc = copy.deepcopy(target)
    for op in operations:
        keys = [k.replace("~1", "/").replace("~0", "~") for k in str(op.get("path", "")).split("/")[1:]]
        if not keys:
            raise ApiError(422, "the JSON patch path must name a field")
        parent = doc
        for key in keys[:-1]:
            if not isinstance(parent.get(key), dict):
                raise ApiError(422, f"the JSON patch path {op['path']} does not exist")
            parent = parent[key]
        last, kind = keys[-1], op.get("op")
        if kind in ("add", "replace"):
            if kind == "replace" and last not in parent:
                raise ApiError(422, f"the JSON patch replaces {op['path']}, which does not exist")
            parent[last] = copy.deepcopy(op.get("value"))
        elif kind == "remove":
            parent.pop(last, None)
        elif kind == "test" and parent.get(last) != op.get("value"):
            raise ApiError(422, f"the JSON patch test of {op['path']} failed")
    return doc


def selector_matches(labels: dict[str, str], selector: str) -> bool:
    """The label-selector query syntax: ``k=v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``, ``k``, ``!k``."""
    depth, start, terms = 0, 0, []
    for index, char in enumerate(selector + ","):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(selector[start:index].strip())
            start = index + 1
    for term in filter(None, terms):
        if " notin " in term or " in " in term:
            key, _, values = term.partition(" notin " if " notin " in term else " in ")
            members = {v.strip() for v in values.strip().strip("()").split(",")}
            if (labels.get(key.strip()) in members) == (" notin " in term):
                return False
        elif "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def template_key(template: Obj) -> str:
    """A template's identity, ignoring the hash label (kubectl's equalIgnoreHash)."""
    stripped = copy.deepcopy(template)
    stripped.get("metadata", {}).get("labels", {}).pop(HASH_LABEL, None)
    return json.dumps(stripped, sort_keys=True)


class KubernetesCluster:
    """In-memory cluster state plus the API handlers. ``token=None`` accepts any bearer token."""

    def __init__(self, token: str | None = None, now: Callable[[], datetime] | None = None) -> None:
        self.token = token
        # Seeded ages count back from the clock, and changes made later carry their real time.
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC).replace(microsecond=0))
        self.objects: dict[tuple[str, str, str], Obj] = {}  # (Kind, namespace, name) -> object
        self.events: list[Obj] = []
        self.logs: dict[tuple[str, str, str], dict[str, str | None]] = {}  # (ns, pod, container)
        self.requests: list[Obj] = []
        self._failures: list[list[Any]] = []  # [path prefix, status, times left]
        self._version = 1000
        self._serial = 0  # for generated pod names

    # ----- test and demo controls ---------------------------------------------------------------

    def fail_next(self, status: int, path_prefix: str = "/", times: int = 1) -> None:
        """Answer the next ``times`` requests under ``path_prefix`` with ``status`` (a Status body)."""
        self._failures.append([path_prefix, status, times])

    def get(self, kind: str, namespace: str, name: str) -> Obj:
        return self.objects[(kind, namespace, name)]

    def of_kind(self, kind: str, namespace: str) -> Iterator[Obj]:
        for (k, ns, _), obj in sorted(self.objects.items()):
            if k == kind and ns == namespace:
                yield obj

    def _meta(self, kind: str, namespace: str, name: str, age: timedelta, **extra: Any) -> Obj:
        self._version += 1
        uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{namespace}/{name}"))
        return {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": str(self._version),
                "creationTimestamp": iso(self.now() - age), **extra}

    def _store(self, obj: Obj) -> Obj:
        kind, meta = obj["kind"], obj["metadata"]
        obj["apiVersion"] = API_VERSIONS[kind]
        self.objects[(kind, meta["namespace"], meta["name"])] = obj
        return obj

    def _owner(self, owner: Obj) -> list[Obj]:
        return [{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
                 "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]

    def add_pod(self, owner: Obj, labels: dict[str, str], template: Obj, state: PodState | None = None) -> Obj:
        state = state or PodState()
        ns, index = owner["metadata"]["namespace"], self._serial
        self._serial += 1
        name = state.name or f"{owner['metadata']['name']}-{digest(owner['metadata']['name'], str(index), length=5)}"
        containers = copy.deepcopy(template["spec"]["containers"])
        statuses = []
        for container in containers:
            status: Obj = {"name": container["name"], "image": container["image"], "imageID": "",
                           "ready": state.ready, "restartCount": state.restarts, "started": state.ready,
                           "state": {"running": {"startedAt": iso(self.now() - timedelta(minutes=3))}}, "lastState": {}}
            if state.waiting_reason:
                message = f"back-off 5m0s restarting failed container={container['name']}"
                status["state"] = {"waiting": {"reason": state.waiting_reason, "message": message}}
            if state.terminated_reason:
                status["state"] = {"terminated": {"reason": state.terminated_reason, "exitCode": state.exit_code or 1,
                                                  "finishedAt": iso(self.now() - timedelta(minutes=20))}}
            elif state.last_reason:
                status["lastState"] = {"terminated": {"reason": state.last_reason, "exitCode": state.exit_code or 1,
                                                      "startedAt": iso(self.now() - timedelta(minutes=6)),
                                                      "finishedAt": iso(self.now() - timedelta(minutes=4))}}
            statuses.append(status)
            self.logs[(ns, name, container["name"])] = {"current": state.log, "previous": state.previous_log}
        ready = "True" if state.ready else "False"
        return self._store({
            "kind": "Pod",
            "metadata": self._meta("Pod", ns, name, timedelta(hours=2), labels=dict(labels),
                                   ownerReferences=self._owner(owner)),
            "spec": {"nodeName": NODES[index % len(NODES)], "containers": containers, "restartPolicy": "Always"},
            "status": {"phase": state.phase, "conditions": [{"type": "Ready", "status": ready}],
                       "podIP": f"10.42.{index % 250}.{10 + index % 200}", "containerStatuses": statuses},
        })

    def add_deployment(self, namespace: str, name: str, revisions: list[Revision], *, replicas: int = 3,
                       pods: list[PodState] | None = None, container: str | None = None) -> Obj:
        """A deployment with one ReplicaSet per revision; the newest runs ``pods`` (default: healthy)."""
        labels = {"app": name}
        newest = max(revisions, key=lambda r: r.number)
        deployment = self._store({
            "kind": "Deployment",
            "metadata": self._meta("Deployment", namespace, name, timedelta(days=90), generation=newest.number,
                                   labels=dict(labels), annotations={REVISION: str(newest.number)}),
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "template": self._template(labels, container or name, newest.image),
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                     "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
            "status": {},
        })
        for revision in sorted(revisions, key=lambda r: r.number):
            rs = self._add_replicaset(deployment, self._template(labels, container or name, revision.image),
                                      revision.number, revision.hash, revision.age, revision.change_cause)
            if revision is newest:
                rs["spec"]["replicas"] = replicas
                for state in pods if pods is not None else [PodState() for _ in range(replicas)]:
                    self.add_pod(rs, rs["spec"]["template"]["metadata"]["labels"], rs["spec"]["template"], state)
        self._refresh_deployment(deployment)
        return deployment

    def _template(self, labels: dict[str, str], container: str, image: str) -> Obj:
        return {"metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": container, "image": image,
                                         "resources": {"limits": {"memory": "512Mi"}, "requests": {"cpu": "250m"}}}]}}

    def _add_replicaset(self, deployment: Obj, template: Obj, revision: int, pod_hash: str | None,
                        age: timedelta, change_cause: str | None = None) -> Obj:
        ns, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        pod_hash = pod_hash or digest(name, template_key(template))
        template = copy.deepcopy(template)
        template["metadata"].setdefault("labels", {})[HASH_LABEL] = pod_hash
        annotations = {REVISION: str(revision)} | ({"kubernetes.io/change-cause": change_cause} if change_cause else {})
        selector = dict(deployment["spec"]["selector"]["matchLabels"]) | {HASH_LABEL: pod_hash}
        return self._store({
            "kind": "ReplicaSet",
            "metadata": self._meta("ReplicaSet", ns, f"{name}-{pod_hash}", age,
                                   labels=dict(template["metadata"]["labels"]), annotations=annotations,
                                   ownerReferences=self._owner(deployment)),
            "spec": {"replicas": 0, "selector": {"matchLabels": selector}, "template": template},
            "status": {"replicas": 0},
        })

    def add_job(self, namespace: str, name: str, image: str, *, pods: list[PodState], backoff_limit: int = 2,
                failed_reason: str | None = "BackoffLimitExceeded") -> Obj:
        meta = self._meta("Job", namespace, name, timedelta(hours=3))
        labels = {"batch.kubernetes.io/controller-uid": meta["uid"], "batch.kubernetes.io/job-name": name,
                  "controller-uid": meta["uid"], "job-name": name}
        template = self._template(labels, name.rsplit("-", 1)[0], image)
        template["spec"]["restartPolicy"] = "Never"
        failed = sum(1 for p in pods if p.phase == "Failed")
        conditions = [] if failed_reason is None else [{
            "type": "Failed", "status": "True", "reason": failed_reason,
            "message": "Job has reached the specified backoff limit",
            "lastTransitionTime": iso(self.now() - timedelta(minutes=20))}]
        job = self._store({
            "kind": "Job", "metadata": meta,
            "spec": {"completions": 1, "parallelism": 1, "backoffLimit": backoff_limit,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}},
                     "template": template},
            "status": {"failed": failed, "succeeded": 0, "active": 0, "ready": 0, "conditions": conditions,
                       "startTime": iso(self.now() - timedelta(hours=3))},
        })
        for state in pods:
            self.add_pod(job, labels, template, state)
        return job

    def add_event(self, namespace: str, kind: str, name: str, reason: str, message: str, *,
                  type_: str = "Normal", count: int = 1, age: timedelta = timedelta(minutes=1)) -> Obj:
        at = iso(self.now() - age)
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": self._meta("Event", namespace, f"{name}.{digest(name, reason, str(len(self.events)))}",
                                        age),
                 "involvedObject": {"kind": kind, "namespace": namespace, "name": name,
                                    "apiVersion": API_VERSIONS.get(kind, "v1")},
                 "reason": reason, "message": message, "type": type_, "count": count,
                 "firstTimestamp": at, "lastTimestamp": at, "source": {"component": "kubelet"}}
        self.events.append(event)
        return event

    # ----- the "controller" -----------------------------------------------------------------

    def _owned(self, kind: str, owner: Obj) -> list[Obj]:
        uid = owner["metadata"]["uid"]
        return [o for o in self.of_kind(kind, owner["metadata"]["namespace"])
                if any(ref["uid"] == uid for ref in o["metadata"].get("ownerReferences", []))]

    def _delete_pods(self, owner: Obj, keep: int = 0) -> None:
        # Unready pods go first, as the ReplicaSet controller picks them for deletion.
        pods = sorted(self._owned("Pod", owner), key=lambda p: p["status"]["conditions"][0]["status"] == "True")
        for pod in pods[: max(0, len(pods) - keep)]:
            del self.objects[("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"])]

    def _scale_pods(self, owner: Obj, template: Obj, replicas: int) -> None:
        self._delete_pods(owner, keep=replicas)
        for _ in range(replicas - len(self._owned("Pod", owner))):
            self.add_pod(owner, template["metadata"].get("labels", {}), template)

    def _rollout(self, before: Obj, after: Obj) -> None:
        """What the controllers do once a change of ``spec`` has settled."""
        if before["spec"] == after["spec"]:
            return
        after["metadata"]["generation"] = after["metadata"].get("generation", 1) + 1
        template, replicas = after["spec"]["template"], after["spec"].get("replicas", 1)
        if after["kind"] != "Deployment":
            if before["spec"]["template"] != template:
                self._delete_pods(after)
            self._scale_pods(after, template, replicas if after["kind"] == "StatefulSet" else len(NODES))
            after["status"].update(observedGeneration=after["metadata"]["generation"], replicas=replicas,
                                   readyReplicas=replicas, updatedReplicas=replicas, availableReplicas=replicas)
            return
        sets = self._owned("ReplicaSet", after)
        current = next((rs for rs in sets if template_key(rs["spec"]["template"]) == template_key(template)), None)
        if current is None:
            current = self._add_replicaset(after, template, 0, None, timedelta(0))
        new_template = before["spec"]["template"] != template
        if new_template:
            revision = 1 + max(int(rs["metadata"]["annotations"].get(REVISION, "0"))
                               for rs in self._owned("ReplicaSet", after))
            current["metadata"]["annotations"][REVISION] = str(revision)
            after["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
            self._delete_pods(current)  # a revived old ReplicaSet starts fresh pods
        self._scale_replicaset(after, current, replicas)
        for rs in sets:
            if new_template and rs is not current and rs["spec"]["replicas"]:
                self._scale_replicaset(after, rs, 0)
        self._refresh_deployment(after)

    def _scale_replicaset(self, deployment: Obj, rs: Obj, replicas: int) -> None:
        was, meta = rs["spec"]["replicas"], deployment["metadata"]
        if was != replicas:
            direction = "up" if replicas >= was else "down"
            self.add_event(meta["namespace"], "Deployment", meta["name"], "ScalingReplicaSet",
                           f"Scaled {direction} replica set {rs['metadata']['name']} from {was} to {replicas}",
                           age=timedelta(0))
        rs["spec"]["replicas"] = replicas
        self._scale_pods(rs, rs["spec"]["template"], replicas)

    def _refresh_deployment(self, deployment: Obj) -> None:
        revision = deployment["metadata"].get("annotations", {}).get(REVISION)
        sets = self._owned("ReplicaSet", deployment)
        pods = [p for rs in sets for p in self._owned("Pod", rs)]
        updated = [p for rs in sets if rs["metadata"]["annotations"].get(REVISION) == revision
                   for p in self._owned("Pod", rs)]
        ready = sum(1 for p in pods if p["status"]["conditions"][0]["status"] == "True")
        desired = deployment["spec"]["replicas"]
        available = "True" if ready >= desired - desired // 4 else "False"
        deployment["status"] = {
            "observedGeneration": deployment["metadata"].get("generation", 1), "replicas": len(pods),
            "updatedReplicas": len(updated), "readyReplicas": ready, "availableReplicas": ready,
            "unavailableReplicas": max(0, desired - ready),
            "conditions": [
                {"type": "Available", "status": available,
                 "reason": "MinimumReplicasAvailable" if available == "True" else "MinimumReplicasUnavailable",
                 "message": "Deployment has minimum availability." if available == "True"
                 else "Deployment does not have minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": f'ReplicaSet "{deployment["metadata"]["name"]}" has successfully progressed.'},
            ],
        }

    # ----- HTTP ------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        workloads = APPS + "/{plural:deployments|statefulsets|daemonsets}/{name}"
        app.router.add_get(workloads, self._wrap(self.read_workload))
        app.router.add_patch(workloads, self._wrap(self.patch_workload))
        scale = APPS + "/{plural:deployments|statefulsets}/{name}/scale"
        app.router.add_get(scale, self._wrap(self.read_scale))
        app.router.add_patch(scale, self._wrap(self.patch_scale))
        app.router.add_get(APPS + "/{plural:replicasets}", self._wrap(self.list_objects))
        app.router.add_get("/apis/batch/v1/namespaces/{ns}/{plural:jobs}/{name}", self._wrap(self.read_workload))
        app.router.add_get(CORE + "/{plural:pods}", self._wrap(self.list_objects))
        app.router.add_get(CORE + "/{plural:pods}/{name}", self._wrap(self.read_workload))
        app.router.add_get(CORE + "/pods/{name}/log", self._wrap(self.read_log))
        app.router.add_get(CORE + "/events", self._wrap(self.list_events))

    def _wrap(self, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                                  "content_type": request.content_type, "body": body})
            # No token configured: the demo guards nothing (the quick start's tools send none).
            given = request.headers.get("Authorization", "")
            token_ok = self.token is None or hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())
            if not token_ok:
                return web.json_response(status_body(401, "Unauthorized"), status=401)
            for failure in self._failures:
                if request.path.startswith(failure[0]) and failure[2] > 0:
                    failure[2] -= 1
                    return web.json_response(self._injected(request, failure[1]), status=failure[1])
            try:
                return await handler(request)
            except ApiError as exc:
                return web.json_response(status_body(exc.code, str(exc)), status=exc.code)
        return handle

    def _injected(self, request: web.Request, code: int) -> Obj:
        info = request.match_info
        plural, name, ns = info.get("plural", "pods"), info.get("name", ""), info.get("ns", "")
        group = "" if request.path.startswith("/api/v1") else request.path.split("/")[2]
        resource = f"{plural}.{group}" if group else plural
        if code == 403:
            sub = "/" + request.path.rsplit("/", 1)[1] if request.path.endswith(("/scale", "/log")) else ""
            return status_body(403, f'{resource} "{name}" is forbidden: User "system:serviceaccount:ooda:ooda-bot" '
                                    f'cannot {VERBS.get(request.method, "get")} resource "{plural}{sub}" in API group '
                                    f'"{group}" in the namespace "{ns}"')
        if code == 404:
            return status_body(404, f'{resource} "{name}" not found', {"name": name, "kind": plural})
        if code == 409:
            return status_body(409, f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                                    "modified; please apply your changes to the latest version and try again")
        return status_body(code, "the server is currently unable to handle the request")

    def _find(self, request: web.Request, plural: str | None = None) -> Obj:
        plural = plural or request.match_info["plural"]
        key = (KINDS[plural], request.match_info["ns"], request.match_info["name"])
        if key not in self.objects:
            group = "" if plural in ("pods",) else (".batch" if plural == "jobs" else ".apps")
            raise ApiError(404, f'{plural}{group} "{key[2]}" not found')
        return self.objects[key]

    async def read_workload(self, request: web.Request) -> web.Response:
        return web.json_response(self._find(request))

    async def list_objects(self, request: web.Request) -> web.Response:
        kind = KINDS[request.match_info["plural"]]
        selector = request.query.get("labelSelector", "")
        items = [o for o in self.of_kind(kind, request.match_info["ns"])
                 if selector_matches(o["metadata"].get("labels", {}), selector)]
        return web.json_response({"apiVersion": API_VERSIONS[kind], "kind": f"{kind}List",
                                  "metadata": {"resourceVersion": str(self._version)}, "items": items})

    def _apply_patch(self, request: web.Request, obj: Obj, body: Any) -> Obj:
        if request.content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "a JSON patch must be a list of operations")
            return json_patch(obj, body)
        if request.content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise ApiError(400, "a merge patch must be a JSON object")
            patched: Obj = merge_patch(copy.deepcopy(obj), body)
            return patched
        raise ApiError(415, f"the patch content type {request.content_type!r} is not supported")

    def _commit(self, request: web.Request, before: Obj, after: Obj) -> Obj:
        if after["metadata"]["name"] != before["metadata"]["name"]:
            raise ApiError(422, "metadata.name cannot change")
        if request.query.get("dryRun") == "All":
            if before["spec"] != after["spec"]:
                after["metadata"]["generation"] = before["metadata"].get("generation", 1) + 1
            return after
        self._version += 1
        after["metadata"]["resourceVersion"] = str(self._version)
        self._rollout(before, after)
        self._store(after)
        return after

    async def patch_workload(self, request: web.Request) -> web.Response:
        before = self._find(request)
        after = self._apply_patch(request, before, await request.json())
        return web.json_response(self._commit(request, before, after))

    def _scale(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
                "spec": {"replicas": obj["spec"].get("replicas", 1)},
                "status": {"replicas": obj["status"].get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items())}}

    async def read_scale(self, request: web.Request) -> web.Response:
        return web.json_response(self._scale(self._find(request)))

    async def patch_scale(self, request: web.Request) -> web.Response:
        before = self._find(request)
        scale = self._apply_patch(request, self._scale(before), await request.json())
        replicas = scale.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, f"spec.replicas: Invalid value: {replicas!r}: must be greater than or equal to 0")
        after = copy.deepcopy(before)
        after["spec"]["replicas"] = replicas
        return web.json_response(self._scale(self._commit(request, before, after)))

    async def read_log(self, request: web.Request) -> web.Response:
        pod = self._find(request, "pods")
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = request.query.get("container") or (names[0] if len(names) == 1 else None)
        if container is None:
            raise ApiError(400, f"a container name must be specified for pod {pod['metadata']['name']}, "
                                f"choose one of: [{' '.join(names)}]")
        if container not in names:
            raise ApiError(400, f"container {container} is not valid for pod {pod['metadata']['name']}")
        logs = self.logs.get((request.match_info["ns"], pod["metadata"]["name"], container), {})
        # Go's strconv.ParseBool, as the API server parses it (the Python client sends "True").
        previous = request.query.get("previous", "") in ("1", "t", "T", "true", "TRUE", "True")
        text = logs.get("previous") if previous else logs.get("current")
        if text is None:
            raise ApiError(400, f'previous terminated container "{container}" in pod "{pod["metadata"]["name"]}" '
                                "not found")
        if "tailLines" in request.query:
            text = "".join(text.splitlines(keepends=True)[-int(request.query["tailLines"]):])
        data = text.encode()
        if "limitBytes" in request.query:
            data = data[: int(request.query["limitBytes"])]
        return web.Response(body=data, content_type="text/plain")

    async def list_events(self, request: web.Request) -> web.Response:
        items = [e for e in self.events if e["metadata"]["namespace"] == request.match_info["ns"]]
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0) or len(items)
        page, rest = items[start:start + limit], start + limit < len(items)
        return web.json_response({"apiVersion": "v1", "kind": "EventList", "items": page,
                                  "metadata": {"resourceVersion": str(self._version),
                                               **({"continue": str(start + limit)} if rest else {})}})


KUBERNETES_CLUSTER: web.AppKey[KubernetesCluster] = web.AppKey("kubernetes_cluster", KubernetesCluster)


def seed_demo(cluster: KubernetesCluster) -> None:
    """The demo story the shipped playbooks and the quick start tell."""
    crashing = "checkout-6f9c7b8d5-x7k2p"
    cluster.add_deployment("shop", "checkout", [
        Revision(4, "registry.example.com/shop/checkout:2.41.0", "5d8b7c9f4", "release 2.41.0", timedelta(days=6)),
        Revision(5, "registry.example.com/shop/checkout:2.42.0", "6f9c7b8d5", "release 2.42.0", timedelta(hours=2)),
    ], replicas=3, pods=[
        PodState(), PodState(),
        PodState(name=crashing, ready=False, restarts=14, waiting_reason="CrashLoopBackOff",
                 last_reason="OOMKilled", exit_code=137, log=CHECKOUT_STARTING, previous_log=CHECKOUT_CRASH),
    ])
    cluster.add_event("shop", "Deployment", "checkout", "ScalingReplicaSet",
                      "Scaled up replica set checkout-6f9c7b8d5 to 3", age=timedelta(hours=2))
    cluster.add_event("shop", "Pod", crashing, "OOMKilling",
                      "Memory cgroup out of memory: Killed process 3121 (java) total-vm:2871044kB",
                      type_="Warning", count=14, age=timedelta(minutes=4))
    cluster.add_event("shop", "Pod", crashing, "BackOff",
                      f"Back-off restarting failed container checkout in pod {crashing}_shop",
                      type_="Warning", count=57, age=timedelta(minutes=1))
    # A rollout that stopped: revision 8's image cannot be pulled, so its new pod never starts.
    cluster.add_deployment("payments", "ledger", [
        Revision(7, "registry.example.com/payments/ledger:5.3.1", "7b9d8c6f5", "release 5.3.1", timedelta(days=9)),
        Revision(8, "registry.example.com/payments/ledger:5.4.0", "5f6c9d7b8", "release 5.4.0", timedelta(minutes=40)),
    ], replicas=2, pods=[
        PodState(), PodState(ready=False, phase="Pending", waiting_reason="ImagePullBackOff"),
    ])
    cluster.add_event("payments", "Deployment", "ledger", "ProgressDeadlineExceeded",
                      'ReplicaSet "ledger-5f6c9d7b8" has timed out progressing.', type_="Warning",
                      age=timedelta(minutes=25))
    cluster.add_deployment("data", "warehouse-loader", [
        Revision(11, "registry.example.com/data/warehouse-loader:1.8.2", age=timedelta(days=20)),
        Revision(12, "registry.example.com/data/warehouse-loader:1.9.0", age=timedelta(days=3)),
    ], replicas=2, container="consumer")
    failed = [PodState(ready=False, phase="Failed", terminated_reason="Error", exit_code=1, log=REPORT_CRASH)
              for _ in range(3)]
    job = cluster.add_job("batch", "nightly-report-29145600", "registry.example.com/batch/nightly-report:3.2.1",
                          pods=failed)
    cluster.add_event("batch", "Job", job["metadata"]["name"], "BackoffLimitExceeded",
                      "Job has reached the specified backoff limit", type_="Warning", age=timedelta(minutes=20))


def add_routes(app: web.Application, cluster: KubernetesCluster | None = None, *, token: str | None = None) -> None:
    """Serve the Kubernetes API subset on ``app``; the cluster is kept as ``app[KUBERNETES_CLUSTER]``.

    Args:
        app: the stand-in's application (not yet started).
        cluster: the state to serve; by default a fresh demo cluster (``seed_demo``).
        token: the bearer token to require; None accepts every request (the demo guards nothing).
    """
    if cluster is None:
        cluster = KubernetesCluster(token=token)
        seed_demo(cluster)
    cluster.routes(app)
    app[KUBERNETES_CLUSTER] = cluster


CHECKOUT_STARTING = "2024-06-01T09:14:02Z INFO  Starting CheckoutApplication v2.42.0 using Java 21.0.3\n"
CHECKOUT_CRASH = """\
2024-06-01T09:09:41Z INFO  Starting CheckoutApplication v2.42.0 using Java 21.0.3
2024-06-01T09:09:48Z INFO  PromotionCache warming 1843211 promotions from pricing-db
2024-06-01T09:10:55Z WARN  GC overhead 87% over the last 30s (heap 498Mi of 512Mi)
2024-06-01T09:11:02Z ERROR Unhandled exception in request POST /api/checkout (trace 7f3a9c2e1b)
java.lang.OutOfMemoryError: Java heap space
\tat java.base/java.util.Arrays.copyOf(Arrays.java:3537)
\tat java.base/java.util.ArrayList.grow(ArrayList.java:237)
\tat com.example.shop.pricing.PromotionCache.loadAll(PromotionCache.java:142)
\tat com.example.shop.pricing.PromotionCache.refresh(PromotionCache.java:97)
\tat com.example.shop.checkout.CartPricer.price(CartPricer.java:64)
\tat com.example.shop.checkout.CheckoutController.submit(CheckoutController.java:88)
2024-06-01T09:11:04Z WARN  GC overhead 96% over the last 30s (heap 511Mi of 512Mi)
"""
REPORT_CRASH = """\
2024-06-01T02:00:04Z INFO  nightly-report: building report for 2024-05-31
Traceback (most recent call last):
  File "/app/report/main.py", line 41, in <module>
    rows = fetch_orders(day)
  File "/app/report/queries.py", line 77, in fetch_orders
    cursor.execute(ORDERS_BY_DAY, {"day": day})
psycopg.errors.QueryCanceled: canceling statement due to statement timeout
"""
