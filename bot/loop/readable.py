"""Tool params and results as a person reads them: the exact action of a step, values without reprs.

A proposal must say what will run, exactly as it will run: the argv of a shell or SSH command
(quoted as a shell would need it, so it can be pasted), the method, URL and body of an HTTP call,
the flag and its new value, the workload and what happens to it. A Python ``repr`` of a dict
(``{'flag': 'x', 'rollout': 50}``) or a list, or a literal ``\\n``, is never shown: values are
written as JSON scalars and ``key: value`` pairs.

    step_action(tool, params) -> str      "on db-01: find /var -xdev -type f -name '*.tmp' -delete"
    undo_action(tool, params) -> str      "flag throttle-checkout back to on, rollout 0%"
    value_text(value) -> str              "a, b" / "key: value; other: 2" / "true" / "—"
    result_text(result) -> str            the readable part of a tool's result
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.model.proposals import ParamBound

# The field of a tool's result a person reads first, by what tools return: a summary sentence
# (prometheus.query, k8s.*), the API server's preview, a log's text, a command's output, an HTTP body.
READABLE_FIELDS = ("summary", "preview", "text", "stdout", "body")


def value_text(value: Any) -> str:
    """One value in words: strings as they are, scalars as JSON, lists and mappings spelled out."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {value_text(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(value_text(v) for v in value) or "—"
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _flag_value(enabled: Any, rollout: Any) -> str:
    words = "on" if enabled else "off"
    return f"{words}, rollout {rollout}%" if rollout is not None else words


def _workload(params: Mapping[str, Any], name_key: str = "name") -> str:
    kind = params.get("kind") or "deployment"
    return f"{kind} {params.get('namespace', '?')}/{params.get(name_key, '?')}"


def step_action(tool: str, params: Mapping[str, Any]) -> str:
    """What the step does when it runs, in the terms of its tool, exact enough to check or paste."""
    p = params
    if tool == "ssh.run":
        return f"on {p.get('host', '?')}: {shlex.join(str(a) for a in p.get('argv', []))}"
    if tool == "shell.run":
        return f"on the Ooda host: {shlex.join(str(a) for a in p.get('argv', []))}"
    if tool == "http.request":
        body = p.get("json", p.get("body"))
        line = f"{p.get('method', 'GET')} {p.get('url', '?')}"
        return line + (f" with body {_json(body)}" if body is not None else "")
    if tool == "flags.set":
        return f"flag {p.get('flag', '?')} to {_flag_value(p.get('enabled'), p.get('rollout'))}"
    if tool == "k8s.rollout_restart":
        return f"rolling restart of {_workload(p)}"
    if tool == "k8s.rollout_undo":
        return (f"deployment {p.get('namespace', '?')}/{p.get('deployment', '?')} back to revision "
                f"{p.get('to_revision', '?')}")
    if tool == "k8s.scale":
        replicas = p.get("replicas", "?")
        return f"scale {_workload(p)} to {replicas} replica{'' if replicas == 1 else 's'}"
    if tool == "chat.notify":
        return f"post to {p.get('channel') or 'the task channel'}: {p.get('text', '')}"
    shown = ", ".join(f"{k}={_json(v)}" for k, v in p.items() if v is not None)
    return f"{tool} {shown}".strip()


def undo_action(tool: str, params: Mapping[str, Any]) -> str:
    """What an undo put back, for "Undone by alice: …"; the rollback's own action otherwise."""
    if tool == "flags.set":
        return f"flag {params.get('flag', '?')} back to {_flag_value(params.get('enabled'), params.get('rollout'))}"
    if tool == "k8s.scale":
        return f"{_workload(params)} back to {params.get('replicas', '?')} replicas"
    return step_action(tool, params)


def flag_change_text(result: Mapping[str, Any]) -> str:
    """A flags.set result (or dry run): ``flag x from off, rollout 0% to on, rollout 50%``."""
    before = _flag_value(result.get("previous_enabled"), result.get("previous_rollout"))
    after = _flag_value(result.get("enabled"), result.get("rollout"))
    where = f" ({result['environment']})" if result.get("environment") else ""
    if not result.get("changed", True):
        return f"flag {result.get('flag', '?')}{where} is already {after}: nothing to change"
    return f"flag {result.get('flag', '?')}{where} from {before} to {after}"


def history_text(result: Mapping[str, Any]) -> str:
    """A k8s.rollout_history result: the revisions newest first, with their images and causes."""
    lines = []
    for revision in result.get("revisions") or []:
        mark = " (current)" if revision.get("revision") == result.get("current_revision") else ""
        cause = f", {revision['change_cause']}" if revision.get("change_cause") else ""
        lines.append(f"revision {revision.get('revision')}{mark}: {value_text(revision.get('images'))}{cause}")
    where = f"deployment {result.get('namespace', '?')}/{result.get('deployment', '?')}"
    return f"{where}: " + ("; ".join(lines) if lines else "no revisions recorded")


def result_text(result: Any) -> str:
    """The part of a tool's result a person reads, never a repr: its sentence, output or fields."""
    if isinstance(result, Mapping):
        if "previous_enabled" in result and "flag" in result:
            return flag_change_text(result)
        if "revisions" in result and "current_revision" in result:
            return history_text(result)
        for field in READABLE_FIELDS:
            if result.get(field):
                return value_text(result[field]).strip()
        shown = {k: v for k, v in result.items() if v not in (None, "", [], {}) and k not in {"dry_run"}}
        return value_text(shown)
    return value_text(result).strip()


_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text"}


def bound_text(bound: ParamBound) -> str:
    """What an edit may be, in words (never "int"): ``a whole number from 10 to 100``."""
    if bound.choices:
        return "one of " + ", ".join(bound.choices)
    words = _TYPE_WORDS[bound.type]
    if bound.min is not None and bound.max is not None:
        words += f" from {bound.min:g} to {bound.max:g}"
    elif bound.min is not None:
        words += f", at least {bound.min:g}"
    elif bound.max is not None:
        words += f", at most {bound.max:g}"
    if bound.max_length is not None:
        words += f", up to {bound.max_length} characters"
    return words
