"""The audit log: the hash chain every action is recorded in, and redaction of what goes into it."""
