"""``hotspot replay FILE``: publish pings from JSONL or CSV to the pings topic, keyed by unit_id.

Lines are sent as they are (a malformed line still goes out, for the worker to dead-letter);
CSV rows become JSON objects with numeric fields converted.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from stream import logs
from stream.kafka import KafkaSecurity, bootstrap_servers, ensure_topic

_NUMERIC = ("lat", "lon", "accuracy_m")


def _csv_value(row: dict[str, str]) -> bytes:
    obj: dict[str, object] = {}
    for field, text in row.items():
        if field is None or text is None or text == "":
            continue
        if field in _NUMERIC:
            try:
                obj[field] = float(text)
                continue
            except ValueError:
                pass
        if field == "ts":
            try:
                obj[field] = float(text)
                continue
            except ValueError:
                pass
        obj[field] = text
    return orjson.dumps(obj)


def _key_of(value: bytes) -> bytes | None:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    unit_id = obj.get("unit_id") if isinstance(obj, dict) else None
    return unit_id.encode() if isinstance(unit_id, str) and unit_id else None


def read_pings(path: Path) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) per ping in the file; CSV when the name ends in .csv, else JSONL."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                value = _csv_value(row)
                yield _key_of(value), value
        return
    with path.open("rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield _key_of(line), line


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.enabled = enabled and sys.stderr.isatty()
        self.done = 0

    def advance(self, count: int) -> None:
        self.done += count
        if self.enabled:
            width = 40
            filled = width * self.done // self.total
            percent = 100 * self.done // self.total
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {percent:3d}% {self.done}/{self.total}"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


async def publish(
    url: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes]],
    *,
    rate: float | None = None,
    progress: Progress | None = None,
    security: KafkaSecurity,
) -> int:
    """Send messages in order; returns how many were sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(url),
        linger_ms=5,
        max_batch_size=256 * 1024,
        acks=1,
        **security.client_kwargs(),
    )
    await producer.start()
    try:
        chunk = 1000 if rate is None else max(1, int(rate // 10))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for offset in range(0, len(messages), chunk):
            batch = messages[offset : offset + chunk]
            futures = [await producer.send(topic, value=value, key=key) for key, value in batch]
            await asyncio.gather(*futures)
            if progress is not None:
                progress.advance(len(batch))
            if rate is not None:
                due = started + (offset + len(batch)) / rate
                await asyncio.sleep(max(0.0, due - loop.time()))
        await producer.flush()
    finally:
        await producer.stop()
    return len(messages)


async def replay_file(args: argparse.Namespace) -> int:
    path = Path(args.file)
    messages = list(read_pings(path))
    security: KafkaSecurity = args.security
    with logs.quiet_clients():  # a broker that cannot be reached is told in one line
        await ensure_topic(args.broker, args.topic, args.partitions, security=security)
    progress = Progress(len(messages), not args.no_progress)
    sent = await publish(
        args.broker, args.topic, messages, rate=args.rate, progress=progress, security=security
    )
    progress.close()
    print(f"hotspot: replayed {sent} pings from {path} to {args.topic}", file=sys.stderr)
    return 0
