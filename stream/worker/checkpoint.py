"""The checkpoint: how a crash loses nothing and repeats nothing.

Every ``state_flush_s``, before a rebalance hands partitions over, and at shutdown:

1. once the broker has acknowledged the outputs of the records processed (they went to the
   producer as they were made),
2. the unit states and coverage ledgers those records changed are written to their tables
   and changelogs;
3. once the broker has acknowledged every record sent since the previous checkpoint,
4. the records processed before this checkpoint are acked, for Faust to commit.

A crash before (4) replays those records from the last commit, to the same states, event ids
and alerts; a changelog is never ahead of the outputs (1), so a record read again never finds
its work recorded but not delivered. A delivery that fails stops the commit and raises
:class:`DeliveryFailed`; the worker stops with it.

The presence loop only takes the checkpoint: the batches it processed and a snapshot of the
unit states they changed (states are replaced, never changed in place, so the snapshot is the
states as of those batches however the stage goes on). Everything else goes on in a task of
its own, so the live path does not wait for encoding, writing or the broker's answers: the
unit states are encoded and sent in slices with the event loop's other work in between, then
the coverage ledgers (under :attr:`Checkpoint.lock`, which the coverage agent holds around each
batch and the live clock's tick around its decisions, so they are written exactly as the
coverage records acked with them left them), then steps 3 and 4. Checkpoints write in the order they were taken and commit in that order; a
hand-over or shutdown waits for all of them (:meth:`Checkpoint.run` with ``wait``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stream.records import Outgoing
from stream.worker.errors import DeliveryFailed
from stream.worker.intake import Batch, ack, hold, hold_messages, release
from stream.worker.outbox import Outbox

#: table writes encoded and handed to the producer at a time: a slice's keys, values and
#: messages are freed before the next is made, so a large flush (a replay) does not leave the
#: interpreter holding many small blocks
FLUSH_SLICE = 5_000


class Writer(Protocol):
    """A stage whose changed entries a checkpoint writes (the presence and coverage stages)."""

    @property
    def unwritten(self) -> Any: ...

    def take_writes(self, most: int | None = None) -> Mapping[bytes, tuple[int, bytes | None]]: ...


class SnapshotWriter(Writer, Protocol):
    """A stage whose changed entries can be taken at once and encoded later."""

    def take_snapshot(self) -> Sequence[Any]: ...

    def encode_writes(
        self, snapshot: Sequence[Any]
    ) -> Mapping[bytes, tuple[int, bytes | None]]: ...


@dataclass(frozen=True)
class Changelog:
    """A stage and the table its changes are written to. With ``keep`` False the table keeps
    nothing in memory (the stage holds the state; the changelog gets it). With ``snapshot``
    the stage is a :class:`SnapshotWriter`: its changes are taken when the checkpoint is, and
    encoded while the worker goes on; otherwise under the checkpoint's lock."""

    stage: Writer
    table: Any
    keep: bool
    snapshot: bool = False


def table_writes(
    table: Any, writes: Iterable[tuple[bytes, tuple[int, bytes | None]]], keep: bool = True
) -> list[Outgoing]:
    """Write table entries; returns their changelog messages, each with an explicit
    partition (the key's own), for the caller to send.

    A value of None deletes the key (a tombstone in the changelog). Faust's ``table[key] =
    value`` takes the partition from the current event, which a batch or a timer does not
    have; each stage knows its keys' partitions, so we say it."""
    data = table.data
    changelog = table.changelog_topic.get_topic_name()
    messages: list[Outgoing] = []
    for key, (partition, value) in writes:
        if value is None or not keep:
            data.pop(key, None)
        else:
            data[key] = value
        messages.append((changelog, key, value, partition))
    return messages


async def confirm(deliveries: Sequence[asyncio.Future[Any]]) -> None:
    """Wait until every delivery is done; raise :class:`DeliveryFailed` if one failed."""
    if deliveries:
        await asyncio.wait(deliveries)
    for delivery in deliveries:
        if delivery.cancelled():
            raise DeliveryFailed("a record batch's delivery was cancelled")
        exc = delivery.exception()
        if exc is not None:
            raise DeliveryFailed(f"the broker did not take a record batch: {exc!r}") from exc


class Checkpoint:
    """The records processed since the last checkpoint, and what commits them."""

    def __init__(
        self,
        app: Any,
        outbox: Outbox,
        changelogs: Sequence[Changelog],
        lock: asyncio.Lock,
        guard: asyncio.Lock | None = None,
    ) -> None:
        self.app = app
        self.outbox = outbox
        self.changelogs = changelogs
        #: held by a checkpoint's steps 1-2, and by the coverage agent around each batch: what
        #: a checkpoint writes is then exactly what the records it acks changed
        self.lock = lock
        #: held by whatever changes snapshot stages' states outside the presence loop and then
        #: publishes what it made (the live clock's tick): no snapshot is taken in between
        self.guard = guard or asyncio.Lock()
        self.taken_at = time.monotonic()
        self._batches: list[Batch] = []
        self._messages: list[Any] = []
        self._committing: asyncio.Future[None] | None = None
        #: the latest checkpoint's writing (steps 1-2): the next one writes after it
        self._writing: asyncio.Future[Any] | None = None

    def hold(self, batches: Sequence[Batch]) -> None:
        """Processed pings batches, to be acked at the next checkpoint."""
        hold(self.app.consumer, batches)
        self._batches.extend(batches)

    def hold_messages(self, messages: Sequence[Any]) -> None:
        """Processed Faust messages (the coverage agent's), to be acked at the next one."""
        hold_messages(self.app.consumer, messages)
        self._messages.extend(messages)

    def forget_messages(self) -> None:
        """After a rebalance: held messages are read again from the committed offsets."""
        self._messages.clear()

    def due(self, interval_s: float) -> bool:
        return time.monotonic() - self.taken_at >= interval_s

    def check(self) -> None:
        """Raise the failure of a checkpoint that went on in the background, if one failed."""
        committing = self._committing
        if committing is not None and committing.done():
            committing.result()

    async def run(self, wait: bool = False) -> None:
        """Take a checkpoint; with ``wait``, return once it and every earlier one committed.
        Without ``wait``, while :attr:`guard` is held, none is taken (it stays due); with it,
        the checkpoint is taken as soon as the guard is free."""
        self.check()
        if self.guard.locked():
            if not wait:
                return
            async with self.guard:
                self._take()
        else:
            self._take()
        if wait:
            assert self._committing is not None
            await self._committing

    def _take(self) -> None:
        """The checkpoint's part in the caller's turn: the batches, a snapshot of the states
        they changed and the outputs sent so far; the rest goes on in tasks of its own."""
        self.taken_at = time.monotonic()
        outputs = self.outbox.take_deliveries()
        batches, self._batches = self._batches, []
        snapshots = [
            (changelog, changelog.stage.take_snapshot())  # type: ignore[attr-defined]
            for changelog in self.changelogs
            if changelog.snapshot
        ]
        self._writing = asyncio.ensure_future(self._write(self._writing, outputs, snapshots))
        self._committing = asyncio.ensure_future(
            self._commit(self._committing, self._writing, batches)
        )

    async def _write(
        self,
        previous: asyncio.Future[Any] | None,
        outputs: Sequence[asyncio.Future[Any]],
        snapshots: Sequence[tuple[Changelog, Any]],
    ) -> list[Any]:
        """Steps 1-2: the snapshots, then (under the lock) the other stages' changes; returns
        the coverage messages acked with them and every delivery to wait for. A state is
        written only once what made it is delivered (``outputs``; the ledgers' alerts under
        the lock): a changelog ahead of the outputs would, after a crash, make the records read
        again look done, and their events would never go out."""
        if previous is not None:
            await previous
        await confirm(outputs)
        for changelog, snapshot in snapshots:
            stage = changelog.stage
            for start in range(0, len(snapshot), FLUSH_SLICE):
                writes = stage.encode_writes(snapshot[start : start + FLUSH_SLICE])  # type: ignore[attr-defined]
                await self.outbox.send(
                    table_writes(changelog.table, writes.items(), changelog.keep)
                )
                await asyncio.sleep(0)
        await confirm(self.outbox.take_deliveries())
        async with self.lock:
            messages, self._messages = self._messages, []
            await confirm(self.outbox.take_deliveries())  # the alerts of the ledgers written
            for changelog in self.changelogs:
                if changelog.snapshot:
                    continue
                stage = changelog.stage
                while stage.unwritten:
                    writes = stage.take_writes(FLUSH_SLICE)
                    await self.outbox.send(
                        table_writes(changelog.table, writes.items(), changelog.keep)
                    )
            return [messages, self.outbox.take_deliveries()]

    async def _commit(
        self,
        previous: asyncio.Future[None] | None,
        writing: asyncio.Future[Any],
        batches: list[Batch],
    ) -> None:
        """Steps 3-4, after the previous checkpoint's."""
        messages, deliveries = await writing
        if previous is not None:
            await previous
        await confirm(deliveries)
        consumer = self.app.consumer
        for batch in batches:
            ack(consumer, batch)
        release(consumer, messages)
