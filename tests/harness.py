"""Run the real Ooda (App from bot/app.py) in-process for tests, on the example config.

The config is ``config.example.yaml`` with test-only changes: a temp data dir, port 0, explicit
secrets in the env, and the outside systems pointed at a ``Standin`` the test starts itself.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web

from bot.app import App
from bot.config import load_settings
from demo.standin import Standin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"

ENV = {
    "OODA_API_TOKEN": "admin-token-0123456789",
    "OODA_API_TOKEN_2": "second-token-0123456789",
    "OODA_ALERTMANAGER_TOKEN": "am-token-0123456789",
    "OODA_GRAFANA_TOKEN": "grafana-token-0123456789",
    "OODA_PAGERDUTY_SECRET": "pd-secret-0123456789",
    "OODA_GENERIC_SECRET": "generic-secret-0123456789",
    "OODA_AUDIT_HMAC_KEY": "audit-key-0123456789",
    "OODA_FLAGS_TOKEN": "flags-token-0123456789",
}
ADMIN = {"Authorization": f"Bearer {ENV['OODA_API_TOKEN']}"}
SECOND = {"Authorization": f"Bearer {ENV['OODA_API_TOKEN_2']}"}
AM = {"Authorization": f"Bearer {ENV['OODA_ALERTMANAGER_TOKEN']}"}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def test_config(tmp_path: Path, standin_port: int, overrides: dict[str, Any] | None = None) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    url = f"http://127.0.0.1:{standin_port}"
    data = merge(data, {
        "data_dir": str(tmp_path / "data"),
        "playbooks_dir": str(ROOT / "playbooks"),
        "server": {"port": 0},
        "store": {"path": str(tmp_path / "data" / "ooda.db")},
        "tools": {"http": {"allow_hosts": [f"127.0.0.1:{standin_port}"]},
                  "flags": {"base_url": url}, "shell": {"workdir": str(tmp_path / "work")},
                  "prometheus": {"base_url": url}, "kubernetes": {"api_url": url}},
        "vars": {"platform_api": url},
        "standin": {"enabled": False},
        "digest": {"enabled": False},
        "log": {"format": "json"},
    })
    data = merge(data, overrides or {})
    if data["playbooks_dir"] != str(ROOT / "playbooks"):
        data.pop("triggers", None)  # the example's triggers name shipped playbooks
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# A helper, not a test: keep pytest from collecting it where it is imported by name.
test_config.__test__ = False  # type: ignore[attr-defined]


@asynccontextmanager
async def running_standin() -> AsyncIterator[Standin]:
    """The stand-in with its demo SSH host on free ports, keys in a temp dir of its own."""
    with tempfile.TemporaryDirectory(prefix="ooda-standin-") as ssh_dir:
        standin = Standin(token=ENV["OODA_FLAGS_TOKEN"], ssh_dir=Path(ssh_dir))
        await standin.start("127.0.0.1", 0)
        try:
            yield standin
        finally:
            await standin.stop()


def ssh_overrides(standin: Standin) -> dict[str, Any]:
    """``tools.ssh`` pointed at the stand-in's demo host (every host name dials it)."""
    if standin.ssh_host is None:
        return {}
    return {"tools": {"ssh": {"address_map": {"*": f"127.0.0.1:{standin.ssh_port}"},
                              "private_key_file": str(standin.ssh_host.client_key_path),
                              "known_hosts": str(standin.ssh_host.known_hosts_path)}}}


@asynccontextmanager
async def running_app(tmp_path: Path, standin: Standin, overrides: dict[str, Any] | None = None,
                      env: dict[str, str] | None = None, **app_kwargs: Any) -> AsyncIterator[App]:
    """``env`` adds variables (chat tokens, say) to ``ENV``."""
    port = int(standin.base_url.rsplit(":", 1)[1])
    settings, doc = load_settings(test_config(tmp_path, port, merge(ssh_overrides(standin), overrides or {})))
    async with App(settings, doc=doc, env={**ENV, **(env or {})}, **app_kwargs) as app:
        yield app


def client(app: App) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}", timeout=10)


@asynccontextmanager
async def serving_on_a_free_port(app: web.Application) -> AsyncIterator[int]:
    """``app`` served on 127.0.0.1 on a port the OS picks (a fake platform, a forwarder); yields the port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
