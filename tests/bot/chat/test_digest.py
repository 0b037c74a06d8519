"""The daily digest built from a real store after a day of real work."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.chat.digest import build_digest
from bot.model.tasks import TaskState
from bot.policy.identity import Actor
from demo.standin import new_feature
from tests.harness import ADMIN, AM, client, running_app, running_standin

REQUESTER = Actor(id="runner", display="Runner", roles=frozenset({"operator"}), via="api")
APPROVER = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead", "oncall"}), via="api")


def alerts(name: str, count: int) -> dict:
    return {"receiver": "ooda", "status": "firing", "version": "4", "groupKey": "{}", "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "alerts": [
                {"status": "firing", "labels": {"alertname": name, "instance": f"h{n}"}, "annotations": {},
                 "startsAt": "2026-01-05T14:21:47.903Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"{name}-{n}"}
                for n in range(count)]}


async def spike(app, service: str) -> int:
    task = await app.commands.run_playbook("http-5xx-ratio", {"service": service}, REQUESTER)
    await app.engine.wait_idle()
    await app.commands.approve(task.id, APPROVER)
    await app.engine.wait_idle()
    return task.id


async def test_the_digest_after_a_day_of_real_work(tmp_path):
    # The example limits http-5xx-ratio to 3 runs an hour, counted in executed steps: two runs of
    # its two steps would pass it.
    limits = {"policy": {"rate_limits": {"playbooks": {"http-5xx-ratio": {"max": 10, "per_s": 3600}}}}}
    async with running_standin() as standin, running_app(tmp_path, standin, limits) as app, client(app) as http:
        ok = await spike(app, "checkout")
        standin.flags["throttle-cart"] = new_feature("throttle-cart")
        standin.fail_next("/platform/services/cart/rollback", status=500)
        failed = await spike(app, "cart")
        assert (await app.store.get_task(ok)).state is TaskState.completed
        assert (await app.store.get_task(failed)).state is TaskState.failed_terminal
        for name, count in (("DiskFullNoPlaybook", 3), ("FlappyNoPlaybook", 1)):
            assert (await http.post("/webhooks/alertmanager", json=alerts(name, count), headers=AM)).status_code == 202
        await app.engine.wait_idle()

        digest = await app.commands.digest()
        via_api = (await http.get("/api/v1/digest", headers=ADMIN)).json()

    figures = digest.figures
    assert {k: v[-1] for k, v in figures.tasks.items()} == {
        "opened": 2, "completed": 1, "failed": 1, "rejected": 0, "escalated": 0, "undone": 0}
    assert figures.time_to_approval.count[-1] == 2 and figures.time_to_resolution.count[-1] == 1
    assert figures.mttr[-1] is not None and figures.mtta[-1] is not None
    # throttle runs automatically at L2, roll_back_deploy waits for a person: 2 of 4 write steps.
    assert figures.automatic_steps == {"L2": ([0] * 6 + [2], [0] * 6 + [4])}
    assert figures.approvals_by_person == {"Lead": [0] * 6 + [2]}
    assert list(figures.noisiest_alerts.items())[:2] == [("DiskFullNoPlaybook", [0] * 6 + [3]),
                                                         ("FlappyNoPlaybook", [0] * 6 + [1])]
    text = digest.text
    assert text.startswith("Ooda digest: the 24 hours to now (UTC)")
    assert "  completed: 1   " in text and "  failed: 1   " in text
    assert via_api["digest"] == text and via_api["figures"]["tasks"]["opened"][-1] == 2


async def test_a_quiet_day_says_so(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        digest = await build_digest(app.store, now=datetime.now(UTC))
    assert "No alerts and no new tasks. Quiet day." in digest.text
    assert digest.chart_png is None
