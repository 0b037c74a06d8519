"""Ooda's own request signature, for webhooks it receives (the generic intake) and sends (event
sinks): ``X-Ooda-Timestamp: <unix seconds>`` and ``X-Ooda-Signature: v1=<hex HMAC-SHA256 of
"<timestamp>:<raw body>">``. The timestamp in the signed text lets a receiver refuse replays."""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Ooda-Timestamp"
SIGNATURE_HEADER = "X-Ooda-Signature"


def signature_headers(body: bytes, secret: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    mac = hmac.new(secret, timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: f"v1={mac}"}
