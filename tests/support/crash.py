"""Shared pieces of the kill -9 tests: S3 traffic accounting, the state db's health, restarts.

"Bytes sent twice" is counted twice over. On the wire, by a pass-through proxy (every
byte beyond the files' own, less an allowance for protocol overhead). And at moto,
whose access log lists every part upload (``PUT /bucket/key?partNumber=N``), every
whole-object PUT and every GET of an object: a part or object stored twice is known
exactly; GETs are only counted (downloads fetch one range per stream and a resumed
range starts where its recorded progress stopped, so a GET's size is not in the log).
"""

from __future__ import annotations

import collections
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pipedaemon_sdk import DaemonError, PipeClient

MiB = 1 << 20
CHUNK = 8 * MiB  # the engine's chunk (part) size for these files (its default)
PARALLEL_THRESHOLD = 16 * MiB  # smaller files move as one stream and restart whole
STREAMS = 8  # the daemon's streams per remote (PIPEDAEMON_REMOTE_STREAMS default): chunks in flight


def in_flight_bound(largest_single: int = CHUNK) -> int:
    """The most one kill can make us send again: every stream's chunk (or whole small file)."""
    return STREAMS * max(CHUNK, largest_single)


@dataclass
class Resent:
    """Part uploads and PUTs beyond one per part or object (and their bytes); GETs seen."""

    up_requests: int = 0
    up_bytes: int = 0
    gets: int = 0  # GETs of the pulled objects (at least one per object)
    objects: int = 0


def resent(entries: list[tuple[str, str]], bucket: str, pushed: dict[str, int], pulled: dict[str, int]
           ) -> Resent:
    """What moto saw for the objects ``pushed`` and ``pulled`` (key -> size) of ``bucket``."""
    parts: collections.Counter[tuple[str, int]] = collections.Counter()
    puts: collections.Counter[str] = collections.Counter()
    gets: collections.Counter[str] = collections.Counter()
    for method, target in entries:
        url = urlsplit(target)
        b, _, key = unquote(url.path).lstrip("/").partition("/")
        if b != bucket or not key:
            continue
        q = parse_qs(url.query)
        if method == "PUT" and "partNumber" in q:
            parts[(key, int(q["partNumber"][0]))] += 1
        elif method == "PUT" and not q:
            puts[key] += 1
        elif method == "GET" and not q:
            gets[key] += 1
    out = Resent(gets=sum(gets[k] for k in pulled), objects=len(pulled))
    for (key, number), n in parts.items():
        size = pushed.get(key, 0)
        out.up_requests += n - 1
        out.up_bytes += (n - 1) * min(CHUNK, max(0, size - (number - 1) * CHUNK))
    for key, n in puts.items():
        out.up_requests += max(0, n - 1)
        out.up_bytes += max(0, n - 1) * pushed.get(key, 0)
    return out


def integrity(home: Path) -> str:
    """SQLite's verdict on the daemon's state database (``ok`` when healthy)."""
    con = sqlite3.connect(home / "state.db", timeout=30)
    try:
        return "; ".join(r[0] for r in con.execute("PRAGMA integrity_check").fetchall())
    finally:
        con.close()


def leftover_resume_rows(home: Path) -> int:
    """Resume notes still recorded (finished jobs must leave none)."""
    con = sqlite3.connect(home / "state.db", timeout=30)
    try:
        return sum(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                   for t in ("transfer_resume", "transfer_done"))
    finally:
        con.close()


def wait_running_progress(client: PipeClient, job_ids: list[str], fraction: float,
                          timeout: float = 300) -> bool:
    """Block until one of the jobs, still running, has moved ``fraction`` of what this daemon
    has to move for it; False when all of them ended first (nothing left to kill)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = 0
        for jid in job_ids:
            info = client.job(jid).refresh()
            if info.state in ("queued", "running"):
                live += 1
                p = info.progress
                moved = p is not None and p.bytes_total and p.bytes_done >= fraction * p.bytes_total
                if info.state == "running" and moved:
                    return True
        if not live:
            return False
        time.sleep(0.02)
    raise AssertionError(f"jobs {job_ids} made no progress in {timeout} s")


def final_state(job_id: str, timeout: float = 600) -> tuple[str, Any]:
    """Wait (on a fresh, auto-starting client) until the job ends: its state and error."""
    with PipeClient(request_timeout_s=120) as client:
        try:
            info = client.job(job_id).wait(timeout=timeout)
        except DaemonError as err:
            return "failed", f"{err.code} {err.message}"
        return info.state, None


def merge_counts(into: dict[str, Any], add: dict[str, Any]) -> None:
    for k, v in add.items():
        into[k] = into.get(k, 0) + v
