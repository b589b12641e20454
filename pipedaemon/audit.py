"""The shared daemon's audit log: one JSON line per request, never a secret.

``$PIPEDAEMON_HOME/audit.log`` (0600, the service account's): time, user, method, the
pipe or remote named, the key, bytes streamed and the outcome. Params are never
written whole (settings carry credentials): only these named fields. Size-bounded like the
daemon log: a line that would take the file past ``max_bytes`` (10 MiB) first moves it to
``audit.log.1`` (``.1`` to ``.2``...), keeping ``backups`` (3) old files.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("pipedaemon.audit")


MAX_BYTES = 10 * 2**20
BACKUPS = 3


class Audit:
    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups

    def _rotate(self) -> None:
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()

    def _append(self, data: bytes) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def record(self, user: str, method: str, target: tuple[str, str, str] | None, key: Any,
               nbytes: int, outcome: str) -> None:
        line: dict[str, Any] = {"time": round(time.time(), 3), "user": user, "method": method}
        if target is not None:
            kind, profile, name = target
            line.update({"profile": profile, kind: name})
        if isinstance(key, str):
            line["key"] = key
        elif isinstance(key, list):
            line["keys"] = len(key)
        line.update({"bytes": nbytes, "outcome": outcome})
        try:
            self._append(msgspec.json.encode(line) + b"\n")
        except OSError as exc:  # a full disk must not fail the request; the daemon log says so
            log.warning("cannot write the audit log %s: %s", self.path, exc)
