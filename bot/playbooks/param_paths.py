"""Dotted paths into a step's params, for editable values that sit inside a nested param.

An ``http.request`` step carries what an approver may want to change inside its JSON body
(``json.replicas``, ``json.from_offset``), so ``editable`` keys, ``--edit`` and the chat edit
forms name a param by its path: ``rollout`` is a top-level param, ``json.replicas`` the key
``replicas`` of the mapping ``json``. Param names themselves never contain a dot (they are tool
params and JSON keys of a playbook's own choosing), so the path is unambiguous.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MISSING = object()


def _lookup(params: Mapping[str, Any], path: str) -> Any:
    node: Any = params
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def has_param(params: Mapping[str, Any], path: str) -> bool:
    return _lookup(params, path) is not _MISSING


def param_at(params: Mapping[str, Any], path: str) -> Any:
    """The value at ``path``; None when any part of it is missing."""
    found = _lookup(params, path)
    return None if found is _MISSING else found


def with_param(params: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``params`` with ``value`` at ``path``; the mappings along the path are copied,
    never changed in place (the old params stay as the record of what was proposed)."""
    head, dot, rest = path.partition(".")
    copy = dict(params)
    if not dot:
        copy[head] = value
        return copy
    inner = params.get(head)
    copy[head] = with_param(inner if isinstance(inner, Mapping) else {}, rest, value)
    return copy
