"""Sandboxed Jinja2 templates for step params, conditions and verify expectations.

Templates come only from reviewed playbooks. Everything that arrives from outside (alert labels,
annotations, evidence, manual-run args) is context *data*: it is never compiled, and the output of
a render is never rendered again, so a label holding ``{{ 7*7 }}`` comes out as those nine
characters and ``'; rm -rf /`` stays one inert string.

Native values, and the one rule that decides them:
    A template whose whole output is a single expression (``"{{ count }}"``) returns that
    expression's value unchanged: an int stays an int, a string stays a string. Anything else
    (``"throttle-{{ labels.service }}"``) returns the concatenated string. Unlike Jinja's own
    ``NativeEnvironment`` we never ``literal_eval`` the output, so a label value ``"42"`` or
    ``"[1, 2]"`` stays a string instead of silently becoming an int or a list.

Limits, because a render cannot be cancelled once it runs:
    template sources are capped at ``MAX_TEMPLATE_CHARS``; context strings at
    ``MAX_CONTEXT_STRING_CHARS`` (longer ones are cut when the context is built, with a marker
    saying how much was dropped); one rendered value at ``MAX_OUTPUT_CHARS``; ``range()`` at
    ``MAX_RANGE`` items; ``*`` and ``**`` may not build huge values.

Values that fill params (``render_params`` with ``bot.playbooks.param_checks.ParamRules``):
    every ``{{ }}`` that reads ``labels.X`` or ``args.X`` has the value it inserts checked against
    the playbook's pattern for arg ``X``, and in a param its tool marks as a URL every inserted
    value is encoded for where it lands and the URL is normalized. The check sees the value the
    expression produced, which is what fills the param (``labels.service.split('@')[0]``: the part
    before the ``@``). To see each inserted value apart from the template's own text, such
    templates are compiled a second way, with every output expression wrapped in a marking filter.

Besides Jinja's built-ins there are two filters: ``from_json``, because tools return HTTP bodies as
text (``(evidence.health.body | from_json).error_rate``), and ``promql``, which escapes a value for
a PromQL string (``{instance="{{ labels.instance | promql }}"}``). ``signal.expression`` is the
alert's own PromQL, read from a Prometheus generatorURL.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, islice
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
import structlog
from jinja2 import StrictUndefined, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeEnvironment
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

from bot.audit.redaction import redact_text
from bot.errors import UserError
from bot.model.signals import Signal
from bot.playbooks.param_checks import ParamRules, build_url, normalize_url, pattern_problem

log = structlog.get_logger(__name__)

MAX_TEMPLATE_CHARS = 4 * 1024
MAX_CONTEXT_STRING_CHARS = 64 * 1024
MAX_OUTPUT_CHARS = 256 * 1024
MAX_RANGE = 10_000
MAX_SIGNALS_IN_CONTEXT = 20
_MAX_PROBLEM_CHARS = 300
TEMPLATE_MARKERS = ("{{", "{%", "{#")

# The names a template may use; bot/playbooks/schema.py checks references against these at load.
CONTEXT_NAMES = frozenset({"labels", "annotations", "signal", "signals", "count", "evidence", "args", "vars", "task"})


class TemplateRenderError(UserError):
    """A template failed to render or evaluate. ``where`` names the step and param."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = _shorten(problem)
        super().__init__(f"{describe_where(where)}: {self.problem}")


_WHERE_PARTS = {"steps": "step", "evidence": "evidence step", "verify": "verify step"}


def describe_where(where: str) -> str:
    """``steps.restart.params.json.replicas`` -> ``step restart, param json.replicas``."""
    section, _, rest = where.partition(".")
    name, _, field = rest.partition(".")
    if section not in _WHERE_PARTS or not name:
        return where
    if section == "verify":
        return f"verify step, {rest}" if rest else "verify step"
    kind, _, param = field.partition(".")
    if kind == "params":
        return f"{_WHERE_PARTS[section]} {name}, param {param}" if param else f"{_WHERE_PARTS[section]} {name}, params"
    return f"{_WHERE_PARTS[section]} {name}, {field}" if field else f"{_WHERE_PARTS[section]} {name}"


def _explain_undefined(source: str, context: Mapping[str, Any], *, expression: bool = False) -> str | None:
    """In words, which name the template needed and the context lacks: "the alert has no label
    'deployment' (its labels: alertname, namespace, pod)". None when it cannot tell."""
    try:
        refs = references(source, expression=expression)
    except jinja2.TemplateSyntaxError:
        return None
    for name, attrs in refs.items():
        if name not in context:
            return f"{name!r} is undefined"
        value = context[name]
        if not isinstance(value, Mapping):
            continue
        for attr in sorted(attrs):
            if attr in value:
                continue
            have = ", ".join(sorted(value)[:20]) or "none"
            if name == "labels":
                return f"the alert has no label {attr!r} (its labels: {have})"
            if name == "evidence":
                return f"there is no evidence {attr!r} (evidence collected: {have})"
            if name == "args":
                return f"the run has no argument {attr!r} (its arguments: {have})"
            return f"{name} has no {attr!r} (it has: {have})"
    return None


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_PROBLEM_CHARS else text[: _MAX_PROBLEM_CHARS - 1] + "…"


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def _capped_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise OverflowError(f"range() of {len(rng)} items is over the limit of {MAX_RANGE}")
    return rng


class _SandboxedNative(ImmutableSandboxedEnvironment, NativeEnvironment):
    """Immutable sandbox (no attribute tricks, no mutation) that yields native Python values."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        # The sandbox stops attribute tricks but not ``'x' * 10**9``; refuse before allocating.
        if operator == "*":
            size, times = (_sized(left), right) if _sized(left) is not None else (_sized(right), left)
            if size is not None and isinstance(times, int) and size * times > MAX_OUTPUT_CHARS:
                raise SecurityError(f"'*' would build a value of {size * times} items; the limit is {MAX_OUTPUT_CHARS}")
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError(f"exponent {right} is over the limit of 64")
        return super().call_binop(context, operator, left, right)


def _from_json(text: Any) -> Any:
    """``evidence.health.body | from_json``: tools return bodies as text, templates want fields."""
    if not isinstance(text, str | bytes):
        raise TypeError(f"from_json needs a string, got a {type(text).__name__}")
    if len(text) > MAX_CONTEXT_STRING_CHARS:
        raise OverflowError(f"from_json input is over the limit of {MAX_CONTEXT_STRING_CHARS} characters")
    return json.loads(text)


def _promql_string(value: Any) -> str:
    """``{name="{{ labels.instance | promql }}"}``: a value made safe inside a PromQL double-quoted
    string, so a hostile label cannot close the string and add matchers or operators."""
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def expression_of(url: str | None) -> str:
    """The PromQL of a Prometheus alert, from its generatorURL (``/graph?g0.expr=...``); "" when
    the link is not one (Grafana's panel links, other senders)."""
    if not url or "g0.expr=" not in url:
        return ""
    values = parse_qs(urlsplit(url).query).get("g0.expr")
    return values[0] if values else ""


def _environment() -> _SandboxedNative:
    env = _SandboxedNative(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    # These globals can build unbounded output or carry state across loop iterations.
    for name in ("lipsum", "cycler", "joiner", "namespace"):
        env.globals.pop(name, None)
    env.globals["range"] = _capped_range
    env.filters["from_json"] = _from_json
    env.filters["promql"] = _promql_string
    return env


_ENV = _environment()
GLOBAL_NAMES = frozenset(_ENV.globals)
_CHECKED_NAMES = ("labels", "args")  # the names whose attributes manual-run args describe


class _Inserted:
    """One value an output expression produced, with the ``labels.X`` / ``args.X`` it read."""

    __slots__ = ("refs", "value")

    def __init__(self, value: Any, refs: tuple[str, ...]) -> None:
        self.value = value
        self.refs = refs


@jinja2.pass_context  # evaluated at render time only: a constant expression must not fold at compile time
def _mark_inserted(context: jinja2.runtime.Context, value: Any, refs: tuple[str, ...]) -> _Inserted:
    return _Inserted(value, refs)


# A separate environment, so no playbook template can name the marking filter.
_MARKING_ENV = _environment()
_MARKING_ENV.filters["ooda_inserted"] = _mark_inserted


def _checked_refs(node: nodes.Node) -> tuple[str, ...]:
    """``("labels.workload", ...)``: the attributes of labels and args an expression reads."""
    found: set[str] = set()
    for item in (node, *node.find_all((nodes.Getattr, nodes.Getitem))):  # find_all skips node itself
        if not (isinstance(item, nodes.Getattr | nodes.Getitem) and isinstance(item.node, nodes.Name)
                and item.node.name in _CHECKED_NAMES):
            continue
        if isinstance(item, nodes.Getattr):
            found.add(f"{item.node.name}.{item.attr}")
        elif isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            found.add(f"{item.node.name}.{item.arg.value}")
    return tuple(sorted(found))


@functools.lru_cache(maxsize=1024)
def _marking_template(source: str) -> jinja2.Template:
    """``source`` compiled with every output expression wrapped: ``{{ e }}`` -> ``{{ e | ooda_inserted(refs) }}``."""
    ast = _MARKING_ENV.parse(source)
    for output in list(ast.find_all(nodes.Output)):
        output.nodes = [
            child if isinstance(child, nodes.TemplateData)
            else nodes.Filter(child, "ooda_inserted", [nodes.Const(_checked_refs(child))], [], None, None,
                              lineno=child.lineno)
            for child in output.nodes
        ]
    return _MARKING_ENV.from_string(ast)


@functools.lru_cache(maxsize=2048)
def _reads_checked(source: str, names: frozenset[str]) -> bool:
    """Whether a template reads ``labels.X`` or ``args.X`` for an X in ``names``."""
    refs = references(source)
    return any(refs.get(kind, set()) & names for kind in _CHECKED_NAMES)


def is_template(value: str) -> bool:
    """A string is a template only if it contains Jinja syntax; plain strings are left alone."""
    return any(marker in value for marker in TEMPLATE_MARKERS)


def references(source: str, *, expression: bool = False) -> dict[str, set[str]]:
    """The context names a template uses, each with the attributes or constant keys read from it.

    ``"{{ evidence.health.status }}"`` gives ``{"evidence": {"health"}}``. Used at load to catch
    typos (``lables.service``, an evidence step that does not exist) before an incident does.

    Raises:
        jinja2.TemplateSyntaxError: the source does not parse (call ``syntax_problem`` first).
    """
    if expression:
        body = Parser(_ENV, source, state="variable").parse_expression()
        ast = nodes.Template([nodes.Output([body], lineno=1)], lineno=1)
        ast.set_environment(_ENV)
    else:
        ast = _ENV.parse(source)
    refs: dict[str, set[str]] = {name: set() for name in meta.find_undeclared_variables(ast) - GLOBAL_NAMES}
    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name in refs:
            refs[node.node.name].add(node.attr)
    for item in ast.find_all(nodes.Getitem):
        if (
            isinstance(item.node, nodes.Name)
            and item.node.name in refs
            and isinstance(item.arg, nodes.Const)
            and isinstance(key := item.arg.value, str)
        ):
            refs[item.node.name].add(key)
    return refs


def syntax_problem(source: str, *, expression: bool = False) -> str | None:
    """What is wrong with a template (or a bare expression), or None if it compiles."""
    if len(source) > MAX_TEMPLATE_CHARS:
        return f"template is {len(source)} characters; the limit is {MAX_TEMPLATE_CHARS}"
    try:
        if expression:
            _expression(source)
        else:
            _template(source)
    except jinja2.TemplateSyntaxError as exc:
        where = f" (template line {exc.lineno})" if exc.lineno and exc.lineno > 1 else ""
        return f"template syntax error{where}: {exc.message}"
    return None


@functools.lru_cache(maxsize=2048)
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@functools.lru_cache(maxsize=512)
def _expression(source: str) -> jinja2.environment.TemplateExpression:
    return _ENV.compile_expression(source, undefined_to_none=False)


def _concat(values: Iterable[Any]) -> Any:
    """Single output node: its native value as is. Several: their string concatenation."""
    values = iter(values)
    head = list(islice(values, 2))
    if not head:
        return ""
    if len(head) == 1:
        return head[0]
    parts: list[str] = []
    total = 0
    for value in chain(head, values):
        text = str(value)  # raises for StrictUndefined and for unsafe access
        total += len(text)
        if total > MAX_OUTPUT_CHARS:
            raise OverflowError(f"rendered value is over the limit of {MAX_OUTPUT_CHARS} characters")
        parts.append(text)
    return "".join(parts)


def _reject_undefined(value: Any) -> None:
    """Native mode hands back Undefined objects instead of raising; str() makes them raise."""
    if isinstance(value, jinja2.Undefined):
        str(value)
        raise jinja2.UndefinedError("the value is undefined")
    if isinstance(value, list | tuple):
        for item in value:
            _reject_undefined(item)
    elif isinstance(value, dict):
        for item in value.values():
            _reject_undefined(item)
    elif isinstance(value, str) and len(value) > MAX_OUTPUT_CHARS:
        raise OverflowError(f"rendered value is over the limit of {MAX_OUTPUT_CHARS} characters")


_RENDER_ERRORS = (
    jinja2.TemplateError,  # includes SecurityError and UndefinedError
    OverflowError,
    ArithmeticError,
    TypeError,
    ValueError,
    LookupError,
)


def _problem(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"refused by the template sandbox: {exc}"
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined value: {exc}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"template syntax error: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class _ParamRefused(Exception):
    """A rendered value may not fill its param; ``problem`` says why, in words."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def render_template(
    source: str,
    context: Mapping[str, Any],
    *,
    where: str = "template",
    url: bool = False,
    arg_patterns: Mapping[str, str] | None = None,
) -> Any:
    """Render one template string; see the module docstring for when the result is native.

    Args:
        source: the template, from a playbook.
        context: from ``build_context``.
        where: names the step and param for error messages.
        url: the result is an HTTP URL: encode inserted values and normalize (``bot.playbooks.param_checks``).
        arg_patterns: arg name -> pattern; values inserted from ``labels.X``/``args.X`` must match X's.

    Raises:
        TemplateRenderError: the template failed, or a value it inserted may not fill the param.
    """
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateRenderError(where, f"template is {len(source)} characters; the limit is {MAX_TEMPLATE_CHARS}")
    patterns = arg_patterns or {}
    try:
        if url or (patterns and _reads_checked(source, frozenset(patterns))):
            result = _render_checked(source, context, url=url, patterns=patterns)
        else:
            template = _template(source)
            result = _concat(template.root_render_func(template.new_context(dict(context))))
        _reject_undefined(result)
    except _ParamRefused as exc:
        raise TemplateRenderError(where, redact_text(exc.problem)) from None
    except jinja2.UndefinedError as exc:
        raise TemplateRenderError(where, _explain_undefined(source, context) or _problem(exc)) from exc
    except _RENDER_ERRORS as exc:
        raise TemplateRenderError(where, _problem(exc)) from exc
    return result


def _render_checked(source: str, context: Mapping[str, Any], *, url: bool, patterns: Mapping[str, str]) -> Any:
    """Render with each inserted value seen apart: checked against the arg patterns, and placed
    into a URL by ``bot.playbooks.param_checks.build_url`` when ``url``."""
    template = _marking_template(source)
    pieces: list[tuple[bool, Any]] = []
    total = 0
    for item in template.root_render_func(template.new_context(dict(context))):
        if isinstance(item, _Inserted):
            _reject_undefined(item.value)
            _check_patterns(item, context, patterns)
            pieces.append((True, item.value))
        else:
            pieces.append((False, item))
        total += len(pieces[-1][1]) if isinstance(pieces[-1][1], str) else 0
        if total > MAX_OUTPUT_CHARS:
            raise OverflowError(f"rendered value is over the limit of {MAX_OUTPUT_CHARS} characters")
    if url:
        try:
            return build_url([(inserted, str(value)) for inserted, value in pieces])
        except ValueError as exc:
            raise _ParamRefused(str(exc)) from None
    if len(pieces) == 1:
        return pieces[0][1]
    return "".join(str(value) for _, value in pieces)


def _check_patterns(item: _Inserted, context: Mapping[str, Any], patterns: Mapping[str, str]) -> None:
    # A computed int or bool (``{{ 3 if labels.tier == 'web' else 1 }}``) is not the label's text.
    if not isinstance(item.value, str):
        return
    for ref in item.refs:
        kind, _, name = ref.partition(".")
        if name not in patterns:
            continue
        raw = context.get(kind, {}).get(name) if isinstance(context.get(kind), Mapping) else None
        problem = pattern_problem(ref, raw, item.value, patterns[name])
        if problem is not None:
            raise _ParamRefused(problem)


def render_params(
    params: Any, context: Mapping[str, Any], *, where: str = "params", rules: ParamRules | None = None
) -> Any:
    """Render every template string in a nested params structure.

    Args:
        params: dicts, lists and scalars as written in the playbook. Strings without Jinja syntax
            and non-string values are returned unchanged; keys are never rendered.
        context: from ``build_context``.
        where: names the step for error messages, e.g. ``"steps.throttle.params"``.
        rules: the step's ``bot.playbooks.param_checks.ParamRules``: arg patterns every inserted label or
            arg value must match, and the top-level keys that are URLs (a URL param is
            normalized even when it is plain text).

    Returns:
        A new structure of the same shape with rendered values.

    Raises:
        TemplateRenderError: naming ``where`` plus the path of the failing param.
    """
    rules = rules or ParamRules()
    if isinstance(params, Mapping) and rules.url_params:
        return {key: _render_value(value, context, f"{where}.{key}", rules, url=key in rules.url_params)
                for key, value in params.items()}
    return _render_value(params, context, where, rules, url=False)


def _render_value(value: Any, context: Mapping[str, Any], where: str, rules: ParamRules, *, url: bool) -> Any:
    if isinstance(value, str):
        if is_template(value):
            return render_template(value, context, where=where, url=url, arg_patterns=rules.arg_patterns)
        if url:
            try:
                return normalize_url(value)
            except ValueError as exc:
                raise TemplateRenderError(where, str(exc)) from None
        return value
    if isinstance(value, Mapping):
        return {key: _render_value(item, context, f"{where}.{key}", rules, url=False) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render_value(item, context, f"{where}.{i}", rules, url=False) for i, item in enumerate(value)]
    return value


def evaluate(expression: str, context: Mapping[str, Any], *, where: str = "condition") -> bool:
    """Evaluate a bare Jinja expression (``evidence.health.status == 200``) to a bool.

    The result must be a real bool: ``a and b`` returning some truthy string is more often a
    playbook bug than an intent, so it is an error that asks for an explicit comparison.

    Raises:
        TemplateRenderError: the expression failed, or did not produce true or false.
    """
    if len(expression) > MAX_TEMPLATE_CHARS:
        raise TemplateRenderError(
            where, f"expression is {len(expression)} characters; the limit is {MAX_TEMPLATE_CHARS}"
        )
    try:
        result = _expression(expression)(**context)
        _reject_undefined(result)
    except jinja2.UndefinedError as exc:
        explained = _explain_undefined(expression, context, expression=True)
        raise TemplateRenderError(where, explained or _problem(exc)) from exc
    except _RENDER_ERRORS as exc:
        raise TemplateRenderError(where, _problem(exc)) from exc
    if not isinstance(result, bool):
        raise TemplateRenderError(
            where, f"expected true or false, got a {type(result).__name__}; compare explicitly, e.g. '... > 0'"
        )
    return result


def _capped(value: Any, path: str, cut: list[str]) -> Any:
    if isinstance(value, str):
        if len(value) <= MAX_CONTEXT_STRING_CHARS:
            return value
        cut.append(path)
        dropped = len(value) - MAX_CONTEXT_STRING_CHARS
        return value[:MAX_CONTEXT_STRING_CHARS] + f"…[truncated {dropped} characters]"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _capped(v, f"{path}.{k}", cut) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_capped(v, f"{path}.{i}", cut) for i, v in enumerate(value)]
    return value


def _signal_view(signal: Signal) -> dict[str, Any]:
    return {
        "source": signal.source,
        "fingerprint": signal.fingerprint,
        "status": str(signal.status),
        "severity": str(signal.severity),
        "title": signal.title,
        "labels": dict(signal.labels),
        "annotations": dict(signal.annotations),
        "starts_at": signal.starts_at.isoformat() if signal.starts_at else None,
        "ends_at": signal.ends_at.isoformat() if signal.ends_at else None,
        "url": signal.url,
        "expression": expression_of(signal.url),
    }


def _task_view(task: Any) -> dict[str, Any]:
    if task is None:
        return {}
    if isinstance(task, Mapping):
        return dict(task)
    return {"id": task.id, "environment": task.environment, "playbook_id": task.playbook_id}


def build_context(
    signals: Sequence[Signal],
    evidence: Mapping[str, Any],
    args: Mapping[str, Any],
    vars: Mapping[str, Any],
    task: Any = None,
) -> dict[str, Any]:
    """The variables a playbook template sees.

    Args:
        signals: the task's signals, first one first; empty for a manual run.
        evidence: read-step results by step name (dicts or pydantic models).
        args: manual-run args (already validated by ``Playbook.resolve_args``).
        vars: the ``vars`` section of the config, e.g. ``vars.platform_api``.
        task: a ``bot.model.tasks.Task`` or a mapping with at least ``id`` and ``environment``.

    Returns:
        ``labels`` (the first signal's labels, or ``args`` for a manual run), ``annotations`` (the
        first signal's: summary, description, runbook_url, a deploy version...), ``signal``,
        ``signals`` (at most 20), ``count`` (all of them), ``evidence``, ``args``, ``vars``,
        ``task``. Every string is capped at ``MAX_CONTEXT_STRING_CHARS``.
    """
    if signals:
        first = _signal_view(signals[0])
    else:
        # A manual run has no alert: its args stand in for the labels so the same templates work.
        first = {"source": "manual", "fingerprint": "", "status": "firing", "severity": "info", "title": "",
                 "labels": dict(args), "annotations": {}, "starts_at": None, "ends_at": None, "url": None,
                 "expression": ""}
    raw = {
        "labels": first["labels"],
        "annotations": first["annotations"],
        "signal": first,
        "signals": [_signal_view(s) for s in signals[:MAX_SIGNALS_IN_CONTEXT]],
        "count": len(signals),
        "evidence": dict(evidence),
        "args": dict(args),
        "vars": dict(vars),
        "task": _task_view(task),
    }
    cut: list[str] = []
    context = {name: _capped(value, name, cut) for name, value in raw.items()}
    if cut:
        log.warning("template.context_truncated", fields=cut[:20], limit=MAX_CONTEXT_STRING_CHARS)
    return context
