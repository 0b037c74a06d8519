"""Reading a vendor body: the shared limits, and pydantic errors turned into InvalidPayload.

Vendor models validate straight from bytes (``model_validate_json``), which is both the fastest
path and the one whose JSON errors carry a line and column. The first problem is reported with the
dotted path of the field (``alerts.0.labels.instance``) so the sender can find it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bot.errors import InvalidPayload
from bot.model.signals import parse_time

# Alertmanager's own max_alerts is unlimited by default; a bounded request keeps one commit small.
MAX_ALERTS_PER_REQUEST = 1000

# Any length: intake cuts a value past intake.max_value_bytes (bot/intake/value_cuts.py) instead of refusing
# the delivery, since one huge label must not lose the other alerts in it; the body limit bounds all.
LabelValue = str
Labels = dict[str, LabelValue]

Model = TypeVar("Model", bound=BaseModel)


def validate_body(model: type[Model], body: bytes, vendor: str) -> Model:
    """Validate ``body`` against ``model``.

    Raises:
        InvalidPayload: naming the field path and what was expected.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise to_invalid_payload(exc, vendor) from exc


def vendor_time(value: str | None, vendor: str, *path: str | int) -> datetime | None:
    """An RFC 3339 time from a vendor body; empty and Alertmanager's 0001-01-01 mean absent.

    Vendor models keep times as the sender's strings: raw evidence stays verbatim, and the C
    ``fromisoformat`` (which also reads Go's nanoseconds and "Z") costs a tenth of formatting a
    parsed datetime back for ``raw``. ``path`` names the field in the error.
    """
    if not value:
        return None
    try:
        return parse_time(datetime.fromisoformat(value))
    except ValueError:
        field = ".".join(str(part) for part in path)
        raise InvalidPayload(
            f"Invalid {vendor} payload: {field} is not an RFC 3339 time{shown(value)}.", field=field
        ) from None


def to_invalid_payload(exc: ValidationError, vendor: str, prefix: tuple[str | int, ...] = ()) -> InvalidPayload:
    """The first error of ``exc`` as an InvalidPayload; ``prefix`` places a nested model's paths."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = prefix + tuple(first["loc"])
    field = ".".join(str(part) for part in loc) or None
    message = f"Invalid {vendor} payload: {describe(first, field)}"
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} after this one)"
    return InvalidPayload(message, field=field)


def describe(error: Any, field: str | None) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "json_invalid":
        return f"the body is not valid JSON ({ctx.get('error', error['msg'])})."
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return "the body must be a JSON object." if field is None else f"{field} must be a JSON object{shown(value)}."
    if kind == "string_pattern_mismatch":
        return f"{field} must match the pattern {ctx.get('pattern')}{shown(value)}."
    if kind == "missing":
        return f"{field} is required but missing."
    if kind == "extra_forbidden":
        return f"{field} is not part of the schema; unknown fields are rejected so a typo is not silently lost."
    if kind == "string_too_long" and isinstance(value, str):
        limit = ctx.get("max_length")
        return f"{field} is {len(value)} characters long; the limit is {limit}."
    if kind == "too_long":
        limit = ctx.get("max_length")
        got = ctx.get("actual_length")
        if field == "alerts":
            return (
                f"alerts has {got} alerts; one request may carry at most {limit}. Set max_alerts: {limit} in the "
                f"receiver's webhook config (the rest is counted in truncatedAlerts) or split the batch."
            )
        return f"{field} has {got} items; one request may carry at most {limit}."
    return f"{field}: {error['msg']}{shown(value)}."


def shown(value: Any) -> str:
    """A short echo of the offending value; long or nested input is described by type only."""
    if isinstance(value, str) and len(value) <= 64:
        return f" (got {value!r})"
    if isinstance(value, bool | int | float) or value is None:
        return f" (got {value!r})"
    return f" (got {type(value).__name__})"
