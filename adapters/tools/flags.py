"""``flags.get`` and ``flags.set``: feature flags through the Unleash admin API.

Calls used (Unleash admin API, project-scoped):

    GET  /api/admin/projects/{project}/features/{feature}
    POST /api/admin/projects/{project}/features/{feature}/environments/{env}/on | /off
    POST /api/admin/projects/{project}/features/{feature}/environments/{env}/strategies
    PUT  /api/admin/projects/{project}/features/{feature}/environments/{env}/strategies/{id}
    DELETE /api/admin/projects/{project}/features/{feature}/environments/{env}/strategies/{id}

The rollout percentage is the ``rollout`` parameter of the environment's first ``flexibleRollout``
strategy (Unleash keeps strategy parameters as strings). ``flags.set`` writes absolute values, so
repeating it is harmless (idempotent), and it records the previous value so that its rollback is
another ``flags.set`` restoring it. When there was no rollout strategy to change, it adds one and
records its id; the rollback deletes that strategy again (``remove_strategy``), because leaving it
would keep the flag at the new percentage for users the old strategies let in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import structlog
import yarl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.audit.redaction import redact_text, register_secret
from bot.errors import ConfigError, RetryableToolError, ToolError
from bot.jsoncodec import loads
from bot.model.proposals import Category
from bot.outbound_http import TRANSPORT_ERRORS, OutboundSession, describe, per_phase_timeout
from bot.ports import StepCall

log = structlog.get_logger(__name__)

FLAG_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # Unleash's URL-friendly names; no path tricks
STRATEGY_ID = r"^[A-Za-z0-9-]{1,64}$"  # Unleash strategy ids are UUIDs


class FlagsToolConfig(BaseModel):
    """``tools.flags`` in the config file."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    token_env: str
    project: str = "default"
    environment: str = "production"
    timeout_s: float = Field(10.0, gt=0, le=120)


class FlagState(BaseModel):
    enabled: bool
    rollout: int | None  # None when the environment has no flexibleRollout strategy
    strategy_id: str | None = None
    strategy_ids: frozenset[str] = frozenset()  # every strategy of the environment


class FlagGetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flag: str = Field(pattern=FLAG_NAME)


class FlagGetResult(BaseModel):
    flag: str
    project: str
    environment: str
    enabled: bool
    rollout: int | None = None


class FlagSetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flag: str = Field(pattern=FLAG_NAME)
    enabled: bool
    rollout: int | None = Field(default=None, ge=0, le=100)  # None leaves the rollout as it is
    # A strategy to delete: what the rollback of a flags.set that added one passes.
    remove_strategy: str | None = Field(default=None, pattern=STRATEGY_ID)

    @model_validator(mode="after")
    def _rollout_or_removal(self) -> FlagSetParams:
        if self.rollout is not None and self.remove_strategy is not None:
            raise ValueError("give rollout or remove_strategy, not both")
        return self


class FlagSetResult(BaseModel):
    flag: str
    project: str
    environment: str
    enabled: bool
    rollout: int | None = None
    previous_enabled: bool
    previous_rollout: int | None = None
    added_strategy_id: str | None = None  # the rollout strategy this call created, if it had to
    changed: bool
    dry_run: bool = False


class UnleashAdmin:
    """The few admin API calls the flag tools need, with errors translated at the seam."""

    def __init__(self, config: FlagsToolConfig, env: Mapping[str, str]) -> None:
        token = env.get(config.token_env)
        if not token:
            raise ConfigError(f"tools.flags.token_env names {config.token_env}, but it is not set; export it")
        register_secret(token)
        self.config = config
        self._base = config.base_url.rstrip("/")
        self._http = OutboundSession(per_phase_timeout(config.timeout_s),
                                     headers={"Authorization": token, "Accept": "application/json"})

    async def aclose(self) -> None:
        await self._http.aclose()

    def _env_path(self, flag: str) -> str:
        project = quote(self.config.project, safe="")
        return f"/api/admin/projects/{project}/features/{flag}/environments/{quote(self.config.environment, safe='')}"

    async def _request(self, method: str, path: str, flag: str, json: Any = None) -> Any:
        """The answer's JSON (None when it has no body)."""
        try:
            # encoded=True: path segments are quoted here already (``quote``), not to be requoted.
            async with self._http.session.request(method, yarl.URL(self._base + path, encoded=True), json=json,
                                                  allow_redirects=False) as response:
                status, text = response.status, await response.text()
        except TRANSPORT_ERRORS as exc:
            raise RetryableToolError(f"Unleash at {self.config.base_url} unreachable: {describe(exc)}") from exc
        if status < 400:
            try:
                return loads(text) if text.strip() else None
            except ValueError:
                raise ToolError(f"Unleash {method} {path} answered {status} with a body that is not JSON") from None
        if status in (401, 403):
            raise ToolError(
                f"Unleash refused the token from {self.config.token_env} (HTTP {status}); "
                "it needs an admin token with access to project " + repr(self.config.project)
            )
        if status == 404:
            raise ToolError(
                f"flag {flag!r} not found in Unleash project {self.config.project!r} "
                f"(or environment {self.config.environment!r} is not enabled there)"
            )
        detail = redact_text(text[:300])
        if status >= 500 or status == 429:
            raise RetryableToolError(f"Unleash {method} {path} returned {status}: {detail}")
        raise ToolError(f"Unleash {method} {path} returned {status}: {detail}")

    async def read(self, flag: str) -> FlagState:
        project = quote(self.config.project, safe="")
        feature = await self._request("GET", f"/api/admin/projects/{project}/features/{flag}", flag)
        if not isinstance(feature, dict):
            raise ToolError(f"Unleash answered a read of flag {flag!r} with no feature")
        for env in feature.get("environments") or []:
            if env.get("name") == self.config.environment:
                return state_from_environment(env)
        raise ToolError(
            f"flag {flag!r} has no environment {self.config.environment!r}; "
            "check tools.flags.environment against the project's environments"
        )

    async def set_enabled(self, flag: str, enabled: bool) -> None:
        await self._request("POST", f"{self._env_path(flag)}/{'on' if enabled else 'off'}", flag)

    async def set_rollout(self, flag: str, rollout: int, strategy_id: str | None) -> str | None:
        """Update strategy ``strategy_id``, or add a rollout strategy when it is None; returns the
        id of the strategy added."""
        body = {
            "name": "flexibleRollout",
            "constraints": [],
            "parameters": {"rollout": str(rollout), "stickiness": "default", "groupId": flag},
        }
        path = f"{self._env_path(flag)}/strategies"
        if strategy_id is not None:
            await self._request("PUT", f"{path}/{quote(strategy_id, safe='')}", flag, json=body)
            return None
        added = await self._request("POST", path, flag, json=body)
        if not isinstance(added, dict) or not isinstance(added.get("id"), str):
            raise ToolError(f"Unleash added a strategy to {flag!r} but did not return its id; undo cannot remove it")
        return added["id"]

    async def delete_strategy(self, flag: str, strategy_id: str) -> None:
        await self._request("DELETE", f"{self._env_path(flag)}/strategies/{quote(strategy_id, safe='')}", flag)


def state_from_environment(env: Mapping[str, Any]) -> FlagState:
    strategies = env.get("strategies") or []
    ids = frozenset(s["id"] for s in strategies if isinstance(s.get("id"), str))
    for strategy in strategies:
        if strategy.get("name") == "flexibleRollout" and not strategy.get("disabled", False):
            raw = (strategy.get("parameters") or {}).get("rollout")
            try:
                rollout = int(raw) if raw is not None else None
            except (TypeError, ValueError):
                rollout = None
            return FlagState(enabled=bool(env.get("enabled")), rollout=rollout, strategy_id=strategy.get("id"),
                             strategy_ids=ids)
    return FlagState(enabled=bool(env.get("enabled")), rollout=None, strategy_ids=ids)


class FlagsGetTool:
    name: ClassVar[str] = "flags.get"
    category: ClassVar[Category] = Category.read
    params_model: ClassVar[type[BaseModel]] = FlagGetParams
    result_model: ClassVar[type[BaseModel]] = FlagGetResult
    supports_dry_run: ClassVar[bool] = True  # a read changes nothing, so the preview is the read
    idempotent: ClassVar[bool] = True

    def __init__(self, config: FlagsToolConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self._unleash = UnleashAdmin(config, env)

    async def aclose(self) -> None:
        await self._unleash.aclose()

    def category_of(self, params: FlagGetParams) -> Category:
        return Category.read

    def rollback_for(self, params: FlagGetParams, result: FlagGetResult) -> StepCall | None:
        return None

    async def run(self, params: FlagGetParams, *, dry_run: bool) -> FlagGetResult:
        state = await self._unleash.read(params.flag)
        return FlagGetResult(
            flag=params.flag,
            project=self.config.project,
            environment=self.config.environment,
            enabled=state.enabled,
            rollout=state.rollout,
        )


class FlagsSetTool:
    name: ClassVar[str] = "flags.set"
    category: ClassVar[Category] = Category.write_reversible
    params_model: ClassVar[type[BaseModel]] = FlagSetParams
    result_model: ClassVar[type[BaseModel]] = FlagSetResult
    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True  # absolute values: applying twice ends in the same state

    def __init__(self, config: FlagsToolConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self._unleash = UnleashAdmin(config, env)

    async def aclose(self) -> None:
        await self._unleash.aclose()

    def category_of(self, params: FlagSetParams) -> Category:
        return self.category

    def rollback_for(self, params: FlagSetParams, result: FlagSetResult) -> StepCall | None:
        """Restore the previous state: the enabled switch, and the rollout, or the absence of a
        rollout strategy by deleting the one this call added."""
        if result.dry_run or not result.changed:
            return None
        restore: dict[str, Any] = {"flag": result.flag, "enabled": result.previous_enabled}
        if result.added_strategy_id is not None:
            restore["remove_strategy"] = result.added_strategy_id
        elif result.previous_rollout is not None and result.previous_rollout != result.rollout:
            restore["rollout"] = result.previous_rollout
        return StepCall(tool=self.name, params=restore)

    async def run(self, params: FlagSetParams, *, dry_run: bool) -> FlagSetResult:
        before = await self._unleash.read(params.flag)
        rollout = params.rollout if params.rollout is not None else before.rollout
        rollout_changes = params.rollout is not None and params.rollout != before.rollout
        enabled_changes = params.enabled != before.enabled
        # Gone already (a repeated rollback): nothing to do, which keeps flags.set idempotent.
        removal = params.remove_strategy if params.remove_strategy in before.strategy_ids else None
        added: str | None = None
        if not dry_run:
            # Order so that users never see the old rollout on a newly enabled flag, nor the new
            # rollout on a flag about to be switched off.
            if params.enabled and rollout_changes:
                added = await self._unleash.set_rollout(params.flag, rollout or 0, before.strategy_id)
            if params.enabled and removal:
                await self._unleash.delete_strategy(params.flag, removal)
            if enabled_changes:
                await self._unleash.set_enabled(params.flag, params.enabled)
            if not params.enabled and rollout_changes:
                added = await self._unleash.set_rollout(params.flag, rollout or 0, before.strategy_id)
            if not params.enabled and removal:
                await self._unleash.delete_strategy(params.flag, removal)
            log.info(
                "flags.set_done",
                flag=params.flag,
                environment=self.config.environment,
                enabled=params.enabled,
                rollout=rollout,
                previous_enabled=before.enabled,
                previous_rollout=before.rollout,
            )
        return FlagSetResult(
            flag=params.flag,
            project=self.config.project,
            environment=self.config.environment,
            enabled=params.enabled,
            rollout=rollout,
            previous_enabled=before.enabled,
            previous_rollout=before.rollout,
            added_strategy_id=added,
            changed=enabled_changes or rollout_changes or removal is not None,
            dry_run=dry_run,
        )
