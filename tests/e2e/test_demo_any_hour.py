"""The README's demo works at any hour: the example config's prod window is open around the clock.

The 5xx sample comes from a prod cluster; its rollback is tier 4, which runs only inside a prod
change window. With the example's window limited to daytime, the task escalated at night and
``approve`` answered 403. Ooda runs here with its clock at 03:00 and 23:30 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.model.tasks import TaskState
from tests.adapters.chat.chat_rig import sample
from tests.harness import AM, client, running_app, running_standin


@pytest.mark.parametrize("hour, minute", [(3, 0), (23, 30)])
async def test_the_prod_5xx_sample_waits_for_approval_at_night(tmp_path: Path, hour: int, minute: int):
    night = datetime(2026, 1, 6, hour, minute, tzinfo=UTC)
    async with running_standin() as standin, running_app(tmp_path, standin, clock=lambda: night) as app, \
            client(app) as http:
        r = await http.post("/webhooks/alertmanager", content=sample("alertmanager-http-5xx"), headers=AM)
        assert r.status_code == 202, r.text
        await app.engine.wait_idle()
        (task,) = await app.store.list_tasks(open_only=False)
        assert task.environment == "prod"
        assert task.state is TaskState.needs_approval, task.outcome
        proposal = await app.commands.show(task.id)
        assert [s.decision.verdict for s in proposal.steps] == ["needs_approval", "needs_approval"]
        assert proposal.steps[1].decision.rule == "tier4"
