"""The JSON Schemas of every message and the AsyncAPI document of the topics, as shipped files.

The files next to this module are the published form of docs/interface.md sections 4 and 5:
``<name>.schema.json`` (JSON Schema draft 2020-12) per message and ``asyncapi.yaml`` (AsyncAPI
3.0) for the topics, whose payloads refer to the schema files by relative path. This module
only finds and reads them (no validation: that needs a JSON Schema library, which the
processor does not depend on). Names are the kebab-case ones (``dwell-event``); :func:`resolve`
also takes the message names of the docs (``DwellEvent``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

#: the message schemas, in the order of docs/interface.md section 5, by name -> message title
MESSAGES: dict[str, str] = {
    "ping": "Ping",
    "assignment": "Assignment",
    "geofence-event": "GeofenceEvent",
    "dwell-event": "DwellEvent",
    "coverage-alert": "CoverageAlert",
    "dead-letter": "DeadLetter",
    "dispatch-suggestion": "DispatchSuggestion",
}
ASYNCAPI = "asyncapi"
#: every name :func:`text` takes
NAMES: tuple[str, ...] = (*MESSAGES, ASYNCAPI)


def _folded(name: str) -> str:
    return name.replace("-", "").replace("_", "").lower()


_BY_FOLDED = {_folded(name): name for name in NAMES}


def resolve(name: str) -> str | None:
    """The canonical name for ``name`` (``DwellEvent``, ``dwell_event`` and ``dwell-event`` all
    give ``dwell-event``; ``AsyncAPI`` gives ``asyncapi``), or ``None`` when it names nothing."""
    return _BY_FOLDED.get(_folded(name))


def filename(name: str) -> str:
    """The file of a canonical name: ``ping.schema.json``, ``asyncapi.yaml``."""
    return "asyncapi.yaml" if name == ASYNCAPI else f"{name}.schema.json"


def directory() -> Path:
    """The directory holding the files, for tools that read them (the AsyncAPI document refers
    to the schemas by relative path)."""
    return Path(str(resources.files(__name__)))


def text(name: str) -> str:
    """The file of a canonical name, as shipped. Raises ``KeyError`` for an unknown name."""
    if name not in NAMES:
        raise KeyError(name)
    return (resources.files(__name__) / filename(name)).read_text(encoding="utf-8")


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a message, by canonical name (not ``asyncapi``)."""
    if name not in MESSAGES:
        raise KeyError(name)
    return dict(json.loads(text(name)))


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every message schema by canonical name, in the order of :data:`MESSAGES`."""
    return {name: schema(name) for name in MESSAGES}
