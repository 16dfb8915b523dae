"""The bulk intake (stream/worker/intake.py): its queue, its acks against Faust's own offset
bookkeeping (a real Faust consumer, no broker needed: nothing here connects), and its bulk read
of fetched record batches against aiokafka's own."""

from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st
from intervaltree import IntervalTree

from stream.records import Record
from stream.worker.faust_internals import (
    HotspotApp,
    acked_run_end,
    drain,
    read_in_bulk,
    readable_in_bulk,
)
from stream.worker.intake import Batch, Intake, ack, track

TP0 = TP("pings", 0)


def batch(*offsets: int, tp: TP = TP0) -> Batch:
    return Batch(tp, [Record(tp.topic, tp.partition, o, b"U1", b"{}") for o in offsets])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_take_hands_over_whole_batches_up_to_the_limit() -> None:
    async def scenario() -> list[list[int]]:
        intake = Intake({"pings"}, max_buffered=100)
        for b in (batch(0, 1, 2), batch(3, 4, 5, 6), batch(7, 8, 9, 10, 11)):
            intake.offer(b)
        taken = [await intake.take(8, within_s=0, idle_s=0.01) for _ in range(3)]
        return [[r.offset for b in t for r in b.records] for t in taken]

    # 3 + 4 fit in 8, the third would not; a batch bigger than the limit still goes whole
    assert run(scenario()) == [[0, 1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11], []]


def test_take_waits_within_for_a_batch_to_fill() -> None:
    async def scenario() -> int:
        intake = Intake({"pings"}, max_buffered=100)
        intake.offer(batch(0))
        asyncio.get_running_loop().call_later(0.01, intake.offer, batch(1, 2))
        return sum(len(b.records) for b in await intake.take(100, within_s=2.0, idle_s=2.0))

    assert run(scenario()) == 3


def test_room_closes_at_the_bound_and_a_clear_reopens_it() -> None:
    """The fetch loop waits for room, as it would for Faust's stream buffers; a rebalance
    clears the queue (Faust's ``flow_control.clear()``) and the records are read again."""

    async def scenario() -> tuple[bool, bool, int]:
        intake = Intake({"pings"}, max_buffered=5)
        intake.offer(batch(0, 1, 2, 3, 4, 5))
        try:
            await asyncio.wait_for(intake.room(), 0.05)
            full_blocks = False
        except TimeoutError:
            full_blocks = True
        intake.clear()
        await asyncio.wait_for(intake.room(), 0.05)
        empty = await intake.take(10, within_s=0, idle_s=0.01) == []
        return full_blocks, empty, len(intake)

    assert run(scenario()) == (True, True, 0)


@pytest.fixture
def consumer() -> Any:
    """A Faust app's real consumer, made on a loop (aiokafka wants one), never started."""

    async def make() -> Any:
        app = HotspotApp("intake-test", broker="kafka://127.0.0.1:9")
        app.intake = Intake({"pings"}, max_buffered=100)
        return app.consumer

    return asyncio.run(make())


def test_acked_batches_let_faust_commit_past_them(consumer: Any) -> None:
    first, second = batch(0, 1, 2, 3, 4), batch(5, 6, 7)
    track(consumer, [first, second])
    assert set(consumer._unacked_messages) == {first, second}  # a rebalance would wait
    assert TP0 in consumer.app.monitor.stream_inbound_time  # Faust's stall check looks here
    ack(consumer, first)
    ack(consumer, second)
    ack(consumer, second)  # twice changes nothing
    assert not consumer._unacked_messages
    assert consumer._n_acked == 8
    assert consumer._new_offset(TP0) == 8


def test_offsets_missing_from_a_fetch_do_not_stall_commits(consumer: Any) -> None:
    """Offsets a fetch skips (transaction markers, compaction) are noted as gaps, as Faust's
    per-record loop does, so the committable offset moves past them."""
    with_gap = batch(0, 1, 2, 5, 6)

    async def note() -> None:
        await consumer.note_gaps(TP0, None, with_gap.records)
        await consumer.note_gaps(TP0, 6, batch(9, 10).records)

    run(note())
    ack(consumer, with_gap)
    ack(consumer, batch(9, 10))
    assert consumer._new_offset(TP0) == 11


@settings(max_examples=300, deadline=None)
@given(
    st.sets(st.integers(0, 60), max_size=40),
    st.one_of(st.none(), st.integers(0, 30)),
    st.randoms(use_true_random=False),
)
def test_the_offset_to_commit_is_faust_s_own(
    offsets: set[int], committed: int | None, rng: Any
) -> None:
    """``acked_run_end`` (the bulk consumer's ``_new_offset``) gives Faust's answer and leaves
    Faust's bookkeeping as Faust's own would, acked offsets in any order."""

    def bookkeeping() -> Any:
        acked = sorted(offsets)
        rng.shuffle(acked)
        return SimpleNamespace(
            _acked={TP0: acked},
            _acked_index={TP0: set(offsets)},
            _gap={TP0: IntervalTree()},
            _committed_offset={TP0: committed},
        )

    ours, faust_s = bookkeeping(), bookkeeping()
    faust_answer = FaustConsumer._new_offset(faust_s, TP0)
    assert acked_run_end(ours, TP0, lambda tp: pytest.fail("no gaps: never Faust's path")) == (
        faust_answer
    )
    assert ours._acked == faust_s._acked and ours._acked_index == faust_s._acked_index


def test_the_worker_app_builds_the_bulk_consumer() -> None:
    async def make() -> Any:
        app = HotspotApp("intake-test-2", broker="kafka://127.0.0.1:9")
        app.intake = Intake({"pings"}, max_buffered=10)
        return app.consumer

    made = run(make())
    assert type(made).__name__ == "BulkConsumer"
    assert isinstance(made, faust.transport.drivers.aiokafka.Consumer)
    assert made.intake is not None


def test_a_fetch_the_flow_stopped_before_it_was_handed_over_is_read_again() -> None:
    """aiokafka has moved its position past a fetch's records once it returns them; when the
    flow stops (a rebalance) before they are handed over, they must be fetched again or they
    are lost: Faust's own ``getmany`` seeks back to committed offsets then, and so does the
    intake's loop. A partition the group never committed goes back to its beginning
    (aiokafka's ``seek_to_committed`` leaves it where it is)."""
    tp1 = TP("pings", 1)
    fetched = {TP0: batch(10, 11).records, tp1: batch(0, 1, tp=tp1).records}
    seeks: list[Any] = []

    async def scenario() -> tuple[set[TP], set[TP], set[TP], Any]:
        app = HotspotApp("intake-test-3", broker="kafka://127.0.0.1:9")
        app.intake = Intake({"pings"}, max_buffered=100)
        consumer = app.consumer

        async def perform_seek() -> None:
            seeks.append("committed")
            consumer._committed_offset[TP0] = 10

        async def seek_to_beginning(*tps: TP) -> None:
            seeks.append(("beginning", set(tps)))

        consumer.perform_seek = perform_seek
        consumer._thread.seek_to_beginning = seek_to_beginning
        consumer.assignment = lambda: {TP0, tp1}
        consumer.highwater = lambda tp: 12
        active = {TP0, tp1}
        consumer.resume_flow()
        paused = await consumer.deliver(consumer.intake, fetched, {TP0})
        consumer.intake.clear()
        consumer._read_offset.clear()
        whole = await consumer.deliver(consumer.intake, fetched, active)
        consumer.stop_flow()
        stopped = await consumer.deliver(consumer.intake, fetched, active)
        await consumer.seek_back(stopped)
        return paused, whole, stopped, consumer

    paused, whole, stopped, consumer = run(scenario())
    assert paused == {tp1}  # paused meanwhile: not handed over
    assert whole == set()
    assert stopped == {TP0, tp1}
    assert seeks == ["committed", ("beginning", {tp1})]
    assert consumer._read_offset[tp1] is None


def record_batch(
    base_offset: int, count: int, compression: int = 0, control: bool = False
) -> bytes:
    """One record batch as a broker stores it: offsets ``base_offset`` on, keys and values
    naming them; a ``control`` batch (a transaction marker) has the control attribute set."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=control,
        producer_id=7 if control else -1,
        producer_epoch=0 if control else -1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for delta in range(count):
        offset = base_offset + delta
        builder.append(
            delta, 1_700_000_000_000 + offset, f"U{offset}".encode(), f"v{offset}".encode(), []
        )
    raw = bytearray(builder.build())
    raw[0:8] = struct.pack(">q", base_offset)
    if control:
        raw[21:23] = struct.pack(">h", struct.unpack(">h", raw[21:23])[0] | 0x20)
        raw[17:21] = struct.pack(">I", calc_crc32c(bytes(raw[21:])))
    return bytes(raw)


def partition_records(raw: bytes, fetch_offset: int, tp: TP = TP0) -> PartitionRecords:
    return PartitionRecords(
        tp, MemoryRecords(raw), [], fetch_offset, None, None, True, fetcher.READ_UNCOMMITTED
    )


FETCHED = (
    record_batch(10, 5),
    record_batch(15, 1, control=True),
    record_batch(16, 40, compression=1),  # gzip
    record_batch(56, 3),
)


# A fetch from offset N returns the batches from the one holding N on.
@pytest.mark.parametrize(
    ("fetched", "fetch_offset"),
    [(FETCHED, 10), (FETCHED, 12), (FETCHED, 14), (FETCHED[-2:], 16), (FETCHED[-2:], 30)],
)
def test_a_drained_fetch_is_what_aiokafka_iterates(
    fetched: tuple[bytes, ...], fetch_offset: int
) -> None:
    """The bulk read gives the records aiokafka's own iteration gives, control batches and
    records before the fetch offset left out, and moves the fetch offset as far."""
    own = partition_records(b"".join(fetched), fetch_offset)
    bulk = partition_records(b"".join(fetched), fetch_offset)
    want = [Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in own]
    assert drain(bulk) == want
    assert [r.offset for r in want] == [o for o in range(fetch_offset, 59) if o != 15]
    assert [r.value for r in want] == [f"v{r.offset}".encode() for r in want]
    assert bulk.next_fetch_offset == own.next_fetch_offset == 59


def test_a_corrupt_batch_is_refused_as_aiokafka_refuses_it() -> None:
    raw = bytearray(b"".join(FETCHED))
    raw[-1] ^= 0xFF
    with pytest.raises(CorruptRecordException):
        list(partition_records(bytes(raw), 10))
    with pytest.raises(CorruptRecordException):
        drain(partition_records(bytes(raw), 10))


def test_only_the_intake_topics_are_read_in_bulk() -> None:
    """``FetchResult.getall``: Records for the intake's topics; aiokafka's ``ConsumerRecord``s
    for any other topic (Faust's agents, changelog recovery) and under a ``max_records``."""
    read_in_bulk({"pings"})

    class Assignment:
        active = True

        def state_value(self, tp: TP) -> Any:
            return self

        paused = False
        position = 12

        def consumed_to(self, offset: int) -> None:
            self.position = offset

    def fetched(topic: str) -> Any:
        tp = TP(topic, 0)
        return fetcher.FetchResult(
            tp,
            assignment=Assignment(),
            partition_records=partition_records(b"".join(FETCHED), 12, tp),
            backoff=0,
        )

    bulk = fetched("pings")
    records = bulk.getall()
    assert [type(r) for r in records] == [Record] * 46
    assert not bulk.has_more()
    assert bulk._assignment.position == 59
    assert {type(r).__name__ for r in fetched("visit-updates").getall()} == {"ConsumerRecord"}
    assert {type(r).__name__ for r in fetched("pings").getall(10)} == {"ConsumerRecord"}


def test_records_of_another_aiokafka_shape_are_left_to_aiokafka() -> None:
    """A ``PartitionRecords`` without an attribute the bulk read uses is not read in bulk."""
    records = partition_records(b"".join(FETCHED), 10)
    assert readable_in_bulk(records)
    del records._check_crcs
    assert not readable_in_bulk(records)
    assert not readable_in_bulk(object())


def test_a_failed_seek_back_is_raised() -> None:
    """Records fetched but not handed over are lost unless the seek back happens, so its
    failure stops the fetch loop (and with it the worker), not only a log line."""

    async def scenario() -> None:
        app = HotspotApp("intake-test-4", broker="kafka://127.0.0.1:9")
        app.intake = Intake({"pings"}, max_buffered=100)
        consumer = app.consumer

        async def perform_seek() -> None:
            raise ConnectionError("broker gone")

        consumer.perform_seek = perform_seek
        await consumer.seek_back({TP0})

    with pytest.raises(ConnectionError):
        run(scenario())
