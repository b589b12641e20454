"""The shared daemon's audit log is size-bounded: a line that would take it past max_bytes
first moves it to audit.log.1 (N-1 and N: appended; N+1: rotated), keeping `backups` files."""

from __future__ import annotations

import json
import stat
import types
from pathlib import Path

import pytest

from pipedaemon import audit as audit_mod
from pipedaemon.audit import BACKUPS, MAX_BYTES, Audit


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line the same length: the time field is written with as many digits as it has."""
    monkeypatch.setattr(audit_mod, "time", types.SimpleNamespace(time=lambda: 1_796_284_894.125))


def line_of(audit: Audit, key: str) -> int:
    """The length of the line ``record`` writes for ``key`` (written once to a scratch log)."""
    scratch = Audit(audit.path.with_name("scratch.log"))
    scratch.record("bob", "object.read", ("pipe", "default", "p"), key, 0, "ok")
    size = scratch.path.stat().st_size
    scratch.path.unlink()
    return size


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_rotation_at_max_bytes(tmp_path: Path, delta: int) -> None:
    path = tmp_path / "audit.log"
    probe = Audit(path)
    one = line_of(probe, "k0")  # every key below is two characters: lines of one length
    audit = Audit(path, max_bytes=3 * one + delta, backups=2)
    for i in range(3):
        audit.record("bob", "object.read", ("pipe", "default", "p"), f"k{i}", 0, "ok")
    rotated = path.with_name("audit.log.1")
    if delta >= 0:  # three lines fit (N: exactly)
        assert path.stat().st_size == 3 * one and not rotated.exists()
    else:  # N-1: the third line would pass the bound, so the first two moved to .1
        assert [json.loads(x)["key"] for x in rotated.read_text().splitlines()] == ["k0", "k1"]
        assert [json.loads(x)["key"] for x in path.read_text().splitlines()] == ["k2"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_old_files_kept_up_to_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    one = line_of(Audit(path), "k0")
    audit = Audit(path, max_bytes=one, backups=2)  # one line per file
    for i in range(5):
        audit.record("bob", "object.read", ("pipe", "default", "p"), f"k{i}", 0, "ok")
    keys = {p.name: json.loads(p.read_text())["key"] for p in tmp_path.iterdir()}
    assert keys == {"audit.log": "k4", "audit.log.1": "k3", "audit.log.2": "k2"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.iterdir())


def test_defaults_match_the_daemon_log() -> None:
    assert (MAX_BYTES, BACKUPS) == (10 * 2**20, 3)  # pipedaemon/log.py's RotatingFileHandler
