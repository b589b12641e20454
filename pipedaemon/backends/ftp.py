"""FTP and explicit FTPS (AUTH TLS) servers as a remote, on aioftp.

FTP runs one transfer per control connection, so concurrency is several logins:
a small pool of logged-in clients (up to ``max_streams``) is reused. A connection
goes back to the pool only when its control channel is known to be in step with
the server; one that stopped mid-transfer or failed on the wire is closed.

Paths are made absolute against the login folder (PWD after login), so a pooled
connection's working directory never matters.

Listing uses MLSD (exact UTC mtimes, sizes, types). Without MLSD (no MLST in FEAT,
the server answers 500/502, or ``options.list_command = "LIST"``) it parses unix
``ls -l`` lines from ``LIST -a``. LIST times are in the server's local zone and only
to the minute, too rough for change detection, so then each file's mtime comes from
one MDTM (UTC, seconds) unless ``options.list_mdtm`` is false. ``stat`` uses MLST,
else SIZE + MDTM.

Capabilities are per server: after ``connect`` the instance's ``caps`` says
``set_mtime`` only when FEAT lists MFMT. Mtimes are whole seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

import aioftp
import msgspec

from pipedaemon.backends.base import Backend, Capabilities, Entry, TransientError, error_edge
from pipedaemon_sdk.errors import (
    AuthFailedError,
    DaemonError,
    InvalidSettingsError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)

BLOCK = 256 * 1024  # bytes per read() chunk
IDLE_CHECK_S = 30.0  # a pooled connection idle longer than this is NOOP-checked before reuse
SYNC_TIMEOUT_S = 10.0  # waiting for the replies that end an aborted transfer
_DENIED = re.compile(r"permission|denied|not allowed|privilege|forbidden|prohibited", re.I)


def map_ftp_error(exc: BaseException) -> DaemonError | None:
    """The one place aioftp, socket and TLS errors become the project's errors."""
    if isinstance(exc, _SourceError):
        return None  # not the server's fault: write() re-raises the caller's own error
    if isinstance(exc, aioftp.StatusCodeError):
        code = str(exc.received_codes[-1])
        text = " ".join(s.strip() for s in exc.info) if isinstance(exc.info, list) else str(exc.info)
        message, data = f"FTP server: {code} {text}".strip(), {"ftp_code": code}
        if code == "530":
            return AuthFailedError(message, data)
        if code.startswith("4"):  # 4xx: transient negative completion (421, 425, 426, 450, 451, 452)
            return TransientError(message, data)
        if code.startswith("55") and _DENIED.search(text):
            return PermissionDeniedError(message, data)
        if code == "550":
            return NotFoundError(message, data)
        return StorageError(message, data)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return StorageError(f"FTPS certificate verification failed: {exc.verify_message}")
    if isinstance(exc, (OSError, asyncio.TimeoutError, EOFError)):  # refused, reset, TLS EOF, timeout
        return TransientError(f"FTP connection: {type(exc).__name__}: {exc}")
    return StorageError(f"FTP: {type(exc).__name__}: {exc}")


class _SourceError(Exception):
    """The caller's chunk stream failed during write(): re-raised as it was, not mapped."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _code(exc: aioftp.StatusCodeError) -> str:
    return str(exc.received_codes[-1])


def _parse_time(value: str) -> float | None:
    """An MLSD ``modify`` fact or MDTM reply, ``YYYYMMDDHHMMSS[.fff]`` in UTC."""
    try:
        stamp = datetime.strptime(value[:14], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return float(int(stamp.timestamp()))


def _facts_entry(name: str, facts: dict[str, str]) -> Entry | None:
    """An Entry from MLSx facts; None for entries that are neither file nor folder."""
    kind = facts.get("type", "").lower()
    mtime = _parse_time(facts.get("modify", ""))
    if kind == "file":
        return Entry(name=name, size=int(facts.get("size", 0)), mtime=mtime)
    if kind in ("dir", "cdir", "pdir"):
        return Entry(name=name, mtime=mtime, is_dir=True)
    return None  # symlinks reported as OS.unix=slink..., devices: not transferable files


def _parse_mlsx(line: str) -> tuple[str, dict[str, str]]:
    # Only the line end is stripped: a name may end (or start) with spaces.
    facts, _, name = line.rstrip("\r\n").partition(" ")
    parsed = {}
    for fact in facts.split(";"):
        key, sep, value = fact.partition("=")
        if sep:
            parsed[key.lower()] = value
    return name, parsed


class _Lease:
    __slots__ = ("client", "dirty")

    def __init__(self, client: aioftp.Client) -> None:
        self.client = client
        self.dirty = False  # True while the control channel may be out of step (mid-transfer)


class _Pool:
    """Logged-in clients, at most ``size`` at once, reused while they stay in step."""

    def __init__(self, size: int, factory: Callable[[], Any]) -> None:
        self._sem = asyncio.Semaphore(size)
        self._idle: list[tuple[aioftp.Client, float]] = []
        self._factory = factory
        self.closed = False

    def put(self, client: aioftp.Client) -> None:
        if self.closed:
            client.close()
        else:
            self._idle.append((client, time.monotonic()))

    async def _take(self) -> aioftp.Client:
        while self._idle:
            client, since = self._idle.pop()
            if time.monotonic() - since < IDLE_CHECK_S:
                return client
            try:  # the server may have dropped an idle session (421 timeout): check it
                await asyncio.wait_for(client.command("NOOP", "200"), SYNC_TIMEOUT_S)
                return client
            except (aioftp.StatusCodeError, OSError, asyncio.TimeoutError):
                client.close()
        return await self._factory()

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[_Lease]:
        async with self._sem:
            lease = _Lease(await self._take())
            try:
                yield lease
            except aioftp.StatusCodeError:
                # The server answered with a refusal: the channel is still in step.
                self._give_back(lease)
                raise
            except BaseException:
                lease.client.close()  # a wire error, a cancel or an abandoned transfer
                raise
            self._give_back(lease)

    def _give_back(self, lease: _Lease) -> None:
        if lease.dirty:
            lease.client.close()
        else:
            self.put(lease.client)

    def close(self) -> None:
        self.closed = True
        for client, _since in self._idle:
            client.close()
        self._idle.clear()


class FTPBackend(Backend):
    protocol = "ftp"
    # What a full-featured server gives; connect() narrows set_mtime to what FEAT lists.
    caps = Capabilities(rename=True, set_mtime=True, ranged_read=True, checksums=())

    def __init__(self, options: dict[str, Any], credentials: dict[str, Any], *,
                 max_streams: int = 8) -> None:
        super().__init__(options, credentials, max_streams=max_streams)
        if not options.get("host"):
            raise InvalidSettingsError("ftp remote needs options.host", {"field": "host"})
        if options.get("passive", True) is False:
            raise InvalidSettingsError("only passive FTP is supported", {"field": "passive"})
        if options.get("list_command") not in (None, "MLSD", "LIST"):
            raise InvalidSettingsError("list_command must be MLSD or LIST", {"field": "list_command"})
        self.host: str = options["host"]
        self.port = int(options.get("port") or 21)
        self.username: str = options.get("username") or "anonymous"
        self.tls = bool(options.get("tls", False))
        self.connect_timeout = float(options.get("connect_timeout", 10.0))
        self.io_timeout = float(options.get("timeout", 60.0))
        self._feats: set[str] = set()
        self._use_mlsd = options.get("list_command") != "LIST"
        self._home = "/"
        self._pool = _Pool(max(1, max_streams), self._login)

    # -- connections -----------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.options.get("tls_cafile"))
        if self.options.get("tls_verify", True) is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _login(self) -> aioftp.Client:
        client = aioftp.Client(socket_timeout=self.io_timeout, connection_timeout=self.connect_timeout,
                               encoding="utf-8")
        try:
            await asyncio.wait_for(self._handshake(client), self.connect_timeout)
        except BaseException:
            client.close()
            raise
        return client

    async def _handshake(self, client: aioftp.Client) -> None:
        await client.connect(self.host, self.port)
        if self.tls:
            # Explicit FTPS: AUTH TLS before the password crosses the wire. Data connections
            # then reuse this TLS session (aioftp binds it), as servers that check it require.
            await client.command("AUTH TLS", "234")
            await client.stream.start_tls(sslcontext=self._ssl_context(), server_hostname=self.host)
        await client.login(self.username, str(self.credentials.get("password", "")))
        if self.tls:
            await client.command("PBSZ 0", "200")
            await client.command("PROT P", "200")  # encrypt data connections too
        if "UTF8" in self._feats:
            with contextlib.suppress(aioftp.StatusCodeError):
                await client.command("OPTS UTF8 ON", "2xx")
        await client.command("TYPE I", "200")  # SIZE is refused in ASCII mode by some servers

    async def connect(self) -> None:
        with error_edge(map_ftp_error):
            client = await self._login()
            try:
                await self._discover(client)
            except BaseException:
                client.close()
                raise
            self._pool.put(client)

    async def _discover(self, client: aioftp.Client) -> None:
        """Read FEAT and the login folder; set this server's caps."""
        try:
            lines = (await client.command("FEAT", "211"))[1]
            self._feats = {line.strip().split(" ")[0].upper() for line in lines[1:-1] if line.strip()}
        except aioftp.StatusCodeError:
            self._feats = set()  # a pre-RFC 2389 server: plain commands only
        if "UTF8" in self._feats:
            with contextlib.suppress(aioftp.StatusCodeError):
                await client.command("OPTS UTF8 ON", "2xx")
        if not self._feats & {"MLST", "MLSD"}:
            self._use_mlsd = False
        with contextlib.suppress(aioftp.StatusCodeError, ValueError):
            self._home = str(await client.get_current_directory()) or "/"
        self.caps = msgspec.structs.replace(type(self).caps, set_mtime="MFMT" in self._feats)

    async def close(self) -> None:
        self._pool.close()

    def describe(self) -> str:
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{self.username}@{self.host}:{self.port}{self.options.get('remotepath', '')}"

    def _abs(self, path: str) -> str:
        return str(PurePosixPath(self._home, path))

    async def _data(self, client: aioftp.Client, command: str, offset: int = 0
                    ) -> aioftp.DataConnectionThrottleStreamIO:
        """Open a passive data connection and start ``command`` on it (1xx received)."""
        reader, writer = await client.get_passive_connection("I")
        try:
            if offset:
                await client.command(f"REST {offset}", "350")
            await client.command(command, "1xx")
        except BaseException:
            writer.close()  # aioftp would leave it open when the command is refused
            raise
        return aioftp.DataConnectionThrottleStreamIO(client, reader, writer, throttles={"_": client.throttle},
                                                     timeout=client.socket_timeout)

    async def _abort(self, lease: _Lease, stream: aioftp.DataConnectionThrottleStreamIO) -> None:
        """End a transfer we stopped early and bring the control channel back in step.

        ABOR and NOOP go out together; whatever replies the transfer and the abort
        produce (426/226/225, varying by server and timing) come before NOOP's 200.
        If that 200 does not come, the lease stays dirty and the connection is dropped.
        """
        stream.close()
        client = lease.client

        async def drain() -> None:
            await client.command("ABOR")
            await client.command("NOOP")
            for _ in range(6):
                code, _info = await client.parse_response()
                if code == "200":
                    lease.dirty = False
                    return

        with contextlib.suppress(aioftp.StatusCodeError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(drain(), SYNC_TIMEOUT_S)

    # -- listing -----------------------------------------------------------------------
    async def _listdir(self, folder: str) -> list[Entry]:
        """One folder's entries; [] when it is missing (or a file, or removed while we walk)."""
        async with self._pool.lease() as lease:
            try:
                return await self._listdir_on(lease, folder)
            except aioftp.StatusCodeError as exc:
                # Servers say 550 or 501 for a missing folder; only a refusal is worth raising.
                if isinstance(map_ftp_error(exc), PermissionDeniedError) or not _code(exc).startswith("5"):
                    raise
                if await self._is_dir(lease.client, folder):
                    raise
                return []

    async def _listdir_on(self, lease: _Lease, folder: str) -> list[Entry]:
        if self._use_mlsd:
            try:
                return await self._mlsd(lease, folder)
            except aioftp.StatusCodeError as exc:
                if _code(exc) not in ("500", "502"):
                    raise
                self._use_mlsd = False  # the server does not know MLSD after all
        return await self._list(lease, folder)

    async def _read_lines(self, lease: _Lease, command: str) -> list[bytes]:
        stream = await self._data(lease.client, command)
        lease.dirty = True  # from here until the server's closing reply is read
        lines = []
        while line := await stream.readline():
            lines.append(line)
        await stream.finish()
        lease.dirty = False
        return lines

    async def _mlsd(self, lease: _Lease, folder: str) -> list[Entry]:
        entries = []
        for raw in await self._read_lines(lease, f"MLSD {folder}"):
            name, facts = _parse_mlsx(raw.decode("utf-8", "surrogateescape"))
            entry = _facts_entry(name, facts) if name not in (".", "..") else None
            if entry is not None and facts.get("type", "").lower() in ("file", "dir"):
                entries.append(entry)
        return entries

    async def _list(self, lease: _Lease, folder: str) -> list[Entry]:
        client = lease.client
        # CWD, then LIST without a path: servers read LIST's argument as ls options and
        # globs, so a folder name with spaces or wildcards would list something else.
        await client.command(f"CWD {folder}", "2xx")
        try:
            lines = await self._read_lines(lease, "LIST -a")
        except aioftp.StatusCodeError as exc:
            if not _code(exc).startswith("5"):
                raise
            lines = await self._read_lines(lease, "LIST")  # a server that takes "-a" for a name
        entries = []
        for raw in lines:
            try:
                path, info = client.parse_list_line(raw)
            except ValueError:
                continue  # "total 12" and other lines that are not entries
            name = path.name
            if name in (".", "..") or info.get("type") not in ("file", "dir"):
                continue
            if info["type"] == "dir":
                entries.append(Entry(name=name, mtime=_parse_time(info["modify"]), is_dir=True))
                continue
            mtime = _parse_time(info["modify"])
            if "MDTM" in self._feats and self.options.get("list_mdtm", True):
                mtime = await self._mdtm(client, f"{folder.rstrip('/')}/{name}") or mtime
            entries.append(Entry(name=name, size=int(info["size"]), mtime=mtime))
        return entries

    async def list(self, path: str, recursive: bool = True) -> AsyncIterator[Entry]:
        top = self._abs(path)
        pending: deque[tuple[str, str]] = deque([(top, "")])  # (server folder, prefix for names)
        with error_edge(map_ftp_error, path):
            while pending:
                folder, prefix = pending.popleft()
                # Each folder is read whole, so no connection is held while the caller works.
                entries = await self._listdir(folder)
                for entry in entries:
                    name = prefix + entry.name
                    if entry.is_dir and recursive:
                        pending.append((f"{folder.rstrip('/')}/{entry.name}", name + "/"))
                    else:
                        yield msgspec.structs.replace(entry, name=name)

    # -- files -------------------------------------------------------------------------
    async def _mdtm(self, client: aioftp.Client, full: str) -> float | None:
        try:
            _c, info = await client.command(f"MDTM {full}", "213")
        except aioftp.StatusCodeError:
            return None
        return _parse_time(info[-1].strip())

    async def _is_dir(self, client: aioftp.Client, full: str) -> bool:
        try:
            await client.command(f"CWD {full}", "2xx")
        except aioftp.StatusCodeError:
            return False
        return True

    async def _stat(self, client: aioftp.Client, full: str, name: str) -> Entry:
        if self._use_mlsd and "MLST" in self._feats:
            _c, info = await client.command(f"MLST {full}", "2xx")
            fact_line = next((s for s in info[1:] if s.startswith(" ")), "")
            entry = _facts_entry(name, _parse_mlsx(fact_line.lstrip())[1])
            if entry is None:
                raise StorageError("not a file or folder", {"path": name})
            return entry
        try:
            _c, info = await client.command(f"SIZE {full}", "213")
        except aioftp.StatusCodeError as exc:
            if _code(exc) == "550" and await self._is_dir(client, full):
                return Entry(name=name, mtime=await self._mdtm(client, full), is_dir=True)
            raise
        size = int(info[-1].strip())
        return Entry(name=name, size=size, mtime=await self._mdtm(client, full))

    async def stat(self, path: str) -> Entry:
        with error_edge(map_ftp_error, path):
            async with self._pool.lease() as lease:
                return await self._stat(lease.client, self._abs(path), path)

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length == 0:
            return
        with error_edge(map_ftp_error, path):
            async with self._pool.lease() as lease:
                stream = await self._data(lease.client, f"RETR {self._abs(path)}", offset)
                lease.dirty = True
                left = length
                while left is None or left > 0:
                    block = await stream.read(BLOCK if left is None else min(BLOCK, left))
                    if not block:
                        break
                    if left is not None:
                        left -= len(block)
                    # A consumer that stops here leaves the lease dirty: the connection is dropped.
                    yield block
                if left is not None and left <= 0:
                    await self._abort(lease, stream)  # stopped at `length`, before the server's end
                else:
                    await stream.finish()
                    lease.dirty = False

    async def write(self, path: str, chunks: AsyncIterable[bytes], size: int | None = None) -> Entry:
        full = self._abs(path)
        try:
            with error_edge(map_ftp_error, path):
                async with self._pool.lease() as lease:
                    await self._mkdirs(lease.client, str(PurePosixPath(full).parent))
                    stream = await self._data(lease.client, f"STOR {full}")
                    lease.dirty = True
                    sent = await self._pump(chunks, stream)
                    await stream.finish()  # closes the data connection, waits for 226
                    lease.dirty = False
                    entry = await self._stat(lease.client, full, path)
        except _SourceError as exc:
            raise exc.error from None
        if entry.size != sent:
            raise TransientError(f"the server stored {entry.size} bytes of {sent}", {"path": path})
        return entry

    @staticmethod
    async def _pump(chunks: AsyncIterable[bytes], stream: aioftp.DataConnectionThrottleStreamIO) -> int:
        sent = 0
        source = chunks.__aiter__()
        while True:
            try:
                chunk = await source.__anext__()
            except StopAsyncIteration:
                return sent
            except Exception as exc:  # the caller's error, passed on unchanged by write()
                raise _SourceError(exc) from exc
            await stream.write(chunk)
            sent += len(chunk)

    async def delete(self, path: str) -> None:
        with error_edge(map_ftp_error, path):
            async with self._pool.lease() as lease:
                await lease.client.command(f"DELE {self._abs(path)}", "2xx")

    async def _mkdirs(self, client: aioftp.Client, full: str) -> None:
        """MKD each missing level; the common case (it exists) costs one CWD."""
        missing = []
        folder = PurePosixPath(full)
        while folder != folder.parent and not await self._is_dir(client, str(folder)):
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                await client.command(f"MKD {folder}", "257")
            except aioftp.StatusCodeError:
                if not await self._is_dir(client, str(folder)):  # made meanwhile by another worker?
                    raise

    async def mkdir(self, path: str) -> None:
        with error_edge(map_ftp_error, path):
            async with self._pool.lease() as lease:
                await self._mkdirs(lease.client, self._abs(path))

    async def rmdir(self, path: str) -> None:
        with error_edge(map_ftp_error, path):
            async with self._pool.lease() as lease:
                await lease.client.command(f"RMD {self._abs(path)}", "250")

    async def rename(self, src: str, dst: str) -> None:
        source, target = self._abs(src), self._abs(dst)
        with error_edge(map_ftp_error, src):
            async with self._pool.lease() as lease:
                client = lease.client
                await client.command(f"RNFR {source}", "350")
                try:
                    await client.command(f"RNTO {target}", "2xx")
                except aioftp.StatusCodeError as exc:
                    # Some servers refuse to replace an existing file: delete it, then retry once.
                    if not _code(exc).startswith("5"):
                        raise
                    try:
                        await client.command(f"DELE {target}", "2xx")
                    except aioftp.StatusCodeError:
                        raise exc from None
                    await client.command(f"RNFR {source}", "350")
                    await client.command(f"RNTO {target}", "2xx")

    async def set_mtime(self, path: str, mtime: float) -> None:
        if not self.caps.set_mtime:
            raise StorageError("this FTP server has no MFMT: mtimes cannot be set", {"path": path})
        stamp = datetime.fromtimestamp(int(mtime), timezone.utc).strftime("%Y%m%d%H%M%S")
        with error_edge(map_ftp_error, path):
            async with self._pool.lease() as lease:
                await lease.client.command(f"MFMT {stamp} {self._abs(path)}", "213")
