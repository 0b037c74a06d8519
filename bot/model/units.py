"""Numbers with their units, as a person reads them: ``7%`` rather than ``0.07``.

A query's result is a bare number; what it measures is known to whoever wrote the query. A
playbook names it (``unit: ratio`` next to a ``prometheus.query``) and evidence shows the value
that way in chat, ``ooda show`` and the console:

    ratio    0.0734  -> 7.34%      a fraction of 1; changes in percentage points (+2.5 pp)
    percent  93.2    -> 93.2%      already in percent
    seconds  0.25    -> 250 ms     durations from µs to days (s, min, h, d)
    days     29.5    -> 29.5 d     e.g. a certificate's time to expiry; under a day in hours
    bytes    1.6e9   -> 1.49 GiB   binary multiples, as ``df -h`` and ``du -h`` count

Three significant digits throughout: evidence is read at a glance, and the exact value is in the
query's graph link and the audit trail.
"""

from __future__ import annotations

import math
from typing import Literal

Unit = Literal["ratio", "percent", "seconds", "days", "bytes"]
UNITS: tuple[Unit, ...] = ("ratio", "percent", "seconds", "days", "bytes")

_DURATIONS = (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0), ("ms", 1e-3), ("µs", 1e-6))
_BYTES = (("PiB", 1024.0**5), ("TiB", 1024.0**4), ("GiB", 1024.0**3), ("MiB", 1024.0**2), ("KiB", 1024.0))


def _digits(value: float) -> str:
    """Three significant digits, never in exponent form for the sizes units produce."""
    rounded = float(f"{value:.3g}")
    if rounded == 0:
        return "0"
    text = f"{rounded:.3g}"
    if "e" in text:  # tiny or huge: plain decimals still read better than 1e-05
        text = f"{rounded:f}".rstrip("0").rstrip(".")
    return text


def _scaled(magnitude: float, scales: tuple[tuple[str, float], ...], smallest: str) -> str:
    for suffix, size in scales:
        if magnitude >= size:
            return f"{_digits(magnitude / size)} {suffix}"
    return f"{_digits(magnitude)} {smallest}" if magnitude else f"0 {smallest}"


def _magnitude(value: float, unit: Unit) -> str:
    if unit == "ratio":
        return f"{_digits(value * 100)}%"
    if unit == "percent":
        return f"{_digits(value)}%"
    if unit == "bytes":
        return _scaled(value, _BYTES, "B")
    seconds = value * 86400 if unit == "days" else value
    # A duration over one day reads in days; below a microsecond it is noise, shown in µs.
    return _scaled(seconds, _DURATIONS, "µs") if seconds >= 1e-6 else f"{_digits(seconds * 1e6)} µs"


def format_value(value: float | None, unit: Unit) -> str:
    """``value`` in ``unit``: ``7.34%``, ``250 ms``, ``1.49 GiB``; n/a, NaN and ±Inf as they are."""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = _magnitude(abs(value), unit)
    return f"-{text}" if value < 0 and text[0] != "0" else text


def format_change(value: float, unit: Unit) -> str:
    """A change with its sign; a ratio's or a percentage's change is in percentage points."""
    if unit in ("ratio", "percent"):
        points = value * 100 if unit == "ratio" else value
        text = _digits(abs(points))
        return f"{'-' if points < 0 and text != '0' else '+'}{text} pp"
    text = format_value(abs(value), unit)
    return f"{'-' if value < 0 and not text.startswith('0') else '+'}{text}"
