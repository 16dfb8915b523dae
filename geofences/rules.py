"""When a window instance's alerts are due: the clock rules of docs/interface.md, Semantics:
windows, coverage and alerts, written once for the coverage ledger (which fires the alerts)
and the control room's status (which shows them).

Each rule is a predicate and, for the ledger to know when to look again without updates, the
first clock value from which it holds. Times are integer epoch ms, passed in.
"""

from __future__ import annotations

from geofences.windows import WindowInstance


def settled_from(end_ms: int, grace_ms: int) -> int:
    """The first clock value at which an instance ending at ``end_ms`` is settled: ``end +
    exit grace``, passed. An exit is dated at the first ping of its outside streak and decided
    up to the exit grace later (docs/interface.md, Semantics: exit: left), lengthening its
    visit up to its date, so until then a late exit can still add coverage to the instance."""
    return end_ms + grace_ms + 1


def settled(end_ms: int, now_ms: int, grace_ms: int) -> bool:
    """Whether an instance ending at ``end_ms`` is settled at ``now_ms`` (:func:`settled_from`):
    its coverage is final, so it has had its ``met`` or its ``gap``, and a ledger may forget it."""
    return now_ms >= settled_from(end_ms, grace_ms)


def judged(end_ms: int, since_ms: int, grace_ms: int) -> bool:
    """Whether a ledger that began watching at ``since_ms`` judges an instance ending at
    ``end_ms``: every instance not settled by then, since the ledger saw none of its visits
    before (one under way is judged with the visits seen since)."""
    return not settled(end_ms, since_ms, grace_ms)


def met_due(instance: WindowInstance, covered_ms: int) -> bool:
    """The ``met`` rule: coverage has reached the instance's ``required_minutes``. (Coverage
    counts only time inside the instance, so it is reached by the end; the alert fires at most
    once, and never after ``gap``.)"""
    return covered_ms >= instance.required_ms


def gap_due(instance: WindowInstance, now_ms: int, covered_ms: int, grace_ms: int) -> bool:
    """The ``gap`` rule: coverage short once the instance is settled. (The alert fires at most
    once, and never after ``met``.)"""
    return not met_due(instance, covered_ms) and settled(instance.end_ms, now_ms, grace_ms)


def at_risk_from(instance: WindowInstance, covered_ms: int, lead_ms: int) -> int | None:
    """The first clock value at which ``at_risk`` is due (:func:`at_risk_due`) while coverage
    stays at ``covered_ms``, or None if it never is: coverage short and ``end - now <=
    (required - covered) + lead``, from the instance's start on; due until its end."""
    if met_due(instance, covered_ms):
        return None
    start_ms, end_ms = instance.start_ms, instance.end_ms
    trigger = end_ms - (instance.required_ms - covered_ms) - lead_ms
    if trigger < start_ms:
        trigger = start_ms
    return trigger if trigger < end_ms else None


def at_risk_due(instance: WindowInstance, now_ms: int, covered_ms: int, lead_ms: int) -> bool:
    """The ``at_risk`` rule, but for presence: the clock inside the instance (``start <= now <
    end``), coverage short and ``end - now <= (required - covered) + lead``. (The alert also
    needs no eligible unit present, which the caller knows, and fires at most once.)"""
    trigger = at_risk_from(instance, covered_ms, lead_ms)
    return trigger is not None and trigger <= now_ms < instance.end_ms
