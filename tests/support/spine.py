"""Shared pieces of the spine tests: start daemons the way users do, find and stop them.

Every daemon a test starts carries the test's socket path on its command line, so
the autouse ``reaper`` fixture (tests/conftest.py) can find each one in /proc (whoever started it: the
SDK's auto-start, ``pipedaemon serve``, a socket-activation wrapper) and kill it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipedaemon_sdk import DaemonConnectionError, PipeClient

PY = sys.executable
# Socket activation as systemd does it: the listening socket on fd 3, LISTEN_PID our own pid.
ACTIVATE = ("import os, sys\n"
            "fd = int(os.environ.pop('PD_TEST_LISTEN_FD'))\n"
            "if fd != 3:\n    os.dup2(fd, 3); os.close(fd)\n"
            "os.environ['LISTEN_FDS'] = '1'\n"
            "os.environ['LISTEN_PID'] = str(os.getpid())\n"
            "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n")


def pd_cmd(*args: str) -> list[str]:
    return [PY, "-m", "pipedaemon", *args]


def daemon_pids(sock: Path) -> list[int]:
    """Live (non-zombie) daemon processes serving ``sock``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pipedaemon" in argv and b"serve" in argv and str(sock).encode() in argv:
            if alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    """Any thread of ``pid`` still running (the leader turns zombie before its other threads)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still alive after {timeout} s")
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child: reap it
        time.sleep(0.02)


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)


def wait_refused(sock: Path, timeout: float = 30.0) -> None:
    """Wait until nothing listens on ``sock`` any more. A killed daemon's listening socket is
    released by the kernel a moment after its threads end; under load that moment can be seen."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(sock))
            except (ConnectionRefusedError, FileNotFoundError):
                return
        if time.monotonic() > deadline:
            try:
                held = subprocess.run(["ss", "-xlp"], capture_output=True, text=True).stdout
            except OSError as exc:
                held = f"(ss: {exc})"
            raise AssertionError(f"{sock} still accepts after {timeout} s; listeners:\n"
                                 + "\n".join(line for line in held.splitlines() if str(sock) in line))
        time.sleep(0.02)


def wait_socket(sock: Path, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> int:
    """Wait until a daemon answers on ``sock``; its pid."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with PipeClient(socket_path=sock, auto_start=False) as c:
                return c.status().pid
        except DaemonConnectionError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"daemon exited with {proc.returncode} before answering") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Started:
    mode: str
    socket: Path
    pid: int
    proc: subprocess.Popen[bytes] | None = None
    notify: socket.socket | None = None
    listener: socket.socket | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def stderr_file(sock: Path) -> Any:
    """Where a test daemon's stderr goes: a file, never a pipe nobody reads (it would block)."""
    sock.parent.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.NamedTemporaryFile(prefix="stderr-", suffix=".log", dir=sock.parent.parent, delete=False)


def start_serve(sock: Path, *args: str, env: dict[str, str] | None = None) -> Started:
    with stderr_file(sock) as err:
        proc = subprocess.Popen(pd_cmd("serve", "--socket", str(sock), *args), env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    st = Started("serve", sock, wait_socket(sock, proc=proc), proc)
    st.extra["stderr"] = Path(err.name)
    return st


def bind_listener(sock: Path) -> socket.socket:
    sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(sock))
    sock.chmod(0o600)
    lsock.listen(64)
    return lsock


def start_activated(sock: Path, base: Path, again: Started | None = None) -> Started:
    """Simulate systemd socket activation (LISTEN_FDS) with a fake NOTIFY_SOCKET.

    ``again``: start a new daemon on the listener and notify socket of an earlier one, as
    systemd does when a connection arrives after the service stopped.
    """
    if again is not None:
        assert again.listener is not None and again.notify is not None
        lsock, notify = again.listener, again.notify
    else:
        lsock = bind_listener(sock)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(base / "notify.sock"))
        notify.settimeout(30)
    env = dict(os.environ, PD_TEST_LISTEN_FD=str(lsock.fileno()), NOTIFY_SOCKET=str(base / "notify.sock"))
    with stderr_file(sock) as err:
        proc = subprocess.Popen([PY, "-c", ACTIVATE, "-m", "pipedaemon", "serve", "--socket", str(sock)],
                                env=env, pass_fds=(lsock.fileno(),), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    ready = notify.recv(4096)
    while again is not None and ready != b"READY=1":  # skip the earlier daemon's STOPPING=1
        ready = notify.recv(4096)
    st = Started("activation", sock, wait_socket(sock, proc=proc), proc, notify, lsock)
    st.extra["first_notify"] = ready
    return st


def start_auto(sock: Path) -> Started:
    with PipeClient(socket_path=sock) as c:
        return Started("autostart", sock, c.status().pid)


def start_daemon(mode: str, env: dict[str, Path]) -> Started:
    if mode == "serve":
        return start_serve(env["socket"])
    if mode == "activation":
        return start_activated(env["socket"], env["base"])
    return start_auto(env["socket"])


def restart(st: Started, env: dict[str, Path]) -> Started:
    """A new daemon for the same socket, started the way ``st`` was."""
    if st.mode == "activation":
        return start_activated(st.socket, env["base"], again=st)
    return start_daemon(st.mode, env)


def stop_all(sock: Path) -> None:
    for pid in daemon_pids(sock):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(AssertionError):
            wait_gone(pid, 10)


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    import random

    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def s3etag(data: bytes, part: int) -> str:
    """The reference ETag: md5 for one part, else md5 of the part md5s and ``-N``."""
    if len(data) <= part:
        return hashlib.md5(data).hexdigest()
    parts = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def zeros_digest(algorithm: str, size: int) -> str:
    h = hashlib.new(algorithm)
    block = bytes(1 << 20)
    left = size
    while left:
        n = min(left, len(block))
        h.update(block[:n])
        left -= n
    return h.hexdigest()


class Raw:
    """A raw client: bytes in, decoded JSON lines out."""

    def __init__(self, sock: Path, timeout: float = 30.0) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(str(sock))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def line(self) -> bytes:
        """The next line, or b'' at EOF (ECONNRESET counts as EOF)."""
        while b"\n" not in self.buf:
            try:
                chunk = self.s.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk
        out, self.buf = self.buf.split(b"\n", 1)
        return out + b"\n"

    def msg(self) -> dict[str, Any]:
        line = self.line()
        assert line, "the daemon closed the connection instead of answering"
        return json.loads(line)

    def call(self, method: str, params: Any = None, rid: Any = 1) -> dict[str, Any]:
        req: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        self.send(json.dumps(req).encode() + b"\n")
        return self.msg()

    def close(self) -> None:
        self.s.close()


def ping_ok(sock: Path) -> int:
    """A fresh client's ping succeeds; the daemon's pid."""
    with PipeClient(socket_path=sock, auto_start=False, request_timeout_s=30) as c:
        assert c.ping()["pong"] is True
        return c.status().pid


def close_started(st: Started) -> None:
    stop_all(st.socket)
    for s in (st.notify, st.listener):
        if s is not None:
            s.close()
    if st.proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            st.proc.wait(10)

