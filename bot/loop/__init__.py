"""The loop: the engine (observe), the planner (orient and decide), the executor (act and review),
the tool gateway and its authority, approvals, replay and shadow mode.
"""
