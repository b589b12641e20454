"""FTP and explicit FTPS (AUTH TLS) servers as a remote, on aioftp.

FTP runs one transfer per control connection, so concurrency is several logins:
a pool of up to ``max_streams`` logged-in sessions is reused. A session goes back
to the pool only while its control channel is known to be in step with the server;
one that stopped mid-transfer or failed on the wire is closed.

Paths are made absolute against the login folder (PWD after login), so a pooled
session's working directory never matters.

Listing uses MLSD (exact UTC mtimes). Without it (no MLST in FEAT, a 500/502 reply,
or ``options.list_command = "LIST"``) unix ``ls -l`` lines from ``LIST -a`` are
parsed; their times are local to the server and only to the minute, too rough for
change detection, so each file's mtime then comes from one MDTM (UTC, seconds)
unless ``options.list_mdtm`` is false. ``stat`` uses MLST, else SIZE + MDTM.
After ``connect`` the instance's ``features.set_mtime`` says whether FEAT lists MFMT.
Mtimes are whole seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

import aioftp
import msgspec

from pipedaemon.backends.base import (
    Backend,
    Entry,
    Features,
    Rename,
    SetMtime,
    Traits,
    TransientError,
    error_edge,
    missing_root,
    source,
    source_errors,
)
from pipedaemon.backends.ftpdata import SYNC_TIMEOUT_S, UNIT, DataStream, timed
from pipedaemon_sdk.protocol.errors import (
    AuthFailedError,
    DaemonError,
    InvalidSettingsError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)

IDLE_CHECK_S = 30.0  # a session idle longer than this is NOOP-checked before reuse
_DENIED = re.compile(r"permission|denied|not allowed|privilege|forbidden|prohibited", re.I)
_EXISTS = re.compile(r"already|(?<!not )(?<!n't )\bexists?\b", re.I)  # "File exists", not "does not exist"
# 550 covers more than "no such file": these say something is there, just in the way.
_NOT_MISSING = re.compile(r"not empty|is a directory|already|(?<!not )(?<!n't )\bexists?\b", re.I)
_TLS_REQUIRED = re.compile(r"\b(ssl|tls)\b.*\brequired\b", re.I)  # "550 SSL/TLS required on the control..."


def map_ftp_error(exc: BaseException) -> DaemonError | None:
    """The one place aioftp, socket and TLS errors become the project's errors."""
    if isinstance(exc, aioftp.StatusCodeError):
        code = _code(exc)
        text = " ".join(s.strip() for s in exc.info) if isinstance(exc.info, list) else str(exc.info)
        message, data = f"FTP server: {code} {text}".strip(), {"ftp_code": code}
        if code == "530":
            return AuthFailedError(message, data)
        if code.startswith("4"):  # transient negative completion: 421, 425, 426, 450, 451, 452
            return TransientError(message, data)
        if code.startswith("5") and (_DENIED.search(text) or _TLS_REQUIRED.search(text)):
            return PermissionDeniedError(message, data)
        missing = code == "550" and not _NOT_MISSING.search(text)
        return (NotFoundError if missing else StorageError)(message, data)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return StorageError(f"FTPS certificate verification failed: {exc.verify_message}")
    if isinstance(exc, (OSError, asyncio.TimeoutError, EOFError)):  # refused, reset, TLS, timeout
        return TransientError(f"FTP connection: {type(exc).__name__}: {exc}")
    return StorageError(f"FTP: {type(exc).__name__}: {exc}")


def _code(exc: aioftp.StatusCodeError) -> str:
    return str(exc.received_codes[-1])


def _parse_time(value: str) -> float | None:
    """An MLSx ``modify`` fact or an MDTM reply: ``YYYYMMDDHHMMSS[.fff]``, UTC."""
    try:
        stamp = datetime.strptime(value.strip()[:14], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return float(int(stamp.timestamp()))


def _mlsx_entry(line: str, name: str | None = None) -> Entry | None:
    """An Entry from an MLSD/MLST line; None for ".", ".." and what is neither file nor folder."""
    facts_text, _, listed = line.rstrip("\r\n").partition(" ")  # a name may start/end with spaces
    facts = {}
    for fact in facts_text.split(";"):
        key, sep, value = fact.partition("=")
        if sep:
            facts[key.lower()] = value
    kind, mtime = facts.get("type", "").lower(), _parse_time(facts.get("modify", ""))
    if kind == "file":
        return Entry(name=name or listed, size=int(facts.get("size", 0)), mtime=mtime)
    if kind == "dir" or (name and kind == "cdir"):  # MLST of a folder says cdir on some servers
        return Entry(name=name or listed, mtime=mtime, is_dir=True)
    return None  # cdir/pdir in listings; symlinks (OS.unix=slink), devices



class _Client(aioftp.Client):
    """One logged-in session: aioftp's control channel plus our data connections."""

    dirty = False  # the control channel may be out of step (mid-transfer): never pooled
    idle_since = 0.0
    data_tls: ssl.SSLContext | None = None  # set for FTPS (PROT P)
    transfer: DataStream | None = None  # the open data connection, closed with the session
    _receiving = False  # the next passive connection is opened as an Inbox (see data())

    def close(self) -> None:
        if self.transfer is not None:
            self.transfer.close()
        super().close()

    async def aclose(self) -> None:
        """QUIT, close, and wait until the socket is gone: closing TLS takes a round trip."""
        if self._stream is None:
            return
        with contextlib.suppress(aioftp.StatusCodeError, OSError, asyncio.TimeoutError):
            if not self.dirty:
                await asyncio.wait_for(self.command("QUIT", "2xx"), SYNC_TIMEOUT_S)
        self.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stream.writer.wait_closed(), SYNC_TIMEOUT_S)

    async def _open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        # Plain TCP for everything: control TLS comes from AUTH TLS, data TLS from DataStream.
        if self._receiving:  # aioftp's get_passive_connection hands this pair back to data()
            return await DataStream.receiving(host, port, self.connection_timeout), None
        return await timed(asyncio.open_connection(host, port), self.connection_timeout)

    async def data(self, command: str, offset: int = 0, upload: bool = False) -> DataStream:
        """A passive data connection with ``command`` started on it (1xx received).

        Plain downloads and listings receive into an Inbox (ftpdata.py); uploads and TLS
        use a stream."""
        self._receiving = not upload and self.data_tls is None
        try:
            reader, writer = await self.get_passive_connection("I")
        finally:
            self._receiving = False
        if isinstance(reader, DataStream):
            stream = reader
        else:
            session = None
            if self.data_tls is not None:  # reuse the control session: servers may insist on it
                control = self.stream.writer.transport.get_extra_info("ssl_object")
                session = control.session if control is not None else None
            stream = DataStream(reader, writer, self.socket_timeout, self.data_tls, self.server_host, session)
        try:
            if offset:
                await self.command(f"REST {offset}", "350")
            # The TLS handshake runs beside the command: servers start it before or after their 1xx.
            shake = asyncio.ensure_future(stream.handshake()) if self.data_tls else None
            try:
                await self.command(command, "1xx")
            except BaseException:
                if shake:
                    shake.cancel()
                    shake.add_done_callback(lambda t: t.cancelled() or t.exception())
                raise
            if shake:
                await shake
        except BaseException:
            stream.close()
            raise
        self.dirty = True  # until the transfer's closing reply is read
        self.transfer = stream
        return stream

    async def finish(self, stream: DataStream, upload: bool = False) -> None:
        """Close a transfer that ran to its end and read the server's closing reply."""
        if upload:
            await stream.shutdown()
        else:
            stream.close()
        self.transfer = None
        await self.command(None, "2xx", "1xx")
        self.dirty = False

    async def abort(self, stream: DataStream) -> None:
        """End a transfer we stopped early and bring the control channel back in step.

        ABOR and NOOP go out together: whatever the transfer and the abort answer
        (426/226/225, by server and timing) comes before NOOP's 200. Without that 200
        the session stays dirty and is dropped.
        """
        stream.close()
        self.transfer = None

        async def drain() -> None:
            await self.command("ABOR")
            await self.command("NOOP")
            for _ in range(6):
                if (await self.parse_response())[0] == "200":
                    self.dirty = False
                    return

        with contextlib.suppress(aioftp.StatusCodeError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(drain(), SYNC_TIMEOUT_S)

    async def read_all(self, command: str) -> bytes:
        stream = await self.data(command)
        parts = []
        while block := await stream.read(UNIT):
            parts.append(block)
        await self.finish(stream)
        return b"".join(parts)

    async def is_dir(self, path: str) -> bool:
        try:
            await self.command(f"CWD {path}", "2xx")
        except aioftp.StatusCodeError:
            return False
        return True

    async def mdtm(self, path: str) -> float | None:
        try:
            return _parse_time((await self.command(f"MDTM {path}", "213"))[1][-1])
        except aioftp.StatusCodeError:
            return None

    async def mkdirs(self, path: str) -> None:
        """MKD each missing level; the common case (it exists) costs one CWD."""
        missing, folder = [], PurePosixPath(path)
        while folder != folder.parent and not await self.is_dir(str(folder)):
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                await self.command(f"MKD {folder}", "257")
            except aioftp.StatusCodeError:
                if not await self.is_dir(str(folder)):  # made meanwhile by another worker?
                    raise


class _Pool:
    """Logged-in sessions, at most ``size`` at once, reused while they stay in step."""

    def __init__(self, size: int, factory: Callable[[], Awaitable[_Client]]) -> None:
        self._sem = asyncio.Semaphore(size)
        self._idle: list[_Client] = []
        self._factory = factory
        self._closed = False

    def put(self, client: _Client) -> None:
        if client.dirty or self._closed:
            client.close()
        else:
            client.idle_since = time.monotonic()
            self._idle.append(client)

    async def _take(self) -> _Client:
        while self._idle:
            client = self._idle.pop()
            if time.monotonic() - client.idle_since < IDLE_CHECK_S:
                return client
            try:  # the server may have ended an idle session (421 timeout)
                await asyncio.wait_for(client.command("NOOP", "200"), SYNC_TIMEOUT_S)
                return client
            except (aioftp.StatusCodeError, OSError, asyncio.TimeoutError):
                client.close()
        return await self._factory()

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[_Client]:
        async with self._sem:
            client = await self._take()
            try:
                yield client
            except aioftp.StatusCodeError as exc:
                if _code(exc)[:1] in ("4", "5"):
                    self.put(client)  # the server answered a refusal: still in step unless dirty
                else:  # a positive reply we did not expect: an earlier one came late, out of step
                    client.close()
                raise
            except BaseException:
                client.close()  # a wire error, a cancel, an abandoned transfer
                raise
            self.put(client)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(client.aclose() for client in idle))


class FTPBackend(Backend, Rename, SetMtime):
    protocol = "ftp"
    # SetMtime is what a full-featured server gives; connect() narrows it to what FEAT lists.
    traits = Traits(ranged_read=True, checksums=())

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
        self._tls_context = self._make_tls_context() if self.tls else None
        self._feats: set[str] | None = None  # what FEAT lists, read by the first login
        self._use_mlsd = options.get("list_command") != "LIST"
        self._home = "/"
        self._pool = _Pool(max(1, max_streams), self._login)

    # -- sessions ---------------------------------------------------------------------
    def _make_tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.options.get("tls_cafile"))
        if self.options.get("tls_verify", True) is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _login(self) -> _Client:
        client = _Client(socket_timeout=self.io_timeout, connection_timeout=self.connect_timeout)
        try:
            await asyncio.wait_for(self._handshake(client), self.connect_timeout)
        except aioftp.StatusCodeError:
            await client.aclose()  # the server answers (a 530): say QUIT, let TLS close properly
            raise
        except BaseException:
            client.close()
            raise
        return client

    async def _handshake(self, client: _Client) -> None:
        """Connect and log in; the first session also reads what the server can do."""
        await client.connect(self.host, self.port)
        if self._tls_context is not None:  # explicit FTPS: TLS before the password crosses
            await client.command("AUTH TLS", "234")
            await client.stream.start_tls(sslcontext=self._tls_context, server_hostname=self.host)
        await client.login(self.username, str(self.credentials.get("password", "")))
        if self._tls_context is not None:
            await client.command("PBSZ 0", "200")
            await client.command("PROT P", "200")  # data connections encrypted too
            client.data_tls = self._tls_context
        if self._feats is None:
            await self._discover(client)
        if "UTF8" in self._feats:
            with contextlib.suppress(aioftp.StatusCodeError):
                await client.command("OPTS UTF8 ON", "2xx")
        await client.command("TYPE I", "200")  # some servers refuse SIZE in ASCII mode

    async def _discover(self, client: _Client) -> None:
        """Read FEAT and the login folder; set this server's features."""
        try:
            lines = (await client.command("FEAT", "211"))[1]
            self._feats = {line.split()[0].upper() for line in lines[1:-1] if line.strip()}
        except aioftp.StatusCodeError:
            self._feats = set()  # a server from before RFC 2389: plain commands only
        if not self._feats & {"MLST", "MLSD"}:
            self._use_mlsd = False
        with contextlib.suppress(aioftp.StatusCodeError, ValueError):
            self._home = str(await client.get_current_directory()) or "/"
        self.features = Features.of(self, lacking=() if "MFMT" in self._feats else (SetMtime,))

    async def connect(self) -> None:
        with error_edge(map_ftp_error):
            self._pool.put(await self._login())

    async def close(self) -> None:
        await self._pool.close()

    def describe(self) -> str:
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{self.username}@{self.host}:{self.port}{self.options.get('remotepath', '')}"

    def _abs(self, path: str) -> str:
        return str(PurePosixPath(self._home, path))

    async def _check_root(self, client: _Client) -> None:
        """Folders below the root are made as needed; the root itself only with create_root."""
        rp = str(self.options.get("remotepath") or "").rstrip("/")
        if rp and not self.options.get("create_root") and not await client.is_dir(self._abs(rp)):
            raise missing_root(self._abs(rp))

    @contextlib.asynccontextmanager
    async def _session(self, path: str) -> AsyncIterator[_Client]:
        """A pooled session, with errors mapped at this edge."""
        with error_edge(map_ftp_error, path):
            async with self._pool.lease() as client:
                yield client

    # -- listing -----------------------------------------------------------------------
    async def list(self, path: str, recursive: bool = True) -> AsyncIterator[Entry]:
        pending = deque([(self._abs(path), "")])  # (server folder, prefix of reported names)
        with error_edge(map_ftp_error, path):
            while pending:
                folder, prefix = pending.popleft()
                # Each folder is read whole, so no session is held while the caller works.
                for entry in await self._listdir(folder):
                    name = prefix + entry.name
                    if entry.is_dir and recursive:
                        pending.append((f"{folder.rstrip('/')}/{entry.name}", name + "/"))
                    else:
                        yield msgspec.structs.replace(entry, name=name)

    async def _listdir(self, folder: str) -> list[Entry]:
        """One folder's entries; [] when it is missing (or a file, or removed while we walk)."""
        async with self._pool.lease() as client:
            try:
                if self._use_mlsd:
                    try:
                        return await self._mlsd(client, folder)
                    except aioftp.StatusCodeError as exc:
                        if _code(exc) not in ("500", "502"):
                            raise
                        self._use_mlsd = False  # the server does not know MLSD after all
                return await self._list(client, folder)
            except aioftp.StatusCodeError as exc:
                # Servers say 550 or 501 for a missing folder; a refusal is worth raising.
                if isinstance(map_ftp_error(exc), PermissionDeniedError) or not _code(exc).startswith("5"):
                    raise
                if await client.is_dir(folder):
                    raise
                return []

    async def _mlsd(self, client: _Client, folder: str) -> list[Entry]:
        lines = (await client.read_all(f"MLSD {folder}")).decode("utf-8", "surrogateescape").split("\n")
        return [e for e in map(_mlsx_entry, lines) if e is not None and e.name not in (".", "..")]

    async def _list(self, client: _Client, folder: str) -> list[Entry]:
        # CWD, then LIST without a path: servers read LIST's argument as ls options and
        # globs, so a folder name with spaces or brackets would list something else.
        await client.command(f"CWD {folder}", "2xx")
        try:
            raw = await client.read_all("LIST -a")
        except aioftp.StatusCodeError as exc:
            if not _code(exc).startswith("5"):
                raise
            raw = await client.read_all("LIST")  # a server that takes "-a" for a name
        entries = []
        for line in raw.split(b"\n"):
            try:
                path, info = client.parse_list_line(line)
            except (ValueError, IndexError):
                continue  # "total 12" and other lines that are not entries
            name, kind = str(path), info.get("type")  # not path.name: PurePosixPath(".").name is ""
            if name in ("", ".", "..") or "/" in name or kind not in ("file", "dir"):
                continue
            mtime = _parse_time(info["modify"])
            if kind == "file" and "MDTM" in (self._feats or ()) and self.options.get("list_mdtm", True):
                mtime = await client.mdtm(f"{folder.rstrip('/')}/{name}") or mtime
            size = int(info["size"]) if kind == "file" else 0
            entries.append(Entry(name=name, size=size, mtime=mtime, is_dir=kind == "dir"))
        return entries

    # -- files -------------------------------------------------------------------------
    async def _stat(self, client: _Client, full: str, name: str) -> Entry:
        if self._use_mlsd and "MLST" in (self._feats or ()):
            code, lines = await client.command(f"MLST {full}", "2xx")
            if code != "250":  # found by the fault campaign: a late reply of an earlier command
                raise TransientError(f"MLST answered {code}: the control channel was out of step",
                                     {"path": name})
            fact_line = next((s for s in lines[1:] if s.startswith(" ")), "")
            entry = _mlsx_entry(fact_line.lstrip(), name)
            if entry is None:
                raise StorageError("neither a file nor a folder", {"path": name})
            return entry
        try:
            size = int((await client.command(f"SIZE {full}", "213"))[1][-1].strip())
        except aioftp.StatusCodeError as exc:
            if _code(exc) == "550" and await client.is_dir(full):
                return Entry(name=name, mtime=await client.mdtm(full), is_dir=True)
            raise
        return Entry(name=name, size=size, mtime=await client.mdtm(full))

    async def stat(self, path: str) -> Entry:
        async with self._session(path) as client:
            return await self._stat(client, self._abs(path), path)

    async def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length == 0:
            return
        async with self._session(path) as client:
            stream = await client.data(f"RETR {self._abs(path)}", offset)
            left = length
            while left is None or left > 0:
                block = await stream.read(UNIT if left is None else min(UNIT, left))
                if not block:
                    break
                if left is not None:
                    left -= len(block)
                yield block  # a consumer that stops here leaves the session dirty: dropped
            if left is not None and left <= 0:
                await client.abort(stream)  # we stopped at `length`, before the server's end
            else:
                await client.finish(stream)

    async def write(self, path: str, chunks: AsyncIterable[bytes], size: int | None = None,
                    extra: dict[str, Any] | None = None) -> Entry:
        full = self._abs(path)
        with source_errors():
            async with self._session(path) as client:
                parent = str(PurePosixPath(full).parent)
                if not await client.is_dir(parent):
                    await self._check_root(client)
                    await client.mkdirs(parent)
                stream = await client.data(f"STOR {full}", upload=True)
                sent = await self._pump(chunks, stream)
                await client.finish(stream, upload=True)  # waits for the server's 226
                entry = await self._stat(client, full, path)
        if entry.size != sent:
            raise TransientError(f"the server stored {entry.size} bytes of {sent}", {"path": path})
        return entry

    @staticmethod
    async def _pump(chunks: AsyncIterable[bytes], stream: DataStream) -> int:
        sent = 0
        async for chunk in source(chunks):
            await stream.write(chunk)
            sent += len(chunk)
        return sent

    async def delete(self, path: str) -> None:
        async with self._session(path) as client:
            await client.command(f"DELE {self._abs(path)}", "2xx")

    async def rmdir(self, path: str) -> None:
        async with self._session(path) as client:
            await client.command(f"RMD {self._abs(path)}", "2xx")

    async def mkdir(self, path: str) -> None:
        async with self._session(path) as client:
            root = self._abs(str(self.options.get("remotepath") or "")).rstrip("/")
            if self._abs(path).rstrip("/") != root:
                await self._check_root(client)  # a folder below the root never makes the root
            await client.mkdirs(self._abs(path))

    async def rename(self, src: str, dst: str) -> None:
        source, target = self._abs(src), self._abs(dst)
        async with self._session(src) as client:
            await client.command(f"RNFR {source}", "350")
            try:
                await client.command(f"RNTO {target}", "2xx")
            except aioftp.StatusCodeError as exc:
                # A server that will not replace a file says it exists: delete it, then once more.
                # Other refusals are raised as they are, so the target is never lost to a retry.
                if not (_code(exc).startswith("5") and _EXISTS.search(" ".join(map(str, exc.info)))):
                    raise
                await client.command(f"DELE {target}", "2xx")
                await client.command(f"RNFR {source}", "350")
                await client.command(f"RNTO {target}", "2xx")

    async def set_mtime(self, path: str, mtime: float) -> None:
        if self.features.set_mtime is None:
            raise StorageError("this FTP server has no MFMT: mtimes cannot be set", {"path": path})
        stamp = datetime.fromtimestamp(int(mtime), timezone.utc).strftime("%Y%m%d%H%M%S")
        async with self._session(path) as client:
            await client.command(f"MFMT {stamp} {self._abs(path)}", "213")
