"""What a value must satisfy before it may fill a tool param: URL encoding and the arg patterns.

Alert labels, annotations and evidence are untrusted. Templates keep them from running as code
(``bot.playbooks.templates``); this module keeps them from changing *what* a param names:

URL params:
    A tool marks a params field as a URL (``url: Annotated[str, URL_PARAM]``). When such a param is
    rendered, the value an expression inserts is encoded for the place it lands: a path segment
    (``/ ? # % \\ @`` and the rest percent-encoded, so a value stays one segment, and a value
    that would make a whole segment empty, ``.`` or ``..`` is refused, so it cannot climb) or a
    query value. The one value taken as is is the base URL the template starts with
    (``{{ vars.platform_api }}``): it comes from config. The result is normalized
    (``normalize_url``) and that final URL is what the approver sees, what the allowlist is
    checked against and what is sent.

Arg patterns:
    A playbook's ``args`` promise what a value looks like (``workload: {pattern: ...}``). Manual
    runs are checked against them when they start; a value that reaches a param through
    ``labels.X`` or ``args.X`` is checked against arg ``X``'s pattern when it is inserted, so an
    alert cannot deliver what a person could not type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import BaseModel


class UrlParam:
    """Marks a params field whose rendered value is an HTTP URL: ``Annotated[str, URL_PARAM]``."""

    def __repr__(self) -> str:
        return "URL_PARAM"


URL_PARAM = UrlParam()


def url_params(model: type[BaseModel]) -> frozenset[str]:
    """The param keys (as playbooks write them) of ``model`` that are marked as URLs."""
    return frozenset(
        info.alias or name
        for name, info in model.model_fields.items()
        if any(isinstance(item, UrlParam) for item in info.metadata)
    )


@dataclass(frozen=True)
class ParamRules:
    """What rendering a step's params must enforce, beyond the template sandbox.

    Attributes:
        url_params: top-level param keys rendered as URLs (``url_params(tool.params_model)``).
        arg_patterns: arg name -> the fullmatch pattern a value from ``labels.<name>`` or
            ``args.<name>`` must match (the playbook's ``args`` that declare a pattern).
    """

    url_params: frozenset[str] = frozenset()
    arg_patterns: Mapping[str, str] = field(default_factory=dict)


def param_rules(arg_patterns: Mapping[str, str | None], params_model: type[BaseModel] | None) -> ParamRules:
    """The rules for one step: its playbook's arg patterns and its tool's URL params.

    Args:
        arg_patterns: arg name -> pattern or None, e.g. ``{n: a.pattern for n, a in playbook.args.items()}``.
        params_model: the step's tool's params model; None when the tool is unknown.
    """
    return ParamRules(
        url_params=url_params(params_model) if params_model is not None else frozenset(),
        arg_patterns={name: pattern for name, pattern in arg_patterns.items() if pattern is not None},
    )


def pattern_problem(ref: str, raw: Any, value: str, pattern: str) -> str | None:
    """Why ``value`` (inserted from ``ref``, e.g. ``labels.workload``) may not fill a param, or None.

    ``raw`` is the label's own value; when the template inserted something computed from it
    (``labels.service.split('@')[0]``) the computed value is what must match, and both are named.
    """
    if re.fullmatch(pattern, value) is not None:
        return None
    kind, _, name = ref.partition(".")
    what = "label" if kind == "labels" else "argument"
    if isinstance(raw, str) and raw != value:
        return (f"{what} {name!r} value {_clip(raw)!r} gives {_clip(value)!r}, which does not match the "
                f"playbook's pattern {pattern}")
    return f"{what} {name!r} value {_clip(value)!r} does not match the playbook's pattern {pattern}"


def _clip(text: str) -> str:
    return text if len(text) <= 80 else text[:79] + "…"


# --- URLs ----------------------------------------------------------------------------------

_HOST_VALUE = re.compile(r"[A-Za-z0-9_.-]+(:[0-9]{1,5})?")
_AUTHORITY = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?")
_DOT_SEGMENTS = frozenset({"", ".", ".."})
# Characters kept as they are in a normalized path and query: RFC 3986's unreserved and
# sub-delims, ":" and "@", and "%" so escapes already made stay single-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def build_url(pieces: Sequence[tuple[bool, str]]) -> str:
    """Join a URL template's pieces, encoding each inserted value for where it lands, and normalize.

    Args:
        pieces: ``(inserted, text)`` in order: False for the template's own text, True for a
            value an expression inserted. A first piece that is inserted is the base URL
            (``{{ vars.platform_api }}``) and is kept as is.

    Returns:
        The normalized URL (``normalize_url``).

    Raises:
        ValueError: a value that cannot be placed safely, or a URL that is not an absolute http(s) one.
    """
    out = ""
    base_end = 0
    path_values: list[tuple[int, int, str]] = []  # start, end in ``out``, the value as given
    for index, (inserted, text) in enumerate(pieces):
        if not inserted:
            out += text
        elif index == 0:
            out += text
            base_end = len(out)
        else:
            place = _place(out)
            if place == "host":
                if not _HOST_VALUE.fullmatch(text):
                    raise ValueError(f"value {_clip(text)!r} is inserted into the URL's host and is not a host name")
                out += text
            elif place == "path":
                encoded = quote(text, safe="")
                path_values.append((len(out), len(out) + len(encoded), text))
                out += encoded
            else:  # query or fragment: one value, never a separator
                out += quote(text, safe="")
    _refuse_climbing(out, base_end, path_values)
    return normalize_url(out)


def _authority_start(url: str) -> int:
    scheme_end = url.find("://")
    return scheme_end + 3 if scheme_end >= 0 else -1


def _place(url_so_far: str) -> str:
    """Where text appended to ``url_so_far`` lands: host, path, query or fragment."""
    start = _authority_start(url_so_far)
    rest = url_so_far[max(start, 0):]
    if start >= 0 and not re.search(r"[/?#\\]", rest):
        return "host"
    if "#" in rest:
        return "fragment"
    return "query" if "?" in rest else "path"


def _refuse_climbing(url: str, base_end: int, path_values: list[tuple[int, int, str]]) -> None:
    """A path segment made (even partly) by a value must not be empty, "." or "..": normalizing
    would drop it or climb, and the URL would name another resource than the template's."""
    if not path_values:
        return
    start = url.find("/", max(_authority_start(url), 0))
    if start < 0:
        return
    end = min((i for i in (url.find("?", start), url.find("#", start)) if i >= 0), default=len(url))
    position = start + 1
    for segment in url[start + 1:end].split("/"):
        seg_start, seg_end = position, position + len(segment)
        position = seg_end + 1
        if seg_start < base_end or segment not in _DOT_SEGMENTS:
            continue
        for value_start, value_end, value in path_values:
            if seg_start <= value_start and value_end <= seg_end:
                raise ValueError(
                    f"value {_clip(value)!r} would make the URL path segment {segment!r}; an empty, '.' or '..' "
                    "segment changes which resource the URL names"
                )


def normalize_url(url: str) -> str:
    """The one spelling of an http(s) URL that is checked, shown and sent.

    Backslashes before the query become slashes (as browsers read them), ``%2E`` becomes ``.``,
    dot segments are removed, the scheme and host are lower-cased, the fragment is dropped and
    characters that need it are percent-encoded. Credentials in the URL are refused, not dropped.

    Raises:
        ValueError: not an absolute http:// or https:// URL, a host that is not a host name, or
            credentials in the URL.
    """
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    url = url[:cut].replace("\\", "/") + url[cut:].replace("\\", "%5C")
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an absolute http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials; set tools.http.auth_header_env for the host instead")
    authority = parts.netloc.lower()
    if not _AUTHORITY.fullmatch(authority):
        raise ValueError(f"host {_clip(authority)!r} is not a host name (with an optional :port); "
                         "write an international name in its xn-- form")
    path = remove_dot_segments(re.sub("%2[eE]", ".", parts.path) or "/")
    path = quote(path, safe=_PATH_SAFE)
    query = quote(parts.query, safe=_QUERY_SAFE)
    return f"{scheme}://{authority}{path}" + (f"?{query}" if query else "")


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path: ``/a/b/../c/./d`` -> ``/a/c/d``; never above ``/``."""
    segments = path.split("/")[1:]
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments and segments[-1] in {".", ".."}:
        kept.append("")
    return "/" + "/".join(kept)
