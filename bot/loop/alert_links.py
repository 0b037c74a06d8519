"""The links an alert comes with, for the approver: runbook, dashboard, its source, a silence.

Alertmanager and Grafana send them in different places (annotations ``runbook_url`` and
``dashboard_url`` by convention, the rule's ``generatorURL``, Grafana's ``panelURL`` and
``silenceURL``, Alertmanager's ``externalURL`` from which a silence form is built). Grafana's own
silence link is kept in the ``__silence_url`` annotation (annotations starting with ``__`` are
Ooda's own and never shown as the alert's words). Alertmanager's is built here, when a proposal is
made, from the first alert as it was sent: its labels before intake normalized them (a silence
must match what Alertmanager has) and the notification's ``externalURL``. Building it at intake
instead cost more than a third of parsing each alert, for a link only one alert of a task shows.

This module picks the links a proposal shows, each only once and only when it is an http(s) URL,
titled in our words (an alert's text never becomes a link title, so a label cannot say "Approve
now" over a link somewhere else).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from bot.intake.value_cuts import CUT_MARKER
from bot.model.proposals import AlertLink
from bot.model.signals import Signal

SILENCE_ANNOTATION = "__silence_url"
MAX_LINKS = 6


_WHITESPACE = re.compile(r"\s")


def is_web_url(url: str | None) -> bool:
    # A regex, not a per-character loop: intake checks every Alertmanager alert's silence link.
    return bool(url) and str(url).startswith(("http://", "https://")) and _WHITESPACE.search(str(url)) is None


def alertmanager_silence_url(external_url: str, labels: Mapping[str, str]) -> str | None:
    """Alertmanager's "new silence" form, prefilled with the alert's labels as its matchers."""
    if not is_web_url(external_url):
        return None
    matchers = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                        for k, v in sorted(labels.items()))
    return f"{external_url.rstrip('/')}/#/silences/new?filter={quote('{' + matchers + '}', safe='')}"


def silence_link(signal: Signal, sent: Mapping[str, Any] | None, max_bytes: int) -> str | None:
    """The link to silence ``signal``: the one its sender gave, else Alertmanager's prefilled form
    built from ``sent`` (the alert as sent, with its notification's ``externalURL``).

    None when there is none to give: a sender's link that was not a web address, a label cut at
    intake (a silence of a cut value would match nothing), or a link longer than ``max_bytes``
    (the size intake keeps of any value; a link cut short would open the wrong page).
    """
    own = signal.annotations.get(SILENCE_ANNOTATION)
    if own is not None or sent is None or sent.get("silenceURL"):
        return own
    labels = sent.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(v, str) and CUT_MARKER not in v for v in labels.values()):
        return None
    url = alertmanager_silence_url(str(sent.get("externalURL") or ""), labels)
    return url if url is not None and len(url.encode()) <= max_bytes else None


def links_of(signals: list[Signal], silence: str | None = None) -> list[AlertLink]:
    """The first signal's links (a storm's alerts share them), in the order an approver wants them;
    ``silence``: that signal's ``silence_link``."""
    links: list[AlertLink] = []
    seen: set[str] = set()
    for signal in signals[:1]:
        notes = signal.annotations
        for title, url in (("runbook", notes.get("runbook_url")), ("dashboard", notes.get("dashboard_url")),
                           ("source", signal.url), ("silence", silence)):
            if url and is_web_url(url) and url not in seen and len(links) < MAX_LINKS:
                seen.add(url)
                links.append(AlertLink(title=title, url=url))
    return links
