"""``${standin.url}`` and friends: the example config names the demo stand-in's address once.

The demo's tools (flags, Prometheus, Kubernetes, the platform API, the SSH host map, the HTTP
allow-list) all point at the stand-in. Writing its address in each of them meant that moving it,
or running a second demo beside the first, took five edits. Instead they name it symbolically and
the address is filled in from ``standin.port`` and ``standin.ssh_port`` when the config is loaded:

- ``${standin.url}``          -> ``http://127.0.0.1:<port>``
- ``${standin.address}``      -> ``127.0.0.1:<port>`` (for host allow-lists)
- ``${standin.ssh_address}``  -> ``127.0.0.1:<ssh_port>``; ``ssh_port`` defaults to ``port + 1``

The placeholders resolve whether or not the stand-in is enabled (a stand-in started on its own,
``python -m demo.standin``, is reached the same way); they are refused outside ``environment: dev``
so that a staging or prod config never silently calls the demo.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.errors import ConfigError

DEFAULT_PORT = 8099
HOST = "127.0.0.1"
PLACEHOLDER = re.compile(r"\$\{standin\.([A-Za-z_]*)\}")
Loc = tuple[str | int, ...]


def standin_ports(raw: dict[str, Any]) -> tuple[int, int]:
    """(port, ssh_port) as the raw config sets them; invalid values are left for validation to name."""
    found = raw.get("standin")
    section: dict[str, Any] = found if isinstance(found, dict) else {}
    port = section.get("port", DEFAULT_PORT)
    port = port if isinstance(port, int) else DEFAULT_PORT
    ssh_port = section.get("ssh_port")
    return port, ssh_port if isinstance(ssh_port, int) else port + 1


def resolve_standin(raw: dict[str, Any], line_of: Callable[[Loc], int],
                    source: str) -> tuple[dict[str, Any], list[str]]:
    """``raw`` with every ``${standin.*}`` filled in, and where they were (``file:line: key``).

    An unknown name is an error here; the caller refuses the placeholders outside dev
    (``refuse_outside_dev``) once the rest of the file is known to be valid.
    """
    port, ssh_port = standin_ports(raw)
    values = {"url": f"http://{HOST}:{port}", "address": f"{HOST}:{port}", "ssh_address": f"{HOST}:{ssh_port}"}
    used: list[str] = []

    def fill(value: Any, loc: Loc) -> Any:
        if isinstance(value, dict):
            return {key: fill(item, (*loc, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item, (*loc, index)) for index, item in enumerate(value)]
        if not isinstance(value, str) or "${standin." not in value:
            return value
        where = f"{source}:{line_of(loc)}: {'.'.join(str(p) for p in loc)}"
        used.append(f"{where}: the demo stand-in's address ({value!r})")

        def one(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise ConfigError(f"{where}: unknown placeholder {match.group(0)!r}; "
                                  f"use one of {', '.join('${standin.' + k + '}' for k in values)}")
            return values[match.group(1)]

        return PLACEHOLDER.sub(one, value)

    return fill(raw, ()), used


def refuse_outside_dev(environment: str, used: list[str]) -> None:
    if environment != "dev" and used:
        raise ConfigError(f"{used[0]} is only for environment dev; write the URL of your own service here")
