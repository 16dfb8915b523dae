"""The coverage table: a ledger written in parts, only what changed, and read back whole."""

from __future__ import annotations

from datetime import time
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.coverage import CoverageSettings, HotspotCoverage
from geofences.hotspots import Window
from stream.worker.coverage_codec import VISIT_KEY_PREFIX, CoverageCodec, Writes, visit_key

DAILY = frozenset(range(7))
T0 = 1_795_356_000_000  # 2026-11-22T14:00:00Z (London is on UTC)
MIN = 60_000
WINDOW = Window(DAILY, time(14), time(15), 10.0)
LONDON = "Europe/London"


def apply(store: dict[bytes, bytes], writes: Writes) -> None:
    for key, (_, value) in writes.items():
        if value is None:
            assert store.pop(key, None) is not None, "a delete of a key never written"
        else:
            store[key] = value


def write(codec: CoverageCodec, ledger: HotspotCoverage, assigned: tuple[Window, ...]) -> Writes:
    out: Writes = {}
    codec.write(ledger, assigned, 0, out)
    return out


def read(store: dict[bytes, bytes], settings_: CoverageSettings) -> HotspotCoverage:
    stored = CoverageCodec().read("HS-03", store)
    assert stored is not None
    snapshot, assigned = stored
    return HotspotCoverage.from_dict(snapshot, (WINDOW, *assigned), LONDON, settings_)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["start", "progress", "end", "advance", "write"]),
            st.sampled_from(["P1", "P2", "O1"]),
            st.integers(min_value=0, max_value=600),
        ),
        max_size=50,
    )
)
def test_what_is_written_reads_back_as_the_ledger(steps: list[tuple[str, str, int]]) -> None:
    """Writes taken at any points, applied to a table, read back as the ledger (but for a
    clock that only moved since the header was written), deciding the same from then on; a
    delete only of what was written, and nothing when nothing changed."""
    settings_ = CoverageSettings(visit_retention_minutes=60)
    ledger = HotspotCoverage("HS-03", [WINDOW], LONDON, settings_)
    ledger.advance(T0 - 60 * MIN)
    codec = CoverageCodec()
    store: dict[bytes, bytes] = {}
    for kind, unit, minute in steps:
        t = T0 - 60 * MIN + minute * MIN
        if kind == "start":
            ledger.visit_started(unit, "outreach" if unit == "O1" else "police", t)
        elif kind == "progress":
            ledger.visit_progress(unit, t)
        elif kind == "end":
            ledger.visit_ended(unit, t)
        elif kind == "advance":
            ledger.advance(t)
        else:
            apply(store, write(codec, ledger, ()))
    apply(store, write(codec, ledger, ()))
    assert write(codec, ledger, ()) == {}, "written again, unchanged"
    assert all(key[:1] == VISIT_KEY_PREFIX or key == b"HS-03" for key in store)
    rebuilt = read(store, settings_)
    assert ledger.now_ms is not None and rebuilt.now_ms is not None
    assert rebuilt.now_ms <= ledger.now_ms
    assert {**rebuilt.to_dict(), "now_ms": ledger.now_ms} == ledger.to_dict()
    for later in (0, 30 * MIN, 12 * 60 * MIN):
        assert rebuilt.advance(ledger.now_ms + later) == ledger.advance(ledger.now_ms + later)


def test_a_clock_that_only_moved_is_not_written() -> None:
    ledger = HotspotCoverage("HS-03", [WINDOW], LONDON)
    codec = CoverageCodec()
    ledger.advance(T0 - 10 * MIN)
    assert set(write(codec, ledger, ())) == {b"HS-03"}
    ledger.visit_started("P1", "police", T0)
    ledger.advance(T0 + MIN)
    assert set(write(codec, ledger, ())) == {visit_key("HS-03", "P1", T0)}
    ledger.advance(T0 + 2 * MIN)
    assert write(codec, ledger, ()) == {}


def test_visits_pruned_are_deleted_once_written_and_never_otherwise() -> None:
    settings_ = CoverageSettings(visit_retention_minutes=10)
    ledger = HotspotCoverage("HS-03", [WINDOW], LONDON, settings_)
    codec = CoverageCodec()
    store: dict[bytes, bytes] = {}
    ledger.advance(T0 + 70 * MIN)  # after the window: visits are kept for the retention only
    ledger.visit_started("P1", "police", T0 + 70 * MIN)
    ledger.visit_ended("P1", T0 + 71 * MIN)
    apply(store, write(codec, ledger, ()))
    assert visit_key("HS-03", "P1", T0 + 70 * MIN) in store
    ledger.visit_started("P2", "police", T0 + 72 * MIN)
    ledger.visit_ended("P2", T0 + 73 * MIN)
    # both past retention, pruned at the ledger's next look (tomorrow's window at risk)
    assert ledger.advance(T0 + 24 * 60 * MIN + 40 * MIN)
    writes = write(codec, ledger, ())
    assert writes[visit_key("HS-03", "P1", T0 + 70 * MIN)] == (0, None)
    assert visit_key("HS-03", "P2", T0 + 72 * MIN) not in writes, "never written, not deleted"
    assert b"HS-03" in writes, "a prune moves the header's clock on"
    apply(store, writes)
    assert [k for k in store if k[:1] == VISIT_KEY_PREFIX] == []


def test_assignments_are_written_with_the_header_when_they_change() -> None:
    """Also one equal to a window the ledger already has, which changes no window."""
    ledger = HotspotCoverage("HS-03", [WINDOW], LONDON)
    codec = CoverageCodec()
    store: dict[bytes, bytes] = {}
    ledger.advance(T0)
    apply(store, write(codec, ledger, ()))
    assert write(codec, ledger, ()) == {}
    apply(store, write(codec, ledger, (WINDOW,)))
    assert orjson.loads(store[b"HS-03"])["assigned"] == [
        {
            "days": "daily",
            "start": "14:00",
            "end": "15:00",
            "required_minutes": 10.0,
            "min_visit_minutes": 0.0,
            "unit_types": None,
        }
    ]
    stored = CoverageCodec().read("HS-03", store)
    assert stored is not None and stored[1] == (WINDOW,)
    assert write(codec, ledger, (WINDOW,)) == {}


def test_a_header_read_is_not_written_again_unchanged() -> None:
    ledger = HotspotCoverage("HS-03", [WINDOW], LONDON)
    ledger.advance(T0)
    store: dict[bytes, bytes] = {}
    apply(store, write(CoverageCodec(), ledger, ()))
    codec = CoverageCodec()
    stored = codec.read("HS-03", store)
    assert stored is not None
    snapshot: dict[str, Any] = stored[0]
    restored = HotspotCoverage.from_dict(snapshot, [WINDOW], LONDON)
    assert write(codec, restored, ()) == {}
    assert CoverageCodec().read("HS-04", store) is None
