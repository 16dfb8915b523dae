"""The deadline wheel against a plain scan of every unit's current deadline."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.worker.deadlines import DeadlineWheel

UNITS = [f"U{i}" for i in range(6)]

#: ("set", unit, deadline or None) or ("pop", now); times in ms over a few seconds, so that
#: a second's bucket often holds deadlines on both sides of ``now``
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(UNITS), st.none() | st.integers(0, 8_000)),
        st.tuples(st.just("pop"), st.integers(0, 9_000)),
    ),
    max_size=60,
)


@given(operations, st.booleans())
def test_due_units_are_exactly_those_whose_current_deadline_passed(
    steps: list[tuple], rebuild_often: bool
) -> None:
    wheel = DeadlineWheel()
    deadlines: dict[str, int | None] = {}
    for step in steps:
        if step[0] == "set":
            _, unit, deadline = step
            previous = deadlines.get(unit)
            deadlines[unit] = deadline
            # as the presence stage files them: only a new deadline or one that moved earlier
            if deadline is not None and (previous is None or deadline < previous):
                wheel.add(deadline, unit)
            if rebuild_often:
                wheel.rebuild((d, u) for u, d in deadlines.items() if d is not None)
        else:
            now = step[1]
            due = wheel.pop_due(now, deadlines.get)
            assert due == {u for u, d in deadlines.items() if d is not None and d < now}
            for unit in due:  # as expire does: the unit's visits close, it has no deadline
                deadlines[unit] = None
    assert wheel.entries >= sum(d is not None for d in deadlines.values())


def test_a_bucket_straddling_now_keeps_the_later_deadlines() -> None:
    wheel = DeadlineWheel()
    deadlines = {"A": 5_100, "B": 5_900}
    for unit, deadline in deadlines.items():
        wheel.add(deadline, unit)
    assert wheel.pop_due(5_500, deadlines.get) == {"A"}
    del deadlines["A"]
    assert wheel.pop_due(5_500, deadlines.get) == set()
    assert wheel.pop_due(5_901, deadlines.get) == {"B"}
    assert wheel.entries == 0
