"""The CLI's client of a running Ooda's HTTP API: where the server is, its token, and errors worded.

Commands that drive a running server (``ooda tasks``, ``approve``, ``shadow report``...) go through
it with a bearer token from ``OODA_API_TOKEN`` (in dev, the token ``ooda serve`` generated).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from bot.errors import BotError
from bot.server_address import cli_base_url

API_TOKEN_ENV = "OODA_API_TOKEN"


class Client:
    def __init__(self, config_path: Path) -> None:
        from bot.config import load_settings
        from bot.secrets import SecretResolver

        settings, _ = load_settings(config_path)
        self.settings = settings
        self.base = cli_base_url(os.environ, settings.data_path, settings.server.host, settings.server.port)
        self.secrets = SecretResolver(os.environ, settings.data_path, generate_missing=settings.environment == "dev")

    def token(self) -> str:
        return self.secrets.get(API_TOKEN_ENV)

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return httpx.request(method, self.base + path, timeout=30, **kwargs)
        except httpx.ConnectError as exc:
            raise BotError(f"cannot reach Ooda at {self.base} ({exc}); is `ooda serve` running? "
                           "(OODA_URL=http://host:port points the CLI elsewhere)") from exc

    def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 202)) -> Any:
        response = self.send(method, path, json=body, headers={"Authorization": f"Bearer {self.token()}"})
        data = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code not in ok:
            message = data.get("message") or response.text
            if data.get("phrase"):
                # Only approving asks for the phrase; say the exact command that supplies it.
                task = path.rstrip("/").split("/")[-2]
                message += (f"\nTo confirm, run `ooda approve {task} --confirm '{data['phrase']}'` "
                            "(repeat any --edit you gave).")
            for problem in data.get("problems") or []:
                message += f"\n  {problem}"
            raise BotError(f"{response.status_code} {data.get('error', '')}: {message}")
        return data
