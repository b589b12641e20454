"""Pull and push jobs: run a plan's moves through the transfer engine, in parallel.

Idempotent: a restarted daemon re-runs the job, which plans again from the
listing, the local folder and the sync state; files finished before the stop are
in the checkpoint (or now in sync) and are not moved again. A file downloaded
whose state row was lost is recognised as equal (same size, the remote's mtime)
and only recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.wire import RunningFile

from .. import transfer
from ..backends.base import Backend, Entry, SmallFiles
from ..jobs import JobContext
from ..provenance.record import record_sync
from ..retry import retry
from ..transfer import batch
from ..transfer.batch import batchable
from ..transfer.common import INLINE_IO, run_bounded
from .plan import Conflict, Move, Plan
from .service import Pipes, SyncOptions, View, ensure_writable
from .store import Resolved
from .syncstate import DoneFile, DoneRow, FileState, StateWriter, remote_changed
from .targets import Changed, Targets, check_local_unchanged

log = logging.getLogger("pipedaemon.pipes.sync")
CHECKPOINT_EVERY_S = 2.0
REPORT_EVERY_S = 0.05  # progress of a many-file job: the event is updated this often


class Vanished(Exception):
    """The source file disappeared after the plan was made: skipped, not an error."""


OneFile = Callable[[Move, Callable[[int], None]], Awaitable[DoneRow]]
Maker = Callable[[], Awaitable[None]]


class Runner:
    def __init__(self, svc: Pipes, ctx: JobContext, rp: Resolved, opts: SyncOptions, plan: Plan,
                 view: View, backend: Backend, tuning: transfer.Tuning) -> None:
        self.svc, self.ctx, self.rp, self.opts, self.plan, self.view = svc, ctx, rp, opts, plan, view
        self.backend = backend
        self.tuning = tuning
        self.writer = StateWriter(svc.state, rp.profile, rp.name, job_id=ctx.id)
        cp = ctx.checkpoint_data if isinstance(ctx.checkpoint_data, dict) else {}
        # What the job moved so far (its result), by name: rows of a checkpoint of an older daemon
        # (dicts), then the rows a killed daemon of this job stored beside the sync state (tuples).
        self.done: dict[str, DoneRow | dict[str, Any]] = {r["filename"]: r for r in cp.get("done", [])}
        self.skipped: list[dict[str, Any]] = []
        self.late_conflicts: list[Conflict] = []
        self.bytes_done = 0
        self.files_done = 0
        self.total = 0
        self.count = 1
        self.running: dict[str, RunningFile] = {}  # files in flight, for one progress line each
        self._last_cp = time.monotonic()
        self._last_report = 0.0
        self.targets = Targets(rp.dirpath)
        self._made: set[Path] = set()  # local folders known to exist (pull batches)

    # -- the whole job ------------------------------------------------------------------
    async def run(self, parallel: int) -> None:
        for row in await self.svc.state.job_done(self.ctx.id):
            self.done.setdefault(row[0], row)
        todo = [m for m in self.plan.moves if m.name not in self.done]
        self.total = sum(m.src.size for m in todo)
        self.count = max(len(todo), 1)
        self.ctx.progress(0, self.total, file_count=self.count, file_index=0, file_name="")
        one = self._pull_one if self.opts.direction == "pull" else self._push_one

        small = batchable(self.backend, self.tuning)
        makers = self._batched(todo, small, one) if small is not None else \
            (functools.partial(self._move, m, one) for m in todo)
        try:
            await run_bounded(makers, parallel)
        finally:
            await self.writer.flush()
            self._report("", force=True)  # the exact count: files done == total at the end

    def moved(self) -> list[DoneFile]:
        """The job's result: everything it moved, also in earlier runs (a daemon stopped or killed
        meanwhile: those files are in sync now, so no longer in this run's plan), then this run's
        in the plan's order. Call it once the views are let go: at a million files the rows are
        built as the job's record of them is emptied."""
        planned = [m.name for m in self.plan.moves if m.name in self.done]
        self.plan.moves.clear()
        done = self.done
        rows = [_result_row(done.pop(n)) for n in planned]
        return [_result_row(r) for r in done.values()] + rows

    async def _move(self, m: Move, one: OneFile) -> None:
        """One file the one-file way (``one``), and what came of it."""
        self.running[m.name] = RunningFile(m.name, 0, m.src.size)
        try:
            outcome: DoneRow | Vanished | Changed = await one(m, lambda n: self._bytes(n, m.name))
        except (Vanished, Changed) as exc:
            outcome = exc
        finally:
            self.running.pop(m.name, None)
        await self._settled(m, outcome)

    async def _settled(self, m: Move, outcome: DoneRow | Vanished | Changed) -> None:
        if isinstance(outcome, Vanished):
            self.skipped.append({**m.row(), "action": "vanished"})
        elif isinstance(outcome, Changed):
            self.late_conflicts.append(Conflict(m.name, self.view.local.get(m.name, m.src),
                                                self.view.remote.get(m.name, m.src)))
        else:
            self.done[m.name] = outcome
        self.files_done += 1
        self._report(m.name)
        await self._maybe_checkpoint()

    def _batched(self, todo: list[Move], small: SmallFiles, one: OneFile) -> Iterator[Maker]:
        """The moves, runs of small files as batches (``transfer.batch``), the rest one by one;
        made as the window takes them (a million moves are not a million callables at once)."""
        run: list[Move] = []
        for m in todo:
            if not self._batchable(m):
                yield from self._batches_of(run, small, one)
                run = []
                yield functools.partial(self._move, m, one)
                continue
            run.append(m)
            if len(run) == batch.BATCH_FILES:
                yield from self._batches_of(run, small, one)
                run = []
        yield from self._batches_of(run, small, one)

    def _batches_of(self, run: list[Move], small: SmallFiles, one: OneFile) -> Iterator[Maker]:
        for a, b in batch.batches([m.src.size for m in run]):
            yield functools.partial(self._batch, run[a:b], small, one)

    def _batchable(self, m: Move) -> bool:
        if m.src.size > INLINE_IO:
            return False
        if self.opts.direction == "pull":
            return "-" not in (m.src.etag or "")  # (a multipart ETag is checked the general way)
        return m.dst is None or m.action == "overwrite"  # else the remote is looked at again first

    async def _batch(self, ms: list[Move], small: SmallFiles, one: OneFile) -> None:
        """Small files in one backend call; each that did not move so goes the one-file way."""
        for m in ms:
            self.running[m.name] = RunningFile(m.name, 0, m.src.size)
        try:
            pull = self.opts.direction == "pull"
            outcomes = await (self._pull_batch(ms, small) if pull else self._push_batch(ms, small))
        finally:
            for m in ms:
                self.running.pop(m.name, None)
        for m in ms:  # what the batch moved counts first: a file failing below loses none of it
            if (outcome := outcomes.get(m.name)) is not None:
                await self._settled(m, outcome)
        for m in ms:
            if m.name not in outcomes:
                await self._move(m, one)

    def _report(self, name: str, force: bool = False) -> None:
        """Progress, coalesced: the job's event (what status and watchers see) is brought up to
        date at most every REPORT_EVERY_S, and always at the end; never once per file."""
        now = time.monotonic()
        if not force and now - self._last_report < REPORT_EVERY_S:
            return
        self._last_report = now
        self.ctx.progress(self.bytes_done, self.total, file_name=name, file_index=self.files_done,
                          running=list(self.running.values()))

    def _bytes(self, n: int, name: str = "") -> None:
        self.bytes_done += n
        f = self.running.get(name)
        if f is not None:  # the event's list holds the same objects: it sees this at once
            f.bytes_done += n
        self.ctx.event.bytes_done = self.bytes_done  # status sees bytes at once (cheap)
        self._report(name)

    async def _maybe_checkpoint(self) -> None:
        if time.monotonic() - self._last_cp < CHECKPOINT_EVERY_S:
            return
        self._last_cp = time.monotonic()
        # The rows done are stored with the sync state (one transaction per batch), not here: a
        # checkpoint costs the same at the millionth file as at the first.
        await self.writer.flush()
        await self.ctx.checkpoint({"done": []})

    # -- one file each way --------------------------------------------------------------------
    async def _pull_one(self, m: Move, on_bytes: Callable[[int], None]) -> DoneRow:
        rp = self.rp
        target, found = self.targets.with_stat(m.name)
        check_local_unchanged(found, m.dst, target)
        src = rp.folder + m.name
        entry = Entry(name=src, size=m.src.size, mtime=m.src.mtime, etag=m.src.etag)
        resume = self.ctx.resume_slot(str(target))
        try:
            entry = await transfer.download(self.backend, src, target, on_bytes, entry=entry,
                                            tuning=self.tuning, resume=resume)
        except (E.NotFoundError, E.ChecksumMismatchError):
            # The cached listing may be behind the storage: look again once.
            fresh = await self._stat_remote(src)
            if fresh is None:
                raise Vanished(m.name) from None
            if fresh.size == entry.size and fresh.etag == entry.etag and fresh.mtime == entry.mtime:
                raise
            entry = await transfer.download(self.backend, src, target, on_bytes, entry=fresh,
                                            tuning=self.tuning, resume=resume)
            self.svc.remotes.changed(*rp.remote_key, src, fresh)
        st = target.stat()
        done: DoneRow = (m.name, entry.size, entry.mtime, m.action, entry.etag)
        await self.writer.add((m.name, st.st_size, st.st_mtime_ns, entry.size, entry.mtime, entry.etag), done)
        return done

    async def _push_one(self, m: Move, on_bytes: Callable[[int], None]) -> DoneRow:
        rp = self.rp
        path = self.targets(m.name, writing=False)  # a link out of the pipe's folder: 1010, never read
        dst = rp.folder + m.name
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise Vanished(m.name) from None
        if m.dst is not None and m.action != "overwrite":
            # Someone else may have changed the remote file since the (cached) listing.
            fresh = await self._stat_remote(dst)
            known = FileState(None, None, m.dst.size, m.dst.mtime, m.dst.etag)
            if fresh is not None and remote_changed(fresh.size, fresh.mtime, fresh.etag, known):
                self.svc.remotes.changed(*rp.remote_key, dst, fresh)
                raise Changed(m.name)
        try:
            entry = await transfer.upload(self.backend, path, dst, on_bytes, tuning=self.tuning,
                                          resume=self.ctx.resume_slot(dst))
        except E.NotFoundError:
            if not path.exists():
                raise Vanished(m.name) from None
            raise
        self.svc.remotes.changed(*rp.remote_key, dst, entry)
        done: DoneRow = (m.name, st.st_size, st.st_mtime_ns / 1e9, m.action, entry.etag)
        await self.writer.add((m.name, st.st_size, st.st_mtime_ns, entry.size, entry.mtime, entry.etag), done)
        return done

    async def _pull_batch(self, ms: list[Move], small: SmallFiles) -> dict[str, DoneRow | Vanished | Changed]:
        """``_pull_one`` for small files, their bytes read in one backend call; a file not in the
        result goes the one-file way (which retries, and tells a vanished file)."""
        rp = self.rp
        out: dict[str, DoneRow | Vanished | Changed] = {}
        items: list[tuple[str, Entry, Path]] = []
        moving: list[Move] = []
        for m in ms:
            try:
                target, found = self.targets.with_stat(m.name)
                check_local_unchanged(found, m.dst, target)
                self._parent_made(target.parent)
            except Changed as exc:
                out[m.name] = exc
                continue
            except (E.DaemonError, OSError):
                continue  # the one-file way raises it as it always did
            src = rp.folder + m.name
            items.append((src, Entry(name=src, size=m.src.size, mtime=m.src.mtime, etag=m.src.etag), target))
            moving.append(m)
        stored = await batch.fetch_small(small, items, self.tuning, self.ctx.id[:12])
        for m, (_, e, _), st in zip(moving, items, stored, strict=True):
            if st is not None:
                self._bytes(e.size, m.name)
                out[m.name] = await self._add((m.name, e.size, e.mtime, m.action, e.etag), st, e)
        return out

    async def _add(self, done: DoneRow, st: os.stat_result, entry: Entry) -> DoneRow:
        """Record a moved file (local stat ``st``, remote ``entry``) as ``_pull_one``/``_push_one`` do."""
        row = (done[0], st.st_size, st.st_mtime_ns, entry.size, entry.mtime, entry.etag)
        await self.writer.add(row, done)
        return done

    def _parent_made(self, parent: Path) -> None:
        """The local folder ``parent`` exists (made once per folder per job: one made and then
        removed by someone makes the file fail its batch and go the one-file way, which makes it)."""
        if parent not in self._made:
            if not parent.is_dir():
                parent.mkdir(parents=True, exist_ok=True)
            self._made.add(parent)

    async def _push_batch(self, ms: list[Move], small: SmallFiles) -> dict[str, DoneRow | Vanished | Changed]:
        """``_push_one`` for small files, written and published in one backend call."""
        rp = self.rp
        out: dict[str, DoneRow | Vanished | Changed] = {}
        items: list[tuple[Path, os.stat_result, str]] = []
        moving: list[Move] = []
        for m in ms:
            try:
                path, st = self.targets.with_stat(m.name, writing=False)
            except (E.DaemonError, OSError):
                continue  # the one-file way raises it as it always did
            if st is None:
                out[m.name] = Vanished(m.name)
                continue
            items.append((path, st, rp.folder + m.name))
            moving.append(m)
        sent = await batch.send_small(self.backend, small, items, self.tuning, self.ctx.id[:12])
        for m, (_, st, dst), entry in zip(moving, items, sent, strict=True):
            if entry is not None:
                self._bytes(st.st_size, m.name)
                self.svc.remotes.changed(*rp.remote_key, dst, entry)
                row = (m.name, st.st_size, st.st_mtime_ns / 1e9, m.action, entry.etag)
                out[m.name] = await self._add(row, st, entry)
        return out

    async def _stat_remote(self, path: str) -> Entry | None:
        try:
            return await retry(lambda: self.backend.stat(path), what=f"stat {path}")
        except E.NotFoundError:
            return None


def _result_row(row: DoneRow | dict[str, Any]) -> DoneFile:
    """A file of the job's result, as d6tpipe's pull and push list them (a dict: a checkpoint
    of an older daemon)."""
    if isinstance(row, dict):
        return msgspec.convert(row, DoneFile)
    return DoneFile(*row)


# -- the job ----------------------------------------------------------------------------------
async def run_sync(svc: Pipes, ctx: JobContext, opts: SyncOptions) -> dict[str, Any]:
    profile, name = ctx.params["profile"], ctx.params["name"]
    rp = await svc.store.resolve(profile, name)
    started = time.monotonic()
    if ctx.checkpoint_data is None:
        await ctx.checkpoint({"done": []})  # begun: a re-run after a crash finds a checkpoint
    else:
        # A re-run: the killed daemon may have stored files whose listing update it never wrote,
        # so the cached listing would send them again (whole); list the folder afresh.
        opts = dataclasses.replace(opts, cached=False)
    async with svc.lock(rp):
        plan, view = await svc.plan(rp, opts)
        if plan.missing:
            side = "remote" if opts.direction == "pull" else "local"
            raise E.NotFoundError(f"not on the {side} side of pipe {name}: {', '.join(plan.missing[:10])}",
                                  {"files": plan.missing})
        config = await svc.config(profile)
        if plan.moves and opts.direction == "pull":
            await asyncio.to_thread(ensure_writable, rp.dirpath)
        mode = "read" if opts.direction == "pull" else "write"
        backend, _ = await svc.remotes.backend(*rp.remote_key, mode)
        tuning = ctx.tuning(f"{rp.remote_profile}/{rp.remote}", None, config["bwlimit_bps"])
        runner = Runner(svc, ctx, rp, opts, plan, view, backend, tuning)
        # Under the profile's bandwidth limit, files at once are bounded like a file's streams.
        files_at_once = min(config["parallel_files"], tuning.streams) if config["bwlimit_bps"] else \
            config["parallel_files"]
        await runner.run(files_at_once)
        await _record_unmoved(svc, rp, plan, view, opts)
        del view  # (a million files' views are let go before the result is built)
        runner.view = None  # type: ignore[assignment]
        moved = runner.moved()
        await svc.state.forget_job(ctx.id)  # (the result lists them now)
        # Provenance: each moved file linked to the version it came from.
        linked = await record_sync(svc.daemon, rp, opts.direction, moved, backend, ctx.id) \
            if ctx.params.get("record") else None
    conflicts = plan.conflicts + runner.late_conflicts
    result: dict[str, Any] = {
        "files": moved, "skipped": runner.skipped,
        "conflicts": [c.row("conflict", opts.direction) for c in conflicts],  # type: ignore[arg-type]
        "kept": [c.row("kept", opts.direction) for c in plan.kept],  # type: ignore[arg-type]
        "docs": {}, "summary": {"moved": len(moved), "bytes": sum(r.size for r in moved),
                                "conflicts": len(conflicts), "kept": len(plan.kept),
                                "skipped": len(runner.skipped), "adopted": len(plan.adopt),
                                "elapsed_s": round(time.monotonic() - started, 3)}}
    if linked is not None:
        result["summary"]["linked"] = linked
    if conflicts and not moved:
        names = [c.name for c in conflicts]
        raise E.ConflictError(f"{len(names)} file(s) of pipe {name} changed both locally and remotely since "
                              f"the last sync; nothing was overwritten: {', '.join(names[:10])}",
                              {"pipe": name, "conflicts": names, "files": result["conflicts"]})
    if opts.direction == "pull" and not rp.first_pull_done:
        result["docs"] = await _first_pull_docs(svc, rp)
    return result


async def _record_unmoved(svc: Pipes, rp: Resolved, plan: Plan, view: View, opts: SyncOptions) -> None:
    """Record equal copies as synced; on a pull, a kept conflict keeps the local file ahead."""
    rows: list[Any] = []
    for n in plan.adopt:
        lo, re_ = view.local[n], view.remote[n]
        rows.append((n, lo.size, lo.mtime_ns, re_.size, re_.mtime, re_.etag))
    if opts.direction == "pull":
        for c in plan.kept:
            rows.append((c.name, None, None, c.remote.size, c.remote.mtime, c.remote.etag))
    await svc.state.save(rp.profile, rp.name, rows)


async def _first_pull_docs(svc: Pipes, rp: Resolved) -> dict[str, str]:
    try:
        docs = await svc.docs(rp)
    except E.DaemonError as err:  # documentation is a courtesy: never fail a finished pull for it
        log.warning("pipe %s: could not read README/LICENSE: %s", rp.name, err)
        return {}
    await svc.store.mark_first_pull(rp.profile, rp.name)
    for doc, text in docs.items():
        log.info("pipe %s (profile %s) %s:\n%s", rp.name, rp.profile, doc, text)
    return docs
