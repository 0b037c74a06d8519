from collections.abc import AsyncIterator

import httpx
import pytest

from demo.standin import Standin


@pytest.fixture
async def client() -> AsyncIterator[tuple[Standin, httpx.AsyncClient]]:
    standin = Standin(token="t0ken-for-tests")
    await standin.start()
    async with httpx.AsyncClient(base_url=standin.base_url, timeout=5) as http:
        yield standin, http
    await standin.stop()


async def test_unleash_subset_needs_the_token_and_uses_unleash_shapes(client):
    _, http = client
    path = "/api/admin/projects/default/features/new-search"

    assert (await http.get(path)).status_code == 401
    feature = (await http.get(path, headers={"Authorization": "t0ken-for-tests"})).json()

    production = next(e for e in feature["environments"] if e["name"] == "production")
    assert production["enabled"] is True
    assert production["strategies"][0]["name"] == "flexibleRollout"
    assert production["strategies"][0]["parameters"]["rollout"] == "25"
    missing = await http.get(
        "/api/admin/projects/other/features/new-search", headers={"Authorization": "t0ken-for-tests"}
    )
    assert missing.status_code == 404 and missing.json()["name"] == "NotFoundError"


async def test_rollback_moves_the_service_to_the_previous_deploy_and_heals_it(client):
    standin, http = client
    before = (await http.get("/platform/services/checkout/health")).json()
    deploys = (await http.get("/platform/services/checkout/deploys")).json()["deploys"]
    assert before["status"] == "degraded" and deploys[0]["version"] == before["version"]

    rolled = (await http.post("/platform/services/checkout/rollback")).json()

    assert (rolled["rolled_back_from"], rolled["rolled_back_to"]) == (deploys[0]["version"], deploys[1]["version"])
    after = (await http.get("/platform/services/checkout/health")).json()
    assert after["status"] == "healthy" and after["version"] == deploys[1]["version"]
    assert [c["path"] for c in standin.calls][-1] == "/platform/services/checkout/health"


async def test_workload_restart_shows_up_in_events(client):
    _, http = client
    restart = (await http.post("/platform/workloads/shop/cart/restart")).json()
    events = (await http.get("/platform/workloads/shop/cart/events")).json()["events"]
    assert restart["status"] == "restarting"
    assert {"OOMKilled", "ScalingReplicaSet"} <= {e["reason"] for e in events}


async def test_identity_endpoints(client):
    _, http = client
    logins = (await http.get("/identity/users/u123/logins")).json()
    first = (await http.post("/identity/users/u123/sessions/revoke")).json()
    second = (await http.post("/identity/users/u123/sessions/revoke")).json()
    assert logins["impossible_travel"] is True and len(logins["logins"]) == 3
    assert first["revoked"] >= 1 and second["revoked"] == 0


async def test_consumer_backfill_needs_exactly_one_starting_point(client):
    standin, http = client
    lag = (await http.get("/data/consumers/orders-consumer/lag")).json()
    assert lag["lag"] > 100_000 and len(lag["partitions"]) == 3

    assert (await http.post("/data/consumers/orders-consumer/backfill", json={})).status_code == 400
    both = {"from_offset": 1, "since": "2024-01-01T00:00:00Z"}
    assert (await http.post("/data/consumers/orders-consumer/backfill", json=both)).status_code == 400
    started = await http.post("/data/consumers/orders-consumer/backfill", json={"from_offset": 4_800_000})
    assert started.status_code == 202 and started.json()["from_offset"] == 4_800_000

    await http.post("/data/consumers/orders-consumer/restart")
    assert (await http.get("/data/consumers/orders-consumer/lag")).json()["state"] == "running"
    assert standin.calls[1]["json"] == {} and standin.calls[3]["json"] == {"from_offset": 4_800_000}


async def test_injected_failures_run_out(client):
    standin, http = client
    standin.fail_next("/platform/", status=502, times=2)
    statuses = [(await http.get("/platform/services/a/health")).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
