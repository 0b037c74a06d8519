"""The local surface of the embedded default: proposals go to the server log.

With no Slack or Discord configured, people read proposals with ``ooda tasks`` / ``ooda show`` and
in the log, and act with ``ooda approve``. This surface writes one structured line per proposal
and per change, worded like the chat messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import structlog

from bot.chat.digest_text import Digest
from bot.model.proposals import MessageRef, Proposal

log = structlog.get_logger("ooda.proposals")


class LocalSurface:
    name: ClassVar[str] = "local"

    def __init__(self, *, digest_dir: Path | None = None, **_: object) -> None:
        self.posted: list[Proposal] = []
        self.digest_dir = digest_dir  # where digest charts are written (data_dir/digests)

    async def post_proposal(self, proposal: Proposal, channel: str | None) -> MessageRef:
        self.posted.append(proposal)
        log.info(
            "proposal.posted",
            task_id=proposal.task_id,
            playbook=proposal.playbook_id,
            state=proposal.state,
            summary=proposal.summary,
            risk=f"{proposal.risk.score} {proposal.risk.band.value}",
            factors=[f"{f.name}+{f.points}" for f in proposal.risk.factors],
            steps=[f"{s.name}: {s.decision.verdict} ({s.decision.rule})" for s in proposal.steps],
            next=f"ooda show {proposal.task_id}; ooda approve {proposal.task_id}",
        )
        return MessageRef(surface=self.name, channel=channel or "log", message_id=str(proposal.task_id))

    async def update_proposal(self, ref: MessageRef, proposal: Proposal, note: str | None) -> None:
        self.posted.append(proposal)
        log.info("proposal.updated", task_id=proposal.task_id, state=proposal.state, note=note,
                 outcome=proposal.outcome)

    async def post_notice(self, channel: str | None, text: str) -> None:
        log.info("notice", channel=channel, text=text)

    async def post_digest(self, channel: str | None, digest: Digest) -> None:
        """The digest to the log, with the path of its chart, written as ``digest-<day>.png``."""
        chart = None
        if digest.chart_png is not None and self.digest_dir is not None:
            self.digest_dir.mkdir(parents=True, exist_ok=True)
            path = self.digest_dir / f"digest-{digest.day.isoformat()}.png"
            path.write_bytes(digest.chart_png)
            chart = str(path)
        log.info("digest", channel=channel, chart=chart, text=digest.text)
