"""The alert names a refused delivery carried, read from whatever part of the body arrived.

A sender such as Alertmanager never retries a 4xx, so a refused delivery is alerts lost. The
intake's refusal log line names them, so whoever reads the log knows which alerts to look up in
the sender, and ``ooda_intake_refused_alerts_total{source,reason,alertname}`` counts them.

The body is not trusted to be valid JSON here (it was refused, perhaps for being invalid, or cut
off at the size limit), so the names are found by pattern, not by parsing: ``"alertname":"..."``
as Alertmanager and Grafana send it, a generic request's ``"title"``, a PagerDuty incident's
``"title"``. At most ``MAX_NAMES`` distinct names, each at most ``MAX_NAME_CHARS``.
"""

from __future__ import annotations

import json
import re

MAX_NAMES = 20
MAX_NAME_CHARS = 120
# Names in metric labels are bounded per process, like ooda_unmatched_signals_total's.
METRIC_NAMES_MAX = 200
METRIC_OVERFLOW = "(other)"

_ALERTNAME = re.compile(rb'"alertname"\s*:\s*"((?:[^"\\]|\\.){1,240})"')
_TITLE = re.compile(rb'"title"\s*:\s*"((?:[^"\\]|\\.){1,240})"')


def _decoded(raw: bytes) -> str:
    try:
        text = json.loads(b'"' + raw + b'"')
    except ValueError:
        text = raw.decode("utf-8", "replace")
    return str(text)[:MAX_NAME_CHARS]


def alert_names(body: bytes) -> list[str]:
    """The distinct alert names found in ``body`` (or its first part), in order of appearance."""
    found = _ALERTNAME.findall(body) or _TITLE.findall(body)
    names: list[str] = []
    for raw in found:
        name = _decoded(raw)
        if name not in names:
            names.append(name)
            if len(names) >= MAX_NAMES:
                break
    return names


class RefusedAlertNames:
    """Bounds the alert names that become metric labels, so hostile bodies cannot grow the
    metric without end; past ``METRIC_NAMES_MAX`` names the rest count as ``(other)``."""

    def __init__(self) -> None:
        self._names: set[str] = set()

    def label(self, name: str) -> str:
        if name in self._names:
            return name
        if len(self._names) >= METRIC_NAMES_MAX:
            return METRIC_OVERFLOW
        self._names.add(name)
        return name
