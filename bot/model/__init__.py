"""The vocabulary every layer shares: Signal, Task and its state machine, Step and its transition
table, Proposal, events.
"""
