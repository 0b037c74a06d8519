"""``chat.notify``: post a short message to a chat channel from a playbook step.

The tool only formats and hands the text to ``send``; the composition root wires ``send`` to the
configured chat surfaces (``ChatSurface.post_notice``), so this module knows no chat platform.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

import structlog
from pydantic import BaseModel, ConfigDict, Field

from bot.audit.redaction import redact_text
from bot.errors import RetryableToolError, ToolError
from bot.model.proposals import Category
from bot.ports import StepCall

log = structlog.get_logger(__name__)

Send = Callable[[str | None, str], Awaitable[None]]


class NotifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=3000)  # a Slack section's text limit
    channel: str | None = None  # None: the task's routed channel


class NotifyResult(BaseModel):
    channel: str | None = None
    text: str
    sent: bool
    dry_run: bool = False


class NotifyTool:
    name: ClassVar[str] = "chat.notify"
    category: ClassVar[Category] = Category.write_reversible  # a message harms nobody
    params_model: ClassVar[type[BaseModel]] = NotifyParams
    result_model: ClassVar[type[BaseModel]] = NotifyResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = False  # a retry would post the message twice

    def __init__(self, send: Send) -> None:
        self._send = send

    def category_of(self, params: NotifyParams) -> Category:
        return self.category

    def rollback_for(self, params: NotifyParams, result: NotifyResult) -> StepCall | None:
        return None

    async def run(self, params: NotifyParams, *, dry_run: bool) -> NotifyResult:
        # Rendered from alert labels, so it may carry PII or a pasted token: mask before posting.
        text = redact_text(params.text)
        if dry_run:
            return NotifyResult(channel=params.channel, text=text, sent=False, dry_run=True)
        try:
            await self._send(params.channel, text)
        except (ToolError, TimeoutError):
            raise
        except OSError as exc:
            raise RetryableToolError(f"chat.notify could not reach the chat platform ({type(exc).__name__})") from exc
        except Exception as exc:
            log.exception("notify.send_failed", channel=params.channel)
            raise ToolError(f"chat.notify could not post to {params.channel or 'the default channel'}") from exc
        return NotifyResult(channel=params.channel, text=text, sent=True)
