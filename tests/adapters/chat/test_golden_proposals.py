"""Golden renderings: every shipped sample's proposal as Slack, Discord and the CLI show it.

One real App with both chat surfaces (the real slack-bolt and discord.py against the fakes) takes
each sample that opens a task, and the message each platform received is compared with the file
kept under ``tests/golden/proposals/``: ``<sample>.slack.json`` (the chat.postMessage/chat.update
blocks and fallback text), ``<sample>.discord.json`` (the embed and buttons) and ``<sample>.txt``
(``ooda show``). They are meant to be read by eye when the wording changes. Run with
``OODA_UPDATE_GOLDEN=1`` to write them again, then look at the diff.

Times, ports and the stand-in's generated values differ between runs and are replaced by
placeholders before comparing. The example's prod change window is open around the clock, so
the renderings do not depend on the hour.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path

import pytest

from bot.cli import show_proposal
from tests import harness
from tests.adapters.chat.chat_rig import ooda_on_both, sample

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "proposals"
UPDATE = os.environ.get("OODA_UPDATE_GOLDEN") == "1"
# Samples that open no task: resolved alerts, Watchdog, and those no shipped playbook is for.
NO_TASK = {"alertmanager-node-filesystem-space-resolved", "pagerduty-resolved", "alertmanager-watchdog",
           "pagerduty-triggered", "generic-backup"}
SAMPLES = sorted(
    name.removesuffix(".json") for name in (p.name for p in (resources.files("bot") / "samples").iterdir())
    if name.endswith(".json") and name.removesuffix(".json") not in NO_TASK
)

_VOLATILE = [
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}| UTC)?"), "<TIME>"),
    (re.compile(r"\b\d{2}:\d{2} UTC"), "<TIME>"),
]


def stable(text: str) -> str:
    for pattern, placeholder in _VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


def check(name: str, rendered: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered)
        return
    if not path.exists():
        pytest.fail(f"no golden file {path.name}; run with OODA_UPDATE_GOLDEN=1 to write it, then read it")
    assert rendered == path.read_text(), f"{name} differs from its golden file (OODA_UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("name", SAMPLES)
async def test_each_sample_proposal_reads_as_its_golden_rendering(tmp_path: Path, name: str):
    async with ooda_on_both(tmp_path) as rig:
        await rig.post(name.split("-", 1)[0], sample(name))
        # A group of alerts may open a task per host; the first one stands for them.
        task = min(await rig.app.store.list_tasks(open_only=False), key=lambda t: t.id)
        on_slack = await rig.slack_message(task.id)
        on_discord = await rig.discord_message(task.id)
        r = await rig.http.get(f"/api/v1/tasks/{task.id}", headers=harness.ADMIN)
        shown = show_proposal(r.json()["proposal"])

    check(f"{name}.slack.json", stable(json.dumps(on_slack, indent=1, ensure_ascii=False)) + "\n")
    check(f"{name}.discord.json", stable(json.dumps(on_discord, indent=1, ensure_ascii=False)) + "\n")
    check(f"{name}.txt", stable(shown) + "\n")
