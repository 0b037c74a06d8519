"""The leader's grace: what one look finds without an owner is acted on only when the next look finds it too."""

from __future__ import annotations

from structlog.testing import capture_logs

from bot.loop.orphans import TwoLooks

STEP = ("step", 7, 70, 1)  # task 7, step 70, first attempt
TASK = ("task", 8, "queued", 123, "2026-01-05T10:00:00+00:00")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def look(looks: TwoLooks, clock: Clock, *found: tuple) -> list[tuple]:
    """One look finding ``found``; returns what it would act on."""
    clock.now += 10
    looks.begin()
    acted = [key for key in found if looks.confirmed(key)]
    looks.end()
    return acted


def test_what_two_looks_in_a_row_find_is_acted_on_once():
    clock = Clock()
    looks = TwoLooks(interval_s=10, clock=clock)
    with capture_logs() as logs:
        assert look(looks, clock, STEP, TASK) == []
        assert look(looks, clock, STEP, TASK) == [STEP, TASK]
        assert look(looks, clock) == []  # resolved: gone, and not reported as cleared
    assert [e["event"] for e in logs] == ["orphans.owner_absent", "orphans.owner_absent"]


def test_an_owner_back_by_the_next_look_clears_the_suspicion():
    clock = Clock()
    looks = TwoLooks(interval_s=10, clock=clock)
    with capture_logs() as logs:
        assert look(looks, clock, STEP) == []
        assert look(looks, clock) == []  # its owner took its lock again
        assert look(looks, clock, STEP) == []  # absent again later: a first look again
    assert [e["event"] for e in logs] == ["orphans.owner_absent", "orphans.cleared", "orphans.owner_absent"]


def test_a_step_claimed_again_between_two_looks_is_not_the_same_orphan():
    clock = Clock()
    looks = TwoLooks(interval_s=10, clock=clock)
    assert look(looks, clock, STEP) == []
    assert look(looks, clock, ("step", 7, 70, 2)) == []


def test_looks_more_than_two_periods_apart_are_not_consecutive():
    clock = Clock()
    looks = TwoLooks(interval_s=10, clock=clock)
    assert look(looks, clock, TASK) == []
    clock.now += 60  # leadership went away and came back
    assert look(looks, clock, TASK) == []
    assert look(looks, clock, TASK) == [TASK]
