"""The private names of Faust, mode and aiokafka the worker relies on: all used in one module,
all present in the installed versions, and a worker that would lack one refuses to start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiokafka.consumer import fetcher

from stream import cli
from stream.worker import faust_internals

ROOT = Path(__file__).resolve().parents[3]


def test_every_relied_on_name_exists_in_the_installed_versions() -> None:
    assert faust_internals.missing() == []
    assert faust_internals.refusal() is None


def test_the_installed_versions_are_the_tested_ones() -> None:
    assert faust_internals.installed_versions() == faust_internals.TESTED
    pinned = (ROOT / "pyproject.toml").read_text()
    for package, version in faust_internals.TESTED.items():
        assert f'"{package}=={version}"' in pinned


def test_a_missing_method_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(fetcher.FetchResult, "_update_position")
    assert faust_internals.missing() == ["FetchResult._update_position"]
    line = faust_internals.refusal()
    assert line is not None and "\n" not in line
    assert "FetchResult._update_position" in line
    versions = faust_internals.installed_versions()
    assert f"faust-streaming {versions['faust-streaming']}" in line
    assert f"aiokafka {versions['aiokafka']}" in line


def test_an_attribute_set_on_instances_counts_only_if_assigned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Names set in ``__init__`` are not on the class: the check reads the class's code."""
    extra = (
        ("faust.transport.consumer:Consumer", "_acked"),
        ("faust.transport.consumer:Consumer", "_acked_by_a_later_version"),
        ("aiokafka.no_such_module:Thing", "_x"),
    )
    monkeypatch.setattr(faust_internals, "RELIED_ON", extra)
    assert faust_internals.missing() == ["Consumer._acked_by_a_later_version", "Thing._x"]


def test_hotspot_worker_refuses_to_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delattr(fetcher.FetchResult, "_update_position")
    monkeypatch.setenv("HOTSPOT_BROKER", "kafka://127.0.0.1:9")  # never reached
    assert cli.main(["worker"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("hotspot: ")
    assert "FetchResult._update_position" in err
    assert "Traceback" not in err


def _private_uses(code: str) -> list[str]:
    """``x._name`` in a line of code, unless ``x`` is a bare ``self`` or ``cls``."""
    found = []
    for match in re.finditer(r"\._[a-z]\w*", code):
        before = re.search(r"(\.?)(\w*)$", code[: match.start()])
        assert before is not None
        dotted, name = before.groups()
        if name in ("self", "cls") and not dotted:
            continue
        if name or code[: match.start()].endswith((")", "]")):
            found.append(match.group())
    return found


def test_private_uses_are_found() -> None:
    assert _private_uses("x = self.app.producer._ensure_producer()") == ["._ensure_producer"]
    assert _private_uses("super()._new_offset(tp)") == ["._new_offset"]
    assert _private_uses("self._held = []; cls._x") == []


def test_no_private_name_of_faust_or_aiokafka_is_used_elsewhere() -> None:
    """Outside faust_internals, ``x._name`` appears only on ``self``/``cls`` (the project's
    own attributes), and no ``getattr`` reaches for a private name."""
    found = []
    for path in sorted((ROOT / "stream").rglob("*.py")):
        if path.name == "faust_internals.py":
            continue
        in_docstring = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            quotes = code.count('"""')
            if in_docstring or quotes:
                in_docstring = in_docstring != (quotes % 2 == 1)
                continue
            if _private_uses(code) or re.search(r"(get|has|set)attr\([^)]*\"_[a-z]", code):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
