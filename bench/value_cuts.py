"""What cutting over-long alert values costs intake, against parsing the same notification.

Intake runs ``bot.intake.value_cuts.cut_signals`` over every delivery larger than
``intake.max_value_bytes``. This times it on Alertmanager notifications of 1,000 alerts (a
production-shaped alert with its real label, annotation and generator-URL sizes) next to the
adapter's own parse of the same body, the baseline from the same run, in three cases: nothing
to cut, one alert of the 1,000 with a 20 KiB annotation, and every alert with one.

    python bench/value_cuts.py [--rounds N]
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from importlib import resources

from adapters.alerts.alertmanager import AlertmanagerSource
from bot.intake.value_cuts import DEFAULT_MAX_VALUE_BYTES, cut_signals


def notification(long_alerts: int) -> bytes:
    payload = json.loads((resources.files("bot") / "samples" / "alertmanager-node-filesystem-space.json").read_bytes())
    alert = payload["alerts"][0]
    alerts = [{**alert, "fingerprint": f"{i:016x}"} for i in range(1000)]
    for i in range(long_alerts):
        alerts[i] = {**alerts[i], "annotations": {**alert["annotations"], "description": "x" * 20 * 1024}}
    payload["alerts"] = alerts
    return json.dumps(payload).encode()


def best_ms(run: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    source = AlertmanagerSource()
    print(f"{'1,000 alerts per notification':34} {'parse (baseline)':>17} {'cut pass':>9} {'ratio':>6}")
    for label, long_alerts in (("nothing to cut", 0), ("one alert with 20 KiB", 1), ("every alert with 20 KiB", 1000)):
        body = notification(long_alerts)
        signals = source.parse(body, {})
        parse = best_ms(functools.partial(source.parse, body, {}), rounds)
        cut = best_ms(functools.partial(cut_signals, signals, len(body), DEFAULT_MAX_VALUE_BYTES), rounds)
        print(f"{label:34} {parse:15.1f} ms {cut:6.1f} ms {cut / parse:6.1%}")


if __name__ == "__main__":
    main()
