"""How a setting is read: from its command-line flag if given, else its environment variable,
else its default; and the one error a setting that cannot be used raises.

Shared by the worker's settings (stream/worker/settings.py) and the Kafka security settings
(stream/kafka.py) that every command reaching Kafka reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingError(ValueError):
    """A setting that cannot be used; ``name`` is the option or variable it came from."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class Option:
    """One setting: its environment variable, its default (text, as the variable would give
    it; None: unset), how it is parsed, and its command-line flag if it has one."""

    env: str
    default: str | None
    parse: Callable[[str], Any]
    flag: str | None = None
    help: str | None = None

    @property
    def dest(self) -> str | None:
        """The attribute argparse stores the flag's value under."""
        return None if self.flag is None else self.flag.lstrip("-").replace("-", "_")


def read(option: Option, given: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    """An option's value: from its flag if given, else its variable, else its default."""
    raw = given.get(option.dest) if option.dest else None
    if raw is not None:
        name = option.flag or option.env
    elif option.env in environ:
        name, raw = option.env, environ[option.env]
    elif option.default is None:
        return None
    else:
        name, raw = option.env, option.default
    try:
        return option.parse(raw)
    except ValueError as exc:
        raise SettingError(name, str(exc)) from None


def given_name(option: Option, given: Mapping[str, Any]) -> str:
    """The name a setting's value came by: its flag when given, else its variable."""
    if option.dest and given.get(option.dest) is not None and option.flag:
        return option.flag
    return option.env
