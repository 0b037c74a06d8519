"""The tool gateway: the one path every tool call takes, and the only code that holds the tools.

    validate params -> authorize (writes: the policy and the recorded approvals, asked here, now)
    -> require reason_code / approvals for writes -> redact inputs -> timeout -> retry (idempotent
    tools only) -> validate the result -> one audit record

Callers ask for a purpose, never hand in a verdict: ``read`` (evidence) and ``verify`` refuse a
call the tool classifies as a write; ``dry_run`` changes nothing; ``write`` takes the stored step
and the task and asks its ``Authority`` (bot/loop/authority.py) whether it may run at this moment: the
kill switch, change windows, rate limits and autonomy through the policy, the approvals recorded
in the store with quorum and separation of duties; the authority also claims the step (pending ->
running) so the decision and the claim are one moment. The registry hands out descriptions of the
tools (``ToolInfo``), never the objects that run them, so no other code can call a tool.

Every call, refused or run, leaves exactly one audit record (``tool.call``) with the tool, its
purpose, a digest of its (redacted) params, reason code, approval ids, duration and outcome,
written by the authority's store right after the call.

Refusals (unknown tool, bad params, a decision that does not allow the call, a missing reason
code) raise ``ToolCallRefused`` before anything runs: they are bugs or policy answers, not tool
failures, and the engine must not retry them. Failures of the tool itself come back as a failed
``ToolOutcome``. Both leave an audit record.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random as random_module
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
from pydantic import BaseModel, Field, ValidationError

from bot.audit.chain import AuditEntry
from bot.audit.redaction import redact, redact_text
from bot.errors import RetryableToolError, ToolError
from bot.model.proposals import Category, Decision
from bot.ports import StepCall, Tool
from bot.tracing import TaskTracing

if TYPE_CHECKING:
    from bot.model.tasks import Task
from bot.model.steps import StepRecord

log = structlog.get_logger(__name__)

# Backoff for retried attempts: full jitter over an exponentially growing cap (the AWS
# architecture-blog recipe), so a fleet of retries does not arrive in lockstep.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


class ToolCallRefused(ToolError):
    """The gateway would not run this call; nothing was sent anywhere."""


class StepClaimedElsewhere(ToolCallRefused):
    """Another worker claimed the step first: it runs there, not here."""


_READ = Decision(verdict="allow", rule="read", reason="reading changes nothing")
_PREVIEW = Decision(verdict="allow", rule="dry-run", reason="a preview changes nothing")


class ToolOutcome(BaseModel):
    """What became of one tool call. ``result`` is redacted; ``rollback`` undoes a success."""

    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    duration_ms: int = 0
    rollback: StepCall | None = None
    retryable: bool = False  # the last failure was transient (the engine may try again later)


class ToolInfo:
    """What callers may know of a tool: its name, models and classification, never ``run``."""

    __slots__ = ("_tool",)

    def __init__(self, tool: Tool) -> None:
        self._tool = tool

    @property
    def name(self) -> str:
        return self._tool.name

    @property
    def category(self) -> Category:
        return self._tool.category

    @property
    def params_model(self) -> type[BaseModel]:
        return self._tool.params_model

    @property
    def result_model(self) -> type[BaseModel]:
        return self._tool.result_model

    @property
    def supports_dry_run(self) -> bool:
        return self._tool.supports_dry_run

    @property
    def idempotent(self) -> bool:
        return self._tool.idempotent

    def category_of(self, params: Any) -> Category:
        return self._tool.category_of(params)


class ToolRegistry:
    """The tools the gateway may call, by name. ``get`` describes a tool; only the gateway runs one."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is registered twice; each tool name must be unique")
        self._tools[tool.name] = tool

    def get(self, name: str) -> ToolInfo:
        return ToolInfo(self._tool(name))

    def _tool(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise ToolCallRefused(
                f"unknown tool {name!r}; known tools: {known}. Check the step's `tool:` or enable the tool in config"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._tools)

    def tools_for_instrumenting(self) -> list[Tool]:
        """The tool objects themselves, for tests and benchmarks that count or time their runs."""
        return list(self._tools.values())

    def __contains__(self, name: object) -> bool:
        return name in self._tools


def parse_params(tool: Tool | ToolInfo, params: dict[str, Any]) -> BaseModel:
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


def params_digest(params: Any) -> str:
    """SHA-256 of the canonical JSON of the (redacted) params: the same call has the same digest."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


Purpose = Literal["read", "verify", "dry_run", "write", "rollback"]


class Authorization(BaseModel):
    """The authority's answer for one write, given at the moment of the call."""

    call: StepCall  # the stored step's tool and params: what runs, whatever the caller held
    decision: Decision
    reason_code: str
    approval_ids: list[int] = Field(default_factory=list)
    actor: str = "system"  # on whose behalf (the undo's requester for a rollback)
    elsewhere: bool = False  # another worker claimed the step first; nothing runs here
    refusal: str | None = None


class Authority(Protocol):
    """**Protocol:** decides writes for the gateway and keeps its audit records (bot/loop/authority.py)."""

    async def authorize(self, task: Task, step: StepRecord) -> Authorization:
        """Evaluate the policy and the recorded approvals now and, if allowed, claim the step."""
        ...

    async def record(self, entry: AuditEntry) -> None:
        """Commit one audit record."""
        ...


class NoAuthority:
    """The gateway's default: refuses every write and keeps audit records in memory (tools' own tests)."""

    def __init__(self) -> None:
        self.records: list[AuditEntry] = []

    async def authorize(self, task: Task, step: StepRecord) -> Authorization:
        return Authorization(call=StepCall(tool=step.tool, params=step.params), reason_code="",
                             decision=Decision(verdict="deny", rule="no-authority",
                                               reason="no policy authority is configured for writes"),
                             refusal="no policy authority is configured, so no write may run")

    async def record(self, entry: AuditEntry) -> None:
        self.records.append(entry)


class ToolGateway:
    """Runs tool calls for the engine. One instance per process.

    Args:
        registry: the tools that may be called.
        authority: decides writes and records audit entries; without one every write is refused.
        sleep: awaited between retries; tests pass a recorder instead of waiting.
        random: returns a float in [0, 1) for the jitter; tests pass a constant.
        clock: monotonic seconds, for durations.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        authority: Authority | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._authority: Authority = authority or NoAuthority()
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self.tracing = TaskTracing()  # the App's, when traces are exported: each call is a span

    def entrust(self, authority: Authority) -> None:
        """Set the authority once, at wiring (it needs the core, which holds this gateway)."""
        if not isinstance(self._authority, NoAuthority):
            raise RuntimeError("the gateway's authority is set once, at start")
        self._authority = authority

    async def read(self, call: StepCall, *, task_id: int | None, idempotency_key: str, timeout_s: float,
                   retries: int, purpose: Literal["read", "verify"] = "read",
                   reason_code: str | None = None) -> ToolOutcome:
        """A call that changes nothing (evidence, verify); refused when the tool calls it a write."""
        return await self._call(call, purpose=purpose, task_id=task_id, actor="system", reason_code=reason_code,
                                decision=_READ, approval_ids=[], dry_run=False, idempotency_key=idempotency_key,
                                timeout_s=timeout_s, retries=retries)

    async def dry_run(self, call: StepCall, *, task_id: int | None, idempotency_key: str, timeout_s: float,
                      reason_code: str | None = None) -> ToolOutcome:
        """A preview: the tool runs with ``dry_run`` and changes nothing, so no approval is needed."""
        return await self._call(call, purpose="dry_run", task_id=task_id, actor="system", reason_code=reason_code,
                                decision=_PREVIEW, approval_ids=[], dry_run=True,
                                idempotency_key=idempotency_key, timeout_s=timeout_s, retries=0)

    async def write(self, task: Task, step: StepRecord, *, timeout_s: float, retries: int) -> ToolOutcome:
        """Run a stored step (of the plan, or a rollback) if the authority allows it now.

        Raises:
            ToolCallRefused: not allowed now (the refusal says why), or claimed by another worker
                (``StepClaimedElsewhere``); nothing ran.
        """
        authorization = await self._authority.authorize(task, step)
        if authorization.elsewhere:
            raise StepClaimedElsewhere(f"step {step.name} of task {task.id} was claimed by another worker")
        purpose: Purpose = "rollback" if step.kind == "rollback" else "write"
        return await self._call(authorization.call, purpose=purpose, task_id=task.id, actor=authorization.actor,
                                reason_code=authorization.reason_code, decision=authorization.decision,
                                approval_ids=authorization.approval_ids, dry_run=False,
                                idempotency_key=step.idempotency_key, timeout_s=timeout_s, retries=retries,
                                refusal=authorization.refusal, step=step.name)

    async def _call(self, call: StepCall, *, purpose: Purpose, task_id: int | None, actor: str,
                    reason_code: str | None, decision: Decision, approval_ids: list[int], dry_run: bool,
                    idempotency_key: str, timeout_s: float, retries: int, refusal: str | None = None,
                    step: str | None = None) -> ToolOutcome:
        tool = self.registry._tool(call.tool)
        params = parse_params(tool, call.params)
        category = tool.category_of(params)
        shown_params = redact(params.model_dump(mode="json", by_alias=True))
        record: dict[str, Any] = {
            "tool": tool.name,
            "purpose": purpose,
            "step": step,
            "category": category.value,
            "params": shown_params,
            "params_digest": params_digest(shown_params),
            "result": None,
            "outcome": None,
            "error": None,
            "duration_ms": 0,
            "attempts": 0,
            "policy_rule": decision.rule,
            "verdict": decision.verdict,
            "approval_ids": approval_ids,
            "reason_code": reason_code,
            "idempotency_key": idempotency_key,
            "dry_run": dry_run,
            "rollback": None,
        }

        refusal = refusal or self._refusal(tool, category, decision, purpose, reason_code, approval_ids)
        if refusal is not None:
            record.update(outcome="refused", error=refusal)
            log.warning("tool.call_refused", tool=tool.name, rule=decision.rule, reason=refusal)
            await self._authority.record(AuditEntry(actor, "tool.call", task_id, record))
            raise ToolCallRefused(refusal)

        log.info(
            "tool.call_start",
            tool=tool.name,
            category=category.value,
            purpose=purpose,
            params=shown_params,
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
        await self._authority.record(AuditEntry(actor, "tool.call", task_id, record))
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
        purpose: Purpose,
        reason_code: str | None,
        approval_ids: list[int],
    ) -> str | None:
        if purpose in ("read", "verify"):
            if category.writes:
                return f"{tool.name} is a {category.value} call here; a {purpose} may only read"
            return None
        if purpose == "dry_run":
            if category.writes and not tool.supports_dry_run:
                return f"{tool.name} cannot preview a {category.value} call (it has no dry-run); run it after approval"
            return None  # a preview changes nothing, so it may run before anyone approved
        if decision.shadow_of is not None and category.writes:
            return f"{tool.name} is held back: {decision.rule} is in shadow mode, so none of its writes run"
        if decision.verdict == "deny":
            return f"{tool.name} is denied by policy rule {decision.rule!r}: {decision.reason}"
        if decision.verdict == "needs_approval" and not approval_ids:
            return f"{tool.name} needs approval under policy rule {decision.rule!r}; no approval is recorded"
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
