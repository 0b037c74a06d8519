"""The audit log: append-only and hash-chained, optionally HMAC-signed.

Each record carries the SHA-256 of the record before it, so an edited, deleted or reordered record
breaks the chain at a place ``verify_chain`` can name. With an HMAC key (from env) each hash is also
signed, so a forger who recomputes the whole chain still fails verification without the key.
The chain is sealed by the single store writer, which is what makes the order well defined.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from bot.jsoncodec import dumps_canonical

GENESIS = "0" * 64


def current_correlation_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("correlation_id")


def current_trace_id() -> str | None:
    """The trace of the task being worked on (bot/tracing.py binds it), if any."""
    return structlog.contextvars.get_contextvars().get("trace_id")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One thing that happened, before it is sealed into the chain.

    The correlation id is taken from the context where the entry is created (the request or
    task), not from the writer task that seals it later.
    """

    actor: str
    action: str
    task_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = field(default_factory=current_correlation_id)
    at: datetime | None = None
    # Sealed into ``data`` as ``trace_id`` (no column of its own, so older records verify as before).
    trace_id: str | None = field(default_factory=current_trace_id)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: str
    actor: str
    action: str
    task_id: int | None
    correlation_id: str | None
    data: str  # canonical JSON, exactly the bytes that were hashed
    prev_hash: str
    hash: str
    signature: str | None

    def as_row(self) -> tuple[Any, ...]:
        return (self.seq, self.at, self.actor, self.action, self.task_id, self.correlation_id,
                self.data, self.prev_hash, self.hash, self.signature)


AUDIT_COLUMNS = "seq, at, actor, action, task_id, correlation_id, data, prev_hash, hash, signature"


def canonical_json(value: Any) -> str:
    # Only the writer serializes; verify hashes the stored text, so the encoder may change freely.
    return dumps_canonical(value)


def _digest(seq: int, at: str, actor: str, action: str, task_id: int | None,
            correlation_id: str | None, data: str, prev_hash: str) -> str:
    # orjson writes these ints, strings and nulls byte for byte as json.dumps(separators=(",", ":"),
    # ensure_ascii=False).encode() did when older records were sealed (the audit tests hold it to
    # that), at a tenth of the cost.
    material = orjson.dumps([seq, at, actor, action, task_id, correlation_id, data, prev_hash])
    return hashlib.sha256(material).hexdigest()


def _sign(key: bytes | None, digest: str) -> str | None:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest() if key else None


class AuditChain:
    """The writer's view of the chain's head. Not thread-safe: one writer owns it."""

    def __init__(self, last_seq: int, last_hash: str, key: bytes | None) -> None:
        self.last_seq = last_seq
        self.last_hash = last_hash
        self._key = key

    def seal(self, entry: AuditEntry) -> AuditRecord:
        """Give ``entry`` the next sequence number and chain it to the head."""
        seq = self.last_seq + 1
        at = (entry.at or datetime.now(UTC)).isoformat()
        correlation_id = entry.correlation_id
        data = canonical_json({**entry.data, "trace_id": entry.trace_id} if entry.trace_id else entry.data)
        digest = _digest(seq, at, entry.actor, entry.action, entry.task_id, correlation_id, data, self.last_hash)
        record = AuditRecord(seq, at, entry.actor, entry.action, entry.task_id, correlation_id, data,
                             self.last_hash, digest, _sign(self._key, digest))
        self.last_seq, self.last_hash = seq, digest
        return record

    def snapshot(self) -> tuple[int, str]:
        return self.last_seq, self.last_hash

    def restore(self, state: tuple[int, str]) -> None:
        self.last_seq, self.last_hash = state


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``head_*`` name the last good record. The chain cannot show that records were cut off its
    end, so operators compare the head with a copy kept elsewhere (the server logs it)."""

    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS


def parse_head(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` as the server logs it (``audit.head``) and ``verify`` prints it.

    Raises:
        ValueError: saying what the form is.
    """
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or int(seq) < 1 or len(digest) != 64 or digest.strip(_HEX):
        raise ValueError(f"expected head {text!r} is not SEQ:HASH (a record number, a colon and the record's "
                         "64-character hex hash, as in the server's audit.head log line)")
    return int(seq), digest.lower()


_HEX = "0123456789abcdefABCDEF"


def verify_chain(rows: Iterable[tuple[Any, ...]], key: bytes | None,
                 expect_head: tuple[int, str] | None = None) -> VerifyResult:
    """Walk records in storage order and name the first one that breaks the chain.

    Args:
        rows: tuples in ``AUDIT_COLUMNS`` order, ordered by rowid (storage order).
        key: the HMAC key, when records were signed.
        expect_head: (seq, hash) of a record known from outside the store, such as the last
            ``audit.head`` line the server logged. The chain alone cannot show records cut off
            its end, nor a chain rewritten and sealed again without a key; this record can: it
            must still be there with the same hash.
    """
    result = _walk(rows, key, expect_head)
    if result.ok and expect_head is not None and result.head_seq < expect_head[0]:
        return VerifyResult(False, result.checked, result.head_seq + 1,
                            f"the log ends at record {result.head_seq} but record {expect_head[0]} was "
                            "written: records were cut off its end", result.head_seq, result.head_hash)
    return result


def _walk(rows: Iterable[tuple[Any, ...]], key: bytes | None, expect_head: tuple[int, str] | None) -> VerifyResult:
    expected_seq, prev = 1, GENESIS
    checked = 0
    for row in rows:
        record = AuditRecord(*row)
        head = (expected_seq - 1, prev)
        if record.seq != expected_seq:
            what = "missing (deleted?)" if record.seq > expected_seq else "out of order (reordered?)"
            return VerifyResult(False, checked, expected_seq,
                                f"record {expected_seq} is {what}: found record {record.seq} in its place", *head)
        if record.prev_hash != prev:
            return VerifyResult(False, checked, record.seq,
                                f"record {record.seq} does not follow record {record.seq - 1}: prev_hash mismatch "
                                "(a record was swapped, deleted or edited)", *head)
        digest = _digest(record.seq, record.at, record.actor, record.action, record.task_id,
                         record.correlation_id, record.data, record.prev_hash)
        if digest != record.hash:
            return VerifyResult(False, checked, record.seq,
                                f"record {record.seq} was changed after it was written: its content no longer "
                                "matches its hash", *head)
        if key is not None and not hmac.compare_digest(_sign(key, digest) or "", record.signature or ""):
            return VerifyResult(False, checked, record.seq,
                                f"record {record.seq} has a missing or wrong HMAC signature", *head)
        if expect_head is not None and record.seq == expect_head[0] and record.hash != expect_head[1]:
            return VerifyResult(False, checked, record.seq,
                                f"record {record.seq} is not the record that was written: its hash differs from "
                                "the expected head (the chain was rewritten from here or earlier)", *head)
        prev = record.hash
        expected_seq += 1
        checked += 1
    return VerifyResult(True, checked, head_seq=expected_seq - 1, head_hash=prev)
