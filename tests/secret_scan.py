"""Safety rule 4 over the whole suite: no credential a test hands the daemon is ever in
plain text where a daemon writes.

Every credential the fixtures and tests give the daemon is ``remember``ed. When a test's
daemon folder is removed (``pd_env`` in conftest, ``sandbox`` in tests/support/hostile.py) every
file in its home (state database and its WAL, key file, logs and rotated logs, resume
notes) and every daemon stderr capture beside it is scanned for each remembered secret's
bytes first; a hit fails that test. The totals are printed at the end of the run
(``secret scan: ...``), so one ``make test`` says how much was scanned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MIN_LEN = 8  # shorter values ("x", "pw") could occur by chance in any database page


@dataclass
class Totals:
    folders: int = 0
    files: int = 0
    bytes: int = 0
    secrets: int = 0
    leaks: int = 0

    def add(self, other: dict[str, int]) -> None:
        for k, v in other.items():
            setattr(self, k, max(self.secrets, v) if k == "secrets" else getattr(self, k) + v)

    def line(self) -> str:
        return (f"secret scan: {self.folders} daemon folders, {self.files} files, "
                f"{self.bytes / 2**20:.1f} MiB scanned for {self.secrets} known secrets: {self.leaks} leaks")


KNOWN: set[bytes] = set()
TOTALS = Totals()


def remember(*values: str) -> None:
    """Secrets to look for: each value, and each long line of a multi-line one (a PEM key)."""
    for value in values:
        if len(value) >= MIN_LEN:
            KNOWN.add(value.encode())
        for line in value.splitlines():
            if len(line) >= 16 and "PRIVATE KEY" not in line:
                KNOWN.add(line.encode())


def _files(base: Path) -> list[Path]:
    home = [Path(d, f) for d, _, names in os.walk(base / "home") for f in names]
    return home + sorted(base.glob("stderr-*.log"))


def check(base: Path) -> list[str]:
    """Where a known secret stands in plain text under the daemon folder ``base``."""
    found = []
    TOTALS.folders += 1
    TOTALS.secrets = len(KNOWN)
    for path in _files(base):
        try:
            data = path.read_bytes()
        except OSError:  # a socket, or removed meanwhile
            continue
        TOTALS.files += 1
        TOTALS.bytes += len(data)
        found += [f"{needle[:6]!r}... in {path}" for needle in KNOWN if needle in data]
    TOTALS.leaks += len(found)
    return found
