"""One setting moves the whole demo: two demos run side by side from the example config.

Each copy of ``config.example.yaml`` changes only ``server.port`` and ``standin.port`` (and
``playbooks_dir``, because the copy lives elsewhere). The tools name the stand-in as
``${standin.url}``; before, they kept calling 127.0.0.1:8099 whatever ``standin.port`` said.
"""

from __future__ import annotations

import re
import socket
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path

from bot.app import App
from bot.config import load_settings
from bot.model.tasks import TaskState
from tests.adapters.chat.chat_rig import sample
from tests.harness import AM, ENV, EXAMPLE, ROOT, client


def free_ports(count: int, *, with_next: bool = False) -> list[int]:
    """Ports free now; ``with_next``: ports whose next port is free too (the demo SSH host's)."""
    with ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            first = stack.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if with_next:
                second = stack.enter_context(socket.socket())
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            ports.append(port)
        return ports


def demo_config(directory: Path, server_port: int, standin_port: int) -> Path:
    text = EXAMPLE.read_text()
    text = re.sub(r"(?m)^playbooks_dir: .*$", f"playbooks_dir: {ROOT / 'playbooks'}", text)
    text = re.sub(r"(?m)^(server:\n  host: .*\n  port:) \d+", rf"\g<1> {server_port}", text)
    text = re.sub(r"(?m)^(standin:\n  enabled: true .*\n  port:) \d+", rf"\g<1> {standin_port}", text)
    directory.mkdir()
    path = directory / "config.yaml"
    path.write_text(text)
    return path


async def test_two_demos_side_by_side_each_use_their_own_standin(tmp_path: Path):
    server_ports = free_ports(2)
    standin_ports = free_ports(2, with_next=True)
    async with AsyncExitStack() as stack:
        apps: list[App] = []
        for name, server_port, standin_port in zip("ab", server_ports, standin_ports, strict=True):
            settings, doc = load_settings(demo_config(tmp_path / name, server_port, standin_port))
            assert settings.standin.port == standin_port
            apps.append(await stack.enter_async_context(App(settings, doc=doc, env=ENV)))
        assert [app.port for app in apps] == server_ports
        assert [app.standin_port for app in apps] == standin_ports
        for app in apps:
            before = [len(queries(other)) for other in apps]
            async with client(app) as http:
                r = await http.post("/webhooks/alertmanager", content=sample("alertmanager-http-5xx"), headers=AM)
                assert r.status_code == 202, r.text
            await app.engine.wait_idle()
            (task,) = await app.store.list_tasks(open_only=False)
            assert task.state is TaskState.needs_approval, task.outcome
            proposal = await app.commands.show(task.id)
            assert proposal.evidence and not any("error" in e.snippet.lower() for e in proposal.evidence)
            # The evidence came from this demo's stand-in; the other one heard nothing of it.
            after = [len(queries(other)) for other in apps]
            assert [a - b > 0 for a, b in zip(after, before, strict=True)] == [other is app for other in apps]


def queries(app: App) -> list[dict[str, object]]:
    assert app.standin is not None
    return [c for c in app.standin.calls if str(c["path"]).startswith("/api/v1/query")]
