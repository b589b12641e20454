"""SFTP backend over OpenSSH: ``ssh -s HOST sftp`` processes, SFTP v3 spoken on their pipes.

Each pooled connection is one ssh process (sshd serves it in its own process too), so
encryption and packets run in C on other cores while the daemon's thread only frames
big SFTP requests (``sftpwire``). ``~/.ssh/config`` (or ``options.ssh_config``), aliases,
ProxyJump, ControlMaster, the user's agent and known_hosts work as they do for ``ssh``.
How the daemon's own credentials reach ssh without touching a disk: see ``openssh``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from pipedaemon_sdk.protocol.errors import (
    DaemonError,
    InvalidSettingsError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)

from ..window import Window, read_range, run_window
from . import sftpwire as W
from .base import Entry, TransientError, error_edge, source, source_errors
from .openssh import PIN_ALIAS, Agent, Askpass, SSHProcess, Workdir, classify, have_openssh, ssh_argv
from .sftp import ACCEPT_NEW, SFTPBackend
from .sftpcommon import PooledRangeWriter, SFTPCommon, check_root
from .sftpframes import FrameReceiver

READ_WINDOW_BYTES = 4 << 20  # bytes requested ahead per read(): bounds memory per stream
WRITE_WINDOW_BYTES = 8 << 20  # bytes sent and not yet acknowledged per write()
SESSION_WINDOW = 64  # requests in flight on one ssh process
# AES-GCM first (one AES-NI pass per packet); the rest of ssh's own list follows.
CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"


def map_wire_error(exc: BaseException) -> DaemonError | None:
    """sftpwire's exceptions -> the project's (see error_edge)."""
    if isinstance(exc, W.SFTPStatusError):
        msg = str(exc)
        if exc.code == W.NO_SUCH_FILE:
            return NotFoundError(f"no such file: {msg}")
        if exc.code == W.PERMISSION_DENIED:
            return PermissionDeniedError(f"permission denied: {msg}")
        if exc.code in (W.NO_CONNECTION, W.CONNECTION_LOST):
            return TransientError(f"SFTP connection problem: {msg}")
        return StorageError(f"SFTP error: {msg}")
    if isinstance(exc, (W.SFTPConnectionLost, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError)):
        return TransientError(f"SFTP connection problem: {exc or type(exc).__name__}")
    return None


def _entry(name: str, a: W.Attrs) -> Entry:
    return Entry(name=name, size=0 if a.is_dir else int(a.size or 0),
                 mtime=float(a.mtime) if a.mtime is not None else None, is_dir=a.is_dir)


class _Slot:
    def __init__(self) -> None:
        self.ssh: SSHProcess | None = None
        self.session: W.SFTPSession | None = None
        self.lock = asyncio.Lock()

    async def close(self) -> None:
        session, ssh, self.session, self.ssh = self.session, self.ssh, None, None
        if session is not None:
            await session.close()
        if ssh is not None:
            await ssh.stop()


class OpenSSHSFTPBackend(SFTPCommon[W.SFTPSession, bytes]):
    map_error = staticmethod(map_wire_error)
    _entry = staticmethod(_entry)
    dangling = W.SFTPStatusError

    def __init__(self, options: dict[str, Any], credentials: dict[str, Any], *,
                 max_streams: int = 8) -> None:
        super().__init__(options, credentials, max_streams=max_streams)
        self.port = int(options["port"]) if options.get("port") else None
        self.resolved: dict[str, str] = {}  # what ssh -G made of host, port, user (config applied)
        self._client_keys: Any = None
        self._work: Workdir | None = None
        self._agent: Agent | None = None
        self._askpass: Askpass | None = None
        self._pin_file: str | None = None
        self._ssh_options: list[tuple[str, str]] = []
        self._env: dict[str, str] = {}

    def _new_slot(self) -> _Slot:
        return _Slot()

    @property
    def login(self) -> str | None:
        """The user name ssh logs in as (the ssh config's User when not given)."""
        return self.username or self.resolved.get("user")

    def describe(self) -> str:
        host = self.resolved.get("hostname", self.host)
        port = self.resolved.get("port", str(self.port or 22))
        user = self.resolved.get("user", self.username or "")
        who = f"{user}@" if user else ""
        return f"sftp://{who}{host}:{port}/{str(self.options.get('remotepath', '')).lstrip('/')} (openssh)"

    def _where(self) -> dict[str, Any]:
        where: dict[str, Any] = {"host": self.resolved.get("hostname", self.host),
                                 "port": int(self.resolved.get("port", self.port or 22))}
        if where["host"] != self.host:
            where["alias"] = self.host
        return where

    # -- setting up ---------------------------------------------------------------------
    async def connect(self) -> None:
        if not self.host:
            raise InvalidSettingsError("sftp remote needs options.host", {"field": "host"})
        if not have_openssh():
            raise InvalidSettingsError("options.transport is 'openssh' but no ssh program was found "
                                       "(install OpenSSH, or use 'asyncssh')", {"field": "options.transport"})
        if self._work is not None:
            await self.close()  # connect() again (the registry retries): no second agent or folder
        self._work = Workdir()
        self._ssh_options = []
        self._prepare_host_keys()
        await self._prepare_identity()
        await self._resolve()
        await self._ensure(self._slots[0])  # proves host key and credentials now
        if self._pin_file and not self.options.get("_pinned_host_key"):
            self.seen_host_key = self._read_pin()
            self._set_option("StrictHostKeyChecking", "yes")  # later connections meet the same key

    async def close(self) -> None:
        try:
            await asyncio.gather(*(slot.close() for slot in self._slots), return_exceptions=True)
            for helper in (self._agent, self._askpass):
                if helper is not None:
                    with contextlib.suppress(Exception):
                        await helper.stop()
        finally:
            # Whatever failed or was cancelled above, the folder (agent socket, pin) goes.
            self._agent = self._askpass = None
            if self._work is not None:
                self._work.remove()
                self._work = None

    def _set_option(self, key: str, value: str) -> None:
        self._ssh_options = [(k, v) for k, v in self._ssh_options if k != key] + [(key, value)]

    def _prepare_host_keys(self) -> None:
        assert self._work is not None
        setting = self.options.get("known_hosts")
        if setting == ACCEPT_NEW:
            pin = self.options.get("_pinned_host_key")
            self._pin_file = str(self._work.path / "known_hosts")
            with open(self._pin_file, "w") as f:
                f.write(f"{PIN_ALIAS} {pin}\n" if pin else "")
            for key, value in (("HostKeyAlias", PIN_ALIAS), ("UserKnownHostsFile", self._pin_file),
                               ("GlobalKnownHostsFile", "/dev/null"), ("HashKnownHosts", "no"),
                               ("UpdateHostKeys", "no"),
                               ("StrictHostKeyChecking", "yes" if pin else "accept-new")):
                self._set_option(key, value)
            return
        if setting:
            path = os.path.expanduser(setting)
            if not os.path.isfile(path):
                raise InvalidSettingsError(f"cannot read known_hosts {path}: no such file",
                                           {"field": "known_hosts"})
            self._set_option("UserKnownHostsFile", path)
        self._set_option("StrictHostKeyChecking", "yes")  # never ask, never accept silently

    def _read_pin(self) -> str | None:
        assert self._pin_file is not None
        with open(self._pin_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[0] == PIN_ALIAS:
                    return f"{parts[1]} {parts[2]}"
        return None

    async def _prepare_identity(self) -> None:
        assert self._work is not None
        self._env = dict(os.environ)
        for var in ("SSH_ASKPASS", "SSH_ASKPASS_REQUIRE"):
            self._env.pop(var, None)
        if self.credentials.get("private_key"):
            SFTPBackend._prepare_client_keys(self)  # type: ignore[arg-type]  # loads self._client_keys
            self._agent = Agent(self._work)
            await self._agent.start(self._client_keys[0].export_private_key("openssh"))
            self._set_option("IdentityAgent", self._agent.sock)
            self._env["SSH_AUTH_SOCK"] = self._agent.sock  # a ProxyJump's own ssh finds it here
        password = self.credentials.get("password")
        if password:
            self._askpass = Askpass(self._work, str(password))
            await self._askpass.start()
            self._env.update(self._askpass.env())
            self._set_option("BatchMode", "no")
            self._set_option("NumberOfPasswordPrompts", "1")
        else:
            self._set_option("BatchMode", "yes")
        if self._agent is not None and not password:
            self._set_option("PasswordAuthentication", "no")
            self._set_option("KbdInteractiveAuthentication", "no")
        timeout = float(self.options.get("connect_timeout") or 10.0)
        self._set_option("ConnectTimeout", str(max(1, round(timeout))))
        self._set_option("ServerAliveInterval", "30")
        self._set_option("ServerAliveCountMax", "3")
        self._set_option("Ciphers", CIPHERS)

    def _argv(self) -> list[str]:
        return ssh_argv(self.host, self._ssh_options, port=self.port, user=self.username,
                        config=self.options.get("ssh_config"))

    async def _resolve(self) -> None:
        """Ask ssh what it makes of the host (config applied), to name it in errors."""
        argv = self._argv()
        argv = [argv[0], "-G", *argv[1:-4], "--", self.host]
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=self._env)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise classify(err.decode(errors="replace"), {"host": self.host, "port": self.port})
        for line in out.decode(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            if key in ("hostname", "port", "user", "proxyjump"):
                self.resolved[key] = value

    async def _open(self) -> tuple[SSHProcess, W.SFTPSession]:
        if self._work is None:
            raise StorageError("SFTP backend used before connect()")
        session = W.SFTPSession(window=SESSION_WINDOW)
        ssh = await SSHProcess.spawn(self._argv(), self._env,
                                     lambda: FrameReceiver(session.deliver, session.lost))
        session.attach(ssh.writer)
        timeout = 2 * float(self.options.get("connect_timeout") or 10.0) + 5
        try:
            await asyncio.wait_for(session.start(), timeout)
        except (W.SFTPConnectionLost, asyncio.IncompleteReadError, OSError, asyncio.TimeoutError) as exc:
            text = await ssh.ended_text()
            await session.close()
            await ssh.stop()
            if isinstance(exc, asyncio.TimeoutError) and not text:
                raise TransientError(f"SSH connection to {self.host} timed out", self._where()) from None
            err = classify(text, self._where())
            if self._pin_file and err.data.get("reason") == "host key mismatch":
                err.message = err.message.replace("known_hosts", "the pinned key")
            raise err from None
        except BaseException:  # cancelled while starting (a client gone): no ssh left behind
            await session.close()
            await ssh.stop()
            raise
        return ssh, session

    async def _ensure(self, slot: _Slot) -> W.SFTPSession:
        async with slot.lock:
            if slot.session is None or not slot.session.alive:
                await slot.close()
                slot.ssh, slot.session = await self._open()
            return slot.session

    # -- required (the rest in SFTPCommon) -------------------------------------------
    async def _listdir(self, conn: W.SFTPSession, folder: str) -> list[tuple[str, W.Attrs]] | None:
        try:
            return [n async for n in conn.scandir(folder)]
        except W.SFTPStatusError as exc:
            if exc.code == W.NO_SUCH_FILE:
                return None
            raise

    @staticmethod
    def _is_link(attrs: W.Attrs) -> bool:
        return attrs.is_link

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        with error_edge(map_wire_error, path):
            sess = await self._conn()
            async with self._ops:
                handle = await sess.open(path, W.FXF_READ)
            try:
                end = offset + length if length is not None else (await sess.fstat(handle)).size or 0
                async for chunk in self._read_window(sess, handle, offset, end):
                    yield chunk
            finally:
                with contextlib.suppress(Exception):
                    await sess.close_handle(handle)

    @staticmethod
    def _read_window(sess: W.SFTPSession, handle: bytes, start: int, end: int) -> AsyncIterator[bytes]:
        """[start, end) in order, one server-sized read per piece, READ_WINDOW_BYTES ahead."""
        piece = sess.max_read
        return read_range(lambda off, n: sess.read(handle, off, n), start, end, piece,
                          max(1, READ_WINDOW_BYTES // piece))

    async def write(self, path: str, chunks: AsyncIterable[bytes], size: int | None = None,
                    extra: dict[str, Any] | None = None) -> Entry:
        # The caller's stream goes through the source pump: its failures are never SFTP's.
        with source_errors(), error_edge(map_wire_error, path):
            sess = await self._conn()
            handle = await self._open_making_parents(sess, path, W.FXF_WRITE | W.FXF_CREAT | W.FXF_TRUNC)
            closed = False
            try:
                step = sess.max_write
                async with Window(max(1, WRITE_WINDOW_BYTES // step)) as window:
                    pos = 0
                    async for chunk in source(chunks):
                        for piece in _pieces(chunk, step):
                            await window.submit(sess.write(handle, pos, piece))
                            pos += len(piece)
                closed = True
                await sess.close_handle(handle)  # an error here: the data may not have landed
            finally:
                if not closed:
                    with contextlib.suppress(Exception):
                        await sess.close_handle(handle)
        return await self.stat(path)

    async def _open_file(self, conn: W.SFTPSession, path: str, flags: int) -> bytes:
        return await conn.open(path, flags)

    def _parents(self, sess: W.SFTPSession) -> dict[str, Any]:
        """How ``with_parents`` makes the missing folders of a path, over sftpwire."""

        async def isdir(folder: str) -> bool:
            try:
                return (await sess.stat(folder)).is_dir
            except W.SFTPStatusError as exc:
                if exc.code != W.NO_SUCH_FILE:
                    raise
                return False

        return {"missing": lambda exc: isinstance(exc, W.SFTPStatusError) and exc.code == W.NO_SUCH_FILE,
                "check_root": lambda: check_root(self.options, isdir), "makedirs": sess.makedirs}

    # -- optional (the rest in SFTPCommon) -------------------------------------------
    @staticmethod
    async def _replace(sess: W.SFTPSession, src: str, dst: str) -> None:
        if "posix-rename@openssh.com" in sess.extensions:
            await sess.posix_rename(src, dst)
            return
        try:
            await sess.rename(src, dst)
        except W.SFTPStatusError as exc:
            if exc.code != W.FAILURE:
                raise
            await sess.stat(dst)  # plain SFTP refuses to overwrite: not atomic here
            await sess.remove(dst)
            await sess.rename(src, dst)

    async def _utime(self, conn: W.SFTPSession, path: str, mtime: float) -> None:
        await conn.setstat(path, mtime=int(mtime))

    def _writer(self, path: str) -> _RangeWriter:
        return _RangeWriter(self, path)


def _pieces(data: bytes, step: int) -> list[memoryview]:
    """``data`` cut at the server's write limit (no copies)."""
    view = memoryview(data)
    return [view[i:i + step] for i in range(0, len(view), step)]


class _RangeWriter(PooledRangeWriter[W.SFTPSession, bytes]):
    """The pooled range writer (sftpcommon) over sftpwire's sessions and handles."""

    FLAGS = W.FXF_WRITE | W.FXF_CREAT

    async def _write(self, conn: W.SFTPSession, handle: bytes, offset: int, data: bytes) -> None:
        step = conn.max_write
        pieces = _pieces(data, step)
        await run_window((functools.partial(conn.write, handle, offset + i * step, piece)
                          for i, piece in enumerate(pieces)), max(1, WRITE_WINDOW_BYTES // step))

    async def _truncate_above(self, conn: W.SFTPSession, handle: bytes, size: int) -> None:
        async with self._b._ops:
            if ((await conn.fstat(handle)).size or 0) > size:
                await conn.ftruncate(handle, size)

    async def _close(self, conn: W.SFTPSession, handle: bytes) -> None:
        await conn.close_handle(handle)

    def _lost_after_writes(self, exc: BaseException) -> bool:
        # A session that ended before its CLOSE: every WRITE on it had its OK, i.e. the server
        # had written it (sftp-server's close only closes its fd), so nothing is lost.
        return isinstance(exc, W.SFTPConnectionLost)
