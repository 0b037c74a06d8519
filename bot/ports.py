"""The small Protocols (ports) that adapters implement and the core relies on.

Adapters implement these structurally (no base class) and are found by name in ``bot/app.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from bot.model.proposals import Category, MessageRef, Proposal
from bot.model.signals import Signal


class AlertSource(Protocol):
    """**Protocol:** turns one webhook body into Signals.

    Intake calls ``verify_signature`` (only when the source is configured with ``auth: hmac``)
    and then ``parse``. Implementations must not keep state between calls and must raise
    ``bot.errors.Unauthorized`` / ``bot.errors.InvalidPayload`` with a message that names the
    header or field, never the secret.
    """

    name: ClassVar[str]

    def verify_signature(
        self, headers: Mapping[str, str], body: bytes, secret: bytes, now: float
    ) -> None: ...

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Signal]: ...


class StepCall(BaseModel):
    """A tool name with rendered params: what a step, a rollback or a verify step runs."""

    tool: str
    params: dict[str, Any]


class Tool(Protocol):
    """**Protocol:** one typed action the tool gateway can call.

    The gateway validates params with ``params_model`` before ``run`` and validates the returned
    value against ``result_model``. ``run`` must honour ``dry_run`` when ``supports_dry_run`` is
    true (no side effect, a preview of what would change). Credentials are resolved inside the
    tool from the environment; they never appear in params or results.
    """

    name: ClassVar[str]
    category: ClassVar[Category]
    params_model: ClassVar[type[BaseModel]]
    result_model: ClassVar[type[BaseModel]]
    supports_dry_run: ClassVar[bool]
    idempotent: ClassVar[bool]

    def category_of(self, params: Any) -> Category:
        """The category of this particular call: ``category`` unless the call is safer
        (an HTTP GET, an allowlisted read-only command)."""
        ...

    async def run(self, params: Any, *, dry_run: bool) -> BaseModel: ...

    def rollback_for(self, params: Any, result: Any) -> StepCall | None:
        """The call that undoes a successful ``run``, or None when nothing can undo it."""
        ...


class ChatSurface(Protocol):
    """**Protocol:** a place where people read proposals and act on them.

    ``post_proposal`` returns a reference that ``update_proposal`` accepts later, after a
    restart too, so the reference must be plain data. Implementations queue and retry on their
    own; an exception here means the message could not be delivered now and the caller will try
    again later. Inbound clicks and commands go to ``bot.chat.commands.Commands``.
    """

    name: ClassVar[str]

    async def post_proposal(self, proposal: Proposal, channel: str | None) -> MessageRef: ...

    async def update_proposal(self, ref: MessageRef, proposal: Proposal, note: str | None) -> None: ...

    async def post_notice(self, channel: str | None, text: str) -> None: ...
