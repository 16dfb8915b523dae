"""``hotspot ledger``: the dwell-events topic, read from the start to its end, as a file of
visits (docs/interface.md, Evaluation: hotspot ledger).

The end is each partition's high watermark as the broker's Fetch answers give it, not
ListOffsets (which the embedded broker answers one batch short): a partition is read once the
consumer's position reaches the high watermark of its latest fetch. Visits dwelt while the
command runs may or may not be in the file; run it again to have them.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from geofences.evaluation.inputs import (
    LEDGER_COLUMNS,
    LedgerVisit,
    overlaps_dates,
    unique_visits,
    visit_from_dwell,
)
from stream.kafka import BrokerUnreachable, KafkaSecurity, bootstrap_servers, start_client
from stream.tools.replay import Progress
from stream.worker.faust_internals import refresh_metadata


def ledger_consumer(bootstrap: list[str], security: KafkaSecurity) -> AIOKafkaConsumer:
    """The ledger's consumer: no group, no commits, the Kafka security settings of every
    client."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **security.client_kwargs(),
    )


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float) -> list[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        if loop.time() >= deadline:
            raise BrokerUnreachable(f"topic {topic!r} not found on the broker")
        await refresh_metadata(consumer)
        await asyncio.sleep(0.2)


async def read_dwell_events(
    url: str,
    topic: str = "dwell-events",
    *,
    on_progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 20.0,
    security: KafkaSecurity,
) -> tuple[list[LedgerVisit], list[str]]:
    """Every DwellEvent of ``topic`` from the beginning to its end: (visits, one line per value
    that is not one, ``topic/partition@offset: reason``). ``on_progress(done, total)`` after
    each batch, total being the records known so far."""
    consumer = ledger_consumer(bootstrap_servers(url), security)
    await start_client(consumer, consumer.stop, url, security, timeout_s)
    visits: list[LedgerVisit] = []
    bad: list[str] = []
    try:
        tps = [TopicPartition(topic, p) for p in await _partitions(consumer, topic, timeout_s)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        done = 0
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    done += 1
                    try:
                        visits.append(visit_from_dwell(orjson.loads(record.value or b"")))
                    except (orjson.JSONDecodeError, ValueError) as exc:
                        bad.append(f"{tp.topic}/{tp.partition}@{record.offset}: {exc}")
            total = done
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                position = await consumer.position(tp)
                total += max(0, highwater - position)
                if position >= highwater:
                    pending.discard(tp)
            if on_progress is not None:
                on_progress(done, total)
    finally:
        await consumer.stop()
    return visits, bad


def select(
    visits: Sequence[LedgerVisit], first: date, last: date, tz_name: str
) -> list[LedgerVisit]:
    """The visits, duplicates dropped, that overlap local dates ``[first, last]``."""
    return [v for v in unique_visits(visits) if overlaps_dates(v, first, last, tz_name)]


def write_ledger(path: Path, visits: Sequence[LedgerVisit]) -> None:
    """CSV (``.csv``) or JSONL (anything else) of ``LEDGER_COLUMNS``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LEDGER_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for visit in visits:
                writer.writerow(visit.row())
        return
    with path.open("wb") as handle:
        for visit in visits:
            handle.write(orjson.dumps(visit.row()) + b"\n")


async def run_ledger(
    url: str,
    topic: str,
    first: date,
    last: date,
    tz_name: str,
    out: Path,
    progress: bool = True,
    *,
    security: KafkaSecurity,
) -> int:
    """Read, select, write; one line on stderr saying what was written."""
    bar: Progress | None = None

    def show(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(total, progress)
        bar.total = max(total, 1)
        bar.advance(done - bar.done)

    visits, bad = await read_dwell_events(url, topic, on_progress=show, security=security)
    if bar is not None:
        bar.close()
    for line in bad:
        print(f"hotspot: not a DwellEvent, skipped: {line}", file=sys.stderr)
    chosen = select(visits, first, last, tz_name)
    write_ledger(out, chosen)
    dropped = len(visits) - len(unique_visits(visits))
    print(
        f"hotspot: {len(chosen)} visits of {first}..{last} written to {out} "
        f"({len(visits)} dwell events read, {dropped} duplicates dropped)",
        file=sys.stderr,
    )
    return 0
