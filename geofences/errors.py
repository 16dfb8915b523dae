"""Every way the domain core refuses input, under one root error."""

from __future__ import annotations


class HotspotError(Exception):
    """Root of the domain's errors."""


class HotSpotFileError(HotspotError):
    """A hot spot file was refused (docs/interface.md, The hot spot file). ``problems`` has one
    line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class InvalidPing(HotspotError):
    """A ping value does not match docs/interface.md, Messages: Ping; the message is the
    one-line reason."""


class InvalidAssignment(HotspotError):
    """An assignment value (a window added at run time) is malformed."""


class InputFileError(HotspotError):
    """An evaluation input (ledger, crimes, harm weights, costs) was refused. ``problems`` has
    one line per bad row, ``FILE:LINE: reason``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class InvalidPosition(HotspotError):
    """A unit position record (docs/architecture.md, Dispatch) is malformed; the message is the
    one-line reason."""
