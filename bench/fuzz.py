"""The long hostile-input run: ≥ 10,000 generated requests against one `ooda serve` process.

The same strategies as tests/fuzz (random bytes, deep nesting, huge numbers, wrong types and
content types, hostile label values; every webhook source and API route), sent to a real server
started on the example config (temp data dir, free ports). Prints the answers counted by status,
the server's RSS before, in the middle and after (it must level off, not grow with the count),
and whether a valid webhook sent after them all was stored. Exits 1 on any 5xx.

    python bench/fuzz.py [--cases 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from importlib import resources
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # tests.fuzz holds the strategies the test suite uses

from intake import PYTHON, proc_status, start, stop, wait_http, write_config  # noqa: E402

from tests.fuzz.server import auth_headers  # noqa: E402
from tests.fuzz.strategies import api_requests, webhook_bodies  # noqa: E402

SOURCES = ["alertmanager", "grafana", "pagerduty", "generic"]


def main() -> int:
    parser = argparse.ArgumentParser(description="Send many hostile requests to one Ooda and count the answers.")
    parser.add_argument("--cases", type=int, default=10_000, help="requests to send (half webhooks, half API)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ooda-fuzz-") as tmp_dir:
        tmp = Path(tmp_dir)
        config, port, env = write_config(tmp, "normal")
        log = tmp / "ooda.log"
        proc = start([PYTHON, "-m", "bot", "serve", "--config", str(config)], env, log)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
            return run(f"http://127.0.0.1:{port}", proc.pid, env, args.cases)
        finally:
            stop(proc)


def run(url: str, pid: int, env: dict[str, str], cases: int) -> int:
    statuses: Counter[str] = Counter()
    rss = {"start": proc_status(pid, "VmRSS")}
    admin = {"Authorization": f"Bearer {env['OODA_API_TOKEN']}", "Content-Type": "application/json"}
    tokens = {"alertmanager": env["OODA_ALERTMANAGER_TOKEN"], "grafana": env["OODA_GRAFANA_TOKEN"],
              "pagerduty": env["OODA_PAGERDUTY_SECRET"], "generic": env["OODA_GENERIC_SECRET"]}
    sent = {"n": 0}
    started = time.monotonic()
    half = max(1, cases // 2)
    quiet = settings(max_examples=half, deadline=None, database=None, derandomize=False,
                     suppress_health_check=list(HealthCheck))

    with httpx.Client(base_url=url, timeout=30) as http:
        def note(kind: str, status: int) -> None:
            statuses[f"{kind} {status}"] += 1
            sent["n"] += 1
            if sent["n"] == half:
                rss["middle"] = proc_status(pid, "VmRSS")

        @quiet
        @given(source=st.sampled_from(SOURCES), body=webhook_bodies(), signed=st.booleans())
        def webhooks(source: str, body: bytes, signed: bool) -> None:
            headers = auth_headers(source, body, tokens) if signed else {"Content-Type": "application/json"}
            note("webhook", http.post(f"/webhooks/{source}", content=body, headers=headers).status_code)

        @quiet
        @given(request=api_requests())
        def api(request: tuple[str, str, dict[str, str], bytes | None]) -> None:
            method, path, params, body = request
            note("api", http.request(method, path, params=params, content=body, headers=admin).status_code)

        webhooks()
        api()
        body = (resources.files("bot") / "samples" / "alertmanager-kube-pod-crashlooping.json").read_bytes()
        valid = http.post("/webhooks/alertmanager", content=body, headers=auth_headers("alertmanager", body, tokens))
    rss["end"] = proc_status(pid, "VmRSS")

    elapsed = time.monotonic() - started
    print(f"{sent['n']} hostile requests in {elapsed:.0f} s against one `ooda serve` process")
    for key, count in sorted(statuses.items()):
        print(f"  {key}: {count}")
    print(f"RSS MB: start {rss['start']:.1f}, after {half} {rss.get('middle', 0):.1f}, end {rss['end']:.1f}")
    print(f"a valid webhook afterwards: {valid.status_code}")
    server_errors = sum(c for k, c in statuses.items() if k.split()[1].startswith("5"))
    print(f"5xx answers: {server_errors}")
    return 1 if server_errors or valid.status_code != 202 else 0


if __name__ == "__main__":
    sys.exit(main())
