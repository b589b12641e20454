"""The daemon: one per socket, serving JSON-RPC lines to same-user clients."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import resource
import signal
import socket
import sqlite3
import stat
import struct
import time
from pathlib import Path
from typing import Any

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.paths import ensure_socket_dir, try_lock
from pipedaemon_sdk.protocol.wire import MAX_LINE, Message, Status, encode_line

from . import (
    __version__,
    authstatus,
    daemon_rpc,
    datastore,
    events,
    filejobs,
    fslist,
    jobs,
    mirror,
    remotes,
    rpc,
    schedules,
    share,
    systemd,
)
from .access import Guard, SharedOptions
from .access_rules import RULES
from .backends.openssh import sweep_once
from .events import Events
from .jobs import JobKinds, JobManager
from .metadata import rpc as metadata_rpc
from .metadata.service import MetaService
from .pipes import rpc as pipes_rpc
from .pipes.service import Pipes
from .provenance import rpc as provenance_rpc
from .provenance.graph import Graph
from .remotes import Remotes
from .rpc import Context
from .schedules import Scheduler
from .startup import StartupError, check_home, check_state, record_socket, take_home_lock
from .state import State
from .transfer.janitor import Janitor
from .transfer.limits import Limits

log = logging.getLogger("pipedaemon.server")


def method_table() -> rpc.Methods:
    """Every method the daemon serves: the tables of its RPC modules, each named here."""
    return rpc.Methods(
        daemon_rpc.METHODS, jobs.METHODS, remotes.METHODS, datastore.METHODS, filejobs.METHODS,
        pipes_rpc.METHODS, metadata_rpc.METHODS, provenance_rpc.METHODS, authstatus.METHODS,
        events.METHODS, mirror.METHODS, schedules.METHODS, fslist.METHODS, share.METHODS)


def job_kinds() -> JobKinds:
    """Every job kind the daemon runs, from the modules that define them."""
    return JobKinds(filejobs.JOB_KINDS, pipes_rpc.JOB_KINDS, mirror.JOB_KINDS)

MAX_INFLIGHT = 128  # concurrent requests per connection before Busy
MAX_CONNECTIONS = 8192  # clients at once before Busy (bounded by the open-files limit too)
EVENT_DROP_BYTES = 1 << 20  # a client this far behind is not read from and loses progress events
MAX_BUFFER = 64 << 20  # a client this far behind is disconnected
SHUTDOWN_GRACE = 2.0  # running jobs may finish this long, then are checkpointed


class Connection:
    def __init__(self, daemon: Daemon, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.daemon = daemon
        self.reader = reader
        self.writer = writer
        self.watching: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.dropped_events = 0
        self.closed = False
        self.user: str | None = None  # set by Daemon._on_client from the peer credentials

    def send(self, line: bytes | bytearray, droppable: bool = False) -> None:
        """Queue a line; progress events are dropped for a client that does not read."""
        if self.closed or self.writer.is_closing():
            return
        buffered = self.writer.transport.get_write_buffer_size()
        if droppable and buffered > EVENT_DROP_BYTES:
            self.dropped_events += 1
            return
        if buffered > MAX_BUFFER:
            log.warning("disconnecting a client that stopped reading (%d bytes queued)", buffered)
            self.abort()
            return
        self.writer.write(line)

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()

    async def serve(self) -> None:
        try:
            while not self.closed:
                if self.writer.transport.get_write_buffer_size() > EVENT_DROP_BYTES:
                    # Back-pressure: a client this far behind is not read from until it catches
                    # up, so it cannot make us build answer after answer it does not take.
                    await self.writer.drain()
                    continue
                try:
                    line = await self.reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    self.send(encode_line(rpc.error_message(None, E.InvalidRequestError(
                        f"line longer than {MAX_LINE} bytes; closing the connection"))))
                    break
                except asyncio.IncompleteReadError:
                    break  # the client closed (a half line at EOF is dropped)
                if line.strip():
                    await self._handle_safely(line)
        except (ConnectionError, OSError):
            pass
        finally:
            await self._close()

    async def _handle_safely(self, line: bytes) -> None:
        """Handle a line; a bug met while reading it costs that line an error, not the connection."""
        try:
            await self._handle(line)
        except (ConnectionError, OSError):
            raise
        except Exception:
            log.exception("internal error reading a request line")
            self.send(encode_line(rpc.error_message(None, E.InternalError(
                "internal error reading this request; see the daemon log"))))

    async def _handle(self, line: bytes) -> None:
        req, error_msg = rpc.parse(line)
        if req is None:
            self.send(encode_line(error_msg))
            return
        method, params, err = rpc.lookup(self.daemon.methods, req)
        if err is not None or method is None:
            out = rpc.answer(req, None, err)
            if out:
                self.send(out)
            return
        if method.raw:  # the connection now belongs to this byte stream
            await self._respond_raw(method, params, req)
            self.closed = True
            return
        if len(self.tasks) >= MAX_INFLIGHT:
            out = rpc.answer(req, None, E.BusyError(f"more than {MAX_INFLIGHT} requests in flight"))
            if out:
                self.send(out)
            return
        task = asyncio.get_running_loop().create_task(self._respond(method, params, req))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _respond(self, method: rpc.Method, params: Any, req: Any) -> None:
        result, err = await rpc.invoke(method, params, Context(self.daemon, self, self.user))
        out = rpc.answer(req, result, err)
        if out:
            self.send(out)

    async def _respond_raw(self, method: rpc.Method, params: Any, req: Any) -> None:
        """Answer a stream method: the response line, then raw bytes until the body ends."""
        result, err = await rpc.invoke(method, params, Context(self.daemon, self, self.user))
        if err is not None or not isinstance(result, rpc.RawReply):
            out = rpc.answer(req, result, err)
            if out:
                self.send(out)
            return
        self.send(rpc.answer(req, result.header, None) or b"")
        try:
            async for chunk in result.body:
                self.writer.write(chunk)
                await self.writer.drain()
        except Exception as exc:  # noqa: BLE001 - the reader sees a short stream and reports it
            log.warning("stream %s ended early: %s", method.name, exc)
            self.abort()

    async def _close(self) -> None:
        self.closed = True
        for t in list(self.tasks):
            t.cancel()
        self.daemon.jobs.unwatch_all(self)
        self.daemon.connections.discard(self)
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", raw)[1]


class Daemon:
    """The daemon and its parts, built here, each given what it needs (nothing is found by
    name at run time): the state, the method table, the engine's limits and janitor, the
    jobs, remotes, pipes, metadata, provenance, events and the scheduler, and on a shared
    daemon the guard."""

    def __init__(self, socket_path: Path, home: Path, idle_timeout: float = 0.0,
                 reset_state: bool = False, shared: SharedOptions | None = None) -> None:
        self.socket_path = socket_path
        self.served_path = str(socket_path)  # under socket activation: the socket systemd gave us
        self.reset_state = reset_state
        self._sock: socket.socket | None = None
        self._home_lock: int | None = None
        # A shared daemon (access.SharedOptions): other users connect, each request is theirs.
        self.shared = shared
        self.home = home
        self.idle_timeout = idle_timeout
        self.started = time.time()
        self.state = State(home / "state.db")
        self.methods = method_table()
        self.limits = Limits()  # stream slots and bandwidth, shared by every transfer
        self.remotes = Remotes(self.state, home)
        self.janitor = Janitor(self.state, self.remotes)
        self.jobs = JobManager(self, job_kinds(), self.limits, self.janitor.remember)
        self.provenance = Graph(self.state)
        self.pipes = Pipes(self, self.remotes)  # (its scan cache listens to the remotes' writes)
        self.metadata = MetaService(self.state, self.remotes, self.provenance)
        self.remotes.listeners.append(self.metadata.forget)
        self.events = Events(self.state)
        self.scheduler = Scheduler(self, self.pipes, self.events)
        # On a shared daemon the guard checks every request's user (access.py).
        self.guard = Guard(self, RULES) if shared is not None else None
        self.connections: set[Connection] = set()
        # Keep descriptors for streams, files and the database beyond the clients.
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = max(16, min(MAX_CONNECTIONS, nofile - 256))
        self.stop_event = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._lock_fd: int | None = None
        self._own_socket = True
        self._last_busy = time.monotonic()

    def stop(self) -> None:
        """Stop accepting at once (a client connecting now starts or waits for the next
        daemon, never talks to this one), then shut down."""
        if self._server is not None:
            self._server.close()
        if not self.stop_event.is_set():  # clients following jobs learn this is a stop, not a crash
            line = encode_line(Message(method="daemon.stopping", params={"pid": os.getpid()}))
            for conn in list(self.connections):
                if conn.watching:
                    conn.send(line)
        self.stop_event.set()

    # -- startup ---------------------------------------------------------------------
    def _take_lock(self) -> bool:
        inherited = os.environ.pop("PIPEDAEMON_LOCK_FD", None)
        if inherited is not None:  # the SDK locked it for us before starting us
            self._lock_fd = int(inherited)
            os.set_inheritable(self._lock_fd, False)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # already ours: a no-op
                return True
            except OSError:
                os.close(self._lock_fd)
                self._lock_fd = None
        self._lock_fd = try_lock(self.socket_path)
        return self._lock_fd is not None

    def _listen_socket(self) -> socket.socket:
        inherited = systemd.inherited_socket()
        if inherited is not None:
            self._own_socket = False
            name = inherited.getsockname()
            self.served_path = name if isinstance(name, str) and name else str(self.socket_path)
            return inherited
        folder = self.socket_path.parent
        existed = folder.exists()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Our own socket folder is 0700; a folder the user chose for other things (their home,
        # /tmp) is left as it is: the socket itself is 0600 and peers are checked.
        if folder.stat().st_uid == os.getuid() and (not existed or folder.name.startswith("pipedaemon")):
            folder.chmod(0o700)
        if len(os.fsencode(self.socket_path)) > 107:  # sun_path holds 108 bytes with the NUL
            raise OSError(errno.ENAMETOOLONG, f"the socket path {self.socket_path} is "
                          f"{len(os.fsencode(self.socket_path))} bytes, more than a Unix socket takes (107); "
                          "choose a shorter PIPEDAEMON_SOCKET")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale: we hold the lock, so no daemon owns it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.socket_path))
        finally:
            os.umask(old)
        self.socket_path.chmod(0o600)
        if self.shared is not None:
            self.shared.open_socket(self.socket_path)  # the socket group's members may connect
        sock.listen(512)
        return sock

    def _check_socket_path(self) -> None:
        """Refuse a folder another user controls, and a path holding something else than a socket."""
        ensure_socket_dir(self.socket_path)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                raise FileExistsError(errno.EEXIST, "exists and is not a socket; not replacing it",
                                      str(self.socket_path))

    async def run(self) -> int:
        try:
            if not self._take_lock():
                log.info("another daemon already serves %s; exiting", self.socket_path)
                return 0
            self._check_socket_path()
        except OSError as exc:
            log.error("cannot serve %s: %s", self.socket_path, exc)
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        try:
            resumed = await self._start()
        except (OSError, sqlite3.Error, E.DaemonError, StartupError) as exc:
            # One line, and nothing left behind: the database's thread would keep us alive.
            text = getattr(exc, "message", None) or (exc.strerror if isinstance(exc, OSError) and
                                                     exc.strerror and not exc.filename else None) or exc
            log.error("cannot start: %s", text)
            await self._abandon_start()
            return 1
        log.info("pipedaemon %s listening on %s (pid %d, %d jobs resumed)",
                 __version__, self.served_path, os.getpid(), resumed)
        systemd.notify("READY=1")
        idle = loop.create_task(self._idle_watch())
        await self.stop_event.wait()
        idle.cancel()
        await self._shutdown()
        return 0

    async def _start(self) -> int:
        """Lock the home, listen, open the state, start services, resume jobs: how many resumed."""
        check_home(self.home)
        self._home_lock = take_home_lock(self.home, self.socket_path)
        aside = check_state(self.home / "state.db", self.reset_state)
        if aside is not None:
            log.warning("the damaged state database was moved to %s; starting with an empty state", aside)
        self._sock = self._listen_socket()
        if self.served_path != str(self.socket_path):  # socket activation: name the real one
            record_socket(self._home_lock, self.served_path)
        await self.state.open()
        await self.start_services()
        resumed = await self.jobs.resume_unfinished()
        self._server = await asyncio.start_unix_server(self._on_client, sock=self._sock, limit=MAX_LINE + 1)
        return resumed

    async def _abandon_start(self) -> None:
        self.jobs.stopping = True
        with contextlib.suppress(Exception):
            await self.jobs.shutdown(0)
        await self.stop_services()
        with contextlib.suppress(Exception):
            await self.state.close()
        if self._sock is not None:
            self._sock.close()
            if self._own_socket:
                with contextlib.suppress(OSError):
                    self.socket_path.unlink()

    async def start_services(self) -> None:
        """Start the parts that run on their own, once the state is open."""
        sweep_once()  # folders of OpenSSH backends whose daemon was killed (kill -9) before closing
        self.janitor.start()
        await self.pipes.open()
        await self.scheduler.open()
        if self.guard is not None and self.shared is not None:
            log.info("shared daemon: members of group %s may connect; audit log %s",
                     self.shared.group, self.guard.audit.path)

    async def _shutdown(self) -> None:
        log.info("shutting down")
        systemd.notify("STOPPING=1")
        if self._server is not None:
            self._server.close()
        await self.jobs.shutdown(SHUTDOWN_GRACE)
        for conn in list(self.connections):
            conn.closed = True
            conn.writer.close()
        await self.stop_services()
        await self.state.close()
        if self._own_socket:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        # The lock stays held until the process is gone (the kernel drops it at exit): a next
        # daemon must not start while this one is still tearing down.
        log.info("stopped")

    async def stop_services(self) -> None:
        for close in (self.remotes.close, self.janitor.close, self.pipes.close, self.scheduler.close):
            with contextlib.suppress(Exception):
                await close()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stop_event.is_set():  # accepted just before we stopped listening
            writer.close()
            return
        uid = peer_uid(writer)
        user = self.shared.admit(uid) if self.shared is not None else None
        refused = user is None if self.shared is not None else uid != os.getuid()
        if refused:
            log.warning("refused a connection from uid %s", uid)
            err = E.PermissionDeniedError(
                "only members of the socket's group may connect" if self.shared is not None
                else "only the daemon's own user may connect", {"uid": uid})
            writer.write(encode_line(rpc.error_message(None, err)))
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()
            return
        if len(self.connections) >= self.max_connections:
            err = E.BusyError(f"too many connections ({len(self.connections)}); try again later")
            writer.write(encode_line(rpc.error_message(None, err)))
            writer.close()
            return
        conn = Connection(self, reader, writer)
        conn.user = user
        self.connections.add(conn)
        await conn.serve()

    async def _idle_watch(self) -> None:
        if self.idle_timeout <= 0:
            return
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout))
            # The scheduler keeps the daemon up while a pipe has a schedule.
            kept = self.scheduler.keeps_alive()
            if self.connections or self.jobs.live or kept:
                self._last_busy = time.monotonic()
            elif time.monotonic() - self._last_busy >= self.idle_timeout:
                log.info("idle for %.0f s; exiting", self.idle_timeout)
                self.stop()
                return

    def status(self) -> Status:
        return Status(version=__version__, pid=os.getpid(), uptime_s=round(time.time() - self.started, 3),
                      socket_path=self.served_path, home=str(self.home), jobs=self.jobs.counts(),
                      log_path=str(self.home / "daemon.log"))


def raise_open_files_limit() -> int:
    """Lift the soft open-files limit to the hard one: each client and stream is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def serve(socket_path: Path, home: Path, idle_timeout: float, reset_state: bool = False,
          shared: SharedOptions | None = None) -> int:
    """Run a daemon until it is stopped; the exit status."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep working without it
        runner = asyncio.run

    async def main() -> int:
        return await Daemon(socket_path, home, idle_timeout, reset_state, shared).run()

    raise_open_files_limit()

    return runner(main())
