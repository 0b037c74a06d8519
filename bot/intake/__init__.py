"""Webhook intake: authenticated, size-bounded bodies in, normalized signals stored, over-long values cut."""
