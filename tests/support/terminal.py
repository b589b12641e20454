"""Running the CLI as a person does: a subprocess, or on a pseudo-terminal of 80 columns."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipedaemon_sdk import JobInfo, PipeClient

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[=>]")


def pd(*args: str, timeout: float = 120,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipedaemon", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def add_local(name: str, folder: Path, *options: str) -> None:
    out = pd("remote", "add", name, "--protocol", "local", "-o", f"remotepath={folder}", *options)
    assert out.returncode == 0, out.stderr


def slow_daemon(bps: int) -> None:
    """Make the daemon's transfers slow (until it restarts), so a test can act during one."""
    with PipeClient() as c:
        c.limits(bwlimit_bps=bps)


def running_jobs() -> list[JobInfo]:
    with PipeClient(auto_start=False) as c:
        return c.jobs(state="running")


def wait_for(pred: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Tty:
    """The CLI on a pseudo-terminal of ``cols`` columns; read its output as it comes."""

    args: list[str]
    cols: int = 80
    proc: subprocess.Popen[bytes] | None = None
    master: int = -1
    out: bytearray = field(default_factory=bytearray)

    def start(self) -> Tty:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, self.cols, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.proc = subprocess.Popen([sys.executable, "-m", "pipedaemon", *self.args], stdin=slave,
                                     stdout=slave, stderr=slave, start_new_session=True, env=env)
        os.close(slave)
        self.master = master
        return self

    def read_some(self, wait: float = 0.2) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.out += chunk
        return bool(chunk)

    def until(self, pattern: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while pattern not in self.text:
            if time.monotonic() > deadline or not self.read_some():
                raise AssertionError(f"{pattern!r} never shown; output:\n{self.text}")

    def sigint(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGINT)

    def finish(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.read_some():
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0.05)[0]:
                break
        os.close(self.master)
        return self.proc.wait(timeout=30)

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def screen_lines(self) -> list[str]:
        """Every line as drawn (split at CR and LF), escape sequences removed."""
        return [ANSI.sub("", part) for part in re.split(r"[\r\n]", self.text)]
