"""Which playbook a signal triggers, and which task group it joins.

This runs for every stored signal, so a 10k-alert storm must drain in seconds: every trigger is
compiled once, when the playbook loads, into a ``Matcher`` of plain tuples and precompiled
regexes, and matching itself is a few dict lookups per playbook.

Label semantics follow Alertmanager: a label the signal does not carry counts as the empty
string, so ``match: {team: ""}`` matches signals without a ``team`` label and
``match_re: {team: ".*"}`` matches every signal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bot.model.signals import Signal

if TYPE_CHECKING:
    from bot.playbooks.schema import Matchers, Playbook, Trigger


class Matcher:
    """A trigger compiled to plain Python: no pydantic attribute access on the hot path."""

    __slots__ = ("equal", "regex", "sets", "severities", "sources")

    def __init__(self, trigger: Matchers) -> None:
        self.sources = frozenset(trigger.sources) if trigger.sources is not None else None
        self.severities = frozenset(trigger.severity) if trigger.severity else None
        self.equal = tuple(trigger.match.items())
        self.sets = tuple((name, frozenset(values)) for name, values in trigger.match_in.items())
        self.regex = tuple((name, re.compile(pattern)) for name, pattern in trigger.match_re.items())

    def __call__(self, signal: Signal) -> bool:
        if self.sources is not None and signal.source not in self.sources:
            return False
        if self.severities is not None and signal.severity not in self.severities:
            return False
        labels = signal.labels
        for name, value in self.equal:
            if labels.get(name, "") != value:
                return False
        for name, allowed in self.sets:
            if labels.get(name, "") not in allowed:
                return False
        return all(pattern.fullmatch(labels.get(name, "")) is not None for name, pattern in self.regex)


def matches(trigger: Trigger, signal: Signal) -> bool:
    """True if ``signal`` satisfies every matcher of ``trigger`` (source, severity, labels)."""
    return trigger.matcher(signal)


def group_key(playbook: Playbook, labels: Mapping[str, str]) -> str:
    """The key that puts signals (or manual runs) into one task group.

    Stable across restarts and across the order of ``group_by`` in the file; reads like an
    Alertmanager group key: ``http-5xx-ratio{cluster="prod-eu-1",service="checkout"}``. Missing labels render as "".
    Values are JSON-quoted so a label value cannot forge another label's part of the key.
    """
    names = sorted(playbook.trigger.group_by) if playbook.trigger else []
    parts = ",".join(f"{name}={json.dumps(str(labels.get(name, '')), ensure_ascii=False)}" for name in names)
    return f"{playbook.id}{{{parts}}}"
