"""What an API request may carry: its query parameters, its path ids and its JSON body.

Everything a client sends is checked here before it reaches a command, the store or the writer,
so a hostile request is answered 4xx with the problem named and can never fail anyone else's
(a task id past SQLite's integer range once failed a whole group commit of webhooks).

- Query parameters: each route declares the ones it takes (``QuerySpec``); an unknown name is
  refused too, naming the ones the route knows, because a misspelt ``limt=5`` that is silently
  ignored answers a different question than the one asked.
- Path ids: a task id is a whole number from 1 to 2^63-1 (SQLite's INTEGER), ``#12`` and ``T12``
  accepted as people write them.
- Bodies: the size is bounded while reading and the JSON nesting depth before parsing (Python's
  parser recurses, so depth is what turns a small body into a crash); the body must be a JSON
  object, without NaN/Infinity and without lone surrogates (SQLite cannot store those).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from bot.errors import UserError
from bot.model.tasks import MAX_TASK_ID

API_BODY_BYTES = 64 * 1024
# A replay carries playbook files as text; 100 files of up to 20 KB fit.
REPLAY_BODY_BYTES = 2 * 1024 * 1024
MAX_BODY_DEPTH = 32
LIMIT_MAX = 1000

_TASK_ID = re.compile(r"[#Tt]?([0-9]{1,19})")
_WHOLE = re.compile(r"[0-9]{1,7}")
_STRING_LITERAL = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_READ_CHUNK = 16 * 1024


class InvalidParameter(UserError):
    """A query parameter or path id the route does not take, answered 400 naming the parameter."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(message)


class BodyTooLarge(UserError):
    """A request body past the route's size limit."""

    status = 413


class UnsupportedMediaType(UserError):
    """A request body that is not declared as JSON."""

    status = 415


def _shown(text: str) -> str:
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def whole_number(minimum: int, maximum: int) -> Callable[[str, str], int]:
    """A parser for an integer parameter from ``minimum`` to ``maximum``, written in plain digits."""

    def parse(name: str, text: str) -> int:
        value = text.strip()
        if not _WHOLE.fullmatch(value) or not minimum <= int(value) <= maximum:
            raise InvalidParameter(name, f"{name} must be a whole number from {minimum} to {maximum}, "
                                         f"got {_shown(text)}")
        return int(value)

    return parse


def one_of(*allowed: str) -> Callable[[str, str], str]:
    """A parser for a parameter that takes one of ``allowed`` (compared without case)."""

    def parse(name: str, text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise InvalidParameter(name, f"{name} must be one of {', '.join(allowed)}, got {_shown(text)}")
        return value

    return parse


def free_text(max_length: int) -> Callable[[str, str], str]:
    """A parser for text the handler interprets itself (a duration, an anchor), bounded in length."""

    def parse(name: str, text: str) -> str:
        if len(text) > max_length:
            raise InvalidParameter(name, f"{name} must be at most {max_length} characters, got {len(text)}")
        return text

    return parse


@dataclass(frozen=True)
class QuerySpec:
    """The query parameters one route takes: name -> parser, the defaults of those left out, and
    for each required one what to say when it is missing."""

    parsers: Mapping[str, Callable[[str, str], Any]] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    required: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] | None = None  # for rules across parameters

    def parse(self, query: MultiMapping[str]) -> dict[str, Any]:
        """The parsed parameters, defaults filled in.

        Raises:
            InvalidParameter: an unknown, repeated or missing name, or a value the parser refuses.
        """
        unknown = sorted({name for name in query if name not in self.parsers})
        if unknown:
            known = ", ".join(self.parsers) or "none"
            raise InvalidParameter(unknown[0], f"unknown query parameter {_shown(unknown[0])}; this route takes: "
                                               f"{known}")
        parsed = dict(self.defaults)
        for name, parser in self.parsers.items():
            values = query.getall(name, [])
            if len(values) > 1:
                raise InvalidParameter(name, f"{name} is given {len(values)} times; give it once")
            if values:
                parsed[name] = parser(name, values[0])
            elif name in self.required:
                raise InvalidParameter(name, self.required[name])
        if self.check is not None:
            self.check(parsed)
        return parsed


NO_QUERY = QuerySpec()


def task_id_from_path(text: str) -> int:
    """The task id of a path (``12``, ``#12``, ``T12``).

    Raises:
        InvalidParameter: not a whole number from 1 to 2^63-1.
    """
    match = _TASK_ID.fullmatch(text)
    if match is None or not 1 <= int(match.group(1)) <= MAX_TASK_ID:
        raise InvalidParameter("id", f"task id must be a whole number from 1 to {MAX_TASK_ID}, got {_shown(text)}")
    return int(match.group(1))


def nesting_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, brackets inside strings not counted.

    Works on text that is not valid JSON too (it only has to bound what the parser will do).
    """
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING_LITERAL.sub(b'""', raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is past the range of a number (Infinity); send a finite number")
    return value


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The body, read in chunks and refused as soon as it passes ``max_bytes``.

    Raises:
        BodyTooLarge: naming the limit.
    """
    too_large = BodyTooLarge(f"the request body is larger than the limit of {max_bytes} bytes for this route")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    chunks, size = [], 0
    while chunk := await request.content.read(_READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(raw: bytes, *, max_depth: int = MAX_BODY_DEPTH) -> dict[str, Any]:
    """A JSON object from a body already bounded in size.

    Raises:
        UserError: the depth limit, invalid JSON or UTF-8, a non-finite number, a lone surrogate,
            or a value other than an object, each named.
    """
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise UserError(f"the request body nests {depth} levels deep; the limit is {max_depth}")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise UserError(f"the request body must be a JSON object ({{...}}), got a JSON {type(value).__name__}")
    # Only a \ud800-\udfff escape can make a string Python holds but SQLite cannot store.
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise UserError("request body has a \\u escape of half a surrogate pair; send whole characters") from None
    return value


async def json_body(request: web.Request, *, max_bytes: int = API_BODY_BYTES,
                    max_depth: int = MAX_BODY_DEPTH) -> dict[str, Any] | None:
    """The request's JSON object, or None for an empty body.

    The body may come without a Content-Type (a bare ``curl --data-binary``); one that names
    another type is refused rather than guessed at.

    Raises:
        UnsupportedMediaType: a Content-Type other than JSON.
        BodyTooLarge: past ``max_bytes``.
        UserError: see ``parse_json_object``.
    """
    declared = request.headers.get("Content-Type", "")
    media = declared.split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"the request body must be JSON: send Content-Type: application/json, "
                                   f"got {_shown(declared)}")
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        return None
    return parse_json_object(raw, max_depth=max_depth)


_PLAYBOOK_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def playbook_id_from_path(text: str) -> str:
    """The playbook id of a path, in the form playbooks declare (bot/playbooks/schema.py).

    Raises:
        InvalidParameter: not lowercase letters, digits and ``-``, or longer than 64 characters.
    """
    if not _PLAYBOOK_ID.fullmatch(text):
        raise InvalidParameter("id", "playbook id must be lowercase letters, digits and '-' (at most 64 "
                                     f"characters), got {_shown(text)}")
    return text
