"""The shared daemon's audit log: one JSON line per request, never a secret.

``$PIPEDAEMON_HOME/audit.log`` (0600, the service account's): time, user, method, the
pipe or remote named, the key, bytes streamed and the outcome. Params are never
written whole (settings carry credentials): only these named fields.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("pipedaemon.audit")


class Audit:
    def __init__(self, path: Path) -> None:
        self.path = path

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
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, msgspec.json.encode(line) + b"\n")
            finally:
                os.close(fd)
        except OSError as exc:  # a full disk must not fail the request; the daemon log says so
            log.warning("cannot write the audit log %s: %s", self.path, exc)
