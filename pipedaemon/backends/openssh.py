"""Running OpenSSH for the SFTP backend: the ssh command, its credentials, its errors.

Credentials the daemon owns never reach a disk or a command line in the clear:
- a private key is decrypted in memory and handed to an ``ssh-agent`` the backend
  starts itself, through ``ssh-add -``'s stdin; ssh is pointed at that agent;
- a password is served by a one-shot askpass helper over a Unix socket in a private
  (0700) folder; the helper program holds no secret.
Host keys are OpenSSH's own business (``StrictHostKeyChecking``), with a known_hosts
file of our own only for keys the registry pinned (public keys, not secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import re
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipedaemon_sdk.protocol.errors import AuthFailedError, DaemonError, InvalidSettingsError, StorageError

from .base import TransientError

PIN_ALIAS = "pipedaemon-pinned"  # the name pinned keys are filed under in our own known_hosts
AGENT_START_S = 5.0
STDERR_LINES = 40
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
PR_SET_PDEATHSIG = 1

ASKPASS_PROGRAM = '''
import os, socket, sys
prompt = sys.argv[1] if len(sys.argv) > 1 else ""
if "password" not in prompt.lower():
    sys.exit(1)  # a passphrase or a yes/no question: never answered with the password
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["PIPEDAEMON_ASKPASS_SOCK"])
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.buffer.write(data + b"\\n")
'''


def have_openssh() -> bool:
    return shutil.which("ssh") is not None


def _quote(value: str) -> str:
    """A value for ``-oKey=value``: ssh splits on blanks unless quoted."""
    return '"' + value.replace('"', "") + '"' if re.search(r"\s", value) else value


WORKDIR_PREFIX = "pd-ssh-"  # then the owner's pid: pd-ssh-<pid>-<random>
_OWNED = re.compile(rf"^{WORKDIR_PREFIX}(\d+)-")
_swept = False


def _workdir_base() -> str | None:
    base = os.environ.get("XDG_RUNTIME_DIR")
    return base if base and os.path.isdir(base) and os.access(base, os.W_OK) else None


class Workdir:
    """A private folder (0700) for one backend's sockets and pinned-key file.

    Its name carries the owning process's pid, so a daemon killed before its close()
    (kill -9, a crash) leaves a folder the next start can tell is stale (``sweep_stale``).
    """

    def __init__(self) -> None:
        sweep_once()  # a backend's first start in this process: what dead ones left goes
        self.path = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=_workdir_base()))
        self.path.chmod(0o700)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone's process has that pid: not ours to judge, keep the folder
    return True


def sweep_once() -> None:
    """``sweep_stale`` once per process (at daemon start, or a backend's first start)."""
    global _swept
    if not _swept:
        _swept = True
        sweep_stale()


def sweep_stale() -> list[str]:
    """Remove this user's leftover backend folders whose owner process is gone (never a live
    one's, never another user's, never a link); the paths removed."""
    removed: list[str] = []
    for base in dict.fromkeys(b for b in (_workdir_base(), tempfile.gettempdir()) if b):
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            owner = _OWNED.match(name)
            if owner is None or _alive(int(owner.group(1))):
                continue
            path = os.path.join(base, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


class Agent:
    """An ssh-agent of the backend's own holding one key, added over a pipe."""

    def __init__(self, work: Workdir) -> None:
        self.sock = str(work.path / "agent.sock")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, key_text: bytes) -> None:
        if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
            raise InvalidSettingsError("options.transport 'openssh' with a private key needs ssh-agent "
                                       "and ssh-add", {"field": "options.transport"})
        # "ssh-agent -a SOCK cat": the agent lives as long as that cat, which reads a pipe from
        # us: it ends at our close() or when the daemon dies (even by kill -9), and the agent
        # follows within 10 s. (PR_SET_PDEATHSIG would not do: ssh-agent is setgid, exec clears it.)
        self.proc = await asyncio.create_subprocess_exec(
            "ssh-agent", "-a", self.sock, "cat", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        for _ in range(int(AGENT_START_S / 0.02)):
            if self.proc.returncode is not None or self._listening():
                break
            await asyncio.sleep(0.02)
        if not self._listening():
            raise StorageError("ssh-agent did not start")
        add = await asyncio.create_subprocess_exec(
            "ssh-add", "-q", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "SSH_AUTH_SOCK": self.sock})
        _, err = await add.communicate(key_text)
        if add.returncode != 0:
            # ssh-add names the problem, never the key's text.
            said = err.decode(errors="replace").strip()
            raise InvalidSettingsError(f"ssh-add refused the private key: {said}",
                                       {"field": "credentials.private_key"})

    def _listening(self) -> bool:
        """The socket exists and accepts (it is bound a moment before it listens)."""
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(self.sock)
                return True
            except OSError:
                return False

    async def stop(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()  # cat ends; the agent sees it and ends too
        await _end(self.proc)


class Askpass:
    """Serves the password to ssh's askpass helper, one answer per connection asked."""

    def __init__(self, work: Workdir, password: str) -> None:
        self.sock = str(work.path / "askpass.sock")
        self.program = work.path / "askpass"
        self._password = password.encode()
        self._server: asyncio.AbstractServer | None = None
        self.served = 0

    async def start(self) -> None:
        self.program.write_text(f"#!{sys.executable} -I\n{ASKPASS_PROGRAM}")
        self.program.chmod(0o700)
        self._server = await asyncio.start_unix_server(self._answer, path=self.sock)
        os.chmod(self.sock, 0o600)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12) if sock is not None else b""
        if len(creds) == 12 and int.from_bytes(creds[4:8], sys.byteorder) == os.getuid():
            self.served += 1
            writer.write(self._password)
        with contextlib.suppress(Exception):
            await writer.drain()
            writer.close()

    def env(self) -> dict[str, str]:
        return {"SSH_ASKPASS": str(self.program), "SSH_ASKPASS_REQUIRE": "force",
                "PIPEDAEMON_ASKPASS_SOCK": self.sock}

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


async def _end(proc: asyncio.subprocess.Process | None, grace: float = 2.0) -> None:
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def ssh_argv(host: str, options: list[tuple[str, str]], *, port: int | None, user: str | None,
             config: str | None) -> list[str]:
    """``ssh ... -s -- HOST sftp``: no secret is ever among these words."""
    argv = ["ssh", "-x", "-a", "-T", "-oForwardX11=no", "-oForwardAgent=no", "-oClearAllForwardings=yes",
            "-oPermitLocalCommand=no", "-oLogLevel=ERROR"]
    if config:
        argv += ["-F", config]
    if port:
        argv += ["-p", str(port)]
    if user:
        argv += ["-l", user]
    argv += [f"-o{key}={_quote(value)}" for key, value in options]
    return [*argv, "-s", "--", host, "sftp"]


def _die_with_parent() -> None:
    """In the child before exec: end when the daemon ends, even by kill -9 (no stray agents)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _pipe() -> tuple[int, int]:
    """A pipe of 1 MiB instead of 64 KiB: a 255 KiB SFTP packet then passes in one write
    and one read, not four of each, with no partial writes for asyncio to buffer."""
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


class SSHProcess:
    """One ``ssh -s sftp`` process: its pipes, and the last lines it wrote to stderr."""

    def __init__(self, proc: asyncio.subprocess.Process, writer: asyncio.StreamWriter) -> None:
        self.proc, self.writer = proc, writer
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._drain = asyncio.ensure_future(self._collect())

    @classmethod
    async def spawn(cls, argv: list[str], env: dict[str, str],
                    receiver: Callable[[], asyncio.BaseProtocol]) -> SSHProcess:
        """Start ssh; its stdout goes to the protocol ``receiver`` makes, its stdin is ``writer``."""
        loop = asyncio.get_running_loop()
        (in_r, in_w), (out_r, out_w) = _pipe(), _pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=in_r, stdout=out_w, stderr=asyncio.subprocess.PIPE, env=env,
                start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            os.close(in_r)
            os.close(out_w)
        await loop.connect_read_pipe(receiver, os.fdopen(out_r, "rb", buffering=0))
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(loop=loop), os.fdopen(in_w, "wb", buffering=0))
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        return cls(proc, writer)

    async def _collect(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(Exception):
            async for line in self.proc.stderr:
                text = line.decode(errors="replace").rstrip()
                if text:
                    self.stderr.append(text)

    async def ended_text(self, wait: float = 2.0) -> str:
        """What ssh said before it exited (waits a little for it to finish)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._drain), wait)
        return "\n".join(self.stderr)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()  # ssh ends the session at EOF on its stdin
        await _end(self.proc)
        self._drain.cancel()


FINGERPRINT = re.compile(r"(SHA256:[A-Za-z0-9+/=]+)")
# What ssh says when the ssh config or an option is wrong (not worth retrying).
SETTINGS_REFUSED = ("bad configuration option", "unsupported option", "command-line line",
                    "bad owner or permissions", "can't open user config file", "garbage at end of line")


def classify(text: str, where: dict[str, Any]) -> DaemonError:
    """ssh's last words (stderr) -> the project's error, naming the host and what was refused."""
    host = f"{where.get('host')}:{where.get('port')}" if where.get("port") else str(where.get("host"))
    data = {k: v for k, v in where.items() if v is not None}
    last = " / ".join(line for line in text.splitlines() if line and not line.startswith("@@@"))[-600:]
    if "IDENTIFICATION HAS CHANGED" in text or ("does not match" in text and "host key" in text.lower()):
        found = FINGERPRINT.search(text)
        data |= {"reason": "host key mismatch", **({"fingerprint": found.group(1)} if found else {})}
        shown = f" (the server now offers {found.group(1)})" if found else ""
        return AuthFailedError(f"SSH host key of {host} did not match known_hosts: the server's key "
                               f"changed{shown}", data)
    if "Host key verification failed" in text or "host key is known" in text:
        found = FINGERPRINT.search(text)
        data |= {"reason": "host key unknown", **({"fingerprint": found.group(1)} if found else {})}
        return AuthFailedError(f"SSH host key of {host} is not in known_hosts: add it, or set "
                               f"known_hosts to 'accept-new' ({last})", data)
    if "Permission denied" in text or "Too many authentication failures" in text:
        return AuthFailedError(f"SSH authentication to {host} failed: {last}", data | {"reason": "auth"})
    if any(sign in text.lower() for sign in SETTINGS_REFUSED):
        return InvalidSettingsError(f"ssh refused its settings for {host}: {last}", data)
    return TransientError(f"SSH connection to {host} failed: {last or 'ssh exited'}", data)
