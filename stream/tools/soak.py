"""The ``hotspot soak`` command: one live-clock worker under a steady load for a long time,
watched for what a long run would leak.

It starts an embedded broker (or uses the broker ``--broker`` names, with an app id and topics
of its own, so nothing else's traffic mixes in), one ``hotspot worker`` on the live clock, and
sends the bench's seeded pings (stream/tools/bench/load.py, looped), each stamped as it is
produced, at ``--rate`` for ``--minutes``. Every ``--interval`` it reports one :class:`Sample`:
pings sent, the worker's RSS, open file descriptors and asyncio tasks (from its ``/metrics``),
and p50/p99 from a ping being produced to its ``enter`` being read back, over the enters read
in that interval (as the bench's latency curve measures them).

At the end :func:`growth` judges the samples after the warm-up: open fds and tasks must not
settle higher in the second half than they reached in the first, and RSS must not rise with
the pings sent by more than a bound (a least-squares slope, in bytes a ping). Time enters none
of it: a slow machine gives fewer pings, not a different verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import orjson

from stream.alerts.webhooks import ENV_VAR as WEBHOOKS_VAR
from stream.broker.embedded import start_broker
from stream.kafka import (
    PLAINTEXT,
    SECURITY_OPTIONS,
    KafkaSecurity,
    add_security_options,
    bootstrap_servers,
    security_from_args,
)
from stream.options import SettingError
from stream.tools.bench.cluster import READY_TIMEOUT_S, STOP_TIMEOUT_S
from stream.tools.bench.latency import (
    Sample as Latency,
)
from stream.tools.bench.latency import (
    enter_consumer,
    percentiles,
    read_enters,
    routed_forever,
    send_at_rate,
)
from stream.tools.bench.load import Load, make_load
from stream.tools.processes import WorkerExited, WorkerProcess, metric_sum
from stream.worker.settings import TOPIC_OPTIONS, TopicNames

#: fixes a unit has in the looped load: at the default rate and units, one pass is 5 minutes
FIXES_PER_UNIT = 30
#: the RSS bound of the verdict, bytes a ping sent: a worker keeping anything sizeable of each
#: ping (its record, its value, an event) exceeds it; allocator noise over minutes does not
RSS_LIMIT_BYTES_PER_PING = 64.0
#: scrapes of the worker's /metrics tried for one report
SCRAPE_TRIES = 3


@dataclass(frozen=True)
class Sample:
    """The worker as seen at the end of one interval."""

    interval: int
    elapsed_s: float
    pings_sent: int
    rss_mb: float
    open_fds: int
    asyncio_tasks: int
    #: the worker's CPU seconds (user + system) in this interval
    cpu_s: float
    #: enters read back in this interval, and their latency from the ping being produced
    enters: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Growth:
    """What grew after the warm-up: RSS's least-squares slope against the pings sent, and,
    for fds and tasks, the most seen in the first half of the samples against the fewest in
    the second half (a leak lifts the floor above the earlier peaks; noise does not)."""

    rss_bytes_per_ping: float
    #: the same slope against the enters read back: the coverage ledgers keep every visit for
    #: a day (``visit_retention_minutes``), so during the first day RSS rises with visits
    rss_bytes_per_enter: float
    rss_limit_bytes_per_ping: float
    fds: tuple[int, int]
    tasks: tuple[int, int]

    def problems(self) -> list[str]:
        found = []
        if self.rss_bytes_per_ping > self.rss_limit_bytes_per_ping:
            found.append(
                f"RSS grows {self.rss_bytes_per_ping:.1f} B a ping "
                f"(limit {self.rss_limit_bytes_per_ping:g})"
            )
        for name, (first, second) in (("open fds", self.fds), ("asyncio tasks", self.tasks)):
            if second > first:
                found.append(f"{name} rise from at most {first} to at least {second}")
        return found


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ``ys`` against ``xs`` (0 when ``xs`` do not vary)."""
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    spread = float(((x - x.mean()) ** 2).sum())
    if spread == 0:
        return 0.0
    return float(((x - x.mean()) * (y - y.mean())).sum() / spread)


def growth(
    samples: Sequence[Sample],
    warm_up: int,
    rss_limit_bytes_per_ping: float = RSS_LIMIT_BYTES_PER_PING,
) -> Growth | None:
    """The growth over the samples after the first ``warm_up``; None with fewer than four
    of them (two a half: too few to tell a trend from noise)."""
    after = list(samples[warm_up:])
    if len(after) < 4:
        return None
    half = len(after) // 2
    first, second = after[:half], after[half:]
    rss = [s.rss_mb * 1024 * 1024 for s in after]
    enters = np.cumsum([s.enters for s in after]).tolist()
    return Growth(
        rss_bytes_per_ping=slope([s.pings_sent for s in after], rss),
        rss_bytes_per_enter=slope(enters, rss),
        rss_limit_bytes_per_ping=rss_limit_bytes_per_ping,
        fds=(max(s.open_fds for s in first), min(s.open_fds for s in second)),
        tasks=(max(s.asyncio_tasks for s in first), min(s.asyncio_tasks for s in second)),
    )


def header() -> str:
    return (
        f"{'interval':>8} {'minute':>7} {'pings sent':>12} {'RSS MB':>8} {'fds':>5} "
        f"{'tasks':>6} {'CPU s':>6} {'enters':>7} {'p50 ms':>7} {'p99 ms':>7}"
    )


def line(sample: Sample) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    return (
        f"{sample.interval:>8} {sample.elapsed_s / 60:>7.1f} {sample.pings_sent:>12,} "
        f"{sample.rss_mb:>8.1f} {sample.open_fds:>5} {sample.asyncio_tasks:>6} "
        f"{sample.cpu_s:>6.1f} "
        f"{sample.enters:>7,} {ms(sample.p50_ms):>7} {ms(sample.p99_ms):>7}"
    )


def write_samples(path: Path, samples: Sequence[Sample]) -> None:
    """The samples as CSV when ``path`` ends in ``.csv``, else as a JSON list."""
    rows = [asdict(s) for s in samples]
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, [f.name for f in fields(Sample)])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")


def read_worker(worker: WorkerProcess) -> tuple[float, int, int, float]:
    """The worker's RSS (MB), open fds, asyncio tasks and CPU seconds so far, from one scrape
    of its ``/metrics`` (prometheus-client's process collector, and the worker's task gauge)."""
    for _ in range(SCRAPE_TRIES):  # a busy worker may miss one scrape's 5 s
        text = worker.metrics()
        if text:
            break
        if not worker.alive():
            raise WorkerExited(f"the worker exited: {worker.log_tail()}")
    else:
        raise RuntimeError(f"the worker's /metrics did not answer {SCRAPE_TRIES} times")
    return (
        metric_sum(text, "process_resident_memory_bytes") / (1024 * 1024),
        int(metric_sum(text, "process_open_fds")),
        int(metric_sum(text, "hotspot_asyncio_tasks")),
        metric_sum(text, "process_cpu_seconds_total"),
    )


@contextlib.contextmanager
def soak_worker(
    load: Load, workdir: Path, broker_url: str | None, security_env: Mapping[str, str]
) -> Iterator[tuple[str, WorkerProcess, TopicNames]]:
    """A ready live-clock worker on a fresh embedded broker, or on ``broker_url`` with an app
    id and topics of its own and the Kafka security settings ``security_env`` (``HOTSPOT_KAFKA_*``
    variables); yields the broker's URL, the worker and its topic names."""
    broker = start_broker() if broker_url is None else None
    url = broker.url if broker is not None else str(broker_url)
    run = f"soak-{uuid.uuid4().hex[:6]}"
    topics = (
        TopicNames()
        if broker is not None
        else TopicNames(**{role: f"{run}-{getattr(TopicNames, role)}" for role in TOPIC_OPTIONS})
    )
    geofences = workdir / "hotspots.geojson"
    geofences.write_bytes(load.geojson)
    worker = WorkerProcess(
        url,
        run,
        log_path=workdir / "worker.log",
        clock="live",
        geofences=geofences,
        data_dir=workdir / "data",
        cwd=workdir,
        # every topic named, whatever the caller's environment says; and no webhooks, so
        # that a soak never posts alerts to a real endpoint
        extra_env={
            **{option.env: getattr(topics, role) for role, option in TOPIC_OPTIONS.items()},
            WEBHOOKS_VAR: "",
            **(security_env if broker is None else {}),
        },
    )
    try:
        worker.launch()
        worker.wait_ready(READY_TIMEOUT_S)
        yield url, worker, topics
    finally:
        worker.stop(STOP_TIMEOUT_S)
        if broker is not None:
            broker.stop()


async def _soak(
    url: str,
    worker: WorkerProcess,
    topics: TopicNames,
    load: Load,
    rate: float,
    seconds: float,
    interval_s: float,
    report: Callable[[Sample], object],
    security: KafkaSecurity,
) -> list[Sample]:
    from aiokafka import AIOKafkaProducer

    bootstrap = bootstrap_servers(url)
    consumer = await enter_consumer(",".join(bootstrap), topics.geofence_events, security)
    partitions = len(consumer.assignment())  # every topic the worker made has its count
    latencies: list[Latency] = []
    stop = asyncio.Event()
    reader = asyncio.create_task(read_enters(consumer, latencies, stop))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=1, acks=1, **security.client_kwargs()
    )
    await producer.start()
    sent = 0

    def count(n: int) -> None:
        nonlocal sent
        sent += n

    source = routed_forever(load.messages, partitions)
    sender = asyncio.create_task(
        send_at_rate(producer, topics.pings, source, rate, seconds, on_sent=count)
    )
    samples: list[Sample] = []
    cpu_before = (await asyncio.to_thread(read_worker, worker))[3]
    started = time.monotonic()
    taken = 0
    try:
        last = math.ceil(seconds / interval_s)
        for interval in range(1, last + 1):
            due = started + interval * interval_s
            # the last report waits for every ping to be sent, however late
            timeout = None if interval == last else max(0.0, due - time.monotonic())
            await asyncio.wait({sender}, timeout=timeout)
            if sender.done() and sender.exception() is not None:
                raise RuntimeError("sending pings failed") from sender.exception()
            rss_mb, fds, tasks, cpu_s = await asyncio.to_thread(read_worker, worker)
            window = [ms for _, ms in latencies[taken:]]
            taken += len(window)
            p50, p99 = percentiles(window) or (None, None)
            sample = Sample(
                interval,
                time.monotonic() - started,
                sent,
                rss_mb,
                fds,
                tasks,
                cpu_s - cpu_before,
                len(window),
                p50,
                p99,
            )
            cpu_before = cpu_s
            samples.append(sample)
            report(sample)
        await sender
    finally:
        if not sender.done():
            sender.cancel()
        stop.set()
        await reader
        await producer.stop()
        await consumer.stop()
    return samples


def run_soak(
    rate: float,
    seconds: float,
    interval_s: float,
    units: int,
    hotspots: int,
    seed: int = 3,
    broker_url: str | None = None,
    report: Callable[[Sample], object] = lambda sample: None,
    started: Callable[[WorkerProcess], object] = lambda worker: None,
    fixes_per_unit: int = FIXES_PER_UNIT,
    security: KafkaSecurity = PLAINTEXT,
    security_env: Mapping[str, str] | None = None,
) -> list[Sample]:
    """Soak one live-clock worker at ``rate`` pings/s for ``seconds``, a sample every
    ``interval_s`` (each handed to ``report`` as it is taken); ``started`` is told the worker
    once it is ready. The load is ``fixes_per_unit`` fixes of each unit, sent again from the
    first after the last (every unit then jumps back to where it started). ``security`` (and,
    for the worker, ``security_env``) secure the clients of ``broker_url``; an embedded broker
    is plain text."""
    load = make_load(seed, hotspots, units, units * fixes_per_unit)
    workdir = Path(tempfile.mkdtemp(prefix="hotspot-soak-"))
    try:
        if broker_url is None:
            security, security_env = PLAINTEXT, {}
        with soak_worker(load, workdir, broker_url, security_env or {}) as (url, worker, topics):
            started(worker)
            return asyncio.run(
                _soak(url, worker, topics, load, rate, seconds, interval_s, report, security)
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=2000.0, help="pings a second, default 2000")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long, default 10")
    parser.add_argument(
        "--interval", type=float, default=60.0, help="seconds between reports, default 60"
    )
    parser.add_argument(
        "--units", type=int, default=20_000, help="units in the load, default 20,000"
    )
    parser.add_argument("--hotspots", type=int, default=2000, help="hot spots, default 2,000")
    parser.add_argument("--seed", type=int, default=3, help="seed of the load, default 3")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=1,
        metavar="N",
        help="reports left out of the verdict at the start, default 1",
    )
    parser.add_argument(
        "--rss-limit",
        type=float,
        default=RSS_LIMIT_BYTES_PER_PING,
        metavar="BYTES",
        help=f"RSS growth a ping sent that counts as a leak, default {RSS_LIMIT_BYTES_PER_PING:g}",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help="use this broker (kafka://host:port) with an app id and topics of the soak's own, "
        "instead of an embedded one",
    )
    parser.add_argument("--out", default=None, help="write the reports to FILE (.csv or .json)")
    add_security_options(parser)


def security_variables(args: argparse.Namespace) -> dict[str, str]:
    """The Kafka security settings given to the soak (flags over variables), as the
    ``HOTSPOT_KAFKA_*`` variables of its worker: a worker's environment is otherwise cleared
    of them (stream/tools/processes.py)."""
    given = vars(args)
    found = {}
    for option in SECURITY_OPTIONS.values():
        raw = given.get(option.dest or "")
        if raw is None:
            raw = os.environ.get(option.env)
        if raw is not None:
            found[option.env] = str(raw)
    return found


def cmd_soak(args: argparse.Namespace) -> int:
    """Run the soak, print a line a report and the verdict; exit 1 if something grew."""
    for name in ("rate", "minutes", "interval"):
        if not getattr(args, name) > 0:
            print(f"hotspot: --{name}: must be more than 0", file=sys.stderr)
            return 2
    for name in ("units", "hotspots"):
        if getattr(args, name) < 1:
            print(f"hotspot: --{name}: must be 1 or more", file=sys.stderr)
            return 2
    try:
        security = security_from_args(args) if args.broker else PLAINTEXT
    except SettingError as exc:
        print(f"hotspot: {exc}", file=sys.stderr)
        return 2
    seconds = args.minutes * 60
    print(
        f"hotspot soak: {args.rate:,.0f} pings/s for {args.minutes:g} min, {args.units:,} units, "
        f"{args.hotspots:,} hot spots, a report every {args.interval:g} s",
        flush=True,
    )

    def started(worker: WorkerProcess) -> None:
        print(f"  worker pid {worker.pid} ready on {worker.broker_url}", flush=True)
        print(header(), flush=True)

    samples = run_soak(
        args.rate,
        seconds,
        args.interval,
        args.units,
        args.hotspots,
        args.seed,
        args.broker,
        report=lambda sample: print(line(sample), flush=True),
        started=started,
        security=security,
        security_env=security_variables(args),
    )
    if args.out:
        write_samples(Path(args.out), samples)
    verdict = growth(samples, args.warm_up, args.rss_limit)
    if verdict is None:
        print(f"too few reports after the warm-up ({args.warm_up}) to judge growth")
        return 0
    print(
        f"after the warm-up: RSS {verdict.rss_bytes_per_ping:+.1f} B a ping "
        f"({verdict.rss_bytes_per_enter:+,.0f} B an enter); open fds at most "
        f"{verdict.fds[0]} then at least {verdict.fds[1]}; asyncio tasks at most "
        f"{verdict.tasks[0]} then at least {verdict.tasks[1]}"
    )
    problems = verdict.problems()
    print("; ".join(problems) if problems else "no growth after the warm-up")
    return 1 if problems else 0
