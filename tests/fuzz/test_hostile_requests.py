"""Hostile requests against every webhook source and every API route of one running Ooda.

Invariants, for every generated request: the answer is never a 5xx; a refused webhook stores no
signal; the server keeps answering; and a valid webhook sent after the hostile ones is stored.
A longer run of the same strategies, with counts by status and the RSS before and after, is
``python bench/fuzz.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.server import ServedOoda, auth_headers, served
from tests.fuzz.strategies import api_requests, webhook_bodies
from tests.harness import ADMIN

SOURCES = ["alertmanager", "grafana", "pagerduty", "generic"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def ooda(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedOoda]:
    with served(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


@pytest.fixture(scope="module")
def http(ooda: ServedOoda) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ooda.url, timeout=30) as client:
        yield client


def sample(name: str) -> bytes:
    return (resources.files("bot") / "samples" / f"{name}.json").read_bytes()


@FUZZ
@given(source=st.sampled_from(SOURCES), body=webhook_bodies(), signed=st.booleans(),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))
def test_a_hostile_webhook_is_refused_with_a_4xx_and_stores_nothing(
        ooda: ServedOoda, http: httpx.Client, source: str, body: bytes, signed: bool, content_type: str) -> None:
    before = ooda.signal_count()
    headers = auth_headers(source, body) if signed else {}
    if content_type:
        headers["Content-Type"] = content_type

    r = http.post(f"/webhooks/{source}", content=body, headers=headers)

    assert r.status_code < 500, r.text
    if r.status_code != 202:
        assert 400 <= r.status_code < 500
        assert r.json()["message"], r.text  # names the problem
        assert ooda.signal_count() == before


@FUZZ
@given(request=api_requests())
def test_no_api_request_gets_a_5xx(http: httpx.Client, request: tuple[str, str, dict[str, str], bytes | None]) -> None:
    method, path, params, body = request
    r = http.request(method, path, params=params, content=body,
                     headers={**ADMIN, "Content-Type": "application/json"})

    assert r.status_code < 500, (method, path, params, r.text)
    if r.status_code >= 400 and not before_routing(r):
        assert r.json().get("message"), r.text


def before_routing(r: httpx.Response) -> bool:
    """aiohttp's own parser refuses a request line or headers past its limits (8190 bytes) before
    any handler runs, with a plain-text 400: still a 4xx that names the problem."""
    return r.status_code in (400, 414, 431) and "json" not in r.headers.get("content-type", "") and (
        "too long" in r.text or "Got more than" in r.text)


def test_after_the_hostile_requests_a_valid_webhook_is_stored(ooda: ServedOoda, http: httpx.Client) -> None:
    body = sample("alertmanager-kube-pod-crashlooping")
    before = ooda.signal_count()

    r = http.post("/webhooks/alertmanager", content=body, headers=auth_headers("alertmanager", body))

    assert r.status_code == 202, r.text
    assert len(r.json()["signal_ids"]) == 1
    assert ooda.signal_count() == before + 1
    assert http.get("/healthz").status_code == 200


def test_the_fuzz_server_took_only_its_own_temp_dir(ooda: ServedOoda) -> None:
    assert ooda.app is not None and Path(ooda.app.store.path).exists()
