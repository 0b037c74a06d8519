import copy
from collections.abc import AsyncIterator

import pytest

from adapters.tools.flags import FlagGetParams, FlagSetParams, FlagsGetTool, FlagsSetTool, FlagsToolConfig
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.loop.gateway import ToolGateway, ToolRegistry
from bot.ports import StepCall
from demo.standin import Standin
from tests.fakes.authority import ScriptedAuthority, call_tool

from .conftest import STANDIN_TOKEN

ENV = {"UNLEASH_ADMIN_TOKEN": STANDIN_TOKEN}


def production(standin: Standin, flag: str) -> dict:
    return next(env for env in standin.flags[flag]["environments"] if env["name"] == "production")


def rollout_of(standin: Standin, flag: str) -> str:
    return production(standin, flag)["strategies"][0]["parameters"]["rollout"]


@pytest.fixture
async def tools(standin: Standin) -> AsyncIterator[tuple[FlagsGetTool, FlagsSetTool]]:
    config = FlagsToolConfig(base_url=standin.base_url, token_env="UNLEASH_ADMIN_TOKEN")
    get, set_ = FlagsGetTool(config, ENV), FlagsSetTool(config, ENV)
    yield get, set_
    await get.aclose()
    await set_.aclose()


async def test_get_reads_enabled_and_rollout(tools):
    get, _ = tools
    result = await get.run(FlagGetParams(flag="new-search"), dry_run=False)
    assert (result.enabled, result.rollout, result.environment) == (True, 25, "production")


async def test_set_rollout_records_the_previous_value_and_rollback_restores_it(standin, tools):
    get, set_ = tools

    result = await set_.run(FlagSetParams(flag="new-search", enabled=True, rollout=50), dry_run=False)

    assert rollout_of(standin, "new-search") == "50"
    assert (result.previous_enabled, result.previous_rollout, result.changed) == (True, 25, True)
    undo = set_.rollback_for(FlagSetParams(flag="new-search", enabled=True, rollout=50), result)
    assert undo == StepCall(tool="flags.set", params={"flag": "new-search", "enabled": True, "rollout": 25})

    await set_.run(FlagSetParams.model_validate(undo.params), dry_run=False)
    assert rollout_of(standin, "new-search") == "25"
    assert (await get.run(FlagGetParams(flag="new-search"), dry_run=False)).rollout == 25


async def test_disabling_a_flag_can_be_undone(standin, tools):
    _, set_ = tools
    params = FlagSetParams(flag="checkout-v2", enabled=False)

    result = await set_.run(params, dry_run=False)

    assert production(standin, "checkout-v2")["enabled"] is False
    undo = set_.rollback_for(params, result)
    assert undo is not None and undo.params == {"flag": "checkout-v2", "enabled": True}
    await set_.run(FlagSetParams.model_validate(undo.params), dry_run=False)
    assert production(standin, "checkout-v2")["enabled"] is True


async def test_undo_of_a_rollout_that_had_no_strategy_deletes_the_added_one(standin, tools):
    """Before: switched off, one non-rollout strategy. Undo must leave exactly that, not a rollout
    strategy that would keep serving the new percentage once the flag is switched on again."""
    _, set_ = tools
    env = production(standin, "recommendations")
    env["strategies"][0].update(name="default", parameters={})
    before = copy.deepcopy(env)
    params = FlagSetParams(flag="recommendations", enabled=True, rollout=10)

    result = await set_.run(params, dry_run=False)

    assert result.added_strategy_id is not None and result.previous_rollout is None
    assert [s["name"] for s in production(standin, "recommendations")["strategies"]] == ["default", "flexibleRollout"]
    undo = set_.rollback_for(params, result)
    assert undo == StepCall(tool="flags.set", params={
        "flag": "recommendations", "enabled": False, "remove_strategy": result.added_strategy_id})

    undone = await set_.run(FlagSetParams.model_validate(undo.params), dry_run=False)
    assert production(standin, "recommendations") == before
    assert undone.changed is True

    again = await set_.run(FlagSetParams.model_validate(undo.params), dry_run=False)  # a repeated rollback
    assert again.changed is False and production(standin, "recommendations") == before


def test_a_rollout_and_a_strategy_removal_in_one_call_are_refused():
    with pytest.raises(ValueError, match="rollout or remove_strategy, not both"):
        FlagSetParams(flag="x", enabled=True, rollout=5, remove_strategy="3f2c9a8e-1d2b-4c5d-8e9f-0a1b2c3d4e5f")
    with pytest.raises(ValueError):
        FlagSetParams(flag="x", enabled=True, remove_strategy="../other")


async def test_setting_the_current_value_changes_nothing_and_needs_no_rollback(standin, tools):
    _, set_ = tools
    params = FlagSetParams(flag="new-search", enabled=True, rollout=25)

    result = await set_.run(params, dry_run=False)

    assert result.changed is False
    assert set_.rollback_for(params, result) is None
    assert [c["method"] for c in standin.calls] == ["GET"]


async def test_dry_run_reports_the_change_without_writing(standin, tools):
    _, set_ = tools

    result = await set_.run(FlagSetParams(flag="recommendations", enabled=True, rollout=10), dry_run=True)

    assert result.dry_run is True and result.changed is True
    assert (result.previous_enabled, result.enabled, result.rollout) == (False, True, 10)
    assert [c["method"] for c in standin.calls] == ["GET"]
    assert production(standin, "recommendations")["enabled"] is False


async def test_enabling_with_a_new_rollout_writes_the_rollout_first(standin, tools):
    _, set_ = tools

    await set_.run(FlagSetParams(flag="recommendations", enabled=True, rollout=10), dry_run=False)

    writes = [c["path"].rsplit("/", 2)[-2:] for c in standin.calls if c["method"] != "GET"]
    assert writes[0][0] == "strategies" and writes[1] == ["production", "on"]
    assert rollout_of(standin, "recommendations") == "10"


async def test_unknown_flag_is_a_clear_error(tools):
    get, _ = tools
    with pytest.raises(ToolError, match=r"flag 'no-such-flag' not found in Unleash project 'default'"):
        await get.run(FlagGetParams(flag="no-such-flag"), dry_run=False)


async def test_a_rejected_token_names_the_env_var_never_the_value(standin):
    tool = FlagsGetTool(
        FlagsToolConfig(base_url=standin.base_url, token_env="UNLEASH_ADMIN_TOKEN"),
        {"UNLEASH_ADMIN_TOKEN": "wrong-token-value"},
    )
    try:
        with pytest.raises(ToolError) as caught:
            await tool.run(FlagGetParams(flag="new-search"), dry_run=False)
    finally:
        await tool.aclose()
    assert "UNLEASH_ADMIN_TOKEN" in str(caught.value) and "401" in str(caught.value)
    assert "wrong-token-value" not in str(caught.value)


async def test_missing_token_env_is_a_config_error():
    with pytest.raises(ConfigError, match="UNLEASH_ADMIN_TOKEN"):
        FlagsSetTool(FlagsToolConfig(base_url="http://127.0.0.1:1", token_env="UNLEASH_ADMIN_TOKEN"), {})


async def test_server_errors_are_retryable(standin, tools):
    get, _ = tools
    standin.fail_next("/api/admin/", status=503)
    with pytest.raises(RetryableToolError, match="503"):
        await get.run(FlagGetParams(flag="new-search"), dry_run=False)


def test_flag_names_cannot_walk_the_url():
    with pytest.raises(ValueError):
        FlagSetParams(flag="../../users", enabled=True)
    with pytest.raises(ValueError):
        FlagSetParams(flag="x", enabled=True, rollout=101)


async def test_through_the_gateway_a_transient_failure_is_retried_and_the_rollback_returned(standin, tools):
    _, set_ = tools
    registry = ToolRegistry()
    registry.register(set_)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    authority = ScriptedAuthority()
    gateway = ToolGateway(registry, authority=authority, sleep=sleep, random=lambda: 0.5)
    audit = authority.audit_view()

    standin.fail_next("/api/admin/", status=503, times=1)
    outcome = await call_tool(
        gateway, StepCall(tool="flags.set", params={"flag": "new-search", "enabled": True, "rollout": 5}),
        timeout_s=5, retries=2)

    assert outcome.ok and outcome.attempts == 2 and slept == [0.25]
    assert rollout_of(standin, "new-search") == "5"
    assert outcome.rollback == StepCall(tool="flags.set", params={"flag": "new-search", "enabled": True, "rollout": 25})
    assert audit[0]["outcome"] == "succeeded" and audit[0]["attempts"] == 2
