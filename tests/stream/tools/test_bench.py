"""The bench's pure parts: the seeded load, the reference comparison, the latency curve's rates,
percentiles and verdict, and the rows it prints. Nothing here measures or asserts a time."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import orjson
import pytest

from stream.tools.bench import add_arguments
from stream.tools.bench.command import MEASUREMENTS
from stream.tools.bench.latency import (
    AIM_P99_MS,
    FALLBACK_RATE,
    Curve,
    Point,
    Rate,
    by_window,
    curve_rates,
    percentiles,
    routed_forever,
)
from stream.tools.bench.load import Load, make_load, partitioned, ping_batches
from stream.tools.bench.memory import WorkerMemory
from stream.tools.bench.reference import OUT_TOPICS, compare
from stream.tools.bench.report import Row, latency_rows, memory_rows, progress_line, table


@pytest.fixture(scope="module")
def small_load() -> Load:
    return make_load(seed=5, hotspots=60, units=40, pings=2_000, towns=3)


def test_the_load_is_the_same_bytes_for_the_same_seed(small_load: Load) -> None:
    again = make_load(seed=5, hotspots=60, units=40, pings=2_000, towns=3)
    assert again.messages == small_load.messages
    assert again.geojson == small_load.geojson
    other = make_load(seed=6, hotspots=60, units=40, pings=2_000, towns=3)
    assert other.messages != small_load.messages


def test_the_load_is_in_ts_order_with_valid_pings(small_load: Load) -> None:
    assert len(small_load.messages) == 2_000
    pings = [orjson.loads(v) for _, v in small_load.messages]
    stamps = [p["ts"] for p in pings]
    assert stamps == sorted(stamps)
    assert {k.decode() for k, _ in small_load.messages} == {p["unit_id"] for p in pings}
    assert all(set(p) == {"unit_id", "ts", "lat", "lon", "accuracy_m", "unit_type"} for p in pings)


def test_batches_keep_every_ping_once_in_order(small_load: Load) -> None:
    batches = ping_batches(small_load, partitions=4, size=300)
    assert [len(b) for b in batches] == [300] * 6 + [200]
    records = [r for b in batches for r in b]
    assert [(r.key, r.value) for r in records] == small_load.messages
    routed = partitioned(small_load.messages, 4)
    assert [r.partition for r in records] == [p for p, _ in routed]


def test_routed_forever_repeats_the_partitioned_messages(small_load: Load) -> None:
    routed = partitioned(small_load.messages, 8)
    endless = list(itertools.islice(routed_forever(small_load.messages, 8), 2 * len(routed) + 3))
    assert endless == routed + routed + routed[:3]


def test_compare_tells_identical_missing_order_and_duplicates() -> None:
    def event(unit: str, spot: str, n: int) -> bytes:
        return orjson.dumps({"unit_id": unit, "hotspot_id": spot, "n": n})

    a1, a2, b1 = event("a", "H1", 1), event("a", "H1", 2), event("b", "H1", 1)
    want = {OUT_TOPICS[0]: [a1, a2, b1], OUT_TOPICS[1]: []}
    assert compare(want, {OUT_TOPICS[0]: [b1, a1, a2], OUT_TOPICS[1]: []}) == "identical"
    assert compare(want, {OUT_TOPICS[0]: [a2, a1, b1], OUT_TOPICS[1]: []}) == (
        "geofence-events: per-unit order differs"
    )
    assert compare(want, {OUT_TOPICS[0]: [a1, b1], OUT_TOPICS[1]: []}) == (
        "geofence-events: 1 missing, 0 unexpected"
    )
    assert compare(want, {OUT_TOPICS[0]: [a1, a2, a1, b1], OUT_TOPICS[1]: []}) == (
        "geofence-events: 1 redelivered duplicates"
    )


# -- the latency curve ----------------------------------------------------------------------------


def test_rates_are_shares_of_the_backlog_throughput() -> None:
    rates = curve_rates(40_000.0, producer_max=100_000.0)
    assert [r.pings_per_s for r in rates] == pytest.approx([4_000, 8_000, 16_000, 24_000])
    assert [r.share for r in rates] == [0.10, 0.20, 0.40, 0.60]
    assert not any(r.capped for r in rates)


def test_rates_above_the_producers_ceiling_are_capped_once() -> None:
    rates = curve_rates(40_000.0, producer_max=12_000.0)
    assert rates == [
        Rate(4_000.0, 0.10),
        Rate(8_000.0, 0.20),
        Rate(12_000.0, 0.40, capped=True),
    ]


def test_without_a_backlog_figure_the_one_fixed_rate() -> None:
    assert curve_rates(None, producer_max=50_000.0) == [Rate(FALLBACK_RATE, None)]
    assert curve_rates(math.nan, producer_max=50_000.0) == [Rate(FALLBACK_RATE, None)]
    assert curve_rates(None, producer_max=1_500.0) == [Rate(1_500.0, None, capped=True)]


def test_percentiles() -> None:
    assert percentiles([]) is None
    assert percentiles([7.0]) == (7.0, 7.0)
    figures = percentiles([float(ms) for ms in range(1, 102)])
    assert figures is not None
    p50, p99 = figures
    assert p50 == 51.0
    assert p99 == pytest.approx(100.0)


def test_samples_go_to_the_window_their_ping_was_stamped_in() -> None:
    samples = [(100, 5.0), (250, 9.0), (150, 6.0), (400, 1.0), (300, 2.0)]
    assert by_window(samples, [(100, 200), (300, 350)]) == [[5.0, 6.0], [2.0]]
    assert by_window([], [(0, 1)]) == [[]]


def _curve(p99s: list[float | None], producer_max: float = 100_000.0) -> Curve:
    rates = curve_rates(40_000.0, producer_max)
    points = [
        Point(rate, rate.pings_per_s, [] if p99 is None else [p99])
        for rate, p99 in zip(rates, p99s, strict=False)
    ]
    return Curve(40_000.0, producer_max, points)


def test_the_aim_covers_the_rates_up_to_40_percent() -> None:
    assert _curve([10.0, 20.0, AIM_P99_MS, 5_000.0]).aim_met() is True
    assert _curve([10.0, 20.0, AIM_P99_MS + 1, 30.0]).aim_met() is False
    assert _curve([10.0, None, 30.0, 40.0]).aim_met() is None
    assert not _curve([10.0, 20.0, 30.0, 40.0]).aim_capped()
    capped = _curve([10.0, 20.0, 30.0], producer_max=12_000.0)
    assert capped.aim_met() is True and capped.aim_capped()


def test_latency_rows_hold_the_rates_within_the_aim_to_it() -> None:
    rows = latency_rows(_curve([10.0, 20.0, 300.0, 900.0]))
    assert [r.verdict for r in rows] == ["MISSED", "met", "met", "MISSED", ""]
    assert rows[0].target == "p99 ≤ 250 ms up to 40 % of the backlog throughput"
    assert rows[1].what == "  at 10 % of the backlog throughput"
    assert rows[1].figure == "4,000 pings/s sent: p50 10 ms, p99 10 ms (1 enters)"
    assert rows[4].target == "(beyond the aim)"
    capped = latency_rows(_curve([10.0, 20.0, 30.0], producer_max=12_000.0))
    assert capped[0].verdict == "met (producer-capped)"
    assert capped[-1].what.endswith("(capped at the producer's ceiling)")


def test_without_a_backlog_figure_one_row_as_before() -> None:
    rate = Rate(FALLBACK_RATE, None)
    rows = latency_rows(Curve(None, 50_000.0, [Point(rate, 1_990.0, [40.0, 60.0])]))
    assert rows == [
        Row(
            "latency, live mode at 2,000 pings/s, ping produced → enter consumed",
            "p50 50 ms, p99 60 ms (2 enters)",
            "p99 ≤ 250 ms",
            "met",
        )
    ]
    assert latency_rows(Curve(None, 50_000.0, [Point(rate, 1_990.0, [])])) == []


# -- the printed rows -----------------------------------------------------------------------------


def test_memory_rows_mark_a_smaller_scale() -> None:
    rows = memory_rows(700.0, 120.0, WorkerMemory(90.0, 210.0, 260.0, 20_000), 20_000)
    assert rows[0].verdict == "met"
    assert rows[1].figure == "210 MB (peak 260 MB; idle worker: 90 MB)"
    assert rows[1].verdict == "met (smaller load)"
    short = memory_rows(700.0, 120.0, WorkerMemory(90.0, 210.0, 260.0, 99_000), 100_000)
    assert short[1].verdict == "MISSED"


def test_the_table_and_the_progress_lines() -> None:
    rows = [Row("  indented", "1 /s", "≥ 1", "met"), Row("plain", "2")]
    assert table(rows) == [
        "| measurement | figure | target | |",
        "| --- | --- | --- | --- |",
        "| indented | 1 /s | ≥ 1 | met |",
        "| plain | 2 |  |  |",
    ]
    assert progress_line(rows[0]) == "    indented: 1 /s met"


def test_the_command_keeps_its_options(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--quick", "--skip", "scale", "memory", "--profile", str(tmp_path)])
    assert args.quick and args.skip == ["scale", "memory"] and args.seed == 3
    assert args.hotspots == 2000 and args.transport == "kafka"
    assert MEASUREMENTS == ("kernel", "stage", "dispatch", "e2e", "scale", "latency", "memory")
    assert "issue" not in parser.format_help()
    assert args.latency_backlog is None
    assert parser.parse_args(["--latency-backlog", "60000"]).latency_backlog == 60_000.0


def test_the_dispatch_rows_count_positions_after_the_warm_up() -> None:
    from stream.tools.bench.dispatch import measure_dispatch
    from stream.tools.bench.report import dispatch_rows

    load = make_load(5, 40, 200, 200 * 12)  # two minutes of pings
    figures = measure_dispatch(load, rankings=5)
    assert figures.units == 200  # every unit's last fix is in the view
    # after the first minute: one ping a unit every 10 s, a position at most once a ping
    assert figures.pings_per_s > 0
    assert 0 < figures.records_per_s <= figures.pings_per_s
    assert figures.view_bytes > 0 and figures.value_bytes > 0
    rows = dispatch_rows(figures)
    assert "records/s" in rows[0].figure and "200 units" in rows[1].what
