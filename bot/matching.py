"""Which playbook a signal triggers, and which task group it joins.

This runs for every stored signal, so a 10k-alert storm must drain in seconds: every regex and
set is compiled once when the playbook loads (``Trigger`` keeps them), and matching itself is a
few dict lookups per playbook.

Label semantics follow Alertmanager: a label the signal does not carry counts as the empty
string, so ``match: {team: ""}`` matches signals without a ``team`` label and
``match_re: {team: ".*"}`` matches every signal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bot.signals import Signal

if TYPE_CHECKING:
    from bot.playbooks import Playbook, Trigger


def matches(trigger: Trigger, signal: Signal) -> bool:
    """True if ``signal`` satisfies every matcher of ``trigger`` (source, severity, labels)."""
    if trigger.source_set is not None and signal.source not in trigger.source_set:
        return False
    if trigger.severity_set is not None and signal.severity not in trigger.severity_set:
        return False
    labels = signal.labels
    for name, value in trigger.match.items():
        if labels.get(name, "") != value:
            return False
    for name, allowed in trigger.match_in_sets.items():
        if labels.get(name, "") not in allowed:
            return False
    for name, pattern in trigger.match_re_compiled.items():
        if pattern.fullmatch(labels.get(name, "")) is None:
            return False
    return True


def group_key(playbook: Playbook, labels: Mapping[str, str]) -> str:
    """The key that puts signals (or manual runs) into one task group.

    Stable across restarts and across the order of ``group_by`` in the file; reads like an
    Alertmanager group key: ``http-5xx-spike{service="checkout"}``. Missing labels render as "".
    Values are JSON-quoted so a label value cannot forge another label's part of the key.
    """
    names = sorted(playbook.trigger.group_by) if playbook.trigger else []
    parts = ",".join(f"{name}={json.dumps(str(labels.get(name, '')), ensure_ascii=False)}" for name in names)
    return f"{playbook.id}{{{parts}}}"
