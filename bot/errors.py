"""Domain errors.

Every message says what happened, with the values, and what to do next.

    BotError
    ├── ConfigError          bad config or playbook; names file, line and field
    ├── StoreUnavailable     the store cannot take writes right now (HTTP 503)
    ├── IllegalTransition    a task state change outside the allowed set
    ├── IntakeError          a webhook request we refuse (carries its HTTP status)
    │   ├── Unauthorized     401
    │   ├── NotFound         404
    │   ├── PayloadTooLarge  413
    │   └── InvalidPayload   400
    ├── UserError            text safe to show a person in chat or the CLI
    │   ├── Forbidden        an actor may not do this (403)
    │   ├── UnknownTask      no such task (404)
    │   └── Conflict         the task is not in a state that allows this (409)
    ├── ToolError            a tool call failed
    │   └── RetryableToolError  worth retrying if the tool is idempotent
    └── ChatUnavailable      a chat platform could not take a message now; the outbox retries
"""

from __future__ import annotations


class BotError(Exception):
    """Root of every error Ooda raises on purpose."""


class ConfigError(BotError):
    """Config or playbook is invalid. ``problems`` lists one human-readable line each."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or [message]
        super().__init__(message if not problems else message + "\n  " + "\n  ".join(problems))


class StoreUnavailable(BotError):
    """The store could not commit; nothing was acknowledged."""


class IllegalTransition(BotError):
    """A task was asked to move between states the state machine does not connect."""


class IntakeError(BotError):
    status = 400
    reason = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.reason, "message": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return body


class Unauthorized(IntakeError):
    status = 401
    reason = "unauthorized"


class NotFound(IntakeError):
    status = 404
    reason = "not_found"


class PayloadTooLarge(IntakeError):
    status = 413
    reason = "payload_too_large"


class InvalidPayload(IntakeError):
    status = 400
    reason = "invalid_payload"


class UserError(BotError):
    """An error whose text is written for the person who caused it."""

    status = 400


class Forbidden(UserError):
    status = 403


class UnknownTask(UserError):
    status = 404


class Conflict(UserError):
    status = 409


class ToolError(BotError):
    """A tool call failed; the message is already redacted."""


class RetryableToolError(ToolError):
    """A transient failure (timeout, 5xx, connection reset)."""


class ConfirmationRequired(UserError):
    """A critical-risk approval needs the approver to type the confirmation phrase (step-up)."""

    status = 428

    def __init__(self, message: str, phrase: str) -> None:
        self.phrase = phrase
        super().__init__(message)


class ChatUnavailable(BotError):
    """A chat surface could not deliver now (API down, rate limited, bad channel); retry later."""


class SecretInputError(ValueError):
    """A config value refused because it carries a secret: the error never quotes the value."""
