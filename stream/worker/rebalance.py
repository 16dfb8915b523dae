"""What this worker owns, and what it does when a rebalance changes that.

Before a rebalance takes partitions away, the worker checkpoints (the app's hand-over hook,
stream/worker/checkpoint.py). When it completes, the presence stage adopts the unit states
Faust recovered from the changelog, the coverage stage reads its ledgers again, the clock is
told, and the worker is ready again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from faust.types import TP

from stream.worker.faust_internals import forget_key_partitions
from stream.worker.gc_tuning import settle_garbage_collector
from stream.worker.topics import TopicPlan

if TYPE_CHECKING:
    from stream.worker.checkpoint import Checkpoint
    from stream.worker.clock import Clock
    from stream.worker.coverage_stage import CoverageStage
    from stream.worker.presence_stage import PresenceStage

log = logging.getLogger("hotspot")


class Ownership:
    """The partitions Faust's assignor gives this worker (active ones, not standbys)."""

    def __init__(self, app: Any, plan: TopicPlan) -> None:
        self.app = app
        self.plan = plan

    def _partitions(self, topics: set[str]) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in topics}

    def ping_tps(self) -> list[TP]:
        """The pings topics' partitions (the pings and the re-keyed pings)."""
        names = set(self.plan.ping_topics)
        return [tp for tp in self.app.assignor.assigned_actives() if tp.topic in names]

    def ping_partitions(self) -> set[int]:
        """The partition numbers of the units whose states this worker holds."""
        return self._partitions(set(self.plan.ping_topics))

    def coverage_partitions(self) -> set[int]:
        """The partitions of the visit updates (and so the hot spots) this worker owns."""
        return self._partitions({self.plan.visit_updates})


class Rebalancing:
    """The worker's side of a rebalance; :attr:`ready` while assigned and restored."""

    def __init__(
        self,
        app: Any,
        plan: TopicPlan,
        ownership: Ownership,
        stage: PresenceStage,
        table: Any,
        coverage: CoverageStage,
        checkpoint: Checkpoint,
        clock: Clock,
    ) -> None:
        self.app = app
        self.plan = plan
        self.ownership = ownership
        self.stage = stage
        self.table = table
        self.coverage = coverage
        self.checkpoint = checkpoint
        self.clock = clock
        self.ready = False
        app.on_partitions_revoked.connect(self.revoked)
        app.on_rebalance_complete.connect(self.completed)

    async def revoked(self, app: Any, revoked: set[TP], **_: Any) -> None:
        self.ready = False
        self.clock.revoked()

    def restore_presence(self, owned: set[int]) -> int:
        """The presence stage after a rebalance: the states of partitions it no longer owns
        dropped, and every state Faust recovered from the changelog adopted (a partition new
        here is read from its beginning, so all of its units; one kept is read on from where
        recovery last stopped, so only states written since, which the stage may hold newer:
        each unit is then as it was last written, as after a restart). The states the stage
        adopted leave the table's memory (the stage holds them); returns how many were
        adopted."""
        data = self.table.data
        for unit_id in self.stage.forget_partitions(set(range(self.plan.partitions)) - owned):
            data.pop(unit_id.encode(), None)
        self.stage.reset_watermark()
        recovered = [(key, raw) for key, raw in data.items() if raw]
        restored = self.stage.restore(recovered, owned)
        adopted = [key for key, _ in recovered if key.decode() in self.stage.states]
        for key in adopted:
            del data[key]
        forget_key_partitions(data, adopted)
        return restored

    async def completed(self, app: Any, **_: Any) -> None:
        # Faust (0.15.3, Recovery.on_recovery_completed) sends this signal, then resumes the
        # stream partitions and only then seeks them to their committed offsets, with the
        # flow still running since changelog recovery. Records fetched from a newly assigned
        # partition's old position would be processed meanwhile and committed, moving the
        # group's offset back and leaving a hole in the acked offsets after the seek
        # (tests/stream/worker/test_scale_out.py). Stop the flow here: Faust resumes it right
        # after the seek, and a fetch that returns while it is stopped seeks back itself.
        app.consumer.stop_flow()
        owned = self.ownership.ping_partitions()
        restored = self.restore_presence(owned)
        # Ledgers are read again from the table, as of the hand-over's checkpoint; coverage
        # records processed since are not acked, and are read again from the committed offsets.
        self.coverage.forget()
        self.checkpoint.forget_messages()
        log.info("presence: %d unit states restored for partitions %s", restored, sorted(owned))
        await self.clock.assigned()
        settle_garbage_collector()
        self.ready = True
