"""The policy engine: per-step decisions, risk, autonomy levels, change windows and freezes,
identity, and the safety rules writes are judged by.
"""
