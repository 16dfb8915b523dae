"""Helpers for integration tests: a real worker process on the embedded broker, and a real
producer and consumer talking to it over loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream.broker.embedded import free_port
from tests.stream.schemas_check import check_records

ROOT = Path(__file__).resolve().parents[2]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    unkeyed_partition: int | None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        for key, value in messages:
            partition = unkeyed_partition if key is None else None
            await producer.send_and_wait(topic, value=value, key=key, partition=partition)
    finally:
        await producer.stop()


def produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    unkeyed_partition: int | None = None,
) -> None:
    """Send messages one by one, in order, each acknowledged before the next. Messages without
    a key go to ``unkeyed_partition`` when given (as a gateway producing to one partition)."""
    run(_produce(bootstrap, topic, messages, unkeyed_partition))


def ping_messages(pings: Sequence[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(p["unit_id"].encode(), orjson.dumps(p)) for p in pings]


async def _consume(
    bootstrap: str, topic: str, count: int, timeout_s: float, settle_s: float
) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        for _ in range(50):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp_records in batch.values():
                records.extend(tp_records)
            if len(records) >= count:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return records
    finally:
        await consumer.stop()


def consume(
    bootstrap: str, topic: str, count: int, timeout_s: float = 60.0, settle_s: float = 1.0
) -> list[Any]:
    """Records of ``topic`` from the beginning: waits for ``count`` of them, then ``settle_s``
    more to catch any that should not be there. Values of an output topic are checked against
    its JSON Schema (``stream/schemas``)."""
    return check_records(topic, run(_consume(bootstrap, topic, count, timeout_s, settle_s)))


def values(records: Sequence[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def _committed(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    # a consumer of the group that never subscribes: it only asks the coordinator
    # (AIOKafkaAdminClient's OffsetFetch does not decode Tansu's answer)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        result = {}
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            offset = await consumer.committed(TopicPartition(topic, partition))
            if offset is not None:
                result[partition] = offset
        return result
    finally:
        await consumer.stop()


def committed(bootstrap: str, group_id: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets of ``topic``, by partition (the next offset the
    group will read; a worker commits only once what it produced for the records before is
    flushed)."""
    return dict(run(_committed(bootstrap, group_id, topic)))


def wait_until(predicate: Any, timeout_s: float = 60.0, interval_s: float = 0.3) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout_s`` passes; returns its last answer
    (tests assert on the condition, never on how long it took)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval_s)


@dataclass
class Worker:
    """A ``hotspot worker`` subprocess."""

    broker_url: str
    app_id: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    clock: str = "event"
    geofences: Path | None = None
    data_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, timeout_s: float = 90.0) -> Worker:
        env = dict(os.environ)
        env.update(
            HOTSPOT_BROKER=self.broker_url,
            HOTSPOT_APP_ID=self.app_id,
            HOTSPOT_CLOCK=self.clock,
            HOTSPOT_WEB_PORT=str(self.web_port),
            HOTSPOT_SESSION_TIMEOUT_S="6",
            HOTSPOT_LOG_LEVEL="info",
            PYTHONPATH=str(ROOT),
        )
        if self.geofences is not None:
            env["HOTSPOT_GEOFENCES"] = str(self.geofences)
        if self.data_dir is not None:
            env["HOTSPOT_DATA_DIR"] = str(self.data_dir)
        env.update(self.extra_env)
        log_dir = ROOT / "test-artifacts"
        log_dir.mkdir(exist_ok=True)
        self.log_path = log_dir / f"worker-{self.app_id}-{int(time.time() * 1000)}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.kill()
            raise
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}/healthz", timeout=1
            ) as response:
                return dict(orjson.loads(response.read()))
        except OSError:
            return None

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.process.returncode}: {self.log_tail()}"
                )
            health = self.health()
            if health and health.get("ready"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready within {timeout_s} s: {self.log_tail()}")

    def units(self) -> list[dict[str, Any]]:
        """The worker's own part of the view (``/api/local``): every unit whose partition it
        owns. (``/api/units`` merges every worker's part.)"""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.web_port}/api/local", timeout=5
        ) as response:
            return list(orjson.loads(response.read())["units"])

    def units_view(self) -> list[dict[str, Any]]:
        """The worker's ``/api/units``: every worker's units, merged."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.web_port}/api/units", timeout=5
        ) as response:
            return list(orjson.loads(response.read())["units"])

    def restored_partitions(self) -> list[set[int]]:
        """Partition sets of every rebalance the worker completed, oldest first, from its log
        line ``presence: N unit states restored for partitions [...]``."""
        if self.log_path is None or not self.log_path.exists():
            return []
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            _, marker, rest = line.partition("unit states restored for partitions [")
            if marker:
                inside = rest.split("]", 1)[0]
                found.append({int(p) for p in inside.split(",") if p.strip()})
        return found

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait for a clean shutdown; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
