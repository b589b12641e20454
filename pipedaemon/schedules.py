"""Schedules: the daemon re-scans a pipe's remote, or pulls, pushes or mirrors it, on its own.

A pipe's ``schedule`` setting says when (``every`` a period, or ``at`` HH:MM local time)
and what (``action``). The scheduler keeps each schedule's next and last run, its failures
and its job in ``schedule_state``, so a restarted daemon carries on: a run missed while
the daemon or the machine slept runs once when it is back (the next run is planned from
the run's own start, never slot by slot), a run of a pipe never starts while its previous
one (or its job, resumed after a restart) is still going, and a failing run backs off
(the period doubled per failure, capped) with its error shown by ``schedule.list``.

A failed run (a check, or a job that failed or was cancelled) goes out to watchers as a
``schedule.failed`` event (its error, failures in a row and next run).

It also turns what any scan found changed (``ScanCache.diff_listeners``) into
``pipe.changed`` events of every pipe over that folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.pipefiles import name_filter
from pipedaemon_sdk.protocol.wire import FINAL_STATES, JobInfo

from .events import Events
from .pipes.schedspec import (
    ScheduleSpec,
    backoff,
    first_run,
    next_slot,
    parse_mirror,
    parse_schedule,
    split_endpoint,
)
from .rpc import Context, Methods, ProfileParams

if TYPE_CHECKING:
    from .pipes.service import Pipes
    from .server import Daemon

log = logging.getLogger("pipedaemon.schedules")
TICK_S = 1.0  # the longest the scheduler sleeps (a wall-clock check: sleep does not count suspend)
Key = tuple[str, str]


class Scheduler:
    def __init__(self, daemon: Daemon, pipes: Pipes, events: Events) -> None:
        self.daemon = daemon
        self.pipes = pipes
        self.events = events
        self.running: dict[Key, asyncio.Task[None]] = {}
        self.wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.count = 0  # pipes with a schedule, at the last tick

    def keeps_alive(self) -> bool:
        """An auto-started daemon stays up while it has schedules to run (server._idle_watch)."""
        return self.count > 0 or bool(self.running)

    async def open(self) -> None:
        self.pipes.scan.diff_listeners.append(self.on_diff)
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        tasks = [t for t in [self._loop_task, *self.running.values()] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what is scheduled --------------------------------------------------------------
    async def scheduled(self) -> list[tuple[str, str, dict[str, Any], ScheduleSpec]]:
        # One query a tick, only of pipes that may have a schedule (a daemon may hold thousands).
        rows = await self.pipes.db.fetchall(
            "SELECT profile, name, settings FROM pipes WHERE instr(settings, '\"schedule\"') > 0")
        out = []
        for profile, name, raw in rows:
            own = msgspec.json.decode(raw)
            if own.get("schedule"):
                try:
                    out.append((profile, name, own, parse_schedule(own["schedule"])))
                except E.DaemonError as err:  # (stored before a rule tightened)
                    log.warning("pipe %s: schedule ignored: %s", name, err.message)
        return out

    async def rows(self, profile: str | None = None) -> dict[Key, dict[str, Any]]:
        sql = (
            "SELECT profile, pipe, spec, next_run, last_run, last_status, last_error, failures, job_id "
            "FROM schedule_state"
        )
        rows = await self.daemon.state.fetchall(
            sql + (" WHERE profile=?" if profile else ""), (profile,) if profile else ()
        )
        out = {}
        for prof, pipe, spec, nxt, last, status, error, failures, job in rows:
            out[(prof, pipe)] = {
                "spec": spec,
                "next_run": nxt,
                "last_run": last,
                "last_status": status,
                "last_error": msgspec.json.decode(error) if error else None,
                "failures": failures,
                "job_id": job,
            }
        return out

    async def _save(self, key: Key, **fields: Any) -> None:
        if "last_error" in fields:
            fields["last_error"] = msgspec.json.encode(fields["last_error"]) if fields["last_error"] else None
        sets = ", ".join(f"{k}=?" for k in fields)
        await self.daemon.state.execute(
            f"UPDATE schedule_state SET {sets} WHERE profile=? AND pipe=?", (*fields.values(), *key)
        )

    # -- the loop -----------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            delay = TICK_S
            try:
                earliest = await self.tick()
                delay = max(0.05, min(TICK_S, earliest - time.time()))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler tick failed")
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    async def tick(self) -> float:
        """Start what is due; the earliest next run."""
        now = time.time()
        earliest = now + TICK_S
        rows = await self.rows()
        seen = set()
        scheduled = await self.scheduled()
        self.count = len(scheduled)
        for profile, name, own, spec in scheduled:
            key = (profile, name)
            seen.add(key)
            encoded = msgspec.json.encode(spec)
            row = rows.get(key)
            if row is None or row["spec"] != encoded:  # new or changed: planned afresh
                nxt = first_run(spec, now)
                await self.daemon.state.execute(
                    "INSERT INTO schedule_state(profile, pipe, spec, next_run, failures) VALUES (?,?,?,?,0) "
                    "ON CONFLICT(profile, pipe) DO UPDATE SET spec=excluded.spec, "
                    "next_run=excluded.next_run, failures=0",
                    (profile, name, encoded, nxt),
                )
                row = {**(row or {"job_id": None}), "next_run": nxt, "failures": 0}
            if key in self.running:
                continue  # never two runs of one pipe
            if row.get("job_id") and await self._job_live(row["job_id"]):
                # A job of a previous daemon, resumed: wait for it rather than start another.
                self._spawn(key, self._finish_job(key, spec, row["job_id"], row.get("failures") or 0))
                continue
            if now >= row["next_run"]:
                self._spawn(key, self._run(key, own, spec, row.get("failures") or 0))
            else:
                earliest = min(earliest, row["next_run"])
        for key in rows.keys() - seen:  # schedule removed or pipe deleted
            await self.daemon.state.execute("DELETE FROM schedule_state WHERE profile=? AND pipe=?", key)
        return earliest

    def _spawn(self, key: Key, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.running[key] = task
        task.add_done_callback(lambda t, k=key: self._done(k, t))

    def _done(self, key: Key, task: asyncio.Task[None]) -> None:
        if self.running.get(key) is task:
            del self.running[key]
        self.wake.set()

    async def _job_live(self, job_id: str) -> bool:
        try:
            return (await self.daemon.jobs.get(job_id)).state not in FINAL_STATES
        except E.NotFoundError:
            return False

    # -- one run ------------------------------------------------------------------------------
    async def _run(self, key: Key, own: dict[str, Any], spec: ScheduleSpec, failures: int) -> None:
        start = time.time()
        await self._save(
            key, next_run=next_slot(spec, start), last_run=start, last_status="running", job_id=None
        )
        profile, name = key
        try:
            action = _action(own, spec)
            if action == "check":
                await self.check(profile, name, own)
                await self._save(key, last_status="succeeded", last_error=None, failures=0)
                return
            info = await self._submit(profile, name, action)
            await self._save(key, job_id=info.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and backed off
            if self.daemon.jobs.stopping:  # not a failure: the run is due again on the next start
                await self._save(key, next_run=start, last_status="interrupted")
                return
            await self._failed(key, spec, failures, _error(exc))
            return
        await self._finish_job(key, spec, info.id, failures)

    async def _submit(self, profile: str, name: str, action: str) -> JobInfo:
        if action == "mirror":
            from .mirror import MirrorParams

            params = msgspec.to_builtins(MirrorParams(profile=profile, pipe=name))
            return await self.daemon.jobs.submit("mirror", params, profile)
        from .pipes.rpc import Sync

        # Listed afresh: a schedule is there to notice what changed within the scan cache's TTL.
        params = msgspec.to_builtins(Sync(profile=profile, name=name, cached=False))
        return await self.daemon.jobs.submit(f"pipe.{action}", params, profile)

    async def _finish_job(self, key: Key, spec: ScheduleSpec, job_id: str, failures: int) -> None:
        info = await self._wait_job(job_id)
        if info.state == "succeeded":
            await self._save(key, last_status="succeeded", last_error=None, failures=0)
        elif info.error is not None:
            await self._failed(key, spec, failures, msgspec.to_builtins(info.error), job_id)
        else:
            await self._failed(
                key, spec, failures, {"code": E.CANCELLED, "message": f"job {job_id} {info.state}"}, job_id
            )
        # Told after the state is saved: a watcher that then asks schedule.list sees this run's outcome.
        job = msgspec.json.decode(msgspec.json.encode(info))  # (as builtins: its result is raw JSON)
        await self.events.publish("job.finished", key[0], key[1], {"job": job})

    async def _wait_job(self, job_id: str) -> JobInfo:
        while True:
            task = self.daemon.jobs.tasks.get(job_id)
            if task is not None:
                await asyncio.wait([task])
            info = await self.daemon.jobs.get(job_id)
            if info.state in FINAL_STATES:
                return info
            await asyncio.sleep(0.2)  # queued for resume by a daemon just starting

    async def _failed(
        self, key: Key, spec: ScheduleSpec, failures: int, error: dict[str, Any], job_id: str | None = None
    ) -> None:
        failures += 1
        nxt = backoff(spec, failures, time.time())
        log.warning(
            "scheduled run of pipe %s failed (%d in a row; next in %.0f s): %s",
            key[1],
            failures,
            nxt - time.time(),
            error.get("message"),
        )
        await self._save(key, last_status="failed", last_error=error, failures=failures, next_run=nxt)
        # Told to watchers too (a failed check has no job.finished): after the save, as job.finished is.
        data = {"action": spec.action, "error": error, "failures": failures, "next_run": nxt,
                "job_id": job_id}
        await self.events.publish("schedule.failed", key[0], key[1], data)

    async def check(self, profile: str, name: str, own: dict[str, Any]) -> int:
        """List the pipe's remote folder afresh (what changed goes out as a pipe.changed event)."""
        if own.get("mirror"):
            spec = parse_mirror(own["mirror"])
            remote, rel = split_endpoint(spec.src, "mirror.from")
            r = await self.pipes.remotes.get(profile, remote)
            files, _ = await self.pipes.scan.files(
                (profile, remote), r.root + rel, r.root + rel, 0.0, cached=False
            )
            return len(files)
        rp = await self.pipes.store.resolve(profile, name)
        files, _ = await self.pipes.remote_files(rp, cached=False, filtered=False)
        return len(files)

    async def run_now(self, profile: str, name: str) -> dict[str, Any]:
        key = (profile, name)
        row = (await self.rows(profile)).get(key)
        if row is None:
            raise E.NotFoundError(f"pipe {name} has no schedule", {"pipe": name})
        if key in self.running:
            return {"pipe": name, "started": False, "running": True, "job_id": row.get("job_id")}
        await self._save(key, next_run=0.0)
        self.wake.set()
        return {"pipe": name, "started": True, "running": False, "job_id": None}

    # -- change events -----------------------------------------------------------------------
    async def on_diff(
        self, key: Key, folder: str, new: list[str], modified: list[str], gone: list[str]
    ) -> None:
        store = self.pipes.store
        for profile in await store.profiles():
            for name, own in (await store.own_all(profile)).items():
                cover = await self._cover(profile, name, own)
                if cover is None or cover[0] != key:
                    continue
                rel = _relative(cover[1], folder)
                if rel is None:
                    continue
                keep = cover[2]
                lists = [
                    [r for n in names if (r := rel(n)) is not None and keep(r)]
                    for names in (new, modified, gone)
                ]
                if any(lists):
                    await self.events.changed(profile, name, *lists)

    async def _cover(
        self, profile: str, name: str, own: dict[str, Any]
    ) -> tuple[Key, str, Callable[[str], bool]] | None:
        """The remote folder a pipe looks at, and its filters."""
        try:
            if own.get("mirror"):
                spec = parse_mirror(own["mirror"])
                remote, rel = split_endpoint(spec.src, "mirror.from")
                r = await self.pipes.remotes.get(profile, remote)
                return (profile, remote), r.root + rel, name_filter(spec.include, spec.exclude)
            rp = await self.pipes.store.resolve(profile, name)
        except E.DaemonError:
            return None
        return rp.remote_key, rp.folder, name_filter(rp.include, rp.exclude)


def _relative(pipe_folder: str, listed: str) -> Callable[[str], str | None] | None:
    """Names of a listing of ``listed`` as the pipe names them (None: outside the pipe)."""
    if pipe_folder.startswith(listed):
        prefix = pipe_folder[len(listed) :]
        return lambda n: n[len(prefix) :] if n.startswith(prefix) else None
    if listed.startswith(pipe_folder):
        extra = listed[len(pipe_folder) :]
        return lambda n: extra + n
    return None


def _action(own: dict[str, Any], spec: ScheduleSpec) -> str:
    if own.get("mirror"):
        return "check" if spec.action == "check" else "mirror"
    if spec.action == "mirror":
        raise E.InvalidSettingsError(
            "action 'mirror' needs a mirror pipe; use pull or push", {"field": "schedule.action"}
        )
    return spec.action


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, E.DaemonError):
        return {"code": exc.code, "message": exc.message, "data": exc.data or None}
    log.exception("scheduled run crashed", exc_info=exc)
    return {"code": E.INTERNAL_ERROR, "message": f"internal error: {type(exc).__name__}"}



# -- RPC ---------------------------------------------------------------------------------------
class SchedulePipe(ProfileParams):
    name: str


class ScheduleSet(SchedulePipe):
    schedule: dict[str, Any]


def _row(name: str, own: dict[str, Any], state: dict[str, Any] | None, running: bool) -> dict[str, Any]:
    state = state or {}
    return {
        "pipe": name,
        "schedule": own.get("schedule"),
        "mirror": own.get("mirror"),
        "next_run": state.get("next_run"),
        "last_run": state.get("last_run"),
        "last_status": state.get("last_status"),
        "last_error": state.get("last_error"),
        "failures": state.get("failures", 0),
        "job_id": state.get("job_id"),
        "running": running,
    }


METHODS = Methods()


@METHODS.rpc("schedule.list", ProfileParams)
async def schedule_list(ctx: Context, p: ProfileParams) -> list[dict[str, Any]]:
    """Scheduled pipes with their next and last run, last error and failures in a row."""
    sched = ctx.daemon.scheduler
    rows = await sched.rows(p.profile)
    pipes = await sched.pipes.store.own_all(p.profile)
    return [
        _row(n, own, rows.get((p.profile, n)), (p.profile, n) in sched.running)
        for n, own in pipes.items()
        if own.get("schedule")
    ]


async def _own(sched: Scheduler, profile: str, name: str) -> dict[str, Any]:
    own = (await sched.pipes.store.own_all(profile)).get(name)
    if own is None:
        raise E.NotFoundError(f"no such pipe: {name}", {"pipe": name})
    return own


@METHODS.rpc("schedule.set", ScheduleSet)
async def schedule_set(ctx: Context, p: ScheduleSet) -> dict[str, Any]:
    """Give a pipe a schedule (replacing its old one): every/at, action, jitter."""
    sched = ctx.daemon.scheduler
    own = await _own(sched, p.profile, p.name)
    _action(own, parse_schedule(p.schedule))
    await sched.pipes.store.upsert(p.profile, {**own, "schedule": p.schedule})
    sched.wake.set()
    return {"pipe": p.name, "schedule": p.schedule}


@METHODS.rpc("schedule.rm", SchedulePipe)
async def schedule_rm(ctx: Context, p: SchedulePipe) -> dict[str, Any]:
    """Remove a pipe's schedule (a run in progress finishes)."""
    sched = ctx.daemon.scheduler
    own = await _own(sched, p.profile, p.name)
    removed = own.pop("schedule", None) is not None
    if removed:
        await sched.pipes.store.upsert(p.profile, own)
        await ctx.daemon.state.execute(
            "DELETE FROM schedule_state WHERE profile=? AND pipe=?", (p.profile, p.name)
        )
    return {"pipe": p.name, "removed": removed}


@METHODS.rpc("schedule.run_now", SchedulePipe)
async def schedule_run_now(ctx: Context, p: SchedulePipe) -> dict[str, Any]:
    """Run a pipe's schedule now (not while its previous run is still going)."""
    return await ctx.daemon.scheduler.run_now(p.profile, p.name)
