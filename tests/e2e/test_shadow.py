"""Shadow mode through the real loop: live alerts in, proposals recorded, no write tool ever called,
and the report set beside what people did, on the example config with the stand-in."""

from __future__ import annotations

import copy
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.chat.digest_text import DigestSection
from bot.evaluation.runner import SuiteClock
from bot.loop.gateway import ToolCallRefused
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from tests.harness import ADMIN as ADMIN_HEADERS
from tests.harness import AM, ROOT, client, running_app, running_standin

# A Tuesday morning, inside the example config's prod change window.
DAYTIME_START = datetime(2026, 5, 12, 9, 15, tzinfo=UTC)
ADMIN = Actor(id="local-admin", display="Local admin", roles=frozenset({"admin", "oncall", "sre", "sre-lead"}),
              via="cli")
CRASHLOOP = json.loads((ROOT / "incidents" / "08-kube-crashloop-checkout.json").read_text())
REPLICAS = json.loads((ROOT / "incidents" / "16-kube-deployment-replicas-mismatch.json").read_text())
# Every level raised to L4: the policy alone would let the restart run without anyone.
L4_POLICY = {"policy": {"autonomy_ceiling": "L4", "environments": {"prod": {"autonomy_cap": "L4"},
                                                                   "dev": {"autonomy_cap": "L4"}}}}


class Spy:
    """A configured tool with every call to ``run`` counted; everything else is the tool's own."""

    def __init__(self, tool: Any, calls: list[str]) -> None:
        self._tool, self._calls = tool, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tool, name)

    async def run(self, params: Any, *, dry_run: bool) -> Any:
        self._calls.append(f"{self._tool.name}{' (dry run)' if dry_run else ''}")
        return await self._tool.run(params, dry_run=dry_run)


def shadow_playbooks(tmp_path: Path, **edit: Any) -> Path:
    folder = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", folder)
    path = folder / "kube-pod-crashlooping.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "mode": "shadow", **edit}, sort_keys=False))
    return folder


def alert(body: dict[str, Any], *, workload: str | None = None, resolved: bool = False) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for a in body["alerts"]:
        if workload:
            a["labels"]["pod"] = a["labels"]["pod"].replace("checkout", workload)
            a["labels"]["container"] = workload
            a["fingerprint"] = f"{workload}0000000000"[:16]
        if resolved:
            a["status"], a["endsAt"] = "resolved", "2026-05-12T09:20:00Z"
    body["status"] = body["alerts"][0]["status"]
    return body


async def test_a_shadow_playbook_never_calls_a_write_tool_even_at_l4(tmp_path):
    calls: list[str] = []
    clock = SuiteClock(DAYTIME_START)
    overrides = {**L4_POLICY, "playbooks_dir": str(shadow_playbooks(tmp_path, autonomy_cap="L4"))}
    async with running_standin() as standin, \
            running_app(tmp_path, standin, overrides, clock=clock,
                        wrap_tools=lambda tools: [Spy(t, calls) for t in tools]) as app, client(app) as http:
        assert (await http.post("/webhooks/alertmanager", json=CRASHLOOP, headers=AM)).status_code == 202
        await app.engine.wait_idle()
        await app.notifier.wait_idle()
        [task] = await app.store.list_tasks(open_only=False)
        [restart] = await app.store.steps_of_task(task.id, "step")

        # Recorded, decided with the policy's own answer kept, and nothing written anywhere.
        assert task.state is TaskState.completed
        assert task.outcome == "shadow: proposed restart (allow); nothing ran"
        assert task.proposal["shadow"] is True
        assert restart.state == "denied"
        assert restart.decision["rule"] == "shadow:kube-pod-crashlooping"
        assert restart.decision["shadow_of"]["verdict"] == "allow"
        assert restart.decision["shadow_of"]["rule"] == "autonomy:L4:auto_irreversible"
        writes = {t.name for t in app.core.gateway.registry._tools.values() if t.category.writes}
        assert calls and not [c for c in calls if c.split(" ")[0] in writes]

        # The gateway decides at call time, whatever its caller claims: the write forced back in
        # (the task moved to executing, the step's decision forged to allow) is refused in shadow mode.
        forged = restart.model_copy(update={"decision": {"verdict": "allow", "rule": "autonomy:L4:auto_irreversible",
                                                         "reason": ""}})
        await app.store.transact(lambda t: t.set_state(task.id, TaskState.completed, TaskState.executing,
                                                       actor="forger"))
        with pytest.raises(ToolCallRefused, match="shadow"):
            await app.core.gateway.write(task, forged, timeout_s=5, retries=0)
        assert not [c for c in calls if c.startswith("k8s.rollout_restart")]

        # Switched off (audited), the same playbook acts under the policy again.
        await app.commands.set_shadow("kube-pod-crashlooping", False, ADMIN)
        audit = [row async for row in app.store.audit_rows()]
        assert any("playbook.shadow_off" in row and "local-admin" in row for row in audit)
        assert (await http.post("/webhooks/alertmanager", json=alert(CRASHLOOP, workload="cart"),
                                headers=AM)).status_code == 202
        await app.engine.wait_idle()
        acting = [t for t in await app.store.list_tasks(open_only=False) if t.id != task.id]
        assert acting and not (acting[0].proposal or {}).get("shadow")


async def _ignore(record: dict[str, Any]) -> None:
    return None


async def test_the_shadow_report_matches_what_the_store_holds(tmp_path):
    clock = SuiteClock(DAYTIME_START)
    overrides = {"playbooks_dir": str(shadow_playbooks(tmp_path))}
    async with running_standin() as standin, running_app(tmp_path, standin, overrides, clock=clock) as app, \
            client(app) as http:
        async def post(body: dict[str, Any]) -> None:
            assert (await http.post("/webhooks/alertmanager", json=body, headers=AM)).status_code == 202
            await app.engine.wait_idle()

        # checkout: the shadow proposes a restart; people approve the rollback of another playbook.
        await post(CRASHLOOP)
        await post(REPLICAS)
        people = next(t for t in await app.store.list_tasks(open_only=False)
                      if t.playbook_id == "kube-deployment-replicas")
        await app.commands.approve(people.id, ADMIN)
        await app.engine.wait_idle()
        # search: the shadow proposes a restart; the alert resolves with nobody acting.
        await post(alert(CRASHLOOP, workload="search"))
        await post(alert(CRASHLOOP, workload="search", resolved=True))
        # cart: the shadow proposes a restart; nobody has done anything yet.
        await post(alert(CRASHLOOP, workload="cart"))

        response = await http.get("/api/v1/shadow/report?days=1", headers=ADMIN_HEADERS)
        assert response.status_code == 200
        [row] = response.json()["playbooks"]
        assert row == {"playbook": "kube-pod-crashlooping", "incidents": 3, "proposals": 3, "judged": 2,
                       "agreed": 1, "same_tool": 0, "would_violate": 0, "agreement": 0.5, "violations": [],
                       "people": {"acted": 1, "resolved by itself": 1, "nothing yet": 1}}
        digest = await app.commands.digest()
        assert DigestSection("Shadow playbooks", ["kube-pod-crashlooping 3 seen, 3 proposed, agreed 1/2"]) \
            in digest.sections
        assert "\n  kube-pod-crashlooping 3 seen, 3 proposed, agreed 1/2" in digest.text
        bad = await http.get("/api/v1/shadow/report?days=0", headers=ADMIN_HEADERS)
        assert bad.status_code == 400
