"""The tool gateway: the one path every tool call takes.

    validate params -> check the policy decision -> require reason_code / approval_id for writes
    -> redact inputs -> timeout -> retry (idempotent tools only) -> validate the result -> audit

The engine decides *whether* a step should run (policy, rate limits, autonomy); the gateway makes
sure that no call slips past those answers, that nothing unredacted reaches a log or the audit
trail, and that a failing tool can only fail in ways the engine understands (a ``ToolOutcome``).

Refusals (unknown tool, bad params, a decision that does not allow the call, a missing reason
code) raise ``ToolCallRefused`` before anything runs: they are bugs or policy answers, not tool
failures, and the engine must not retry them. Failures of the tool itself come back as a failed
``ToolOutcome``. Both leave an audit record.
"""

from __future__ import annotations

import asyncio
import random as random_module
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from bot.errors import RetryableToolError, ToolError
from bot.ports import StepCall, Tool
from bot.proposals import Category, Decision
from bot.redaction import redact, redact_text
from bot.tracing import TaskTracing

log = structlog.get_logger(__name__)

AuditSink = Callable[[dict[str, Any]], Awaitable[None]]

# Backoff for retried attempts: full jitter over an exponentially growing cap (the AWS
# architecture-blog recipe), so a fleet of retries does not arrive in lockstep.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


class ToolCallRefused(ToolError):
    """The gateway would not run this call; nothing was sent anywhere."""


class ToolOutcome(BaseModel):
    """What became of one tool call. ``result`` is redacted; ``rollback`` undoes a success."""

    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    duration_ms: int = 0
    rollback: StepCall | None = None
    retryable: bool = False  # the last failure was transient (the engine may try again later)


class ToolRegistry:
    """The tools the gateway may call, by name."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is registered twice; each tool name must be unique")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise ToolCallRefused(
                f"unknown tool {name!r}; known tools: {known}. Check the step's `tool:` or enable the tool in config"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools


def parse_params(tool: Tool, params: dict[str, Any]) -> BaseModel:
    """Validate ``params`` against the tool's model; ToolCallRefused names the first bad field."""
    try:
        return tool.params_model.model_validate(params)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "(params)"
            problems.append(f"{field}: {err['msg']}")
        # The offending values are left out: they may be secrets typed into the wrong field.
        raise ToolCallRefused(f"invalid params for {tool.name}: " + "; ".join(problems)) from None


def backoff_delay(attempt: int, rand: Callable[[], float]) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): full jitter, capped."""
    cap = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return rand() * cap


class ToolGateway:
    """Runs tool calls for the engine. One instance per process.

    Args:
        registry: the tools that may be called.
        sleep: awaited between retries; tests pass a recorder instead of waiting.
        random: returns a float in [0, 1) for the jitter; tests pass a constant.
        clock: monotonic seconds, for durations.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self.tracing = TaskTracing()  # the App's, when traces are exported: each call is a span

    async def call(
        self,
        call: StepCall,
        *,
        decision: Decision,
        reason_code: str | None,
        approval_id: str | None,
        dry_run: bool,
        idempotency_key: str,
        timeout_s: float,
        retries: int,
        audit: AuditSink,
    ) -> ToolOutcome:
        """Run one tool call through the whole gateway path.

        Args:
            call: the tool name and rendered params.
            decision: the policy's answer for this step.
            reason_code: why this write happens (required for writes that are not dry runs).
            approval_id: the approval that allowed a ``needs_approval`` step.
            dry_run: preview only; allowed before approval since nothing changes.
            idempotency_key: carried into the audit record so a re-run can be recognised.
            timeout_s: limit for each attempt.
            retries: extra attempts after the first, used only for idempotent tools.
            audit: receives one record per call, success, failure or refusal.

        Returns:
            The outcome; failures of the tool are returned, not raised.

        Raises:
            ToolCallRefused: the call was not run (unknown tool, bad params, not allowed, missing
                reason code or approval id). An audit record was written first when the tool
                and params were known.
        """
        tool = self.registry.get(call.tool)
        params = parse_params(tool, call.params)
        category = tool.category_of(params)
        shown_params = redact(params.model_dump(mode="json", by_alias=True))
        record: dict[str, Any] = {
            "tool": tool.name,
            "category": category.value,
            "params": shown_params,
            "result": None,
            "outcome": None,
            "error": None,
            "duration_ms": 0,
            "attempts": 0,
            "policy_rule": decision.rule,
            "verdict": decision.verdict,
            "approval_id": approval_id,
            "reason_code": reason_code,
            "idempotency_key": idempotency_key,
            "dry_run": dry_run,
            "rollback": None,
        }

        refusal = self._refusal(tool, category, decision, reason_code, approval_id, dry_run)
        if refusal is not None:
            record.update(outcome="refused", error=refusal)
            log.warning("tool.call_refused", tool=tool.name, rule=decision.rule, reason=refusal)
            await audit(record)
            raise ToolCallRefused(refusal)

        log.info(
            "tool.call_start",
            tool=tool.name,
            category=category.value,
            params=shown_params,
            dry_run=dry_run,
            idempotency_key=idempotency_key,
        )
        started = self._clock()
        with self.tracing.tool_call(tool.name, category=category.value, dry_run=dry_run) as span:
            outcome = await self._run_with_retries(tool, params, dry_run, timeout_s, retries)
            span.set_attributes({"ooda.ok": outcome.ok, "ooda.attempts": outcome.attempts})
        outcome.duration_ms = int((self._clock() - started) * 1000)

        record.update(
            outcome="succeeded" if outcome.ok else "failed",
            result=outcome.result,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            attempts=outcome.attempts,
            rollback=redact(outcome.rollback.model_dump(mode="json")) if outcome.rollback else None,
        )
        await audit(record)
        log.info(
            "tool.call_done",
            tool=tool.name,
            ok=outcome.ok,
            attempts=outcome.attempts,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
        )
        return outcome

    @staticmethod
    def _refusal(
        tool: Tool,
        category: Category,
        decision: Decision,
        reason_code: str | None,
        approval_id: str | None,
        dry_run: bool,
    ) -> str | None:
        if decision.shadow_of is not None and category.writes:
            return f"{tool.name} is held back: {decision.rule} is in shadow mode, so none of its writes run"
        if decision.verdict == "deny":
            return f"{tool.name} is denied by policy rule {decision.rule!r}: {decision.reason}"
        if dry_run:
            if category.writes and not tool.supports_dry_run:
                return f"{tool.name} cannot preview a {category.value} call (it has no dry-run); run it after approval"
            return None  # a preview changes nothing, so it may run before anyone approved
        if decision.verdict == "needs_approval" and not approval_id:
            return f"{tool.name} needs approval under policy rule {decision.rule!r}; no approval_id was given"
        if category.writes and not reason_code:
            return f"{tool.name} is a {category.value} call and needs a reason_code (why this change is made)"
        return None

    async def _run_with_retries(
        self, tool: Tool, params: BaseModel, dry_run: bool, timeout_s: float, retries: int
    ) -> ToolOutcome:
        # Retrying a call that may have half-happened is only safe when repeating it is harmless.
        max_attempts = 1 + max(0, retries) if tool.idempotent else 1
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(timeout_s):
                    raw = await tool.run(params, dry_run=dry_run)
            except (RetryableToolError, TimeoutError) as exc:
                error = (
                    f"{tool.name} timed out after {timeout_s:g}s"
                    if isinstance(exc, TimeoutError)
                    else redact_text(str(exc))
                )
                remaining = max_attempts - attempt
                if remaining <= 0:
                    return ToolOutcome(ok=False, error=error, attempts=attempt, retryable=True)
                delay = backoff_delay(attempt, self._random)
                log.warning(
                    "tool.attempt_failed",
                    tool=tool.name,
                    attempt=attempt,
                    attempts_remaining=remaining,
                    retry_in_s=round(delay, 3),
                    error=error,
                )
                await self._sleep(delay)
                continue
            except ToolError as exc:
                return ToolOutcome(ok=False, error=redact_text(str(exc)), attempts=attempt)
            except Exception:
                # Raw exception text can carry URLs with tokens or response bodies; the full
                # traceback goes to the log for engineers, the outcome gets a generic line.
                log.exception("tool.crashed", tool=tool.name, attempt=attempt)
                return ToolOutcome(
                    ok=False, error=f"{tool.name} failed unexpectedly; see the logs", attempts=attempt
                )
            return self._finish(tool, params, raw, dry_run, attempt)

    @staticmethod
    def _finish(tool: Tool, params: BaseModel, raw: Any, dry_run: bool, attempts: int) -> ToolOutcome:
        try:
            if isinstance(raw, BaseModel) and not isinstance(raw, tool.result_model):
                raise TypeError(type(raw).__name__)
            result = tool.result_model.model_validate(raw)
        except (ValidationError, TypeError):
            log.error("tool.bad_result", tool=tool.name, result_type=type(raw).__name__)
            return ToolOutcome(
                ok=False, error=f"{tool.name} returned a result that does not match its model", attempts=attempts
            )
        rollback = None
        if not dry_run:
            try:
                rollback = tool.rollback_for(params, result)
            except Exception:
                # The call already happened; losing its undo must not turn a success into a failure.
                log.exception("tool.rollback_unavailable", tool=tool.name)
        return ToolOutcome(
            ok=True,
            result=redact(result.model_dump(mode="json", by_alias=True)),
            attempts=attempts,
            rollback=rollback,
        )
