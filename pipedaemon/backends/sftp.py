"""SFTP backend over asyncssh: a small pool of SSH connections, each with its SFTP client.

Host keys are always checked: against ``options.known_hosts`` (a file), the user's
``~/.ssh/known_hosts``, or with ``known_hosts="accept-new"`` against the key the
registry pinned on first use (``options["_pinned_host_key"]``). Without a pin the
server's key is accepted once and exposed as ``seen_host_key`` for the registry to pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat as statmod
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import asyncssh
import asyncssh.config

from pipedaemon.backends.base import Entry, TransientError, error_edge, source, source_errors
from pipedaemon.backends.sftpcommon import PooledRangeWriter, SFTPCommon, check_root
from pipedaemon.window import Window, read_range
from pipedaemon_sdk.protocol.errors import (
    AuthFailedError,
    DaemonError,
    InvalidSettingsError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)

ACCEPT_NEW = "accept-new"
PREFERRED_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                     "aes128-ctr", "aes192-ctr", "aes256-ctr"]
READ_CHUNK = 1 << 20  # one request to asyncssh, which splits it into pipelined SFTP reads
READ_WINDOW = 4  # chunks in flight per read(): bounds memory to ~4 MiB per stream
WRITE_WINDOW = 4  # chunks in flight per write()
_EMPTY_KNOWN: tuple[list[Any], list[Any], list[Any]] = ([], [], [])


def map_sftp_error(exc: BaseException) -> DaemonError | None:
    """asyncssh's exceptions -> the project's (see error_edge)."""
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath)):
        return NotFoundError(f"no such file: {msg}")
    if isinstance(exc, (asyncssh.SFTPPermissionDenied, asyncssh.SFTPWriteProtect)):
        return PermissionDeniedError(f"permission denied: {msg}")
    if isinstance(exc, asyncssh.config.ConfigParseError):
        return InvalidSettingsError(f"cannot use the ssh config: {msg}", {"field": "options.ssh_config"})
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return AuthFailedError(f"SSH host key did not match: {msg}", {"reason": "host key mismatch"})
    if isinstance(exc, (asyncssh.PermissionDenied, asyncssh.KeyEncryptionError)):
        return AuthFailedError(f"SSH authentication failed: {msg}", {"reason": "auth"})
    if isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.DisconnectError,
                        OSError, asyncio.TimeoutError)):
        return TransientError(f"SFTP connection problem: {msg}")
    if isinstance(exc, asyncssh.ChannelOpenError) and exc.code == asyncssh.OPEN_RESOURCE_SHORTAGE:
        return TransientError(f"SFTP server busy: {msg}")
    return StorageError(f"SFTP error: {msg}")


def _about_passphrase(exc: Exception) -> bool:
    text = str(exc).lower()
    return "decrypt" in text or "passphrase" in text


def _public_text(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


def _is_dir(attrs: asyncssh.SFTPAttrs) -> bool:
    perms = attrs.permissions
    return attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY or (perms is not None and statmod.S_ISDIR(perms))


def _is_link(attrs: asyncssh.SFTPAttrs) -> bool:
    perms = attrs.permissions
    return attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK or (perms is not None and statmod.S_ISLNK(perms))


def _entry(name: str, attrs: asyncssh.SFTPAttrs) -> Entry:
    mtime = float(attrs.mtime) if attrs.mtime is not None else None
    is_dir = _is_dir(attrs)
    return Entry(name=name, size=0 if is_dir else int(attrs.size or 0), mtime=mtime, is_dir=is_dir)


class _HostKeyRecorder(asyncssh.SSHClient):
    """Sees a key that known_hosts or the pin did not trust: remembered for the error's
    fingerprint, and accepted only on first use under accept-new (to be pinned)."""

    def __init__(self, backend: SFTPBackend, accept: bool) -> None:
        self._backend, self._accept = backend, accept

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self._backend.offered_host_key = key
        self._backend.offered_by = (host, addr, port)  # as resolved (an ssh config alias's HostName)
        if self._accept:
            self._backend.seen_host_key = _public_text(key)
        return self._accept


class _Slot:
    """One SSH connection and its SFTP client, (re)opened on demand."""

    def __init__(self) -> None:
        self.conn: asyncssh.SSHClientConnection | None = None
        self.sftp: asyncssh.SFTPClient | None = None
        self.lock = asyncio.Lock()

    def alive(self) -> bool:
        return self.conn is not None and self.sftp is not None and not self.conn.is_closed()

    async def close(self) -> None:
        conn, sftp, self.conn, self.sftp = self.conn, self.sftp, None, None
        with contextlib.suppress(Exception):
            if sftp is not None:
                sftp.exit()
            if conn is not None:
                conn.close()
                await asyncio.wait_for(conn.wait_closed(), 5)


class SFTPBackend(SFTPCommon[asyncssh.SFTPClient, asyncssh.SFTPClientFile]):
    map_error = staticmethod(map_sftp_error)
    _entry = staticmethod(_entry)
    _is_link = staticmethod(_is_link)
    dangling = asyncssh.SFTPError

    def __init__(self, options: dict[str, Any], credentials: dict[str, Any], *,
                 max_streams: int = 8) -> None:
        super().__init__(options, credentials, max_streams=max_streams)
        self.port = int(options.get("port") or 22)
        self.offered_host_key: asyncssh.SSHKey | None = None  # an untrusted key the server offered
        self.offered_by: tuple[str, str, int] | None = None  # the host, address and port that offered it
        self._pinned: asyncssh.SSHKey | None = None
        self._known: Any = None
        self._client_keys: list[asyncssh.SSHKey] | None = None
        self._prepared = False  # host-key trust and client keys loaded (by connect())

    def _new_slot(self) -> _Slot:
        return _Slot()

    @property
    def login(self) -> str | None:
        """The user name this backend logs in as (the ssh config's User when not given)."""
        conn = self._slots[0].conn
        return self.username or (getattr(conn, "_username", None) if conn is not None else None)

    def describe(self) -> str:
        who = f"{self.username}@" if self.username else ""
        return f"sftp://{who}{self.host}:{self.port}/{str(self.options.get('remotepath', '')).lstrip('/')}"

    # -- connections -----------------------------------------------------------
    async def connect(self) -> None:
        if not self.host:
            raise InvalidSettingsError("sftp remote needs options.host", {"field": "host"})
        self._prepare_host_keys()
        self._prepare_client_keys()
        self._prepared = True
        with error_edge(map_sftp_error):
            await self._ensure(self._slots[0])  # proves host key and credentials now

    async def close(self) -> None:
        await asyncio.gather(*(slot.close() for slot in self._slots))

    def _prepare_host_keys(self) -> None:
        setting = self.options.get("known_hosts")
        pin = self.options.get("_pinned_host_key")
        if setting == ACCEPT_NEW:
            if pin:
                try:
                    self._pinned = asyncssh.import_public_key(pin)
                except (asyncssh.KeyImportError, ValueError) as exc:
                    raise InvalidSettingsError(f"pinned host key unreadable: {exc}") from exc
            return
        path = os.path.expanduser(setting or "~/.ssh/known_hosts")
        if not setting and not os.path.exists(path):
            self._known = _EMPTY_KNOWN  # every key is then untrusted; the error says why
            return
        try:
            self._known = asyncssh.read_known_hosts(path)
        except (OSError, ValueError) as exc:
            raise InvalidSettingsError(f"cannot read known_hosts {path}: {exc}",
                                       {"field": "known_hosts"}) from exc

    def _prepare_client_keys(self) -> None:
        key = self.credentials.get("private_key")
        if not key:
            return
        passphrase = self.credentials.get("passphrase") or None
        text = str(key)
        try:
            if "PRIVATE KEY" in text or "\n" in text.strip():
                loaded = asyncssh.import_private_key(text, passphrase)
            else:
                loaded = asyncssh.read_private_key(os.path.expanduser(text), passphrase)
        except (asyncssh.KeyEncryptionError, asyncssh.KeyImportError) as exc:
            # asyncssh says "decrypt"/"passphrase" when the passphrase is wrong or missing.
            if isinstance(exc, asyncssh.KeyEncryptionError) or _about_passphrase(exc):
                raise AuthFailedError("cannot decrypt the SSH private key (wrong or missing passphrase)",
                                      {"reason": "private key passphrase"}) from exc
            raise InvalidSettingsError(f"cannot load the SSH private key: {exc}",
                                       {"field": "private_key"}) from exc
        except (OSError, ValueError) as exc:
            # Never echo the key text: say only what went wrong.
            raise InvalidSettingsError(f"cannot load the SSH private key: {type(exc).__name__}",
                                       {"field": "private_key"}) from exc
        self._client_keys = [loaded]

    def _connect_kwargs(self) -> dict[str, Any]:
        config = os.path.expanduser(self.options.get("ssh_config") or "~/.ssh/config")
        kw: dict[str, Any] = {
            "host": self.host,
            "connect_timeout": float(self.options.get("connect_timeout") or 10.0),
            "keepalive_interval": 30, "keepalive_count_max": 3,
            # The ssh config resolves aliases (HostName, Port, User, IdentityFile, ProxyJump);
            # given options win over it, as on ssh's command line.
            "config": [config] if os.path.isfile(config) else [],
            "x509_trusted_certs": None,  # only known_hosts or the pin decide trust
            # AES-GCM first: one AES-NI call per packet, where chacha20-poly1305 costs asyncssh
            # two ciphers and a MAC in Python per packet (about twice the CPU per byte).
            "encryption_algs": PREFERRED_CIPHERS,
        }
        kw.update({k: v for k, v in (("port", self.options.get("port")), ("username", self.username)) if v})
        if self._known is not None:
            kw["known_hosts"] = self._known
        elif self._pinned is not None:
            kw["known_hosts"] = ([self._pinned], [], [])
        else:
            kw["known_hosts"] = _EMPTY_KNOWN  # nothing trusted: the recorder decides
        first_use = self._known is None and self._pinned is None
        kw["client_factory"] = lambda: _HostKeyRecorder(self, accept=first_use)
        password = self.credentials.get("password")
        if password:
            kw["password"] = password
        if self._client_keys is not None:
            kw["client_keys"], kw["agent_path"] = self._client_keys, None
        elif password:
            kw["client_keys"], kw["agent_path"] = None, None  # password only, as configured
        return kw

    async def _open(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        if not self._prepared:
            # Without connect() no trust is set up: never fall through to accepting any key.
            raise StorageError("SFTP backend used before connect()")
        try:
            conn = await asyncssh.connect(**self._connect_kwargs())
        except asyncssh.HostKeyNotVerifiable as exc:
            raise self._host_key_error(exc) from exc
        if self._known is None and self._pinned is None and self.seen_host_key:
            # Later connections of this backend must meet the same key.
            self._pinned = asyncssh.import_public_key(self.seen_host_key)
        try:
            return conn, await conn.start_sftp_client()
        except BaseException:
            conn.close()
            raise

    def _host_key_error(self, exc: Exception) -> AuthFailedError:
        host, port = (self.offered_by[0], self.offered_by[2]) if self.offered_by else (self.host, self.port)
        where = f"{host}:{port}"
        data: dict[str, Any] = {"host": host, "port": port, "reason": "host key mismatch"}
        if host != self.host:
            data["alias"] = self.host
        offered = self.offered_host_key
        shown = ""
        if offered is not None:
            data["fingerprint"] = offered.get_fingerprint("sha256")
            shown = f" (the server now offers {data['fingerprint']})"
        if self._pinned is not None:
            msg = f"SSH host key of {where} did not match the pinned key: the server's key changed{shown}"
        elif isinstance(self._known, asyncssh.SSHKnownHosts) and self._known_lists_host():
            msg = f"SSH host key of {where} did not match known_hosts: the server's key changed{shown}"
        else:
            data["reason"] = "host key unknown"
            msg = (f"SSH host key of {where} is not in known_hosts: add it, or set "
                   f"known_hosts to 'accept-new'")
        return AuthFailedError(f"{msg} ({exc})", data)

    def _known_lists_host(self) -> bool:
        host, addr, port = self.offered_by or (self.host, "", self.port)
        try:
            return bool(self._known.match(host, addr, port if port != 22 else None)[0])
        except ValueError:  # an address asyncssh cannot parse: judge by the name alone
            return bool(self._known.match(host, "", port if port != 22 else None)[0])

    async def _ensure(self, slot: _Slot) -> asyncssh.SFTPClient:
        async with slot.lock:
            if not slot.alive():
                await slot.close()
                slot.conn, slot.sftp = await self._open()
            assert slot.sftp is not None
            return slot.sftp

    # -- required (the rest in SFTPCommon) -------------------------------------
    async def _listdir(self, conn: asyncssh.SFTPClient,
                       folder: str) -> list[tuple[str, asyncssh.SFTPAttrs]] | None:
        try:
            names = [n async for n in conn.scandir(folder)]
        except asyncssh.SFTPNoSuchFile:
            return None
        return [(n.filename if isinstance(n.filename, str) else n.filename.decode(), n.attrs) for n in names]

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        with error_edge(map_sftp_error, path):
            sftp = await self._conn()
            async with self._ops:
                f = await sftp.open(path, "rb")
            try:
                end = offset + length if length is not None else (await f.stat()).size or 0
                async for chunk in self._read_window(f, offset, end):
                    yield chunk
            finally:
                with contextlib.suppress(Exception):
                    await f.close()

    def _read_window(self, f: asyncssh.SFTPClientFile, start: int, end: int) -> AsyncIterator[bytes]:
        """Chunks of [start, end) in order, with up to READ_WINDOW requests in flight."""

        async def read(offset: int, size: int) -> bytes:
            async with self._ops:
                return await f.read(size, offset)

        return read_range(read, start, end, READ_CHUNK, READ_WINDOW)

    async def write(self, path: str, chunks: AsyncIterable[bytes], size: int | None = None,
                    extra: dict[str, Any] | None = None) -> Entry:
        # The caller's stream goes through the source pump: its failures are never SFTP's.
        with source_errors(), error_edge(map_sftp_error, path):
            sftp = await self._conn()
            flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
            f = await self._open_making_parents(sftp, path, flags)
            try:
                async with Window(WRITE_WINDOW) as window:
                    pos = 0
                    async for chunk in source(chunks):
                        if chunk:
                            await window.submit(self._write_at(f, pos, chunk))
                            pos += len(chunk)
            finally:
                with contextlib.suppress(Exception):
                    await f.close()
        return await self.stat(path)

    async def _write_at(self, f: asyncssh.SFTPClientFile, offset: int, data: bytes) -> None:
        async with self._ops:
            await f.write(data, offset)

    async def _open_file(self, conn: asyncssh.SFTPClient, path: str, flags: int) -> asyncssh.SFTPClientFile:
        return await conn.open(path, flags, encoding=None)

    def _parents(self, sftp: asyncssh.SFTPClient) -> dict[str, Any]:
        """How ``with_parents`` makes the missing folders of a path, over asyncssh."""

        async def makedirs(folder: str) -> None:
            await sftp.makedirs(folder, exist_ok=True)

        return {"missing": lambda exc: isinstance(exc, asyncssh.SFTPNoSuchFile),
                "check_root": lambda: check_root(self.options, sftp.isdir), "makedirs": makedirs}

    # -- optional (the rest in SFTPCommon) -------------------------------------
    @staticmethod
    async def _replace(sftp: asyncssh.SFTPClient, src: str, dst: str) -> None:
        try:
            await sftp.posix_rename(src, dst)
        except asyncssh.SFTPOpUnsupported:
            try:
                await sftp.rename(src, dst)
            except asyncssh.SFTPFailure:
                if not await sftp.exists(dst):
                    raise
                await sftp.remove(dst)  # plain SFTP refuses to overwrite: not atomic here
                await sftp.rename(src, dst)

    async def _utime(self, conn: asyncssh.SFTPClient, path: str, mtime: float) -> None:
        await conn.utime(path, (mtime, mtime))

    def _writer(self, path: str) -> _SFTPRangeWriter:
        return _SFTPRangeWriter(self, path)


class _SFTPRangeWriter(PooledRangeWriter[asyncssh.SFTPClient, asyncssh.SFTPClientFile]):
    """The pooled range writer (sftpcommon) over asyncssh's files."""

    FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT

    async def _write(self, conn: asyncssh.SFTPClient, handle: asyncssh.SFTPClientFile,
                     offset: int, data: bytes) -> None:
        async with self._b._ops:
            await handle.write(data, offset)

    async def _truncate_above(self, conn: asyncssh.SFTPClient, handle: asyncssh.SFTPClientFile,
                              size: int) -> None:
        async with self._b._ops:
            if ((await handle.stat()).size or 0) > size:
                await handle.truncate(size)

    async def _close(self, conn: asyncssh.SFTPClient, handle: asyncssh.SFTPClientFile) -> None:
        await handle.close()
