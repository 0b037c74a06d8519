import asyncio
import json
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict
from structlog.testing import capture_logs

from bot.audit.chain import AuditEntry
from bot.audit.redaction import forget_secrets, register_secret
from bot.errors import RetryableToolError, ToolError
from bot.loop.gateway import Authorization, ToolCallRefused, ToolGateway, ToolRegistry, backoff_delay, params_digest
from bot.model.proposals import Category, Decision
from bot.model.steps import StepKind, StepRecord, StepState
from bot.model.tasks import Task, TaskState
from bot.ports import StepCall

ALLOW = Decision(verdict="allow", rule="autonomy.L2", reason="reversible write in staging")
NEEDS = Decision(verdict="needs_approval", rule="prod.writes", reason="prod write", approvals_required=1)
DENY = Decision(verdict="deny", rule="freeze.black_friday", reason="change freeze until Monday")


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    times: int = 1


class EchoResult(BaseModel):
    text: str


class ScriptedTool:
    """A tool of our own Protocol whose behaviour each test scripts: a list of outcomes per run."""

    name: ClassVar[str] = "test.echo"
    category: ClassVar[Category] = Category.write_reversible
    params_model: ClassVar[type[BaseModel]] = EchoParams
    result_model: ClassVar[type[BaseModel]] = EchoResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.runs: list[tuple[EchoParams, bool]] = []

    def category_of(self, params: EchoParams) -> Category:
        return Category.read if params.text.startswith("read") else self.category

    async def run(self, params: EchoParams, *, dry_run: bool) -> BaseModel:
        self.runs.append((params, dry_run))
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, BaseException):
            raise step
        if step == "hang":
            await asyncio.Event().wait()
        if step == "bad_result":
            return EchoParams(text="x", times=2)
        return EchoResult(text=params.text * params.times)

    def rollback_for(self, params: EchoParams, result: EchoResult) -> StepCall | None:
        return StepCall(tool=self.name, params={"text": "undo " + params.text})


class OneShotTool(ScriptedTool):
    name: ClassVar[str] = "test.once"
    idempotent: ClassVar[bool] = False
    supports_dry_run: ClassVar[bool] = False


class ScriptedAuthority:
    """Plays the policy for the gateway: answers each write with the decision the test scripted."""

    def __init__(self) -> None:
        self.decision = ALLOW
        self.reason_code: str | None = "error_rate_high"
        self.approval_ids: list[int] = []
        self.records: list[AuditEntry] = []

    async def authorize(self, task: Task, step: StepRecord) -> Authorization:
        return Authorization(call=StepCall(tool=step.tool, params=step.params), decision=self.decision,
                             reason_code=self.reason_code or "", approval_ids=self.approval_ids)

    async def record(self, entry: AuditEntry) -> None:
        self.records.append(entry)


class Harness:
    def __init__(self, *tools: ScriptedTool) -> None:
        self.registry = ToolRegistry()
        for tool in tools:
            self.registry.register(tool)
        self.slept: list[float] = []
        self.authority = ScriptedAuthority()
        self.gateway = ToolGateway(self.registry, authority=self.authority, sleep=self._sleep, random=lambda: 1.0)

    @property
    def audit(self) -> list[dict[str, Any]]:
        return [entry.data for entry in self.authority.records]

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def call(self, tool: str = "test.echo", params: dict | None = None, *, decision: Decision = ALLOW,
                   reason_code: str | None = "error_rate_high", approval_id: int | None = None,
                   dry_run: bool = False, timeout_s: float = 5.0, retries: int = 3):
        call = StepCall(tool=tool, params=params or {"text": "hi"})
        if dry_run:
            return await self.gateway.dry_run(call, task_id=7, idempotency_key="task-7/step-1", timeout_s=timeout_s)
        self.authority.decision, self.authority.reason_code = decision, reason_code
        self.authority.approval_ids = [approval_id] if approval_id else []
        now = datetime.now(UTC)
        task = Task(id=7, playbook_id="pb", state=TaskState.executing, group_key="g", title="t", environment="dev",
                    requester="someone", created_at=now, updated_at=now)
        step = StepRecord(id=1, task_id=7, kind=StepKind.action, idx=0, name="step-1", tool=tool,
                          category="write_reversible", params=call.params, state=StepState.pending,
                          idempotency_key="task-7/step-1")
        return await self.gateway.write(task, step, timeout_s=timeout_s, retries=retries)


async def test_an_allowed_call_runs_and_is_audited_with_its_rollback():
    tool = ScriptedTool()
    h = Harness(tool)

    outcome = await h.call(params={"text": "ab", "times": 2})

    assert outcome.ok and outcome.result == {"text": "abab"} and outcome.attempts == 1
    assert outcome.rollback == StepCall(tool="test.echo", params={"text": "undo ab"})
    [record] = h.audit
    assert record | {"duration_ms": 0} == {
        "tool": "test.echo",
        "purpose": "write",
        "step": "step-1",
        "params_digest": params_digest({"text": "ab", "times": 2}),
        "category": "write_reversible",
        "params": {"text": "ab", "times": 2},
        "result": {"text": "abab"},
        "outcome": "succeeded",
        "error": None,
        "duration_ms": 0,
        "attempts": 1,
        "policy_rule": "autonomy.L2",
        "verdict": "allow",
        "approval_ids": [],
        "reason_code": "error_rate_high",
        "idempotency_key": "task-7/step-1",
        "dry_run": False,
        "rollback": {"tool": "test.echo", "params": {"text": "undo ab"}},
    }


async def test_a_denied_call_is_refused_audited_and_never_run():
    tool = ScriptedTool()
    h = Harness(tool)

    with pytest.raises(ToolCallRefused, match=r"freeze\.black_friday"):
        await h.call(decision=DENY)

    assert tool.runs == []
    assert h.audit[0]["outcome"] == "refused" and h.audit[0]["policy_rule"] == "freeze.black_friday"


async def test_needs_approval_requires_an_approval_id():
    tool = ScriptedTool()
    h = Harness(tool)

    with pytest.raises(ToolCallRefused, match="needs approval"):
        await h.call(decision=NEEDS)
    assert tool.runs == []

    outcome = await h.call(decision=NEEDS, approval_id=42)
    assert outcome.ok and h.audit[-1]["approval_ids"] == [42]


async def test_writes_require_a_reason_code_but_reads_do_not():
    tool = ScriptedTool()
    h = Harness(tool)

    with pytest.raises(ToolCallRefused, match="reason_code"):
        await h.call(reason_code=None)
    assert tool.runs == []

    outcome = await h.call(params={"text": "read it"}, reason_code=None)
    assert outcome.ok and h.audit[-1]["category"] == "read"


async def test_a_dry_run_may_preview_before_approval_and_is_audited_as_one():
    tool = ScriptedTool()
    h = Harness(tool)

    outcome = await h.call(decision=NEEDS, reason_code=None, dry_run=True)

    assert outcome.ok and outcome.rollback is None  # nothing happened, nothing to undo
    assert tool.runs[0][1] is True
    [record] = h.audit
    assert record["purpose"] == "dry_run" and record["dry_run"] is True and record["outcome"] == "succeeded"


async def test_a_read_purpose_refuses_a_call_the_tool_classifies_as_a_write():
    tool = ScriptedTool()
    h = Harness(tool)
    with pytest.raises(ToolCallRefused, match="may only read"):
        await h.gateway.read(StepCall(tool="test.echo", params={"text": "change"}), task_id=7, idempotency_key="k",
                             timeout_s=1, retries=0, purpose="verify")
    assert tool.runs == [] and h.audit[0]["outcome"] == "refused"
    outcome = await h.gateway.read(StepCall(tool="test.echo", params={"text": "read it"}), task_id=7,
                                   idempotency_key="k", timeout_s=1, retries=0)
    assert outcome.ok and h.audit[-1]["purpose"] == "read"


async def test_without_an_authority_every_write_is_refused():
    tool = ScriptedTool()
    h = Harness(tool)
    h.gateway = ToolGateway(h.registry)
    with pytest.raises(ToolCallRefused, match="no policy authority"):
        now = datetime.now(UTC)
        await h.gateway.write(
            Task(id=1, playbook_id="pb", state=TaskState.executing, group_key="g", title="t", environment="dev",
                 requester="r", created_at=now, updated_at=now),
            StepRecord(id=1, task_id=1, kind=StepKind.action, idx=0, name="s", tool="test.echo",
                       category="write_reversible", params={"text": "x"}, state=StepState.pending,
                       idempotency_key="k"), timeout_s=1, retries=0)
    assert tool.runs == []


async def test_a_write_without_dry_run_support_cannot_be_previewed():
    tool = OneShotTool()
    h = Harness(tool)
    with pytest.raises(ToolCallRefused, match="no dry-run"):
        await h.call("test.once", dry_run=True)
    assert tool.runs == []


async def test_unknown_tool_lists_the_known_ones():
    h = Harness(ScriptedTool(), OneShotTool())
    with pytest.raises(ToolCallRefused, match=r"unknown tool 'flags.sett'; known tools: test.echo, test.once"):
        await h.call("flags.sett")


async def test_invalid_params_name_the_field_not_the_value():
    h = Harness(ScriptedTool())
    with pytest.raises(ToolCallRefused, match=r"times: Input should be a valid integer") as caught:
        await h.call(params={"text": "x", "times": "sk-live-abcdef"})
    assert "sk-live-abcdef" not in str(caught.value)
    with pytest.raises(ToolCallRefused, match=r"extra_field: Extra inputs are not permitted"):
        await h.call(params={"text": "x", "extra_field": 1})


async def test_an_idempotent_tool_is_retried_with_backoff():
    tool = ScriptedTool(RetryableToolError("503 from upstream"), RetryableToolError("503 again"), "ok")
    h = Harness(tool)

    with capture_logs() as logs:
        outcome = await h.call(retries=3)

    assert outcome.ok and outcome.attempts == 3
    assert h.slept == [0.5, 1.0]  # full jitter at random()=1.0: the exponential caps themselves
    remaining = [e["attempts_remaining"] for e in logs if e["event"] == "tool.attempt_failed"]
    assert remaining == [3, 2]
    assert h.audit[-1]["attempts"] == 3


async def test_retries_stop_when_exhausted_and_the_failure_is_marked_retryable():
    tool = ScriptedTool(*[RetryableToolError("503")] * 5)
    h = Harness(tool)

    outcome = await h.call(retries=2)

    assert not outcome.ok and outcome.retryable and outcome.attempts == 3
    assert outcome.error == "503"
    assert h.audit[-1]["outcome"] == "failed"


async def test_a_non_idempotent_tool_is_never_retried():
    tool = OneShotTool(RetryableToolError("connection reset"), "ok")
    h = Harness(tool)

    outcome = await h.call("test.once", retries=3)

    assert not outcome.ok and outcome.attempts == 1
    assert len(tool.runs) == 1 and h.slept == []


async def test_a_plain_tool_error_is_not_retried():
    tool = ScriptedTool(ToolError("flag 'x' not found"), "ok")
    h = Harness(tool)

    outcome = await h.call()

    assert not outcome.ok and not outcome.retryable and outcome.error == "flag 'x' not found"
    assert len(tool.runs) == 1


async def test_a_hanging_tool_times_out_and_is_retried_if_idempotent():
    tool = ScriptedTool("hang", "ok")
    h = Harness(tool)

    outcome = await h.call(timeout_s=0.05, retries=1)

    assert outcome.ok and outcome.attempts == 2


async def test_a_hanging_call_that_keeps_timing_out_fails_with_a_timeout_message():
    tool = OneShotTool("hang")
    h = Harness(tool)

    outcome = await h.call("test.once", timeout_s=0.05, retries=3)

    assert not outcome.ok and outcome.error == "test.once timed out after 0.05s" and outcome.attempts == 1


async def test_an_unexpected_exception_becomes_a_generic_failure_without_its_text():
    tool = ScriptedTool(RuntimeError("db password=hunter2hunter2 rejected"))
    h = Harness(tool)

    with capture_logs() as logs:
        outcome = await h.call()

    assert not outcome.ok and outcome.error == "test.echo failed unexpectedly; see the logs"
    assert "hunter2" not in json.dumps(h.audit)
    assert any(e["event"] == "tool.crashed" for e in logs)


async def test_a_result_that_does_not_match_the_model_is_a_failure():
    h = Harness(ScriptedTool("bad_result"))
    outcome = await h.call()
    assert not outcome.ok and "does not match its model" in (outcome.error or "")


async def test_registered_secrets_and_pii_never_reach_the_audit_record_or_logs():
    secret = "sup3r-s3cret-token-value"
    register_secret(secret)
    try:
        h = Harness(ScriptedTool())
        with capture_logs() as logs:
            outcome = await h.call(params={"text": f"key {secret} for ops@example.com"})
        # The rollback keeps real values (it must run later); everything shown to people is masked.
        dumped = json.dumps(h.audit) + json.dumps(logs, default=str) + json.dumps(outcome.result)
        assert secret not in dumped
        assert "ops@example.com" not in dumped
        assert h.audit[0]["params"]["text"] == "key [redacted:secret] for [redacted:email]"
    finally:
        forget_secrets()


def test_registering_the_same_tool_name_twice_is_an_error():
    registry = ToolRegistry()
    registry.register(ScriptedTool())
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(ScriptedTool())


def test_backoff_grows_exponentially_up_to_a_cap():
    assert [backoff_delay(n, lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(20, lambda: 1.0) == 30.0
    assert backoff_delay(3, lambda: 0.0) == 0.0
