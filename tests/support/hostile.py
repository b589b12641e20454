"""Shared pieces of the hostile-input and load suites: a sandboxed daemon, a second client
that keeps pinging throughout, memory readings, and input counters for the reports.

The daemon gets its own PIPEDAEMON_HOME, socket and HOME (so a default filerepo lands
in the sandbox too): fuzzed requests that do things act on throwaway state only.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from pipedaemon_sdk import PipeClient
from tests import secret_scan
from tests.support.soak import SOAK, report
from tests.support.spine import Raw, Started, close_started, ping_ok, start_serve

# Methods no fuzzer sends with valid params: stopping the daemon ends every test at once, and a
# raw stream method takes the connection over (they get their own connection, see test_fuzz_params).
NEVER = {"daemon.shutdown"}
RAW = {"object.read", "object.write"}


def examples(default: int) -> int:
    """Examples per fuzz test: ``PD_FUZZ_SCALE`` multiplies them (the soak's default: 25)."""
    return max(1, int(default * float(os.environ.get("PD_FUZZ_SCALE", "25" if SOAK else "1"))))


class Counter:
    """Inputs sent per suite, printed, and added to the soak's report (tests/support/soak.py)."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.counts: dict[str, int] = {}

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self) -> None:
        print(f"\n{self.suite}: {self.total} inputs {self.counts}")
        report({"suite": "fuzz", "name": self.suite, "counts": self.counts})


class Pinger(threading.Thread):
    """A second client pinging in a loop: every ping must succeed while the others misbehave."""

    def __init__(self, sock: Path) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.ok = 0
        self.failures: list[str] = []
        self.stop_event = threading.Event()
        self._cond = threading.Condition()

    def run(self) -> None:
        with PipeClient(socket_path=self.sock, auto_start=False, request_timeout_s=60) as c:
            while not self.stop_event.is_set():
                try:
                    assert c.ping()["pong"] is True
                except Exception as exc:  # noqa: BLE001 - recorded, the test fails on it
                    self.failures.append(repr(exc))
                    return
                with self._cond:
                    self.ok += 1
                    self._cond.notify_all()
                time.sleep(0.005)

    def answered_since(self, mark: int, timeout: float = 60.0) -> None:
        """Wait until a ping sent after ``mark`` succeeded (liveness, not speed)."""
        with self._cond:
            self._cond.wait_for(lambda: self.ok > mark + 1 or bool(self.failures), timeout)
        assert not self.failures, self.failures
        assert self.ok > mark + 1, "the second client's pings stopped being answered"

    def check(self) -> None:
        self.answered_since(self.ok)

    def finish(self) -> int:
        self.stop_event.set()
        self.join(60)
        assert not self.failures, self.failures
        return self.ok


@dataclass
class Sandbox:
    """A daemon of its own, its pid, its pinger and where its files are."""

    base: Path
    st: Started
    pinger: Pinger
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sock(self) -> Path:
        return self.st.socket

    @property
    def home(self) -> Path:
        return self.base / "home"

    def log(self) -> str:
        path = self.home / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def assert_healthy(self) -> None:
        """Same process, still answering, and nothing crashed inside it."""
        assert ping_ok(self.sock) == self.st.pid
        log = self.log()
        assert "Traceback" not in log and "internal error" not in log, log[-4000:]


@contextlib.contextmanager
def sandbox(prefix: str, *args: str, env: dict[str, str] | None = None) -> Iterator[Sandbox]:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    (base / "user").mkdir()
    denv = dict(os.environ, PIPEDAEMON_HOME=str(base / "home"), HOME=str(base / "user"),
                PIPEDAEMON_SOCKET=str(base / "run" / "d.sock"), **(env or {}))
    st = start_serve(base / "run" / "d.sock", *args, env=denv)
    pinger = Pinger(st.socket)
    pinger.start()
    box = Sandbox(base, st, pinger)
    try:
        yield box
        pinger.finish()
        box.assert_healthy()
    finally:
        pinger.stop_event.set()
        close_started(st)
        leaks = secret_scan.check(base)
        shutil.rmtree(base, ignore_errors=True)
    assert not leaks, f"a secret is in plain text in the daemon's folder: {leaks}"


class Conn(Raw):
    """A raw client that connects blocking: a crowd of connects waits for the daemon's accept
    loop (a socket with a timeout would get EAGAIN from a momentarily full listen queue)."""

    def __init__(self, sock: Path, timeout: float = 60.0) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(str(sock))
        self.s.settimeout(timeout)
        self.buf = b""


def rss_kib(pid: int) -> int:
    """Resident memory now (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def raise_nofile(want: int) -> int:
    """Lift this process's open-files limit towards ``want``; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def decode(line: bytes) -> Any:
    return msgspec.json.decode(line)


def exchange(raw: Raw, data: bytes, sentinel: str, expect: list[Any] = ()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    """Send ``data`` then a ping with id ``sentinel``; the answers to ``data``.

    Reads until the ping's answer and one answer per id in ``expect`` came back (requests
    run concurrently, so an answer may come after the ping's).
    """
    raw.send(data + b'{"jsonrpc":"2.0","id":"' + sentinel.encode() + b'","method":"daemon.ping"}\n')
    out: list[dict[str, Any]] = []
    missing = list(expect)
    seen_sentinel = False
    while not seen_sentinel or missing:
        line = raw.line()
        assert line, f"the daemon closed the connection after {data[:200]!r}"
        msg = decode(line)
        assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0", msg
        if msg.get("id") == sentinel and not seen_sentinel:
            assert msg["result"]["pong"] is True
            seen_sentinel = True
            continue
        out.append(msg)
        if msg.get("id") in missing:
            missing.remove(msg.get("id"))
    return out
