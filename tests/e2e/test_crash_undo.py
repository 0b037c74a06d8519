"""A real ``ooda serve`` killed with SIGKILL while the rollback of an undo is in flight.

After the restart an interrupted undo must finish (its tool is idempotent: the same call with the
same idempotency key) or go to a person with the reason (it is not), never pass for a completed
task with the change still in place.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import yaml

from tests import harness
from tests.e2e.crash_points import WAIT_S, Child, HoldingProxy, free_port, poll_task
from tests.harness import ADMIN, SECOND, running_standin

THROTTLE = """
id: throttle
version: "1"
description: Throttle checkout.
steps:
  - name: throttle
    tool: flags.set
    params: {flag: throttle-checkout, enabled: true, rollout: 50}
    category: write_reversible
    blast_radius: single
autonomy_cap: L2
"""
APPLY = """
id: apply
version: "1"
description: Apply a platform change that a second call reverts.
steps:
  - name: apply
    tool: http.request
    params: {method: POST, url: "{{ vars.platform_api }}/platform/apply", expect_status: [200]}
    category: write_reversible
    blast_radius: single
    rollback:
      tool: http.request
      params: {method: POST, url: "{{ vars.platform_api }}/platform/revert", expect_status: [200]}
autonomy_cap: L2
"""


def config_for(tmp_path, proxy_port: int, playbook: str, name: str):
    folder = tmp_path / "crash-playbooks"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(playbook)
    return harness.test_config(tmp_path, proxy_port, {"playbooks_dir": str(folder), "server": {"port": free_port()}})


async def run_to_completion(http: httpx.AsyncClient, name: str) -> int:
    r = await http.post(f"/api/v1/playbooks/{name}/run", json={"args": {}}, headers=ADMIN)
    assert r.status_code == 202, r.text
    task_id = r.json()["task"]["id"]
    proposal = await poll_task(http, task_id, lambda p: p["state"] not in {"queued", "running", "executing"})
    if proposal["state"] == "needs_approval":
        assert (await http.post(f"/api/v1/tasks/{task_id}/approve", json={}, headers=SECOND)).status_code == 200
    await poll_task(http, task_id, lambda p: p["state"] == "completed")
    return task_id


async def undo_and_kill(child: Child, base: str, task_id: int, proxy: HoldingProxy) -> None:
    """Ask for the undo, wait until its rollback call is in flight, and SIGKILL the server."""
    async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as http:
        undo = asyncio.create_task(http.post(f"/api/v1/tasks/{task_id}/undo", json={}, headers=ADMIN))
        try:
            await asyncio.wait_for(proxy.held.wait(), WAIT_S)
        finally:
            assert await child.kill(signal.SIGKILL) == -signal.SIGKILL
            undo.cancel()
            await asyncio.gather(undo, return_exceptions=True)


async def test_an_undo_interrupted_by_sigkill_finishes_after_restart_with_an_idempotent_rollback(tmp_path):
    async with running_standin() as standin:
        proxy = HoldingProxy(upstream=f"http://127.0.0.1:{standin.port}")
        async with proxy.running() as proxy_port:
            config = config_for(tmp_path, proxy_port, THROTTLE, "throttle")
            base = f"http://127.0.0.1:{harness_port(config)}"
            first = Child(config)
            await first.start()
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                task_id = await run_to_completion(http, "throttle")
            assert standin.flags["throttle-checkout"]["environments"][1]["enabled"] is True
            proxy.arm(lambda method, path: method != "GET" and "throttle-checkout" in path)
            await undo_and_kill(first, base, task_id, proxy)

            second = Child(config)
            await second.start()
            try:
                async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                    proposal = await poll_task(http, task_id, lambda p: p["state"] != "executing")
            finally:
                assert await second.kill(signal.SIGTERM) == 0

    assert proposal["state"] == "completed", proposal["outcome"]
    # Before: the rollback was requeued but never run, and the task passed for completed.
    assert standin.flags["throttle-checkout"]["environments"][1]["enabled"] is False
    assert proposal["outcome"].startswith("Undone by ")
    assert proposal["undo"] == "undone"
    assert proposal["steps"][0]["state"] == "rolled_back"


async def test_an_undo_interrupted_by_sigkill_is_escalated_when_its_rollback_is_not_idempotent(tmp_path):
    proxy = HoldingProxy(local={("POST", "/platform/apply"): 200, ("POST", "/platform/revert"): 200})
    async with proxy.running() as proxy_port:
        config = config_for(tmp_path, proxy_port, APPLY, "apply")
        base = f"http://127.0.0.1:{harness_port(config)}"
        first = Child(config)
        await first.start()
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            task_id = await run_to_completion(http, "apply")
        proxy.arm(lambda method, path: path == "/platform/revert")
        await undo_and_kill(first, base, task_id, proxy)

        second = Child(config)
        await second.start()
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                proposal = await poll_task(http, task_id, lambda p: p["state"] != "executing")
                listed = (await http.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]
        finally:
            assert await second.kill(signal.SIGTERM) == 0

    assert proposal["state"] == "escalated_to_human"
    assert "undo was interrupted" in proposal["outcome"] and "apply (http.request)" in proposal["outcome"]
    assert proposal["undo"] == "undo_escalated"
    assert "not idempotent" in proposal["outcome"]
    assert [t["id"] for t in listed if t["state"] == "escalated_to_human"] == [task_id]
    assert proxy.count("POST", "/platform/revert") == 1  # never sent again


def harness_port(config) -> int:
    return int(yaml.safe_load(config.read_text())["server"]["port"])
