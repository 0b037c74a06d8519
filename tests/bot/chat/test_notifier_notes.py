"""The who-did-what notes the notifier adds to chat threads, from task events."""

from __future__ import annotations

from bot.chat.notifier import _note
from bot.model import events as ev
from bot.model.events import Event


def test_an_approval_note_names_the_approver_and_the_edits():
    event = Event(ev.APPROVED, 7, {"actor": "lead", "display": "Lead", "edits": {"throttle.rollout": [50, 30]}})
    assert _note(event) == "approved by Lead, with edits: throttle.rollout 50 → 30"


def test_plain_approvals_failures_and_undo_are_worded_for_people():
    assert _note(Event(ev.APPROVED, 7, {"actor": "lead", "display": "Lead"})) == "approved by Lead"
    assert _note(Event(ev.FAILED, 7, {"step": "restart", "tool": "http.request", "error": "503"})) == (
        "restart failed (http.request): 503")
    assert _note(Event(ev.UNDONE, 7, {"actor": "lead", "display": "Lead", "steps": ["flag x back to off"]})) == \
        "Undone by Lead: flag x back to off"
    assert _note(Event(ev.STATE_CHANGED, 7, {"from": "running", "to": "executing"})) is None


def test_the_outcome_of_planning_is_no_note_as_the_proposal_message_itself_shows_it():
    # Whichever replica posts the task first, the thread then holds the same notes.
    planned = {"from": "running", "to": "needs_approval", "actor": "system", "reason": "proposal ready"}
    assert _note(Event(ev.PROPOSED_ACTION, 7, planned)) is None
    assert _note(Event(ev.ESCALATED, 7, {**planned, "to": "escalated_to_human", "reason": "policy denied"})) is None
    waiting = {"from": "executing", "to": "needs_approval", "actor": "system", "reason": "flip needs approval (t3)"}
    assert _note(Event(ev.PROPOSED_ACTION, 7, waiting)) == "proposed_action by system: flip needs approval (t3)"
