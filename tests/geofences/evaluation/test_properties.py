"""Properties of the daily rows over generated visits: minutes are neither lost nor invented."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.evaluation.daily import daily
from geofences.evaluation.inputs import LedgerVisit, local_day_ms
from tests.geofences.evaluation.small_case import COLLECTION

FIRST, LAST = date(2026, 10, 24), date(2026, 10, 27)
LO, _ = local_day_ms(FIRST, "Europe/London")
_, HI = local_day_ms(LAST, "Europe/London")
MINUTE = 60_000


@st.composite
def visits(draw: st.DrawFn) -> list[LedgerVisit]:
    out = []
    for n in range(draw(st.integers(0, 12))):
        enter = draw(st.integers(LO - 600 * MINUTE, HI + 60 * MINUTE))
        length = draw(st.integers(0, 900 * MINUTE))
        out.append(
            LedgerVisit(
                f"e{n}", draw(st.sampled_from(["A", "B", "C"])), draw(st.sampled_from(["u1", "u2", "u3"])),
                draw(st.sampled_from(["police", "outreach"])), enter, enter + length, "left",
            )
        )  # fmt: skip
    return out


@settings(max_examples=150, deadline=None)
@given(visits())
def test_minutes_add_up_to_the_visits_clipped_to_the_dates(generated: list[LedgerVisit]) -> None:
    rows = daily(COLLECTION, generated, [], FIRST, LAST, {"police": 1.0}).rows
    for hotspot in ("A", "B", "C"):
        mine = [r for r in rows if r.hotspot_id == hotspot]
        clipped = sum(
            max(0, min(v.exit_ms, HI) - max(v.enter_ms, LO))
            for v in generated
            if v.hotspot_id == hotspot
        )
        assert sum(r.unit_ms for r in mine) == clipped
        for row in mine:
            lo, hi = local_day_ms(row.date, "Europe/London")
            assert row.covered_ms <= row.unit_ms
            assert row.covered_ms <= hi - lo
            assert sum(row.ms_by_type.values()) == row.unit_ms
            assert row.cost_gbp == row.ms_by_type.get("police", 0) / MINUTE
