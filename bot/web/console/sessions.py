"""Console sessions: an API token exchanged once for a session cookie.

The cookie holds only a random session id; the session (who, when it ends, its CSRF token) stays
in this process. A restart signs everyone out, which is the safe direction, and signing out
really ends a session (a self-contained signed cookie would stay valid until it expired).
Each session names an identity, never a token: the identity's roles are looked up on every
request, so a role taken away in the config applies at once.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

SESSION_TTL = timedelta(hours=8)  # a working shift; then the token is asked for again
MAX_SESSIONS = 10_000  # sessions are made only for valid tokens; this bounds memory if a script signs in in a loop


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def same_secret(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


@dataclass
class Session:
    id: str
    identity: str
    csrf: str
    signed_in_at: datetime
    expires_at: datetime
    flash: list[str] = field(default_factory=list)  # messages shown once, on the next page

    def take_flash(self) -> list[str]:
        messages, self.flash = self.flash, []
        return messages


class SessionStore:
    def __init__(self, clock: Callable[[], datetime], ttl: timedelta = SESSION_TTL) -> None:
        self._clock = clock
        self.ttl = ttl
        self._sessions: dict[str, Session] = {}

    def create(self, identity: str) -> Session:
        now = self._clock()
        self._forget_expired(now)
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))  # the oldest: dicts keep insertion order
        session = Session(new_secret(), identity, new_secret(), now, now + self.ttl)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        if self._clock() >= session.expires_at:
            del self._sessions[session.id]
            return None
        return session

    def end(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def _forget_expired(self, now: datetime) -> None:
        for sid in [sid for sid, s in self._sessions.items() if now >= s.expires_at]:
            del self._sessions[sid]
