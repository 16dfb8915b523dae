"""Logs an operator can read: plain or JSON lines, and a broker outage told in two lines.

When the broker goes away, aiokafka and Faust log every failed connection, metadata refresh,
fetch, heartbeat and produce: about 150 ERROR lines a second, which bury the one line that
matters and fill a disk overnight. :class:`BrokerLink` turns that into one WARNING when the
broker is lost, a reminder at most once a minute while it stays away, and one WARNING when it
is back (:meth:`BrokerLink.back`, called by whoever sees it answer again), saying for how long.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: the client libraries whose connection trouble is summarised
CLIENT_LOGGERS = ("aiokafka", "faust", "mode")
#: what their records say when the broker cannot be reached
_TROUBLE = re.compile(
    r"Unable connect to node|Unable to update metadata|Unable to request metadata"
    r"|NodeNotReadyError|KafkaConnectionError|Connect call failed|Connection refused"
    r"|Group Coordinator Request failed|Coordinator .*dead|Heartbeat failed"
    r"|Failed fetch messages|Got error produce response|RequestTimedOutError"
    r"|Error sending .*Request|connection .*(lost|reset)|ConnectionResetError",
    re.IGNORECASE,
)

log = logging.getLogger("hotspot")


def is_connection_trouble(record: logging.LogRecord) -> bool:
    """Whether a client library's record says the broker could not be reached."""
    if not record.name.startswith(CLIENT_LOGGERS) or record.levelno < logging.WARNING:
        return False
    if _TROUBLE.search(record.getMessage()):
        return True
    exc = record.exc_info[1] if record.exc_info else None
    return exc is not None and bool(_TROUBLE.search(f"{type(exc).__name__}: {exc}"))


class BrokerLink(logging.Filter):
    """A log filter that summarises a broker outage (see the module docstring).

    Attached to the handlers, it sees every record. ``clock`` is injectable for tests."""

    def __init__(
        self, remind_every_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.remind_every_s = remind_every_s
        self.clock = clock
        self.lost_since: float | None = None
        self.hidden = 0
        self._reminded_at = 0.0

    @property
    def lost(self) -> bool:
        return self.lost_since is not None

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_connection_trouble(record):
            return True
        now = self.clock()
        if self.lost_since is None:
            self.lost_since = self._reminded_at = now
            self.hidden = 0
            _rewrite(
                record,
                "lost the broker (%s); waiting for it, client errors are summarised until it is back",
                _reason(record),
            )
            return True
        self.hidden += 1
        if now - self._reminded_at >= self.remind_every_s:
            self._reminded_at = now
            _rewrite(
                record,
                "the broker is still unreachable after %.0f s (%d client errors since)",
                now - self.lost_since,
                self.hidden,
            )
            return True
        return False

    def back(self) -> None:
        """The broker answered again: one line saying how long it was away."""
        if self.lost_since is None:
            return
        away = self.clock() - self.lost_since
        hidden, self.lost_since = self.hidden, None
        log.warning("the broker is back after %.0f s (%d client errors hidden)", away, hidden)


def _reason(record: logging.LogRecord) -> str:
    exc = record.exc_info[1] if record.exc_info else None
    text = f"{type(exc).__name__}: {exc}" if exc is not None else record.getMessage()
    return text.splitlines()[0][:200] if text else "no answer"


def _rewrite(record: logging.LogRecord, msg: str, *args: Any) -> None:
    record.name = "hotspot"
    record.levelno, record.levelname = logging.WARNING, "WARNING"
    record.msg, record.args = msg, args
    record.exc_info = record.exc_text = None
    record.stack_info = None


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (RFC 3339 UTC), ``level``, ``logger``, ``message``, and
    ``error`` with the exception's type and text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
        return orjson.dumps(line).decode()


#: the process's broker link: the worker tells it when the broker answers again
broker_link = BrokerLink()


def handler(fmt: str = "text") -> logging.Handler:
    """A stderr handler in ``fmt`` (``text`` or ``json``) with :data:`broker_link` attached."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    out.addFilter(broker_link)
    return out


def configure(level: str | int = "warning", fmt: str = "text") -> None:
    """Route every log record to one stderr handler (see :func:`handler`)."""
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(handler(fmt))
    root.setLevel(level.upper() if isinstance(level, str) else level)


@contextlib.contextmanager
def quiet_clients() -> Iterator[None]:
    """Silence the client libraries' own logging for a while: where the caller says in one
    line what went wrong (reaching the broker at start-up)."""
    loggers = [logging.getLogger(name) for name in CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def dict_config(level: str | int = "warning", fmt: str = "text") -> dict[str, Any]:
    """The same as :func:`configure`, as a ``logging.config.dictConfig`` (Faust's worker
    replaces the root logger's handlers at start-up with the configuration it is given)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"default": {"()": "stream.logs.handler", "fmt": fmt}},
        "root": {
            "level": level.upper() if isinstance(level, str) else level,
            "handlers": ["default"],
        },
    }
