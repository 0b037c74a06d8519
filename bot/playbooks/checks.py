"""Static checks of a playbook file: what can be known wrong before an incident runs it.

The schema (``bot.playbooks.schema``) checks shapes and types. These checks read the raw YAML data so
they run even when the schema check failed elsewhere in the file, and report:
template syntax; names a template uses that the context will not have (``lables.service``, an
evidence step that does not exist, ``evidence`` inside an evidence step, an undeclared arg);
editable keys that are not params; duplicate step names; and, given the tool registry, unknown
tools, unknown param keys and missing required params. Param *values* are templates, so only
their keys can be checked against a tool's params model.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from bot.playbooks import templates
from bot.playbooks.param_paths import has_param
from bot.yamlfile import Loc


def static_problems(data: dict[str, Any], known_tools: Mapping[str, type[BaseModel]] | None) -> list[tuple[Loc, str]]:
    """One ``(key path, problem)`` per problem found in a playbook's raw YAML data."""
    return _StaticChecks(data, known_tools).run()


_BASE_NAMES = templates.CONTEXT_NAMES - {"evidence"}


class _StaticChecks:
    """Checks over the raw YAML data, so they run even when the schema check failed elsewhere.

    Every lookup is defensive: shapes are the schema's business, this only reads what it can.
    """

    def __init__(self, data: dict[str, Any], known_tools: Mapping[str, type[BaseModel]] | None) -> None:
        self.data = data
        self.known_tools = known_tools
        self.problems: list[tuple[Loc, str]] = []
        self.evidence_names: set[str] = {
            name for s in _list(data.get("evidence")) if isinstance(s, dict) and isinstance(name := s.get("name"), str)
        }
        args = data.get("args")
        self.arg_names = set(args) if isinstance(args, dict) else set()

    def run(self) -> list[tuple[Loc, str]]:
        with_evidence = _BASE_NAMES | {"evidence"}
        for i, step in enumerate(_list(self.data.get("evidence"))):
            self.call(("evidence", i), step, _BASE_NAMES)
        for i, step in enumerate(_list(self.data.get("steps"))):
            self.call(("steps", i), step, with_evidence)
            if isinstance(step, dict):
                self.editable(("steps", i), step)
                self.call(("steps", i, "rollback"), step.get("rollback"), with_evidence | {"result"})
        verify = self.data.get("verify")
        self.call(("verify",), verify, with_evidence)
        if isinstance(verify, dict) and isinstance(verify.get("expect"), str):
            self.template(("verify", "expect"), verify["expect"], with_evidence | {"result"}, expression=True)
        if isinstance(self.data.get("condition"), str):
            self.template(("condition",), self.data["condition"], with_evidence, expression=True)
        self.names_unique("evidence")
        self.names_unique("steps")
        return self.problems

    def call(self, loc: Loc, spec: Any, names: frozenset[str]) -> None:
        if not isinstance(spec, dict):
            return
        params = spec.get("params")
        if isinstance(params, dict):
            for param_loc, value in _strings(params, (*loc, "params")):
                if templates.is_template(value):
                    self.template(param_loc, value, names)
        tool = spec.get("tool")
        if self.known_tools is None or not isinstance(tool, str):
            return
        model = self.known_tools.get(tool)
        if model is None:
            close = difflib.get_close_matches(tool, self.known_tools, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(sorted(self.known_tools))
            self.problems.append(((*loc, "tool"), f"unknown tool {tool!r}; {hint}known tools: {known}"))
            return
        if not isinstance(params, dict) and params is not None:
            return
        params = params or {}
        fields = _field_names(model)
        for key in params:
            if key not in fields:
                self.problems.append(
                    ((*loc, "params", key), f"{tool} has no param {key!r}; its params: {', '.join(sorted(fields))}")
                )
        for name, info in model.model_fields.items():
            if info.is_required() and name not in params and (info.alias or name) not in params:
                self.problems.append(((*loc, "params"), f"{tool} needs param {name!r}"))

    def editable(self, loc: Loc, step: dict[str, Any]) -> None:
        editable, params = step.get("editable"), step.get("params")
        if not isinstance(editable, dict):
            return
        params = params if isinstance(params, dict) else {}
        for key in editable:
            if not has_param(params, key):
                self.problems.append(
                    ((*loc, "editable", key), f"{key!r} is not a param of this step; editable keys must name params "
                     "(a dotted path such as json.replicas for a key inside a param)")
                )

    def template(self, loc: Loc, source: str, names: frozenset[str], *, expression: bool = False) -> None:
        problem = templates.syntax_problem(source, expression=expression)
        if problem is not None:
            self.problems.append((loc, problem))
            return
        for name, attrs in templates.references(source, expression=expression).items():
            if name not in names:
                if name == "evidence":
                    self.problems.append((loc, "evidence is not available here (evidence steps run concurrently)"))
                    continue
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                available = ", ".join(sorted(names))
                self.problems.append((loc, f"unknown name {name!r} in template{hint} (available: {available})"))
            elif name == "evidence":
                for attr in sorted(attrs - self.evidence_names):
                    known = ", ".join(sorted(self.evidence_names)) or "none"
                    self.problems.append((loc, f"no evidence step named {attr!r} (evidence steps: {known})"))
            elif name == "args" or (name == "labels" and self.arg_names):
                for attr in sorted(attrs - self.arg_names):
                    why = "" if name == "args" else "; a manual run has only its args as labels, so declare it in args"
                    self.problems.append((loc, f"{name}.{attr} is not a declared arg{why}"))

    def names_unique(self, section: str) -> None:
        seen: set[str] = set()
        for i, step in enumerate(_list(self.data.get(section))):
            name = step.get("name") if isinstance(step, dict) else None
            if isinstance(name, str):
                if name in seen:
                    self.problems.append(((section, i, "name"), f"duplicate step name {name!r} in {section}"))
                seen.add(name)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*loc, i))


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    names.update(info.alias for info in model.model_fields.values() if info.alias)
    return names
