"""Every private name of Faust, mode and aiokafka the worker relies on, in one module.

The worker changes a few of their behaviours: the pings are handed over a whole fetch at a
time and acked at checkpoints, a rebalance flushes state before it hands partitions over, and
on Tansu end offsets and Fetch waits are corrected. That takes names those libraries keep
private, which can change in any release. The rest of ``stream/`` calls the plain-named
functions and classes here; each says which upstream behaviour it replaces and why.

:data:`RELIED_ON` lists every private name used here; ``hotspot worker`` checks them before
Faust starts (:func:`refusal`) and refuses to run on versions that lack one. pyproject.toml
pins the versions tested (:data:`TESTED`).
"""

from __future__ import annotations

import asyncio
import bisect
import dis
import importlib
import inspect
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import cache
from importlib import metadata
from typing import Any, Protocol

import faust
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.errors import CorruptRecordException
from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP
from mode.utils.futures import notify

from stream.records import Record

#: the versions the worker is tested with (pinned in pyproject.toml)
TESTED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}

_FAUST_CONSUMER = "faust.transport.consumer:Consumer"
_FETCHER = "aiokafka.consumer.fetcher:Fetcher"
_PARTITION_RECORDS = "aiokafka.consumer.fetcher:PartitionRecords"
_FETCH_RESULT = "aiokafka.consumer.fetcher:FetchResult"
_KAFKA_CONSUMER = "aiokafka.consumer.consumer:AIOKafkaConsumer"
_CONSUMER_THREAD = "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread"

#: every private name used in this module: (``module:Class``, name), each an attribute of the
#: class or one its code assigns on its instances
RELIED_ON: tuple[tuple[str, str], ...] = (
    ("faust.app.base:App", "_consumer_wait_empty"),
    ("faust.app.base:App", "_new_consumer"),
    (_FAUST_CONSUMER, "_drain_messages"),
    (_FAUST_CONSUMER, "_wait_next_records"),
    (_FAUST_CONSUMER, "_new_offset"),
    (_FAUST_CONSUMER, "_add_gap"),
    (_FAUST_CONSUMER, "_n_acked"),
    (_FAUST_CONSUMER, "_acked"),
    (_FAUST_CONSUMER, "_acked_index"),
    (_FAUST_CONSUMER, "_gap"),
    (_FAUST_CONSUMER, "_committed_offset"),
    (_FAUST_CONSUMER, "_read_offset"),
    (_FAUST_CONSUMER, "_unacked_messages"),
    (_FAUST_CONSUMER, "_waiting_for_ack"),
    (_FAUST_CONSUMER, "_buffered_partitions"),
    (_FAUST_CONSUMER, "_commit_every"),
    ("faust.transport.consumer:ThreadDelegateConsumer", "_thread"),
    ("faust.transport.drivers.aiokafka:Consumer", "_to_message"),
    ("faust.transport.drivers.aiokafka:Producer", "_ensure_producer"),
    (_CONSUMER_THREAD, "_highwaters"),
    (_CONSUMER_THREAD, "_create_worker_consumer"),
    ("faust.stores.memory:Store", "_key_partition"),
    ("mode.services:Service", "_stopped"),
    (_FETCH_RESULT, "_topic_partition"),
    (_FETCH_RESULT, "_partition_records"),
    (_FETCH_RESULT, "_update_position"),
    (_PARTITION_RECORDS, "_tp"),
    (_PARTITION_RECORDS, "_records"),
    (_PARTITION_RECORDS, "_records_iterator"),
    (_PARTITION_RECORDS, "_isolation_level"),
    (_PARTITION_RECORDS, "_key_deserializer"),
    (_PARTITION_RECORDS, "_value_deserializer"),
    (_PARTITION_RECORDS, "_check_crcs"),
    (_FETCHER, "_fetch_max_wait_ms"),
    (_FETCHER, "_get_actions_per_node"),
    (_KAFKA_CONSUMER, "_fetch_max_wait_ms"),
    (_KAFKA_CONSUMER, "_fetcher"),
    (_KAFKA_CONSUMER, "_client"),
    (_KAFKA_CONSUMER, "_coordinator"),
    ("aiokafka.consumer.group_coordinator:GroupCoordinator", "_send_req"),
)


# -- the start-up check --------------------------------------------------------------------


def _stored_attributes(code: types.CodeType) -> set[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _stored_attributes(const)
    return names


@cache
def _instance_attributes(cls: type) -> frozenset[str]:
    """The attribute names the code of ``cls`` (and its bases) assigns (``obj.name = ...``)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        for value in vars(klass).values():
            if isinstance(value, property):
                value = value.fget
            func = inspect.unwrap(getattr(value, "__func__", value))
            code = getattr(func, "__code__", None)
            if isinstance(code, types.CodeType):
                names |= _stored_attributes(code)
    return frozenset(names)


def _has(owner: str, name: str) -> bool:
    module_name, _, class_name = owner.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return False
    return hasattr(cls, name) or name in _instance_attributes(cls)


def missing() -> list[str]:
    """The names of :data:`RELIED_ON` the installed versions lack, as ``Class.name``."""
    return [
        f"{owner.partition(':')[2]}.{name}" for owner, name in RELIED_ON if not _has(owner, name)
    ]


def installed_versions() -> dict[str, str]:
    versions = {}
    for package in TESTED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "(not installed)"
    return versions


def refusal() -> str | None:
    """None when every relied-on name exists; otherwise one line naming the installed
    versions and what they lack."""
    lacking = missing()
    if not lacking:
        return None
    installed = ", ".join(f"{p} {v}" for p, v in installed_versions().items())
    tested = ", ".join(f"{p} {v}" for p, v in TESTED.items())
    return (
        f"{installed} lack {', '.join(lacking)}, which the worker relies on (tested with {tested})"
    )


# -- the app: rebalance hand-over and the bulk consumer ---------------------------------


class FetchSink(Protocol):
    """Where the bulk consumer puts a fetch's records of :attr:`topics`
    (:class:`stream.worker.intake.Intake`)."""

    topics: frozenset[str]

    async def room(self) -> None: ...

    def add(self, tp: TP, records: Sequence[Any]) -> None: ...


class HotspotApp(faust.App):
    """A Faust app whose consumer hands :attr:`intake`'s topics over a fetch at a time, and
    which calls :attr:`before_handover` before a rebalance or shutdown goes on."""

    intake: FetchSink | None = None
    before_handover: Callable[[], Awaitable[None]] | None = None

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        """Replaces: Faust's wait for the records in flight (a rebalance's revoke, shutdown).
        Why: the held batches must be checkpointed while this worker still owns their
        partitions, so :attr:`before_handover` runs right after it. Its failure crashes the
        app (Faust would only log it at shutdown)."""
        await super()._consumer_wait_empty(consumer, logger)
        if self.before_handover is not None:
            try:
                await self.before_handover()
            except Exception as exc:
                await self.crash(exc)
                raise

    def _new_consumer(self) -> Any:
        """Replaces: the transport's consumer class, with :func:`bulk_consumer_class`'s."""
        transport = self.transport
        transport.Consumer = bulk_consumer_class(type(transport).Consumer)  # type: ignore[misc]
        consumer = super()._new_consumer()
        consumer.intake = self.intake
        return consumer


# -- Faust's ack bookkeeping ----------------------------------------------------------------


def add_in_flight(consumer: Any, items: Iterable[Any]) -> None:
    """Add to Faust's in-flight set (``Consumer._unacked_messages``), which a rebalance or
    shutdown waits to see empty. Why: a batch is in flight like a Faust message."""
    unacked = consumer._unacked_messages
    for item in items:
        unacked.add(item)


def discard_in_flight(consumer: Any, items: Iterable[Any]) -> None:
    """Remove from Faust's in-flight set without acking (a batch held for a checkpoint)."""
    unacked = consumer._unacked_messages
    for item in items:
        unacked.discard(item)


def notify_ack_waiters(consumer: Any) -> None:
    """Wake Faust's ``wait_empty`` (``Consumer._waiting_for_ack``), as its own ``ack`` does."""
    notify(consumer._waiting_for_ack)


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """The offset Faust last committed for ``tp`` (``Consumer._committed_offset``), if any."""
    return consumer._committed_offset.get(tp)  # type: ignore[no-any-return]


def ack_offsets(consumer: Any, tp: TP, offsets: Sequence[int]) -> None:
    """Replaces: ``Consumer.ack`` per message, for a batch's offsets at once, with the same
    bookkeeping (``_acked``, ``_acked_index``, ``_n_acked``). The caller holds Faust's
    ``ack_lock``."""
    committed = consumer._committed_offset[tp]
    if committed is not None:
        offsets = [o for o in offsets if o >= committed]
    index = consumer._acked_index[tp]
    fresh = [o for o in offsets if o not in index]
    index.update(fresh)
    consumer._acked[tp].extend(fresh)
    consumer._n_acked += len(fresh)


def acked_run_end(consumer: Any, tp: TP, otherwise: Callable[[TP], int | None]) -> int | None:
    """Replaces: Faust 0.15's ``Consumer._new_offset`` (the offset to commit: one past the run
    of acked offsets that follows the committed one), with the same result and bookkeeping.
    Why: it calls Python once per acked offset, and the intake acks every ping's. A partition
    with gaps (``_gap``: compaction, transactions) takes Faust's own path (``otherwise``).

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
    """``base`` (a Faust transport's Consumer) with a fetch loop that hands the intake's
    topics over as whole fetched partitions and every other record to Faust as before."""

    class BulkConsumer(base):  # type: ignore[misc, valid-type]
        intake: FetchSink | None = None

        async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - a thread
            """Replaces: Faust 0.15's fetch loop (copied, its per-record part in
            :meth:`deliver`). Why: it makes a message, two tasks and an event per record."""
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
                            await self.deliver(intake, records, active)
                            if self.flow_active
                            else set(records)
                        )
                        if dropped:
                            await self.seek_back(dropped)
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
            """Replaces: Faust's offset to commit, by :func:`acked_run_end`."""
            return acked_run_end(self, tp, super()._new_offset)

        async def deliver(self, intake: FetchSink, records: Any, active: Any) -> set[TP]:
            """One fetch: the intake's partitions whole, anything else per record to Faust's
            callback (the conductor), with Faust's read-offset and gap bookkeeping. Returns
            the partitions whose records were not all handed over (the flow stopped, the
            generation changed or the partition was paused meanwhile)."""
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
                    await self.note_gaps(tp, r_offset, tp_records)
                    await self.wait_first(intake.room(), self.suspend_flow.wait())
                    if not self.flow_active or self.suspend_flow.is_set():
                        return set(records)
                    intake.add(tp, tp_records)
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

        async def seek_back(self, dropped: set[TP]) -> None:
            """Put the fetch position back after records were fetched but not handed over.

            aiokafka moved its position past them, so unless something seeks they are never
            read again. Faust's own ``getmany`` seeks back to the committed offsets when a
            fetch returns while the flow is stopped; this loop replaces it, so it must too.
            aiokafka's ``seek_to_committed`` leaves a partition the group never committed
            where it is, so a dropped one of those goes back to its beginning (the worker
            reads from ``earliest``). A failure here is raised: records would be lost."""
            self.log.info(
                "fetched records of %s not handed over (rebalance): seeking back to committed",
                sorted(f"{tp.topic}[{tp.partition}]" for tp in dropped),
            )
            await self.perform_seek()
            assigned = self.assignment()
            never_committed = [
                tp for tp in dropped if tp in assigned and not committed_offset(self, tp)
            ]
            if never_committed:
                await self._thread.seek_to_beginning(*never_committed)
                for tp in never_committed:
                    self._read_offset[tp] = None

        async def note_gaps(self, tp: TP, r_offset: int | None, records: Sequence[Any]) -> None:
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


# -- aiokafka's fetched records ---------------------------------------------------------------

#: topics whose fetched records are read in bulk (:func:`read_in_bulk`)
_bulk_topics: set[str] = set()


def read_in_bulk(topics: Iterable[str]) -> None:
    """Make this process's aiokafka consumers hand over ``topics``' fetched records as
    :class:`~stream.records.Record`s, a whole fetched partition at once.

    Replaces: ``FetchResult.getall``, process-wide. Why: it makes a ``ConsumerRecord`` of each
    record through a generator, in the consumer thread, which holds the GIL the presence stage
    needs; the stage reads only a ``Record``'s fields. Anything else (other topics, a
    ``max_records`` limit, read committed, deserializers, a partly read fetch) takes
    aiokafka's own path."""
    _bulk_topics.update(topics)
    if getattr(aiokafka_fetcher.FetchResult.getall, "bulk", False):
        return
    original = aiokafka_fetcher.FetchResult.getall

    def getall(self: Any, max_records: int | None = None) -> list[Any]:
        records = self._partition_records
        tp = self._topic_partition
        if (
            max_records is not None
            or records is None
            or tp.topic not in _bulk_topics
            or not readable_in_bulk(records)
        ):
            return original(self, max_records)
        if not self.check_assignment(tp):
            return []
        taken = drain(records)
        self._update_position()
        self._partition_records = None
        return taken

    getall.bulk = True  # type: ignore[attr-defined]
    aiokafka_fetcher.FetchResult.getall = getall  # type: ignore[method-assign]


def readable_in_bulk(records: Any) -> bool:
    """Whether :func:`drain` can read an aiokafka ``PartitionRecords`` as aiokafka would (not
    read yet, read uncommitted, no deserializers); one of another shape takes its own path."""
    try:
        return (
            records._isolation_level == aiokafka_fetcher.READ_UNCOMMITTED
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
    the fetch offset skipped, the CRC checked if asked; its next fetch offset moved past all.

    Replaces: ``PartitionRecords``' iteration. Why: it costs more a record, in the consumer
    thread."""
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


# -- producer, tables ----------------------------------------------------------------------


def kafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's (``Producer._ensure_producer``). Why: the outbox
    sends whole record batches (``create_batch``/``send_batch``), which Faust does not offer."""
    return app.producer._ensure_producer()


def forget_key_partitions(store: Any, keys: Iterable[Any]) -> None:
    """Drop keys from the partition map of Faust's memory store (``Store._key_partition``),
    for keys removed from its data by hand. Why: the presence stage takes the recovered unit
    states out of the table, and the map would keep every key."""
    partition_of = store._key_partition
    for key in keys:
        partition_of.pop(key, None)


# -- the aiokafka consumers Faust's consumer thread makes (Tansu) ---------------------------


def correct_end_offsets(
    correct: Callable[[Mapping[Any, int]], Awaitable[Mapping[Any, int]]],
) -> None:
    """Pass the end offsets Faust's consumer thread reads (``_highwaters``: how far table
    recovery reads a changelog) through ``correct``, outside transactions. Why: Tansu reports
    a wrong end offset (:mod:`stream.broker.tansu`)."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    original = thread_cls._highwaters

    async def _highwaters(self: Any, partitions: Sequence[Any]) -> Mapping[Any, int]:
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported  # type: ignore[no-any-return]
        return await correct(reported)

    thread_cls._highwaters = _highwaters


def on_worker_consumer(prepare: Callable[[Any], None]) -> None:
    """Hand every aiokafka consumer Faust's consumer thread creates
    (``_create_worker_consumer``) to ``prepare`` before it starts. Why: Faust offers no
    setting for what :mod:`stream.broker.tansu` changes."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    create = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        prepare(consumer)
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer


def set_fetch_max_wait(consumer: Any, wait_ms: int) -> None:
    """An aiokafka consumer's Fetch ``max_wait``, set before ``start()`` (which reads
    ``_fetch_max_wait_ms``). Why: Faust creates the consumer with its own setting."""
    consumer._fetch_max_wait_ms = wait_ms


def fetch_max_wait_ms(consumer: Any) -> int:
    """The Fetch ``max_wait`` an aiokafka consumer uses now (its fetcher's once started)."""
    fetcher = consumer._fetcher
    return int(consumer._fetch_max_wait_ms if fetcher is None else fetcher._fetch_max_wait_ms)


def choose_fetch_wait(consumer: Any, choose: Callable[[Any], int]) -> None:
    """Make a started aiokafka consumer's fetcher ask ``choose(assignment)`` for each Fetch's
    ``max_wait``. Replaces: the one fixed wait (``Fetcher._fetch_max_wait_ms``, read where
    ``_get_actions_per_node`` plans the requests). Why: :mod:`stream.broker.tansu`."""
    fetcher = consumer._fetcher
    plan = fetcher._get_actions_per_node

    def actions_with_wait(assignment: Any) -> Any:
        fetcher._fetch_max_wait_ms = choose(assignment)
        return plan(assignment)

    fetcher._get_actions_per_node = actions_with_wait


async def refresh_metadata(consumer: Any) -> None:
    """Ask the broker for fresh metadata now (``AIOKafkaConsumer._client``). Why: a consumer
    assigning partitions by hand otherwise waits for the next periodic refresh to see new
    topics."""
    await consumer._client.force_metadata_update()


def group_coordinator(consumer: Any) -> Any:
    """An aiokafka consumer's group coordinator (``_coordinator``), None before start."""
    return getattr(consumer, "_coordinator", None)


async def coordinator_request(coordinator: Any, request: Any) -> Any:
    """Send a request to the group's coordinator (``BaseCoordinator._send_req``). Why:
    aiokafka sends LeaveGroup only for a generation above 0, which Tansu's first is not."""
    return await coordinator._send_req(request)
