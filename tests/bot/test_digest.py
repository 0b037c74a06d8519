"""The daily digest built from a real store after a day of real work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.standin import new_feature
from bot.digest import build_digest
from bot.identity import Actor
from bot.tasks import TaskState
from tests.harness import AM, client, running_app, running_standin

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


async def test_the_digest_reports_incidents_time_to_approve_mttr_success_and_noise(tmp_path):
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

        now = datetime.now(UTC)
        text = await build_digest(app.store, now - timedelta(days=1), now + timedelta(minutes=1))
        via_command = await app.commands.digest()

    lines = text.splitlines()
    assert lines[0].startswith("Ooda digest ")
    assert "Incidents (tasks): 2 — completed 1, failed_terminal 1" in lines
    assert "Success rate: 50% of 2 finished" in lines
    assert any(line.startswith("Time to approve (median): ") and "n/a" not in line for line in lines)
    assert any(line.startswith("MTTR (median, completed): ") and "n/a" not in line for line in lines)
    assert "Policy denials: 0" in lines
    assert lines[-1] == "Noisiest alerts: DiskFullNoPlaybook (3), FlappyNoPlaybook (1)"
    assert "Incidents (tasks): 2" in via_command


async def test_a_quiet_day_says_so(tmp_path):
    async with running_standin() as standin, running_app(tmp_path, standin) as app:
        now = datetime.now(UTC)
        text = await build_digest(app.store, now - timedelta(days=1), now)
    assert "No incidents. Quiet day." in text
    assert "Success rate" not in text
