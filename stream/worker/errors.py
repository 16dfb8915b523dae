"""Failures that stop the worker: it exits non-zero and, restarted, replays from its last
commit."""

from __future__ import annotations


class DeliveryFailed(Exception):
    """A record the worker sent was not acknowledged by the broker, so the records that
    produced it must not be committed."""
