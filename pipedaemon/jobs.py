"""Jobs: long operations that outlive the request (and the client) that started them.

A job kind is a coroutine in a module's table of kinds (``JOB_KINDS = JobKinds()``,
``@JOB_KINDS.kind("name")``); the daemon gives the manager the tables it runs. The
manager persists every job in SQLite, runs at most ``max_running`` at once, pushes
throttled progress to the connections that asked, and on start resumes the jobs a
previous daemon left unfinished (their ``checkpoint`` tells the runner where to pick up).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.wire import (
    FINAL_STATES,
    ErrorObject,
    JobInfo,
    Message,
    ProgressEvent,
    encode_line,
    line_buffer,
)

from .rpc import Context, Methods, Params
from .transfer.common import Orphan, Tuning, streams_for
from .transfer.limits import Limits, TokenBucket, env_int
from .transfer.resume import ResumeSlot, forget_job

if TYPE_CHECKING:
    from .server import Connection, Daemon

log = logging.getLogger("pipedaemon.jobs")
PROGRESS_INTERVAL = 0.1  # at most ~10 job.progress notifications per second per job
MAX_QUEUED = 10_000

Runner = Callable[["JobContext"], Awaitable[Any]]


class JobKinds:
    """Job kinds by name: one module's (filled by ``@table.kind``), or the union of several."""

    def __init__(self, *tables: JobKinds) -> None:
        self.runners: dict[str, Runner] = {}
        for table in tables:
            for name, fn in table.runners.items():
                self.add(name, fn)

    def add(self, name: str, fn: Runner) -> None:
        if name in self.runners:
            raise RuntimeError(f"job kind {name} registered twice")
        self.runners[name] = fn

    def kind(self, name: str) -> Callable[[Runner], Runner]:
        """Decorator: ``fn`` runs the jobs of kind ``name``."""
        def register(fn: Runner) -> Runner:
            self.add(name, fn)
            return fn

        return register

    def get(self, name: str) -> Runner | None:
        return self.runners.get(name)


class Interrupted(Exception):
    """The daemon is stopping: the job goes back to `queued` and resumes on restart."""


class JobContext:
    """What a running job sees: its params, progress reporting and checkpoints."""

    def __init__(self, manager: JobManager, info: JobInfo, profile: str, checkpoint: Any) -> None:
        self.manager = manager
        self.daemon = manager.daemon
        self.info = info
        self.id = info.id
        self.params = info.params
        self.profile = profile
        self.checkpoint_data = checkpoint
        self.loop = asyncio.get_running_loop()
        self._last_sent = 0.0
        self._rate = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self.event = ProgressEvent(job_id=info.id, transfer_id=info.id)

    def progress(self, bytes_done: int, bytes_total: int | None = None, **fields: Any) -> None:
        """Record progress; sends at most every PROGRESS_INTERVAL seconds."""
        ev = self.event
        ev.bytes_done = bytes_done
        if bytes_total is not None:
            ev.bytes_total = bytes_total
        for k, v in fields.items():
            setattr(ev, k, v)
        now = time.monotonic()
        t0, b0 = self._rate_mark
        if now - t0 >= 0.25:
            inst = (bytes_done - b0) / (now - t0)
            self._rate = inst if self._rate == 0 else 0.5 * self._rate + 0.5 * inst
            self._rate_mark = (now, bytes_done)
        ev.rate_bps = max(0.0, self._rate)
        if now - self._last_sent >= PROGRESS_INTERVAL:
            self._last_sent = now
            self.manager.publish_progress(self)

    def progress_threadsafe(self, bytes_done: int, bytes_total: int | None = None, **fields: Any) -> None:
        self.loop.call_soon_threadsafe(lambda: self.progress(bytes_done, bytes_total, **fields))

    def resume_slot(self, target: str) -> ResumeSlot:
        """Durable notes for one file of this job, so a restarted daemon resumes it mid-file."""
        return ResumeSlot(self.manager.state, self.id, target, lambda: self.manager.stopping)

    def tuning(self, remote_key: str, chunk_size: int | None = None, bwlimit_bps: int = 0) -> Tuning:
        """How this job's transfers may move: the daemon's limits plus the job's own."""
        m = self.manager
        return Tuning(streams=streams_for(bwlimit_bps, Tuning.streams), chunk_size=chunk_size,
                      limits=m.limits, remote_key=remote_key, bucket=TokenBucket(bwlimit_bps),
                      orphan=m.orphan, on_chunk=self.chunk)

    def chunk(self, index: int, count: int) -> None:
        """The chunk of the current file now moving, for ProgressEvent.chunk_index/chunk_count
        (sent with the next progress event)."""
        self.event.chunk_index, self.event.chunk_count = index, count

    async def checkpoint(self, data: Any) -> None:
        """Persist where the job stands, so a restarted daemon resumes from here."""
        self.checkpoint_data = data
        await self.manager.state.execute(
            "UPDATE jobs SET checkpoint=?, progress=?, updated_at=? WHERE id=?",
            (msgspec.json.encode(data), msgspec.json.encode(self.event), time.time(), self.id))


DEFAULT_MAX_JOBS = 4  # jobs running at once; the others wait queued


class JobManager:
    """Runs the jobs of ``kinds``; their transfers take ``limits``' stream slots and bandwidth, and
    tell ``orphan`` (the janitor) what they could not clean up."""

    def __init__(self, daemon: Daemon, kinds: JobKinds, limits: Limits, orphan: Orphan | None,
                 max_running: int | None = None) -> None:
        self.daemon = daemon
        self.state = daemon.state
        self.kinds = kinds
        self.limits = limits
        self.orphan = orphan
        if max_running is None:
            max_running = env_int("PIPEDAEMON_MAX_JOBS", DEFAULT_MAX_JOBS, 1, 1024)
        self.live: dict[str, JobInfo] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.contexts: dict[str, JobContext] = {}
        self._started: dict[str, float] = {}  # monotonic start of running jobs, for the log
        self.watchers: dict[str, set[Connection]] = {}
        self.slots = asyncio.Semaphore(max_running)
        self.stopping = False

    # -- lifecycle ---------------------------------------------------------------
    async def resume_unfinished(self) -> int:
        rows = await self.state.fetchall(
            "SELECT id, kind, profile, params, checkpoint, created_at FROM jobs "
            "WHERE state IN ('queued','running') ORDER BY created_at")
        for jid, kind, profile, params, checkpoint, created in rows:
            info = JobInfo(id=jid, kind=kind, state="queued", created_at=created, updated_at=time.time(),
                           params=msgspec.json.decode(params))
            cp = msgspec.json.decode(checkpoint) if checkpoint else None
            log.info("resuming job %s (%s)", jid, kind)
            await self._set_state(info, "queued")
            self._launch(info, profile, cp)
        return len(rows)

    async def shutdown(self, grace: float) -> None:
        """Let running jobs finish for ``grace`` seconds, then checkpoint the rest."""
        self.stopping = True
        tasks = list(self.tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in list(self.tasks.values()):
            if not task.done():
                task.cancel(Interrupted.__name__)
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=10)

    # -- operations ----------------------------------------------------------------
    async def submit(self, kind: str, params: dict[str, Any], profile: str = "default",
                     conn: Connection | None = None) -> JobInfo:
        if self.stopping:
            raise E.BusyError("the daemon is shutting down")
        if len(self.live) >= MAX_QUEUED:
            raise E.BusyError(f"too many jobs ({MAX_QUEUED} queued or running)")
        now = time.time()
        info = JobInfo(id=uuid.uuid4().hex[:16], kind=kind, state="queued", created_at=now,
                       updated_at=now, params=params)
        await self.state.execute(
            "INSERT INTO jobs(id, kind, profile, state, params, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?)",
            (info.id, kind, profile, "queued", msgspec.json.encode(params), now, now))
        if conn is not None:
            self.watch(info.id, conn)
        self._launch(info, profile, None)
        return info

    def _launch(self, info: JobInfo, profile: str, checkpoint: Any) -> None:
        self.live[info.id] = info
        self.tasks[info.id] = asyncio.get_running_loop().create_task(self._run(info, profile, checkpoint))

    async def _run(self, info: JobInfo, profile: str, checkpoint: Any) -> None:
        runner = self.kinds.get(info.kind)
        try:
            async with self.slots:
                if runner is None:
                    raise E.InternalError(f"unknown job kind {info.kind}")
                ctx = JobContext(self, info, profile, checkpoint)
                self.contexts[info.id] = ctx
                await self._set_state(info, "running")
                self._started[info.id] = time.monotonic()
                log.info("job %s started: %s %s%s", info.id, info.kind, describe(profile, info.params),
                         " (resumed)" if checkpoint is not None else "")
                result = await runner(ctx)
            await self._finish(info, "succeeded", result=result)
        except asyncio.CancelledError as exc:
            if Interrupted.__name__ in exc.args or self.stopping:
                await self._set_state(info, "queued")  # resumes on the next start
                log.info("job %s checkpointed for restart", info.id)
            else:
                await self._finish(info, "cancelled", error=E.CancelledError(f"job {info.id} was cancelled"))
        except E.DaemonError as err:
            await self._finish(info, "failed", error=err)
        except Exception as exc:
            log.exception("job %s (%s) crashed", info.id, info.kind)
            await self._finish(info, "failed", error=E.InternalError(f"internal error: {type(exc).__name__}"))
        finally:
            self.tasks.pop(info.id, None)
            self.contexts.pop(info.id, None)
            self.live.pop(info.id, None)

    async def _set_state(self, info: JobInfo, state: str) -> None:
        info.state = state
        info.updated_at = time.time()
        await self.state.execute("UPDATE jobs SET state=?, updated_at=? WHERE id=?",
                                        (state, info.updated_at, info.id))

    async def _finish(self, info: JobInfo, state: str, result: Any = None,
                      error: E.DaemonError | None = None) -> None:
        ctx = self.contexts.get(info.id)
        if ctx is not None:
            if state == "succeeded":
                ctx.event.bytes_done = max(ctx.event.bytes_done, ctx.event.bytes_total)
            info.progress = ctx.event
            self.publish_progress(ctx)  # the exact, final event
        info.state, info.result, info.updated_at = state, result, time.time()
        info.error = ErrorObject(error.code, error.message, error.data or None) if error else None
        await self.state.execute(
            "UPDATE jobs SET state=?, result=?, error=?, progress=?, updated_at=? WHERE id=?",
            (state, msgspec.json.encode(result), msgspec.json.encode(info.error),
             msgspec.json.encode(info.progress), info.updated_at, info.id))
        await forget_job(self.state, info.id)
        self._log_end(info, error)
        line = line_buffer(Message(method="job.finished", params=info))
        for conn in self.watchers.pop(info.id, set()):
            conn.send(line)

    def _log_end(self, info: JobInfo, error: E.DaemonError | None) -> None:
        """One line per finished job: what, how much, how long, and how it ended (with its code)."""
        started = self._started.pop(info.id, None)
        took = f" in {time.monotonic() - started:.1f} s" if started is not None else ""
        ev = info.progress
        size = f", {ev.bytes_done} bytes" if ev is not None else ""
        files = f", {ev.file_index}/{ev.file_count} files" if ev is not None and ev.file_count > 1 else ""
        what = f"job {info.id} {info.state}: {info.kind} {describe(None, info.params)}{size}{files}{took}"
        if error is None:
            log.info("%s", what)
        elif info.state == "cancelled":
            log.info("%s (cancelled)", what)
        else:
            log.warning("%s: %s [code %d]", what, error.message, error.code)

    def publish_progress(self, ctx: JobContext) -> None:
        conns = self.watchers.get(ctx.id)
        if conns:
            line = encode_line(Message(method="job.progress", params=ctx.event))
            for conn in conns:
                conn.send(line, droppable=True)

    def watch(self, job_id: str, conn: Connection) -> None:
        self.watchers.setdefault(job_id, set()).add(conn)
        conn.watching.add(job_id)

    def unwatch_all(self, conn: Connection) -> None:
        for jid in conn.watching:
            s = self.watchers.get(jid)
            if s is not None:
                s.discard(conn)
                if not s:
                    self.watchers.pop(jid, None)
        conn.watching.clear()

    async def get(self, job_id: str) -> JobInfo:
        live = self._live(job_id)
        if live is not None:
            return live
        row = await self.state.fetchone(
            "SELECT id, kind, state, params, result, error, progress, created_at, updated_at "
            "FROM jobs WHERE id=?", (job_id,))
        if row is None:
            raise E.NotFoundError(f"no such job: {job_id}", {"job_id": job_id})
        return _row_info(row)

    async def list(self, state: str | None, limit: int) -> list[JobInfo]:
        sql = ("SELECT id, kind, state, params, result, error, progress, created_at, updated_at FROM jobs")
        args: list[Any] = []
        if state:
            sql += " WHERE state=?"
            args.append(state)
        sql += " ORDER BY created_at DESC LIMIT ?"
        rows = await self.state.fetchall(sql, [*args, limit])
        return [self._live(r[0]) or _row_info(r) for r in rows]

    def _live(self, job_id: str) -> JobInfo | None:
        info = self.live.get(job_id)
        ctx = self.contexts.get(job_id)
        if info is not None and ctx is not None:
            info.progress = ctx.event
        return info

    async def cancel(self, job_id: str) -> JobInfo:
        info = await self.get(job_id)
        if info.state in FINAL_STATES:
            return info
        task = self.tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        return await self.get(job_id)

    def counts(self) -> dict[str, int]:
        out = {"queued": 0, "running": 0}
        for info in self.live.values():
            out[info.state] = out.get(info.state, 0) + 1
        return out


_DESCRIBED = ("remote", "key", "path", "dest", "dst_remote", "dst_key", "name")


def describe(profile: str | None, params: Any) -> str:
    """What a job works on, from its params (names and paths only: never a setting or secret)."""
    if not isinstance(params, dict):
        return ""
    parts = [f"{k}={params[k]!r}" for k in _DESCRIBED if isinstance(params.get(k), str) and params[k]]
    if profile and profile != "default":
        parts.insert(0, f"profile={profile!r}")
    return " ".join(parts)


def _row_info(row: Any) -> JobInfo:
    jid, kind, state, params, result, error, progress, created, updated = row
    dec = msgspec.json.decode
    return JobInfo(
        id=jid, kind=kind, state=state, created_at=created, updated_at=updated, params=dec(params),
        # The result goes out as it was stored, undecoded: a pull's list of a million files is
        # one ~100 MB value, which job.get and job.list need not build as objects first.
        result=msgspec.Raw(result) if result else None,
        error=msgspec.json.decode(error, type=ErrorObject | None) if error else None,
        progress=msgspec.json.decode(progress, type=ProgressEvent | None) if progress else None)


# -- RPC ---------------------------------------------------------------------------
class JobId(Params):
    job_id: str


class JobList(Params):
    state: str | None = None
    limit: int = 100


METHODS = Methods()


@METHODS.rpc("job.list", JobList)
async def job_list(ctx: Context, p: JobList) -> list[JobInfo]:
    """Jobs, newest first, optionally of one state."""
    if p.state is not None and p.state not in ("queued", "running", *FINAL_STATES):
        raise E.InvalidParamsError(f"unknown job state {p.state!r}", {"field": "state"})
    return await ctx.daemon.jobs.list(p.state, max(1, min(p.limit, 10_000)))


@METHODS.rpc("job.get", JobId)
async def job_get(ctx: Context, p: JobId) -> JobInfo:
    """One job, live or from the state database."""
    return await ctx.daemon.jobs.get(p.job_id)


@METHODS.rpc("job.watch", JobId)
async def job_watch(ctx: Context, p: JobId) -> JobInfo:
    """Send this connection the job's progress and its job.finished notification."""
    info = await ctx.daemon.jobs.get(p.job_id)
    if info.state not in FINAL_STATES and ctx.conn is not None:
        ctx.daemon.jobs.watch(p.job_id, ctx.conn)
    return info


@METHODS.rpc("job.cancel", JobId)
async def job_cancel(ctx: Context, p: JobId) -> JobInfo:
    """Cancel a job (any client may); its temporary files and uploads are cleaned up."""
    return await ctx.daemon.jobs.cancel(p.job_id)
