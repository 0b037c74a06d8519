"""Over-long alert values are cut at intake instead of failing the whole delivery.

Alertmanager never retries a 4xx, so refusing one notification because a single label or
annotation is huge (a stack trace pasted into a description, a generated label) would lose every
other alert in it. Intake therefore keeps every alert and cuts each label, annotation and title
longer than ``intake.max_value_bytes`` (default 4 KiB of UTF-8) to that size, on a character
boundary, followed by a marker a reader cannot miss::

    <the first 4096 bytes>… [cut by Ooda: 20480 bytes, first 4096 kept]

The cut is recorded on the signal itself, in the annotation ``ooda_cut`` (which fields, how long
they were), so ``ooda show``, the evidence and the audit export say the value is not the sender's
whole text. Strings inside the raw record kept as evidence are cut the same way, so one stored row
stays bounded too. Fingerprints and signal ids are computed by the adapters from what the sender
sent, before any cut: a redelivery of the same alert still lands on the same signal.

Ooda's own annotations (names starting with ``__``, such as the silence link the adapters build
from the alert's labels) are never cut: a link cut short opens the wrong page, and a silence built
from cut label values would match nothing. One that is over the limit is left out instead (the
proposal then shows no silence link; Alertmanager's UI still has one). It is not named in
``ooda_cut``, which lists what the sender sent and Ooda shortened.
"""

from __future__ import annotations

from typing import Any

from bot.model.signals import Signal

DEFAULT_MAX_VALUE_BYTES = 4 * 1024
CUT_ANNOTATION = "ooda_cut"
CUT_MARKER = "[cut by Ooda:"  # how every cut value ends: a value holding it is not what the sender sent
OWN_ANNOTATION_PREFIX = "__"


def cut_text(value: str, max_bytes: int) -> tuple[str, int] | None:
    """``value`` cut to ``max_bytes`` of UTF-8 with the marker, and its original size in bytes;
    None when it fits."""
    if len(value) * 4 <= max_bytes:  # no character takes more than 4 bytes: surely fits
        return None
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return None
    kept = encoded[:max_bytes].decode("utf-8", "ignore")  # drops a character split at the edge
    return f"{kept}… {CUT_MARKER} {len(encoded)} bytes, first {max_bytes} kept]", len(encoded)


def _cut_mapping(values: dict[str, str], where: str, max_bytes: int,
                 cuts: list[str]) -> dict[str, str]:
    out: dict[str, str] | None = None
    for key, value in values.items():
        cut = cut_text(value, max_bytes)
        if cut is None:
            continue
        if out is None:
            out = dict(values)
        if where == "annotations" and key.startswith(OWN_ANNOTATION_PREFIX):
            del out[key]  # a link Ooda derived: left out whole rather than cut into a broken one
            continue
        out[key] = cut[0]
        cuts.append(f"{where}.{key} ({cut[1]} bytes)")
    return values if out is None else out


def _cut_raw(value: Any, max_bytes: int) -> Any:
    """``value`` with long strings cut at any depth; the very same object when none was long, so
    the common alert costs a walk and no copy."""
    if isinstance(value, str):
        cut = cut_text(value, max_bytes)
        return value if cut is None else cut[0]
    if isinstance(value, dict):
        changed = {key: new for key, item in value.items() if (new := _cut_raw(item, max_bytes)) is not item}
        return {**value, **changed} if changed else value
    if isinstance(value, list):
        items = [_cut_raw(item, max_bytes) for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    return value


def _longest(value: dict[str, Any] | list[Any]) -> int:
    """The length in characters of the longest string anywhere in ``value``. A plain loop: it runs
    for every alert of a large delivery, and costs a few percent of parsing it."""
    best = 0
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if kind is str:
            size = len(item)
        elif kind is dict or kind is list:
            size = _longest(item)  # type: ignore[arg-type]  # narrowed by the type check above
        else:
            continue
        if size > best:
            best = size
    return best


def cut_signal(signal: Signal, max_bytes: int) -> Signal:
    """``signal`` with every over-long label, annotation and title cut, the cuts named in the
    ``ooda_cut`` annotation; the same object when nothing was too long."""
    # No character takes more than 4 bytes: a quick screen lets the common alert through untouched.
    longest = max(_longest(signal.raw), _longest(signal.labels), _longest(signal.annotations), len(signal.title))
    if longest * 4 <= max_bytes:
        return signal
    cuts: list[str] = []
    labels = _cut_mapping(signal.labels, "labels", max_bytes, cuts)
    annotations = _cut_mapping(signal.annotations, "annotations", max_bytes, cuts)
    title_cut = cut_text(signal.title, max_bytes)
    if title_cut is not None:
        cuts.append(f"title ({title_cut[1]} bytes)")
    raw = _cut_raw(signal.raw, max_bytes)
    if not cuts and raw is signal.raw and annotations is signal.annotations:
        return signal
    if cuts:
        annotations = {**annotations,
                       CUT_ANNOTATION: f"cut to {max_bytes} bytes each: " + ", ".join(cuts)}
    clone = object.__new__(Signal)
    changed = {"labels": labels, "annotations": annotations, "raw": raw,
               "title": signal.title if title_cut is None else title_cut[0]}
    for name in Signal.__slots__:
        object.__setattr__(clone, name, changed.get(name, getattr(signal, name)))
    return clone


def cut_signals(signals: list[Signal], body_size: int, max_bytes: int) -> list[Signal]:
    """Every signal of one delivery with its over-long values cut.

    A body no larger than the limit cannot hold a value over it, so the common small delivery
    costs nothing here.
    """
    if body_size <= max_bytes:
        return signals
    return [cut_signal(signal, max_bytes) for signal in signals]
