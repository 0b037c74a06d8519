"""The incident suite against the real Ooda: every incident in a fresh App and store, then scored.

Each incident in ``incidents/`` is replayed by ``tests.incident_suite.run_incident`` on its own
App (its own temp data dir and SQLite store) with the stand-in playing the outside systems, so no
task or cooldown of one incident leaks into the next. The table is printed for the record; the
asserts are the bar the shipped playbooks must clear.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tests.harness import ROOT, client, running_app, running_standin
from tests.incident_suite import SuiteClock, harness_sign, load_suite, run_incident, score

SUITE = ROOT / "incidents"
# Just after the latest startsAt in the incident bodies, so alert times read as recent.
START = datetime(2026, 5, 12, 9, 15, tzinfo=UTC)


async def test_incident_suite_meets_the_bar(tmp_path):
    incidents = load_suite(SUITE)
    assert len(incidents) >= 24

    outcomes = []
    for incident in incidents:
        clock = SuiteClock(START)
        data_dir = tmp_path / incident.name
        data_dir.mkdir()
        async with running_standin() as standin, \
                running_app(data_dir, standin, clock=clock) as app, client(app) as http:
            outcomes.append(await run_incident(app, http, incident, harness_sign, clock=clock))
    report = score(outcomes)
    print(report.table())

    assert report.delivery_errors == []
    assert report.recall >= 0.95, report.table()
    assert report.precision == 1.0, report.table()
    assert report.planning_failures == []
    assert report.safety_violations == []
    assert report.step_mismatches == []
    assert report.state_mismatches == []
