"""What ``hotspot bench`` prints: the machine it ran on, a row per figure (what was measured,
the figure, the target it is held to, and the verdict), and the rows again as a Markdown
table at the end.

A verdict only says how this run compared with its target: ``(smaller load)`` marks one
measured on less than the load the target names (``--quick``), where the full size decides.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import shapely

from stream.tools.bench.dispatch import DispatchFigures
from stream.tools.bench.in_process import Kernel
from stream.tools.bench.latency import AIM_P99_MS, AIM_UP_TO_SHARE, Curve, percentiles
from stream.tools.bench.load import MEMORY_UNITS
from stream.tools.bench.memory import WorkerMemory
from stream.tools.bench.throughput import Throughput


@dataclass
class Row:
    what: str
    figure: str
    target: str = ""
    verdict: str = ""


def fmt(rate: float) -> str:
    return f"{rate:,.0f}"


def percent(share: float) -> str:
    return f"{share * 100:.0f} %"


def verdict(ok: bool, smaller: bool = False) -> str:
    """``smaller``: measured on a smaller load than the target names (``--quick``), so the
    verdict only says how the run compared; the full size decides."""
    return ("met" if ok else "MISSED") + (" (smaller load)" if smaller else "")


def machine() -> str:
    """The CPU, its cores, and the versions the figures depend on."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import aiokafka
    import faust

    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"faust-streaming {faust.__version__}, aiokafka {aiokafka.__version__}, "
        f"shapely {shapely.__version__}; broker: embedded Tansu (memory)"
    )


def progress_line(row: Row) -> str:
    """A row as printed the moment it is measured."""
    return f"  {row.what}: {row.figure} {row.verdict}"


def table(rows: Sequence[Row]) -> list[str]:
    """The rows as a Markdown table, printed at the end of a run."""
    lines = ["| measurement | figure | target | |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.what.strip()} | {r.figure} | {r.target} | {r.verdict} |" for r in rows]
    return lines


# -- the rows of each measurement ---------------------------------------------------------------


def kernel_rows(k: Kernel) -> list[Row]:
    ratio = k.batch_points_per_s / k.naive_points_per_s
    return [
        Row(
            "matching kernel, batches of 2,000 vs 2,000 hot spots, one core",
            f"{fmt(k.batch_points_per_s)} points/s (all at once: {fmt(k.all_points_per_s)})",
            "≥ 3,000,000 points/s",
            verdict(k.batch_points_per_s >= 3e6),
        ),
        Row(
            "  vs a per-point loop over shapely polygons (same run)",
            f"{fmt(k.naive_points_per_s)} points/s: {ratio:,.0f}× "
            f"(vectorised STRtree: {fmt(k.strtree_points_per_s)}/s); same pairs: {k.same_pairs}",
            "≥ 1,000×",
            verdict(ratio >= 1000 and k.same_pairs),
        ),
    ]


def stage_rows(
    tuned: float, python_gc: float, coverage_pings: float, coverage_updates: float
) -> list[Row]:
    """The presence stage with the worker's GC thresholds and Python's; the coverage stage."""
    return [
        Row(
            "presence stage alone, in process, batches of 2,000",
            f"{fmt(tuned)} pings/s; with Python's default GC thresholds "
            f"{fmt(python_gc)}: {tuned / python_gc:.2f}×",
            "(where the worker's time goes)",
            "",
        ),
        Row(
            "coverage stage alone, in process, fed the presence stage's visit updates",
            f"{fmt(coverage_pings)} pings/s ({fmt(coverage_updates)} visit updates/s)",
            "(where the worker's time goes)",
            "",
        ),
    ]


def cpu_text(run: Throughput) -> str:
    if run.worker_cpu_s is None or run.broker_cpu_s is None or run.bench_cpu_s is None:
        return ""
    return (
        f"; CPU a ping: workers {run.worker_cpu_s * 1e6:.1f} µs, "
        f"broker {run.broker_cpu_s * 1e6:.1f} µs, bench client {run.bench_cpu_s * 1e6:.1f} µs"
    )


def one_worker_rows(one: Throughput, pings: int, units: int, smaller: bool) -> list[Row]:
    rows = [
        Row(
            f"end to end, one worker, {pings:,} pings / {units:,} units",
            f"{fmt(one.pings_per_s)} pings/s ({one.seconds:.1f} s; producing took "
            f"{one.produce_s:.1f} s); output {one.identity}{cpu_text(one)}",
            "≥ 36,000 pings/s, identical",
            verdict(one.pings_per_s >= 36_000 and one.identity == "identical", smaller),
        )
    ]
    if one.ceiling:
        ratio = one.pings_per_s / one.ceiling
        rows.append(
            Row(
                "  vs a bare aiokafka consumer decoding the pings (same run)",
                f"{fmt(one.ceiling)} pings/s: ratio {ratio:.2f}",
                "moonshot ≥ 0.30",
                verdict(ratio >= 0.30, smaller),
            )
        )
    return rows


def scale_row(two: Throughput, one: Throughput | None, smaller: bool) -> Row:
    ratio = two.pings_per_s / one.pings_per_s if one else float("nan")
    return Row(
        "scale-out: 2 workers on 8 partitions",
        f"{fmt(two.pings_per_s)} pings/s, {ratio:.2f}× one worker; "
        f"output {two.identity}{cpu_text(two)}",
        "≥ 1.7×, identical",
        verdict(ratio >= 1.7 and two.identity.startswith("identical"), smaller),
    )


def latency_rows(curve: Curve) -> list[Row]:
    """A row for the curve as a whole, held to the aim, then a row per rate. Without a
    backlog figure (the one-worker row left out), the one fixed rate's row alone."""
    aim = f"p99 ≤ {AIM_P99_MS:.0f} ms"
    if curve.backlog is None:
        point = curve.points[0]
        figures = percentiles(point.latencies_ms)
        if figures is None:
            return []
        return [
            Row(
                f"latency, live mode at {fmt(point.rate.pings_per_s)} pings/s, "
                "ping produced → enter consumed",
                f"p50 {figures[0]:.0f} ms, p99 {figures[1]:.0f} ms "
                f"({len(point.latencies_ms)} enters)",
                aim,
                verdict(figures[1] <= AIM_P99_MS),
            )
        ]
    met = curve.aim_met()
    whole = "no figure" if met is None else verdict(met)
    if curve.aim_capped():
        whole += " (producer-capped)"
    rows = [
        Row(
            "latency curve, one worker in live mode, ping produced → enter consumed",
            f"rates from the one-worker row's {fmt(curve.backlog)} pings/s; "
            f"the bench's producer reaches {fmt(curve.producer_max)} pings/s here",
            f"{aim} up to {percent(AIM_UP_TO_SHARE)} of the backlog throughput",
            whole,
        )
    ]
    for point in curve.points:
        share = point.rate.share or 0.0
        what = f"  at {percent(share)} of the backlog throughput"
        if point.rate.capped:
            what += " (capped at the producer's ceiling)"
        figures = percentiles(point.latencies_ms)
        sent = f"{fmt(point.sent_per_s)} pings/s sent"
        if figures is None:
            figure, ok = f"{sent}; no enters read back", "no figure"
        else:
            figure = (
                f"{sent}: p50 {figures[0]:.0f} ms, p99 {figures[1]:.0f} ms "
                f"({len(point.latencies_ms)} enters)"
            )
            ok = verdict(figures[1] <= AIM_P99_MS)
        if point.within_aim:
            rows.append(Row(what, figure, aim, ok))
        else:
            rows.append(Row(what, figure, "(beyond the aim)", ""))
    return rows


def memory_rows(heap: float, value: float, worker: WorkerMemory, units: int) -> list[Row]:
    """The state per unit in the stage; the worker's RSS with ``units`` units replayed."""
    return [
        Row(
            "state per tracked unit (stage heap incl. table; changelog value)",
            f"{heap:,.0f} B in memory; {value:,.0f} B per changelog value",
            "≤ 1 KiB",
            verdict(heap <= 1024),
        ),
        Row(
            f"worker RSS with {worker.units:,} units tracked, settled after the replay",
            f"{worker.settled_mb:,.0f} MB (peak {worker.peak_mb:,.0f} MB; "
            f"idle worker: {worker.idle_mb:,.0f} MB)",
            f"< 300 MB at {MEMORY_UNITS:,} units",
            verdict(worker.settled_mb < 300 and worker.units >= units, units < MEMORY_UNITS),
        ),
    ]


def dispatch_rows(figures: DispatchFigures) -> list[Row]:
    """The positions topic's rate and every worker's position view, at the load's units."""
    f = figures
    return [
        Row(
            f"positions published, {f.units:,} units pinging every 10 s",
            f"{fmt(f.records_per_s)} records/s ({fmt(f.pings_per_s)} pings/s in); "
            f"{f.value_bytes:,.0f} B a value",
            f"{fmt(f.units / 30)}/s if each unit published only every 30 s",
            "",
        ),
        Row(
            f"position view of {f.units:,} units (every worker)",
            f"{f.view_bytes / 1e6:,.1f} MB heap ({f.view_bytes_per_unit:,.0f} B a unit); "
            f"a ranking {f.rank_ms_median:.2f} ms median, {f.rank_ms_max:.2f} ms max",
            "",
            "",
        ),
    ]
