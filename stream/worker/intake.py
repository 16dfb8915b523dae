"""Bulk intake: the pings topics' records reach the presence stage a whole fetch at a time.

Faust hands every consumed record to its agents one by one: a ``ConsumerMessage``, two tasks
raced in ``wait_first``, an ``Event``, a queue, stream iteration and its sensors, and an ack.
On this machine an empty ``take_events`` agent reads about 9,000 records/s that way, while a
bare aiokafka consumer reads 250,000 (``hotspot bench``). The presence stage works on whole
batches anyway, so for its topics the worker's consumer hands over each partition's fetched
records as one :class:`Batch`, and the presence loop acks a batch's offsets once its output
is with the producer.

Everything else stays Faust's: group membership and the co-partitioned assignment, changelog
recovery, seeking to committed offsets, flow control during rebalances, and committing. A
batch is tracked like an in-flight message (``Consumer._unacked_messages``), so a rebalance or
shutdown waits for it, and its offsets are acked through the same bookkeeping
``Consumer.ack`` keeps (``_acked``, ``_acked_index``, ``_n_acked``), gaps included. Batches
still queued when a rebalance starts are dropped with Faust's own queues
(``app.flow_control.clear()``); their offsets were never acked, so they are read again.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from time import monotonic
from typing import Any

from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from stream.records import Record

#: topics whose fetched records are read in bulk (:func:`read_in_bulk`)
_bulk_topics: set[str] = set()


def read_in_bulk(topics: Iterable[str]) -> None:
    """Make this process's aiokafka consumers hand over ``topics``' fetched records as
    :class:`~stream.worker.presence_stage.Record`s, a whole fetched partition at once.

    aiokafka makes a ``ConsumerRecord`` of each record, one at a time through a generator and
    ``FetchResult.getall``'s loop: about 1.9 µs a record here, in the consumer thread, which
    holds the GIL the presence stage needs. Read straight off the record batches, a record
    costs about 0.6 µs (README: Performance). The presence stage reads only the fields a
    ``Record`` has. Anything else (other topics, a
    ``max_records`` limit, transactions read committed, deserializers, a partly read fetch)
    takes aiokafka's own path."""
    _bulk_topics.update(topics)
    if getattr(fetcher.FetchResult.getall, "bulk", False):
        return
    original = fetcher.FetchResult.getall

    def getall(self: Any, max_records: int | None = None) -> list[Any]:
        records = self._partition_records
        tp = self._topic_partition
        if (
            max_records is not None
            or records is None
            or tp.topic not in _bulk_topics
            or not _readable_in_bulk(records)
        ):
            return original(self, max_records)
        if not self.check_assignment(tp):
            return []
        taken = drain(records)
        self._update_position()
        self._partition_records = None
        return taken

    getall.bulk = True  # type: ignore[attr-defined]
    fetcher.FetchResult.getall = getall


def _readable_in_bulk(records: Any) -> bool:
    """Whether :func:`drain` can read ``records`` as aiokafka would (aiokafka 0.14's
    ``PartitionRecords``; another version without these attributes takes its own path)."""
    try:
        return (
            records._isolation_level == fetcher.READ_UNCOMMITTED
            and records._key_deserializer is None
            and records._value_deserializer is None
            and records._records_iterator is not None
            and inspect.getgeneratorstate(records._records_iterator) == inspect.GEN_CREATED
            and hasattr(records, "_check_crcs")
            and hasattr(records, "_tp")
            and hasattr(records._records, "next_batch")
        )
    except AttributeError:
        return False


def drain(records: Any) -> list[Record]:
    """Every record of an aiokafka ``PartitionRecords`` not read yet, as ``Record``s, as its
    own iteration would give them (read uncommitted): control batches skipped, records before
    the fetch offset skipped, the CRC checked if asked; its next fetch offset moved past all."""
    tp = records._tp
    topic, partition = tp.topic, tp.partition
    memory = records._records
    next_offset = records.next_fetch_offset
    new = tuple.__new__
    taken: list[Record] = []
    while memory.has_next():
        batch = memory.next_batch()
        if records._check_crcs and not batch.validate_crc():
            raise CorruptRecordException(f"Invalid CRC - {tp}")
        if not batch.is_control_batch:
            taken += [
                new(Record, (topic, partition, r.offset, r.key, r.value, r.timestamp))
                for r in batch
                if r.offset >= next_offset
            ]
        next_offset = batch.next_offset
    records.next_fetch_offset = next_offset
    records._records_iterator = None
    return taken


class Batch:
    """One partition's records from one fetch, in offset order (:func:`read_in_bulk`).

    Tracked in ``Consumer._unacked_messages`` while processed, hence ``acked`` and
    ``refcount`` (what Faust's ``wait_empty`` looks at); hashed by identity. A processed batch
    waiting for its ack (:func:`hold`) keeps only its offsets."""

    __slots__ = ("__weakref__", "_offsets", "acked", "records", "refcount", "tp")

    def __init__(self, tp: TP, records: Sequence[Any]) -> None:
        self.tp = tp
        self.records = records
        self._offsets: list[int] | None = None
        self.acked = False
        self.refcount = 1

    @property
    def offsets(self) -> list[int]:
        if self._offsets is None:
            return [r.offset for r in self.records]
        return self._offsets

    def drop_records(self) -> None:
        """Keep the offsets only (a held batch's records would be most of the memory)."""
        self._offsets = self.offsets
        self.records = ()

    def __repr__(self) -> str:
        offsets = self.offsets
        return f"<Batch {self.tp.topic}[{self.tp.partition}] offsets {offsets[0]}..{offsets[-1]}>"


class Intake:
    """The queue of batches between the consumer's fetch loop and the presence loop.

    Bounded by records, so a slow stage holds the fetch loop back as Faust's own stream
    buffers do. Registered with the app's flow control, which clears it when a rebalance
    starts."""

    def __init__(self, topics: set[str], max_buffered: int) -> None:
        self.topics = frozenset(topics)
        self.max_buffered = max_buffered
        self._batches: deque[Batch] = deque()
        self._count = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._batches.clear()
        self._count = 0
        self._ready.clear()
        self._room.set()

    def offer(self, batch: Batch) -> None:
        self._batches.append(batch)
        self._count += len(batch.records)
        self._ready.set()
        if self._count >= self.max_buffered:
            self._room.clear()

    async def room(self) -> None:
        """Wait until the queue is below its bound."""
        await self._room.wait()

    async def take(self, max_records: int, within_s: float, idle_s: float) -> list[Batch]:
        """Batches holding up to about ``max_records`` records (whole batches: at least one).

        Waits up to ``idle_s`` for a first batch (returning ``[]`` if none came), then up to
        ``within_s`` for more while fewer than ``max_records`` are queued."""
        if not self._batches:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), idle_s)
            except TimeoutError:
                return []
        if self._count < max_records and within_s > 0:
            deadline = asyncio.get_running_loop().time() + within_s
            while self._count < max_records:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                self._ready.clear()
                try:
                    await asyncio.wait_for(self._ready.wait(), left)
                except TimeoutError:
                    break
        taken: list[Batch] = []
        count = 0
        while self._batches and (not taken or count + len(self._batches[0].records) <= max_records):
            batch = self._batches.popleft()
            taken.append(batch)
            count += len(batch.records)
        self._count -= count
        if self._count < self.max_buffered:
            self._room.set()
        return taken


def track(consumer: Any, batches: Sequence[Batch]) -> None:
    """Mark batches in flight: a rebalance or shutdown now waits for their ack. And tell
    Faust's monitor their partitions are being processed: its stall check
    (``verify_event_path``) would otherwise log, every few minutes, that a busy partition's
    stream never started."""
    unacked = consumer._unacked_messages
    inbound = consumer.app.monitor.stream_inbound_time
    now = monotonic()
    for batch in batches:
        unacked.add(batch)
        inbound[batch.tp] = now


def hold(consumer: Any, batches: Sequence[Batch]) -> None:
    """Processed batches whose ack waits for a flush of state: no longer in flight (so a
    rebalance's ``wait_empty`` does not wait for them; the worker flushes before it lets a
    rebalance go on) and not acked either, so their offsets are not committed yet."""
    unacked = consumer._unacked_messages
    for batch in batches:
        unacked.discard(batch)
        batch.drop_records()
    notify(consumer._waiting_for_ack)


def hold_messages(consumer: Any, messages: Sequence[Any]) -> None:
    """Faust messages an agent processed whose ack waits for a flush, as :func:`hold` does for
    batches: one more reference each, so the stream's own ack leaves them unacked, and no
    longer in flight. :func:`release` acks them."""
    unacked = consumer._unacked_messages
    for message in messages:
        message.incref()
        unacked.discard(message)
    notify(consumer._waiting_for_ack)


def release(consumer: Any, messages: Sequence[Any]) -> None:
    """Ack messages held by :func:`hold_messages` (the last reference: Faust's own ack)."""
    for message in messages:
        message.ack(consumer)


def ack(consumer: Any, batch: Batch) -> None:
    """Ack every offset of a processed batch, as ``Consumer.ack`` does for one message."""
    tp = batch.tp
    with ack_lock:
        if batch.acked:
            return
        batch.acked = True
        consumer._unacked_messages.discard(batch)
        try:
            committed = consumer._committed_offset[tp]
            offsets = batch.offsets
            if committed is not None:
                offsets = [o for o in offsets if o >= committed]
            index = consumer._acked_index[tp]
            fresh = [o for o in offsets if o not in index]
            index.update(fresh)
            consumer._acked[tp].extend(fresh)
            consumer._n_acked += len(fresh)
        finally:
            notify(consumer._waiting_for_ack)


def acked_run_end(consumer: Any, tp: TP, otherwise: Callable[[TP], int | None]) -> int | None:
    """Faust 0.15's ``Consumer._new_offset`` (the offset to commit: one past the run of acked
    offsets that follows the committed one), the same result and bookkeeping, without its
    Python call per offset (``consecutive_numbers``' ``groupby`` key): 0.20 against 0.06 µs an
    acked offset, and the intake acks every ping's. A partition with gaps in its offsets
    (``_gap``, from compaction or transactions) takes Faust's own path.

    Acked offsets are distinct (``_acked_index`` keeps them so), so once sorted, ``acked[i] -
    i`` never falls and the run from ``acked[0]`` ends where it first exceeds ``acked[0]``."""
    acked = consumer._acked[tp]
    if not acked:
        return None
    if consumer._gap[tp]:
        return otherwise(tp)
    acked.sort()
    first = acked[0]
    committed = consumer._committed_offset[tp]
    if committed and first - committed > 1:
        return None
    size = len(acked)
    if acked[-1] - first == size - 1:
        run = size
    else:
        run = bisect.bisect_right(range(size), first, key=lambda i: acked[i] - i)
    batch = acked[:run]
    del acked[:run]
    consumer._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


def bulk_consumer_class(base: type) -> type:
    """``base`` (a Faust transport's Consumer) with a fetch loop that queues the intake's
    topics as batches and hands every other record to Faust as before."""

    class BulkConsumer(base):  # type: ignore[misc, valid-type]
        intake: Intake | None = None

        async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - a thread
            intake = self.intake
            if intake is None:
                return await super()._drain_messages(fetcher)
            consumer_should_stop = self._stopped.is_set
            fetcher_should_stop = fetcher._stopped.is_set
            try:
                while not (consumer_should_stop() or fetcher_should_stop()):
                    self.diag.set_flag(CONSUMER_FETCHING)
                    records, active = await self._wait_next_records(1.0)
                    await self.sleep(0)
                    if records and not self.should_stop:
                        dropped = (
                            await self._deliver(intake, records, active)
                            if self.flow_active
                            else set(records)
                        )
                        if dropped:
                            await self._seek_back(dropped)
                    self.diag.unset_flag(CONSUMER_FETCHING)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    self.log.info("Broker stopped consumer, shutting down...")
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    self.log.info("Consumer shutting down for user cancel.")
                    return
                raise
            except Exception as exc:
                self.log.exception("Drain messages raised: %r", exc)
                raise
            finally:
                self.diag.unset_flag(CONSUMER_FETCHING)

        def _new_offset(self, tp: TP) -> int | None:
            return acked_run_end(self, tp, super()._new_offset)

        async def _deliver(self, intake: Intake, records: Any, active: Any) -> set[TP]:
            """One fetch: the intake's partitions as batches, anything else per record to
            Faust's callback (the conductor), with Faust's read-offset and gap bookkeeping.
            Returns the partitions whose records were not all handed over (the flow stopped,
            the generation changed or the partition was paused meanwhile)."""
            app = self.app
            generation = app.consumer_generation_id
            dropped: set[TP] = set()
            read_offset = self._read_offset
            commit_every = self._commit_every
            for tp, tp_records in records.items():
                if not self.flow_active or app.consumer_generation_id != generation:
                    return set(records)
                if not (active is None or tp in active or tp in self._buffered_partitions):
                    dropped.add(tp)
                    continue
                app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                r_offset = read_offset[tp]
                if r_offset is not None:
                    tp_records = [r for r in tp_records if r.offset >= r_offset]
                if not tp_records:
                    continue
                if tp.topic in intake.topics:
                    await self._note_gaps(tp, r_offset, tp_records)
                    await self.wait_first(intake.room(), self.suspend_flow.wait())
                    if not self.flow_active or self.suspend_flow.is_set():
                        return set(records)
                    intake.offer(Batch(tp, tp_records))
                    read_offset[tp] = tp_records[-1].offset
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    continue
                for record in tp_records:
                    message = self._to_message(tp, record)
                    offset = message.offset
                    r_offset = read_offset[tp]
                    if r_offset is not None and offset < r_offset:
                        continue
                    if (
                        r_offset
                        and offset - r_offset > 1
                        and app.topics.acks_enabled_for(message.topic)
                    ):
                        await self._add_gap(tp, r_offset + 1, offset - 1)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await self.wait_first(self.callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
            return dropped

        async def _seek_back(self, dropped: set[TP]) -> None:
            """Put the fetch position back after records were fetched but not handed over.

            aiokafka moved its position past them, so unless something seeks they are never
            read again. Faust's own ``getmany`` seeks back to the committed offsets when a
            fetch returns while the flow is stopped (during a rebalance: between changelog
            recovery and Faust's seek, the worker itself stops the flow); this loop replaces
            it, so it must too. And aiokafka's ``seek_to_committed`` leaves a partition the
            group never committed where it is, so a dropped one of those goes back to its
            beginning (the worker reads from ``earliest``). Measured before this: a worker
            taking over a killed one's partitions, on a loaded machine, dropped the first fetch
            of three of them and never read them again (``tests/stream/worker/test_scale_out.py``)."""
            self.log.info(
                "fetched records of %s not handed over (rebalance): seeking back to committed",
                sorted(f"{tp.topic}[{tp.partition}]" for tp in dropped),
            )
            try:
                await self.perform_seek()
                assigned = self.assignment()
                never_committed = [
                    tp for tp in dropped if tp in assigned and not self._committed_offset.get(tp)
                ]
                if never_committed:
                    await self._thread.seek_to_beginning(*never_committed)
                    for tp in never_committed:
                        self._read_offset[tp] = None
            except Exception as exc:
                self.log.warning("seek back to committed offsets failed: %r", exc)

        async def _note_gaps(self, tp: TP, r_offset: int | None, records: Sequence[Any]) -> None:
            """Offsets missing between reads (compaction, transaction markers) count as
            processed, as in Faust's per-record loop (which also counted the record after the
            gap as processed before it was: here the gap ends before it)."""
            previous = r_offset
            if previous and records[-1].offset - previous == len(records):
                return  # contiguous: the common case
            for record in records:
                if previous and record.offset - previous > 1:
                    await self._add_gap(tp, previous + 1, record.offset - 1)
                previous = record.offset

    return BulkConsumer
