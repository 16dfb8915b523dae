"""The ``hotspot bench`` command: its options, and the measurements in the order they run
(the in-process ones first; the latency curve after the one-worker row, whose backlog
throughput sets its rates)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from stream.tools.bench.dispatch import measure_dispatch
from stream.tools.bench.in_process import (
    PYTHON_GC_THRESHOLDS,
    coverage_pings_per_s,
    run_kernel,
    stage_pings_per_s,
)
from stream.tools.bench.latency import run_latency_curve
from stream.tools.bench.load import (
    DISPATCH_UNITS,
    E2E_PINGS,
    E2E_UNITS,
    MEMORY_UNITS,
    make_load,
)
from stream.tools.bench.memory import state_bytes_per_unit, worker_memory
from stream.tools.bench.reference import reference_events
from stream.tools.bench.report import (
    Row,
    dispatch_rows,
    kernel_rows,
    latency_rows,
    machine,
    memory_rows,
    one_worker_rows,
    progress_line,
    scale_row,
    stage_rows,
    table,
)
from stream.tools.bench.throughput import Throughput, run_throughput

MEASUREMENTS = ("kernel", "stage", "dispatch", "e2e", "scale", "latency", "memory")


def run_bench(args: argparse.Namespace) -> int:
    quick = args.quick
    pings = args.pings or (200_000 if quick else E2E_PINGS)
    units = args.units or (2_000 if quick else E2E_UNITS)
    mem_units = args.memory_units or (20_000 if quick else MEMORY_UNITS)
    skip = set(args.skip or [])
    smaller = (pings, units) != (E2E_PINGS, E2E_UNITS)
    rows: list[Row] = []
    print(f"hotspot bench: {machine()}", flush=True)

    def note(*measured: Row) -> None:
        for row in measured:
            rows.append(row)
            print(progress_line(row), flush=True)

    started = time.perf_counter()
    load = make_load(args.seed, args.hotspots, units, pings)
    print(
        f"  load: {len(load.messages):,} pings, {units:,} units, {args.hotspots:,} hot spots "
        f"(seed {args.seed}), made in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    if "kernel" not in skip:
        note(*kernel_rows(run_kernel(load, 100 if quick else 300)))

    if "stage" not in skip:
        from stream.worker.gc_tuning import GC_THRESHOLDS

        tuned = stage_pings_per_s(load, GC_THRESHOLDS)
        python_gc = stage_pings_per_s(load, PYTHON_GC_THRESHOLDS)
        note(*stage_rows(tuned, python_gc, *coverage_pings_per_s(load, GC_THRESHOLDS)))

    if "dispatch" not in skip:
        # ten minutes of pings, one a unit every 10 s: the rate after the first minute
        dispatch_load = make_load(args.seed + 2, args.hotspots, DISPATCH_UNITS, DISPATCH_UNITS * 60)
        note(*dispatch_rows(measure_dispatch(dispatch_load)))

    workdir = Path(tempfile.mkdtemp(prefix="hotspot-bench-"))
    try:
        want: dict[str, list[bytes]] | None = None
        if not {"e2e", "scale"} <= skip:
            started = time.perf_counter()
            want = reference_events(load, 8)
            print(
                f"  reference (one ping at a time): {sum(map(len, want.values())):,} events "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        one: Throughput | None = None
        if "e2e" not in skip:
            assert want is not None
            profile = Path(args.profile) if args.profile else None
            one = run_throughput(load, want, 1, workdir, args.transport, profile)
            note(*one_worker_rows(one, len(load.messages), units, smaller))
        if "scale" not in skip:
            assert want is not None
            two = run_throughput(load, want, 2, workdir, args.transport)
            note(scale_row(two, one, smaller))
        if "latency" not in skip:
            backlog = args.latency_backlog or (one.pings_per_s if one is not None else None)
            seconds = 6.0 if quick else 30.0
            note(*latency_rows(run_latency_curve(load, workdir, backlog, seconds, args.transport)))
        if "memory" not in skip:
            mem_load = make_load(args.seed + 1, args.hotspots, mem_units, 2 * mem_units)
            heap, value = state_bytes_per_unit(mem_load)
            note(*memory_rows(heap, value, worker_memory(mem_load, workdir), mem_units))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    for line in table(rows):
        print(line)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a short version: smaller loads, shorter latency runs"
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--pings", type=int, default=None, help=f"default {E2E_PINGS:,} (quick 200,000)"
    )
    parser.add_argument(
        "--units", type=int, default=None, help=f"default {E2E_UNITS:,} (quick 2,000)"
    )
    parser.add_argument("--hotspots", type=int, default=2000)
    parser.add_argument(
        "--memory-units",
        type=int,
        default=None,
        help=f"units tracked in the memory rows, default {MEMORY_UNITS:,} (quick 20,000)",
    )
    parser.add_argument(
        "--transport", choices=("kafka", "confluent"), default="kafka", help="Faust transport"
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        choices=MEASUREMENTS,
        help="measurements to leave out (the latency curve takes its rates from e2e)",
    )
    parser.add_argument(
        "--latency-backlog",
        type=float,
        default=None,
        metavar="PINGS_PER_S",
        help="take the latency curve's rates from this backlog throughput instead of the "
        "one-worker row's (the same rates for two runs to compare)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="py-spy raw profile (GIL holder only) of the one-worker run to this file",
    )
