"""The checkpoint (stream/worker/checkpoint.py): states written, every record sent since the
last checkpoint acknowledged, and only then the processed records acked for Faust to commit;
a failed delivery stops the commit and is raised. A real Faust consumer's bookkeeping (never
started), a fake aiokafka producer whose deliveries the test settles."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.types import TP

from stream.records import Record
from stream.worker import outbox as outbox_module
from stream.worker.checkpoint import Changelog, Checkpoint
from stream.worker.errors import DeliveryFailed
from stream.worker.faust_internals import HotspotApp
from stream.worker.intake import Batch, Intake, track
from stream.worker.outbox import Outbox

TP0 = TP("pings", 0)


class RecordBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, key: bytes | None, value: bytes | None, timestamp: Any) -> object:
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        pass


class Producer:
    """aiokafka's batch API; each delivery a future the test settles."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, RecordBatch, asyncio.Future[Any]]] = []

    def create_batch(self) -> RecordBatch:
        return RecordBatch()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send_batch(self, batch: RecordBatch, topic: str, partition: int) -> Any:
        delivery = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, batch, delivery))
        return delivery

    def settle(self, fail_topic: str | None = None) -> None:
        for topic, _, _, delivery in self.sent:
            if not delivery.done():
                if topic == fail_topic:
                    delivery.set_exception(KafkaTimeoutError("no answer"))
                else:
                    delivery.set_result(None)


class Stage:
    """A stage with unit states to write."""

    def __init__(self, writes: dict[bytes, tuple[int, bytes | None]]) -> None:
        self.writes = dict(writes)

    @property
    def unwritten(self) -> int:
        return len(self.writes)

    def take_writes(self, most: int | None = None) -> dict[bytes, tuple[int, bytes | None]]:
        taken, self.writes = self.writes, {}
        return taken


def scenario(
    monkeypatch: pytest.MonkeyPatch,
    steps: Callable[[Checkpoint, Producer, Any, Batch], Awaitable[Any]],
) -> Any:
    producer = Producer()
    monkeypatch.setattr(outbox_module, "kafka_producer", lambda app: producer)

    async def run() -> Any:
        app = HotspotApp("checkpoint-test", broker="kafka://127.0.0.1:9")
        app.intake = Intake({"pings"}, max_buffered=100)
        consumer = app.consumer
        table = SimpleNamespace(
            data={}, changelog_topic=SimpleNamespace(get_topic_name=lambda: "presence-changelog")
        )
        stage = Stage({b"U1": (0, b"state")})
        checkpoint = Checkpoint(
            app, Outbox(app), [Changelog(stage, table, keep=False)], asyncio.Lock()
        )
        batch = Batch(TP0, [Record("pings", 0, o, b"U1", b"{}") for o in range(5)])
        track(consumer, [batch])
        await checkpoint.outbox.send([("geofence-events", b"U1", b"event", 0)])
        checkpoint.hold([batch])
        return await steps(checkpoint, producer, consumer, batch)

    return asyncio.run(run())


def test_records_are_acked_once_everything_sent_is_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def steps(checkpoint: Checkpoint, producer: Producer, consumer: Any, batch: Batch) -> Any:
        await checkpoint.run()  # the presence loop goes on meanwhile
        await asyncio.sleep(0.01)  # the checkpoint goes on in the background
        before_outputs = [topic for topic, _, _, _ in producer.sent]
        producer.settle()  # the event is delivered: now the state may be written
        await asyncio.sleep(0.01)
        written = [(topic, b.records) for topic, _, b, _ in producer.sent]
        acked_before = batch.acked
        producer.settle()
        await checkpoint.run(wait=True)
        return before_outputs, written, acked_before, batch.acked, consumer._new_offset(TP0)

    before_outputs, written, acked_before, acked_after, to_commit = scenario(monkeypatch, steps)
    assert before_outputs == ["geofence-events"]  # no state ahead of what made it
    assert written == [
        ("geofence-events", [(b"U1", b"event")]),
        ("presence-changelog", [(b"U1", b"state")]),
    ]
    assert not acked_before
    assert acked_after
    assert to_commit == 5


def test_a_failed_delivery_stops_the_commit_and_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def steps(checkpoint: Checkpoint, producer: Producer, consumer: Any, batch: Batch) -> Any:
        await checkpoint.run()
        await asyncio.sleep(0.01)
        producer.settle(fail_topic="geofence-events")
        with pytest.raises(DeliveryFailed, match="no answer"):
            await checkpoint.run(wait=True)
        with pytest.raises(DeliveryFailed):
            checkpoint.check()  # the presence loop's check raises it too
        topics = [topic for topic, _, _, _ in producer.sent]
        return batch.acked, consumer._new_offset(TP0), topics

    # nothing committed, and the state its event did not deliver never written
    assert scenario(monkeypatch, steps) == (False, None, ["geofence-events"])


def test_a_failure_found_in_the_background_is_raised_by_the_next_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def steps(checkpoint: Checkpoint, producer: Producer, consumer: Any, batch: Batch) -> Any:
        await checkpoint.run()
        await asyncio.sleep(0.01)
        checkpoint.check()  # nothing known yet
        producer.settle()  # the event
        await asyncio.sleep(0.01)
        checkpoint.check()
        producer.settle(fail_topic="presence-changelog")
        await asyncio.sleep(0.01)
        with pytest.raises(DeliveryFailed):
            checkpoint.check()
        return batch.acked

    assert scenario(monkeypatch, steps) is False


class SnapshotStage(Stage):
    """A stage whose states are taken at the checkpoint and encoded later (the presence
    stage's way): what it holds may change meanwhile."""

    def __init__(self, states: dict[str, bytes]) -> None:
        super().__init__({})
        self.states = states
        self.due = set(states)

    @property
    def unwritten(self) -> int:
        return len(self.due)

    def take_snapshot(self) -> list[tuple[str, int, bytes]]:
        due, self.due = self.due, set()
        return [(unit, 0, self.states[unit]) for unit in sorted(due)]

    @staticmethod
    def encode_writes(snapshot: Any) -> dict[bytes, tuple[int, bytes | None]]:
        return {unit.encode(): (partition, state) for unit, partition, state in snapshot}


def test_states_are_written_as_they_were_when_the_checkpoint_was_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The presence loop goes on after taking a checkpoint: a unit it changes meanwhile is
    written as it was then, and again, as it is, by the next checkpoint, after the first's
    writes (the changelog's last word is the newest state)."""
    producer = Producer()
    monkeypatch.setattr(outbox_module, "kafka_producer", lambda app: producer)

    async def run() -> list[tuple[bytes | None, bytes | None]]:
        app = HotspotApp("checkpoint-test", broker="kafka://127.0.0.1:9")
        app.intake = Intake({"pings"}, max_buffered=100)
        table = SimpleNamespace(
            data={}, changelog_topic=SimpleNamespace(get_topic_name=lambda: "presence-changelog")
        )
        stage = SnapshotStage({"U1": b"v1", "U2": b"v1"})
        checkpoint = Checkpoint(
            app, Outbox(app), [Changelog(stage, table, keep=False, snapshot=True)], asyncio.Lock()
        )
        await checkpoint.run()
        stage.states["U1"] = b"v2"  # a batch processed before the writes went out
        stage.due.add("U1")
        await checkpoint.run()

        async def broker() -> None:  # answers what it is sent, as a broker would
            while True:
                producer.settle()
                await asyncio.sleep(0.002)

        answering = asyncio.create_task(broker())
        await checkpoint.run(wait=True)
        answering.cancel()
        return [record for topic, _, b, _ in producer.sent for record in b.records]

    assert asyncio.run(run()) == [(b"U1", b"v1"), (b"U2", b"v1"), (b"U1", b"v2")]


def test_no_checkpoint_is_taken_while_its_guard_is_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live clock's tick holds the guard from changing unit states until what that made
    is published: a checkpoint due meanwhile waits for the next turn of the presence loop."""

    async def steps(checkpoint: Checkpoint, producer: Producer, consumer: Any, batch: Batch) -> Any:
        async with checkpoint.guard:
            await checkpoint.run()
            await asyncio.sleep(0.01)
            producer.settle()
            await asyncio.sleep(0.01)
            while_held = [topic for topic, _, _, _ in producer.sent], batch.acked
        producer.settle()
        await checkpoint.run()
        await asyncio.sleep(0.01)
        producer.settle()
        await checkpoint.run(wait=True)
        return while_held, batch.acked

    assert scenario(monkeypatch, steps) == ((["geofence-events"], False), True)


def test_a_checkpoint_waited_for_is_taken_once_its_guard_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hand-over or shutdown that comes while the tick holds the guard waits for it, then
    takes the checkpoint (and does not wait on the guard a second time)."""

    async def steps(checkpoint: Checkpoint, producer: Producer, consumer: Any, batch: Batch) -> Any:
        async def tick() -> None:
            async with checkpoint.guard:
                await asyncio.sleep(0.02)

        async def broker() -> None:
            while True:
                producer.settle()
                await asyncio.sleep(0.002)

        ticking = asyncio.create_task(tick())
        await asyncio.sleep(0)
        answering = asyncio.create_task(broker())
        await asyncio.wait_for(checkpoint.run(wait=True), 5)
        answering.cancel()
        await ticking
        return batch.acked, [topic for topic, _, _, _ in producer.sent]

    assert scenario(monkeypatch, steps) == (True, ["geofence-events", "presence-changelog"])
