"""The digest's words: figures turned into titled sections of short lines, each figure of the day
with its 7-day trend beside it as a sparkline and the week's total or median.

Plain text: chat surfaces put the sections into their own layout (Slack blocks, a Discord embed)
and the CLI prints ``Digest.text``. Names that come from alerts (alert names, services) are cut
short and their mentions defused, so a label cannot page a channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from statistics import median
from typing import Any

from bot.store.digest_figures import Durations, Figures
from bot.store.ports import UnmatchedAlertRow

BARS = "▁▂▃▄▅▆▇█"
NO_DATA = "·"
ROWS_PER_SECTION = 5  # ranked lists (denials, people, checks) beyond this are summed up in one line


@dataclass
class DigestSection:
    heading: str
    lines: list[str]


@dataclass
class Digest:
    """One digest: a title, its sections, the figures behind them, the chart when rendered."""

    title: str
    day: date
    zone: str
    sections: list[DigestSection]
    figures: Figures
    chart_png: bytes | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        parts = [self.title]
        for section in self.sections:
            parts.append(f"\n{section.heading}")
            parts += [f"  {line}" for line in section.lines]
        return "\n".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "timezone": self.zone, "title": self.title, "digest": self.text,
                "sections": [{"heading": s.heading, "lines": s.lines} for s in self.sections],
                "figures": self.figures.as_json()}


def sparkline(values: Sequence[float | None]) -> str:
    """One bar per day, scaled to the week's largest value; ``·`` for a day without data."""
    known = [v for v in values if v is not None]
    top = max(known, default=0)
    if top <= 0:
        return "".join(NO_DATA if v is None else BARS[0] for v in values)
    return "".join(NO_DATA if v is None else BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))]
                   for v in values)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def counted(label: str, trend: Sequence[int]) -> str:
    return f"{label}: {trend[-1]}   {sparkline(trend)}  week {sum(trend)}"


def _timed(label: str, d: Durations | None) -> str:
    if d is None or d.count[-1] == 0:
        week = _week_median(d.p50) if d else None
        return f"{label}: none today   {sparkline(d.p50 if d else [])}  week median of p50 {duration(week)}"
    return (f"{label}: p50 {duration(d.p50[-1])}, p90 {duration(d.p90[-1])} ({d.count[-1]})   "
            f"{sparkline(d.p50)}  week median of p50 {duration(_week_median(d.p50))}")


def _mean(label: str, values: list[float | None]) -> str:
    return f"{label}: {duration(values[-1])}   {sparkline(values)}  week median {duration(_week_median(values))}"


def _week_median(values: Sequence[float | None] | None) -> float | None:
    known = [v for v in values or [] if v is not None]
    return median(known) if known else None


def _ranked(trends: dict[str, list[int]], name: Any = str) -> list[str]:
    lines = [counted(name(key), trend) for key, trend in list(trends.items())[:ROWS_PER_SECTION]]
    rest = list(trends.values())[ROWS_PER_SECTION:]
    if rest:
        lines.append(f"and {len(rest)} more: {sum(t[-1] for t in rest)} today, {sum(sum(t) for t in rest)} this week")
    return lines


def build_sections(figures: Figures, unmatched: list[UnmatchedAlertRow], unmatched_names: int) -> list[DigestSection]:
    # Imported here: bot.chat.wording imports bot.chat.commands, which imports the digest.
    from bot.chat.wording import neutralize_mentions, truncate

    def label(text: str) -> str:
        return neutralize_mentions(truncate(text, 80))

    sections = []
    total = [sum(day) for day in zip(*figures.alerts_by_source.values(), strict=True)] or [0] * len(figures.days)
    sections.append(DigestSection("Alerts received", [counted("all sources", total)]
                                  + [counted(label(s), t) for s, t in figures.alerts_by_source.items()]))
    sections.append(DigestSection("Tasks", [counted(k, t) for k, t in figures.tasks.items()]))
    sections.append(DigestSection("Response times", [
        _timed("to proposal", figures.time_to_proposal), _timed("to approval", figures.time_to_approval),
        _timed("to resolution", figures.time_to_resolution), _mean("MTTA (to a person's decision)", figures.mtta),
        _mean("MTTR (completed tasks)", figures.mttr)]))
    autonomy = []
    for level, (auto, total_steps) in figures.automatic_steps.items():
        share = [a / t if t else None for a, t in zip(auto, total_steps, strict=True)]
        today = f"{auto[-1]} of {total_steps[-1]} ({auto[-1] / total_steps[-1]:.0%})" if total_steps[-1] else "none"
        autonomy.append(f"{level}: {today}   {sparkline(share)}  week {sum(auto)} of {sum(total_steps)}")
    sections.append(DigestSection("Write steps run automatically, by autonomy level",
                                  autonomy or ["no write step ran this week"]))
    guards = _ranked(figures.policy_denials, lambda r: f"denied by {r}") + _ranked(figures.guardrail_hits)
    kill = [counted(f"kill switch {k}", t) for k, t in figures.kill_switch.items()]
    sections.append(DigestSection("Policy denials, guardrail hits and the kill switch",
                                  guards + kill or ["none this week"]))
    sections.append(DigestSection("Noisiest alerts (deliveries)", _ranked(figures.noisiest_alerts, label)
                                  or ["no alerts"]))
    sections.append(DigestSection("Noisiest services (deliveries)", _ranked(figures.noisiest_services, label)
                                  or ["no alert named a service"]))
    sections.append(DigestSection("Approvals per person", _ranked(figures.approvals_by_person, label)
                                  or ["no approvals this week"]))
    sections.append(DigestSection("Scheduled checks that failed", _ranked(figures.failed_checks)
                                  or ["none this week"]))
    if unmatched:
        lines = [f"{label(a.alertname)} \N{MULTIPLICATION SIGN}{a.count}" for a in unmatched]
        if unmatched_names > len(unmatched):
            lines.append(f"and {unmatched_names - len(unmatched)} more (`ooda signals --unmatched`)")
        sections.append(DigestSection("Unmatched alerts (no playbook yet: the playbooks to write next)", lines))
    return sections


def title_of(day: date, zone: str, rolling: bool) -> str:
    span = "the 24 hours to now" if rolling else f"{day:%A %Y-%m-%d}"
    return f"Ooda digest: {span} ({zone}), trends over 7 days"


def digest_posting_text(targets: Sequence[tuple[str, str | None]]) -> str:
    """The reply to ``/ops digest``: where the digest is on its way to."""
    where = ", ".join(f"{surface} {channel or '(its default channel)'}" for surface, channel in targets)
    return (f"Posting the digest of the last 24 hours, with its 7-day chart, to {where or 'no chat surface'} now. "
            "`ooda digest` prints it.")
