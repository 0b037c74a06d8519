"""Redaction: what the tool gateway does to every input and output before it is logged or audited.

Three layers, cheapest first:

- keys that name a credential (``password``, ``api_key``, ``Authorization``, ``session_id``, ...)
  or a piece of personal data (``email``, ``phone``, ``address``) have their whole value masked;
- string values are scanned for things that look like credentials (bearer tokens, Slack tokens,
  JWTs, ``token=...`` pairs, private keys) and for PII (emails, phone numbers, street addresses),
  the PII redaction the source spec puts at the tool gateway;
- exact secret values the process knows (loaded from the environment) are registered with
  ``register_secret`` and masked wherever they appear, even inside longer text.

Masks name what they hid (``[redacted:email]``) so a reader of the audit log still understands
the record. Patterns are deliberately conservative about numbers: dates, IPs, ports and counts are
left alone, because an audit trail that hides them is useless during an incident.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

import structlog
from pydantic import BaseModel

log = structlog.get_logger(__name__)

MASK = "[redacted]"

# Keys are normalised (lower case, separators removed) and matched at the end, so ``x-api-key``,
# ``access_token`` and ``clientSecret`` all match while ``sessions_revoked`` or ``token_env`` do not.
_SECRET_KEY = re.compile(
    r"(password|passwd|passphrase|pwd|secret|token|apikey|accesskey|privatekey|authorization|auth"
    r"|cookie|setcookie|session|sessionid|credential|signature)s?$"
)
_PII_KEYS = frozenset(
    {
        "email",
        "emailaddress",
        "phone",
        "phonenumber",
        "mobile",
        "address",
        "streetaddress",
        "homeaddress",
        "postaladdress",
        "billingaddress",
        "shippingaddress",
        "street",
    }
)

# One alternation with named groups: a single pass over each string, the group name becomes the
# mask label. Order matters where alternatives could start at the same position.
_PATTERNS = re.compile(
    "|".join(
        [
            r"(?P<private_key>-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z))",
            r"(?P<jwt>\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)",
            r"(?P<bearer>(?<=\b[Bb]earer )[A-Za-z0-9\-._~+/]{8,}=*|(?<=\b[Bb]asic )[A-Za-z0-9+/]{8,}=*)",
            r"(?P<slack_token>\bxox[abposr]-[A-Za-z0-9-]{8,}|\bxapp-[A-Za-z0-9-]{8,})",
            r"(?P<github_token>\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,})",
            r"(?P<aws_key>\b(?:AKIA|ASIA)[0-9A-Z]{16}\b)",
            # key=value / key: value pairs in free text, URLs and log lines; only the value goes.
            r"(?P<secret_pair>(?P<pair_key>(?i:\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key"
            r"|client[_-]?secret))\s*[=:]\s*)[^\s&,;\"'<>\[]+)",
            r"(?P<email>\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b)",
            # +44 20 7946 0958, +14155552671, (415) 555-2671, 415-555-2671, 415.555.2671
            r"(?P<phone>(?<![\w.+-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
            r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w-]|\.\d))",
            r"(?P<address>\b\d{1,5}(?: [A-Z][a-z]+){1,3} (?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd"
            r"|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Square|Sq)\b\.?)",
        ]
    ),
    re.DOTALL,
)

# Shorter values would mask pieces of unrelated text (a configured "xoxb-1" would cut through every
# real Slack token, "dev" through every word); such secrets are too weak to protect this way and
# should be rotated instead. Each one refused is logged once, by length, never by value.
MIN_SECRET_LENGTH = 8

_lock = threading.Lock()
_secrets: set[str] = set()
_too_short: set[str] = set()  # refused values, so each is warned about once
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears from now on (e.g. a token loaded from the env)."""
    global _secret_pattern
    if not value or value in _secrets:
        return
    if len(value) < MIN_SECRET_LENGTH:
        with _lock:
            if value in _too_short:
                return
            _too_short.add(value)
        log.warning("config.secret_too_short", length=len(value), minimum=MIN_SECRET_LENGTH,
                    hint="a secret this short is not masked in logs and audit records; rotate it")
        return
    with _lock:
        _secrets.add(value)
        # Longest first so a secret that contains another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def forget_secrets() -> None:
    """Drop every registered secret (tests; a process never needs to forget one)."""
    global _secret_pattern
    with _lock:
        _secrets.clear()
        _too_short.clear()
        _secret_pattern = None


def _mask_match(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "secret_pair":
        return match.group("pair_key") + "[redacted:secret]"
    if kind == "phone" and sum(ch.isdigit() for ch in match.group()) < 8:
        return match.group()  # too short for a phone number: a count, a port, a version
    return f"[redacted:{kind}]"


def redact_text(text: str) -> str:
    """Mask registered secrets, credential-looking tokens and PII inside one string."""
    if _secret_pattern is not None:
        text = _secret_pattern.sub("[redacted:secret]", text)
    return _PATTERNS.sub(_mask_match, text)


def _is_sensitive_key(key: str) -> bool:
    normalised = key.lower().replace("_", "").replace("-", "").replace(".", "").replace(" ", "")
    return normalised in _PII_KEYS or bool(_SECRET_KEY.search(normalised))


def redact(value: Any) -> Any:
    """A copy of ``value`` with secrets and PII masked, recursing into mappings and sequences.

    Args:
        value: any JSON-like value; pydantic models are dumped first. Other objects are returned
            unchanged, so callers should hand over plain data.

    Returns:
        A new value of the same shape; the input is never modified.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and _is_sensitive_key(key) and item is not None and not isinstance(item, bool):
                out[key] = MASK
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item) for item in value]
    if isinstance(value, BaseModel):
        return redact(value.model_dump(mode="json", by_alias=True))
    return value
