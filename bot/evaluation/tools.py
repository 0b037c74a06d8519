"""Tools that answer from an incident's recording instead of reaching a system.

``ooda eval`` wraps every configured tool in a ``RecordedTool``: the wrapper keeps the tool's
name, params model, result model and its own classification of each call (``category_of``: an
allowlisted read-only command stays a read), so planning renders, validates and classifies
exactly as it would live. Only ``run`` differs:

- a read answers with the recorded result for the same params (or the tool's only recording
  when it was recorded without params), and fails with "not recorded" otherwise, which templates
  then see as ``{ok: false, error: ...}`` as they would a tool that failed;
- a write never runs: a dry run and a real run both fail with ``WRITE_NOT_RUN``. The step's
  policy decision is what the evaluation scores; nothing outside this process is touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from pydantic import BaseModel

from bot.errors import ToolError
from bot.evaluation.suite import RecordedCall
from bot.model.proposals import Category
from bot.ports import StepCall, Tool

WRITE_NOT_RUN = "not run: an evaluation never calls a write tool"


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


class Recordings:
    """The recorded answers of one incident, looked up by tool and params; every lookup is kept."""

    def __init__(self, calls: Iterable[RecordedCall]) -> None:
        self.calls = list(calls)
        self.missing: list[str] = []
        self.writes_attempted: list[str] = []

    def answer(self, tool: str, params: dict[str, Any],
               normalize: Callable[[dict[str, Any]], dict[str, Any]] = dict) -> RecordedCall | None:
        """The recording for ``tool`` called with ``params``; recorded params are ``normalize``d
        first (the tool's defaults filled in) so a recording need not spell out every default."""
        wanted = params_key(params)
        found = next((c for c in self.calls if c.tool == tool and c.params is not None
                      and params_key(_normalized(normalize, c.params)) == wanted), None)
        found = found or next((c for c in self.calls if c.tool == tool and c.params is None), None)
        if found is None:
            self.missing.append(f"{tool} {params_key(params)}")
        return found


class RecordedTool:
    """One configured tool whose calls are answered by ``Recordings``; see the module docstring."""

    supports_dry_run: ClassVar[bool] = True
    idempotent: ClassVar[bool] = True

    def __init__(self, inner: Tool, recordings: Recordings) -> None:
        self.inner = inner
        self.recordings = recordings
        self.name = inner.name  # type: ignore[misc]
        self.category = inner.category  # type: ignore[misc]
        self.params_model = inner.params_model  # type: ignore[misc]
        self.result_model = _Recorded  # recorded results are stored redacted, so not held to the live model

    def category_of(self, params: Any) -> Category:
        return self.inner.category_of(params)

    async def run(self, params: BaseModel, *, dry_run: bool) -> BaseModel:
        shown = params.model_dump(mode="json", by_alias=True)
        if self.inner.category_of(params).writes:
            if not dry_run:
                self.recordings.writes_attempted.append(f"{self.name} {params_key(shown)}")
            raise ToolError(WRITE_NOT_RUN)
        recorded = self.recordings.answer(self.name, shown, self._normalize)
        if recorded is None:
            raise ToolError(f"not recorded for this incident: {self.name} with these params")
        if not recorded.ok:
            raise ToolError(recorded.error or f"{self.name} failed (recorded)")
        return _Recorded.model_validate(recorded.result)

    def rollback_for(self, params: Any, result: Any) -> StepCall | None:
        return None

    def _normalize(self, params: dict[str, Any]) -> dict[str, Any]:
        dumped: dict[str, Any] = self.params_model.model_validate(params).model_dump(mode="json", by_alias=True)
        return dumped


def _normalized(normalize: Callable[[dict[str, Any]], dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    try:
        return normalize(params)
    except ValueError:  # recorded params the tool no longer accepts: they match nothing
        return params


class _Recorded(BaseModel):
    """A recorded result: any fields, as the tool returned them then."""

    model_config = {"extra": "allow"}


def recorded_tools(tools: list[Any], recordings: Recordings) -> list[Any]:
    return [RecordedTool(tool, recordings) for tool in tools]
