"""Request authenticity for alert webhooks: header lookup, HMAC-SHA256 and timestamp windows.

Every comparison goes through ``hmac.compare_digest`` so a forger learns nothing from how long a
wrong guess took. Messages name the header and what is wrong with it, never the secret or the
expected digest.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping

from bot.errors import Unauthorized

# A rotation publishes two or three entries; more than this is a malformed or hostile header.
MAX_SIGNATURE_ENTRIES = 8


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name``, matched case-insensitively.

    aiohttp's CIMultiDictProxy already ignores case, so the direct lookup is the common path;
    the scan covers plain dicts (tests, other servers) whose keys keep the sender's spelling.
    """
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


def require_header(headers: Mapping[str, str], name: str) -> str:
    value = header_value(headers, name)
    if value is None or not value.strip():
        raise Unauthorized(
            f"The {name} header is missing or empty. The sender must sign each request; "
            f"check its webhook signing settings, or change this source's auth."
        )
    return value.strip()


def hmac_sha256_hex(secret: bytes, *parts: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the concatenated ``parts`` (no join copy of the body)."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.hexdigest()


def matches_any(expected_hex: str, candidates: Iterable[str]) -> bool:
    """True if any candidate equals ``expected_hex``; every candidate is compared in full."""
    expected = expected_hex.encode("ascii")
    found = False
    for candidate in candidates:
        # compare_digest refuses non-ASCII str, so compare bytes; a mangled header just fails.
        found |= hmac.compare_digest(expected, candidate.strip().lower().encode("utf-8", "replace"))
    return found


def versioned_entries(value: str, header: str, version: str = "v1") -> list[str]:
    """The digests of the ``v1=<hex>`` entries in a comma-separated signature header.

    Entries of other versions are skipped, so a sender can introduce a new scheme alongside v1.
    """
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if len(entries) > MAX_SIGNATURE_ENTRIES:
        raise Unauthorized(
            f"The {header} header has {len(entries)} entries; at most {MAX_SIGNATURE_ENTRIES} are accepted."
        )
    prefix = version + "="
    digests = [entry[len(prefix) :] for entry in entries if entry.startswith(prefix)]
    if not digests:
        raise Unauthorized(
            f"The {header} header has no {prefix}<hex> entry; expected a comma-separated list such as "
            f"'{prefix}<hex HMAC-SHA256>'."
        )
    return digests


def check_timestamp(value: str, header: str, now: float, max_skew_s: float) -> None:
    """Refuse a request whose signed timestamp (Unix seconds) is outside the replay window."""
    try:
        sent_at = int(value)
    except ValueError:
        raise Unauthorized(f"The {header} header must be a Unix time in whole seconds.") from None
    skew = now - sent_at
    if not math.isfinite(skew) or abs(skew) > max_skew_s:
        direction = "old" if skew > 0 else "in the future"
        raise Unauthorized(
            f"The {header} header is {abs(skew):.0f} s {direction}; requests are accepted within "
            f"{max_skew_s:g} s of this server's clock. Check the sender's clock (NTP), or this is a replay."
        )
