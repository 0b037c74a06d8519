"""The critical-risk prompt tells each surface's user what to do there, once.

The core said "type `approve N` to confirm", which on chat means `/ops approve N approve N` and on
the CLI means `--confirm 'approve N'`: chat showed both instructions, the CLI one that does not
work there. The core now states what is needed; each surface adds the one instruction that works.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bot import cli
from bot.chat.chatops import parse_ops, run_ops
from bot.policy.identity import Actor
from tests.e2e.test_approvals import POLICY, RUNNER, planned, write_playbooks
from tests.harness import ENV, running_app, running_standin

LEAD_IN_CHAT = Actor(id="lead", display="Lead", roles=frozenset({"sre-lead"}), via="slack")
INSTRUCTION = re.compile(r"[Tt]ype `([^`]*)`|--confirm '([^']*)'")


def instructions(text: str) -> list[str]:
    return [typed or flag for typed, flag in INSTRUCTION.findall(text)]


async def test_chat_and_cli_each_get_the_one_instruction_that_works_there(tmp_path: Path, capsys, monkeypatch):
    overrides = {**POLICY, "playbooks_dir": str(write_playbooks(tmp_path))}
    async with running_standin() as standin, running_app(tmp_path, standin, overrides) as app:
        task = await planned(app, "restart-global", RUNNER, env="prod", dep="core")
        assert (await app.commands.show(task.id)).risk.band.value == "critical"

        reply = await run_ops(parse_ops(f"approve {task.id}"), app.commands, LEAD_IN_CHAT)
        assert not reply.ok
        assert instructions(reply.text) == [f"/ops approve {task.id} approve {task.id}"], reply.text

        monkeypatch.setenv("OODA_URL", f"http://127.0.0.1:{app.port}")
        monkeypatch.setenv("OODA_API_TOKEN", ENV["OODA_API_TOKEN"])
        config = tmp_path / "config.yaml"
        code = await asyncio.to_thread(cli.main, ["approve", str(task.id), "--config", str(config)])
        said = capsys.readouterr().err
        assert code == 1
        assert instructions(said) == [f"approve {task.id}"], said
        assert f"ooda approve {task.id} --confirm 'approve {task.id}'" in said, said


@pytest.mark.parametrize("phrase", ["approve 3"])
def test_the_core_names_the_phrase_without_telling_anyone_where_to_type_it(phrase: str):
    from bot.errors import ConfirmationRequired
    from bot.loop.approvals import confirmation_required

    error = confirmation_required(3, 75)
    assert isinstance(error, ConfirmationRequired) and error.phrase == phrase
    assert f"`{phrase}`" in str(error) and instructions(str(error)) == []
