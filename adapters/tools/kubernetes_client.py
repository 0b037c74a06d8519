"""kubernetes-asyncio, imported the first time a Kubernetes tool talks to a cluster.

Importing any part of kubernetes_asyncio loads every API model it has: about 60 MB of memory
and a second of start-up, which an Ooda that never touches Kubernetes (or has not yet) should
not pay. The Kubernetes tools name the library through ``k8s`` and ``k8s_config`` from here:
for mypy they are the real modules; at run time, proxies that import them on first use.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any


class _OnFirstUse:
    """A module that is imported when one of its names is first looked up."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


if TYPE_CHECKING:
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio import config as k8s_config
else:
    k8s = _OnFirstUse("kubernetes_asyncio.client")
    k8s_config = _OnFirstUse("kubernetes_asyncio.config")

__all__ = ["k8s", "k8s_config"]
