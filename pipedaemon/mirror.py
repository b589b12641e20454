"""Mirrors: a folder of one remote kept copied to a folder of another, without a local copy.

What moves is decided from both listings and the ``mirror_state`` table (each file's
source and destination attributes at its last copy): a file missing at the destination,
one whose source changed since it was copied, or one whose destination copy is not the
one we made. Bytes stream through the daemon (the engine's ``upload_stream``: bounded
memory, verified, a temporary name or a multipart upload completed only when every part
landed), or are copied by the storage itself when both ends are one S3 endpoint.

Resumable: a re-run after ``kill -9`` plans again; copied files are in the state or
found equal at the destination and are not sent again. A file going to S3 as a multipart
upload is resumable per part (its upload id and stored parts are in the job's resume slot):
the re-run keeps that upload, reads the source again from the first part not stored and
sends only the missing parts. Other uploads and temporary files of the files that were in
flight are removed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.pipefiles import name_filter

from . import transfer
from .backends.base import Backend, Entry, ServerCopy
from .jobs import JobContext, JobKinds
from .pipes.schedspec import MirrorSetting, parse_mirror, split_endpoint
from .pipes.service import clean
from .remotes import Remote, Remotes
from .retry import retry
from .rpc import Context, Methods, ProfileParams
from .transfer.common import TMP_MARK, run_bounded

log = logging.getLogger("pipedaemon.mirror")
INFLIGHT_MIN = 1 << 20  # files this large may become multipart uploads: noted before they start


class MirrorParams(ProfileParams):
    src: str | None = None
    dst: str | None = None
    mode: str = "default"
    include: str | None = None
    exclude: str | None = None
    delete: bool = False
    pipe: str | None = None  # a mirror pipe: its `mirror` setting instead of the fields above


@dataclass
class Side:
    remote: Remote
    backend: Backend
    folder: str  # backend path, '' or ending in '/'


@dataclass
class Plan:
    copy: list[tuple[str, Entry, str]]  # (name, source entry, "new" | "modified")
    adopt: list[tuple[str, Entry, Entry]]  # equal on both sides, not recorded yet
    delete: list[str]
    unchanged: int


def spec_of(p: MirrorParams) -> MirrorSetting:
    if p.src is None or p.dst is None:
        raise E.InvalidParamsError(
            "a mirror needs src and dst (REMOTE:folder/), or a mirror pipe",
            {"field": "src" if p.src is None else "dst"},
        )
    raw = {
        "from": p.src,
        "to": p.dst,
        "mode": p.mode,
        "include": p.include,
        "exclude": p.exclude,
        "delete": p.delete,
    }
    try:
        return parse_mirror({k: v for k, v in raw.items() if v is not None})
    except E.InvalidSettingsError as err:  # as call parameters: 1002 naming the argument
        field = err.data.get("field", "").replace("mirror.from", "src").replace("mirror.to", "dst")
        raise E.InvalidParamsError(
            err.message.replace("mirror.from", "src").replace("mirror.to", "dst"),
            {"field": field.removeprefix("mirror.")},
        ) from None


def mirror_id(spec: MirrorSetting) -> str:
    (a, af), (b, bf) = split_endpoint(spec.src, "from"), split_endpoint(spec.dst, "to")
    return f"{a}:{af}|{b}:{bf}"


async def pipe_spec(ctx: Context | JobContext, profile: str, name: str) -> MirrorSetting:
    own = (await ctx.daemon.pipes.store.own_all(profile)).get(name)
    if own is None:
        raise E.NotFoundError(f"no such pipe: {name}", {"pipe": name})
    if not own.get("mirror"):
        raise E.InvalidParamsError(
            f"pipe {name} is not a mirror pipe (it has no `mirror` setting)", {"field": "pipe", "pipe": name}
        )
    return parse_mirror(own["mirror"])


async def open_side(remotes: Remotes, profile: str, endpoint: str, field: str, mode: Any) -> Side:
    name, rel = split_endpoint(endpoint, field)
    if rel:
        from .safepath import clean_key

        rel = clean_key(rel)
    backend, remote = await remotes.backend(profile, name, mode)
    return Side(remote, backend, remote.root + rel)


def copies_itself(remotes: Remotes, src: Side, dst: Side) -> bool:
    """The destination's storage copies the source's files itself (ServerCopy from the source's
    backend: one S3 endpoint) with one set of credentials."""
    copier = dst.backend.features.server_copy
    if copier is None or not copier.copies_from(src.backend):
        return False
    a, b = src.remote, dst.remote
    if a.profile == b.profile and a.name == b.name:
        return True
    try:
        return remotes.vault.open(a.sealed, a.name) == remotes.vault.open(b.sealed, b.name)
    except E.DaemonError:
        return False


async def list_files(side: Side) -> tuple[dict[str, Entry], list[str]]:
    """Files under the side's folder (names relative to it) and the temporary files there."""

    async def collect() -> list[Entry]:
        return [e async for e in side.backend.list(side.folder, recursive=True) if not e.is_dir]

    entries = await retry(collect, what=f"list {side.folder or '(login folder)'}")
    files = {e.name: e for e in entries if not transfer.is_temp(e.name)}
    return files, [e.name for e in entries if transfer.is_temp(e.name)]


def _same(a: Entry, b: Entry) -> bool:
    """The same bytes as far as both listings can tell: size, and S3 md5 ETags where both have them."""
    if a.size != b.size:
        return False
    if a.etag and b.etag and "-" not in a.etag and "-" not in b.etag and len(a.etag) == len(b.etag) == 32:
        return a.etag == b.etag
    return True


def make_plan(
    spec: MirrorSetting, src: dict[str, Entry], dst: dict[str, Entry], state: dict[str, tuple[Any, ...]]
) -> Plan:
    keep = name_filter(spec.include, spec.exclude)
    plan = Plan([], [], [], 0)
    for name in sorted(src):
        if not keep(name):
            continue
        s, d, rec = src[name], dst.get(name), state.get(name)
        if d is None:
            if spec.mode in ("default", "new", "all"):
                plan.copy.append((name, s, "new"))
            continue
        if spec.mode == "all":
            plan.copy.append((name, s, "modified"))
        elif rec is None:
            if _same(s, d):
                plan.adopt.append((name, s, d))
            elif spec.mode in ("default", "mod"):
                plan.copy.append((name, s, "modified"))
        else:
            src_size, src_mtime, src_etag, dst_size, dst_etag = rec
            src_moved = (s.size, s.etag) != (src_size, src_etag) or (
                s.etag is None
                and s.mtime is not None
                and src_mtime is not None
                and abs(s.mtime - src_mtime) >= 1
            )
            dst_moved = d.size != dst_size or (
                d.etag is not None and dst_etag is not None and d.etag != dst_etag
            )
            if (src_moved or dst_moved) and spec.mode in ("default", "mod"):
                plan.copy.append((name, s, "modified"))
            else:
                plan.unchanged += 1
    if spec.delete:
        plan.delete = sorted(n for n in dst if n not in src and keep(n))
    return plan


class MirrorRun:
    def __init__(self, ctx: JobContext, spec: MirrorSetting, src: Side, dst: Side, server_side: bool) -> None:
        self.ctx, self.spec, self.src, self.dst = ctx, spec, src, dst
        self.server_side = server_side
        self.db = ctx.daemon.state
        self.remotes: Remotes = ctx.daemon.remotes
        self.profile = ctx.profile
        self.mid = mirror_id(spec)
        self.bytes_done = 0
        self.total = 0
        self.copied: list[dict[str, Any]] = []

    async def state(self) -> dict[str, tuple[Any, ...]]:
        rows = await self.db.fetchall(
            "SELECT name, src_size, src_mtime, src_etag, dst_size, dst_etag, inflight "
            "FROM mirror_state WHERE profile=? AND mirror=?",
            (self.profile, self.mid),
        )
        return {r[0]: tuple(r[1:6]) for r in rows if not r[6]}

    async def clean_inflight(self, temps: list[str], copying: set[str]) -> int:
        """Multipart uploads and temporary files a killed run left for the files it had in flight,
        but for the uploads this job noted to resume (of files it copies again)."""
        rows = await self.db.fetchall(
            "SELECT name FROM mirror_state WHERE profile=? AND mirror=? AND inflight=1",
            (self.profile, self.mid),
        )
        removed = 0
        for (name,) in rows:
            path = self.dst.folder + name
            slot = self.resume_slot(path)
            if name in copying and (await slot.load())[0] is not None:
                continue  # resumed by copy_one: its stored parts are not sent again
            await slot.clear()
            if (parts := self.dst.backend.features.multipart) is not None:
                removed += await parts.abort_stale_uploads(path)
            head, _, base = name.rpartition("/")
            mark = f"{head + '/' if head else ''}.{base}{TMP_MARK}"
            for tmp in temps:
                if tmp.startswith(mark):
                    with contextlib.suppress(E.NotFoundError):
                        await retry(
                            lambda t=tmp: self.dst.backend.delete(self.dst.folder + t),  # type: ignore[misc]
                            what=f"delete {tmp}",
                        )
                    removed += 1
        await self.db.execute(
            "DELETE FROM mirror_state WHERE profile=? AND mirror=? AND inflight=1", (self.profile, self.mid)
        )
        return removed

    async def record(self, name: str, s: Entry, d: Entry | None, inflight: bool = False) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO mirror_state(profile, mirror, name, src_size, src_mtime, src_etag, "
            "dst_size, dst_etag, inflight, synced_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                self.profile,
                self.mid,
                name,
                s.size,
                s.mtime,
                s.etag,
                d.size if d else None,
                d.etag if d else None,
                int(inflight),
                time.time(),
            ),
        )

    async def copy_one(self, name: str, s: Entry) -> Entry:
        src, dst = self.src.folder + name, self.dst.folder + name
        if s.size >= INFLIGHT_MIN:
            await self.record(name, s, None, inflight=True)
        if self.server_side:
            copier = self.dst.backend.features.need(ServerCopy)
            entry = await retry(lambda: copier.copy(src, dst), what=f"copy {name}")
            self._bytes(s.size)
        else:
            entry = await retry(lambda: self._stream(src, dst, s), what=f"mirror {name}")
        if entry.size != s.size or not _same(s, entry):
            raise E.ChecksumMismatchError(
                f"{name}: the destination holds {entry.size} bytes (etag {entry.etag}), "
                f"the source {s.size} (etag {s.etag})",
                {"path": name},
            )
        self.remotes.changed(self.dst.remote.profile, self.dst.remote.name, dst, entry)
        await self.record(name, s, entry)
        return entry

    def resume_slot(self, dst: str) -> Any:
        """The job's resume slot of one destination file (its multipart upload id and parts)."""
        return self.ctx.resume_slot(f"{self.dst.remote.name}:{dst}")

    async def _stream(self, src: str, dst: str, s: Entry) -> Entry:
        sent = 0

        def chunks(offset: int = 0) -> AsyncIterator[bytes]:
            async def gen() -> AsyncIterator[bytes]:
                nonlocal sent
                stream = self.src.backend.read(src, offset) if offset else self.src.backend.read(src)
                async with contextlib.aclosing(stream):
                    async for piece in stream:
                        sent += len(piece)
                        self._bytes(len(piece))
                        yield piece

            return gen()

        def skipped(n: int) -> None:
            nonlocal sent
            sent += n
            self._bytes(n)

        tuning = self.ctx.tuning(f"{self.profile}/{self.dst.remote.name}").fit(self.dst.backend)
        try:
            if tuning.multipart(self.dst.backend, s.size):
                # Resumable per part: after kill -9 only the parts not stored are read and sent again.
                ident = {"src": f"{self.src.remote.name}:{src}", "size": s.size, "mtime": s.mtime,
                         "etag": s.etag, "dst": dst}
                return await transfer.upload_stream_resumable(
                    self.dst.backend, chunks, dst, s.size, ident, self.resume_slot(dst), tuning, skipped
                )
            return await transfer.upload_stream(self.dst.backend, chunks(), dst, s.size, tuning=tuning)
        except BaseException:
            self._bytes(-sent)  # a retry sends them again
            raise

    def _bytes(self, n: int) -> None:
        self.bytes_done += n
        self.ctx.progress(self.bytes_done, self.total)

    async def run(self, plan: Plan, parallel: int) -> dict[str, Any]:
        self.total = sum(s.size for _, s, _ in plan.copy)
        self.ctx.progress(0, self.total, file_count=max(1, len(plan.copy)), file_index=0, file_name="")
        for name, s, d in plan.adopt:
            await self.record(name, s, d)

        def maker(name: str, s: Entry, why: str) -> Callable[[], Awaitable[None]]:
            async def go() -> None:
                self.ctx.progress(self.bytes_done, self.total, file_name=name)
                entry = await self.copy_one(name, s)
                self.copied.append({"filename": name, "size": entry.size, "etag": entry.etag, "action": why})
                self.ctx.progress(self.bytes_done, self.total, file_index=len(self.copied))

            return go

        await run_bounded([maker(*c) for c in plan.copy], parallel)
        deleted = []
        for name in plan.delete:
            with contextlib.suppress(E.NotFoundError):
                await retry(
                    lambda n=name: self.dst.backend.delete(self.dst.folder + n),  # type: ignore[misc]
                    what=f"delete {name}",
                )
            self.remotes.changed(self.dst.remote.profile, self.dst.remote.name, self.dst.folder + name, None)
            await self.db.execute(
                "DELETE FROM mirror_state WHERE profile=? AND mirror=? AND name=?",
                (self.profile, self.mid, name),
            )
            deleted.append(name)
        return {
            "files": sorted(self.copied, key=lambda r: r["filename"]),
            "deleted": deleted,
            "server_side": self.server_side,
            "summary": {
                "copied": len(self.copied),
                "bytes": sum(r["size"] for r in self.copied),
                "adopted": len(plan.adopt),
                "unchanged": plan.unchanged,
                "deleted": len(deleted),
            },
        }


_LOCKS: dict[tuple[str, str], asyncio.Lock] = {}


async def run_mirror(ctx: JobContext, spec: MirrorSetting) -> dict[str, Any]:
    """One run at a time per mirror: a second one would take the first's uploads for a killed run's."""
    async with _LOCKS.setdefault((ctx.profile, mirror_id(spec)), asyncio.Lock()):
        return await _run_mirror(ctx, spec)


async def _run_mirror(ctx: JobContext, spec: MirrorSetting) -> dict[str, Any]:
    started = time.monotonic()
    remotes: Remotes = ctx.daemon.remotes
    src = await open_side(remotes, ctx.profile, spec.src, "from", "read")
    dst = await open_side(remotes, ctx.profile, spec.dst, "to", "write")
    if src.remote.name == dst.remote.name and (
        src.folder.startswith(dst.folder) or dst.folder.startswith(src.folder)
    ):
        raise E.InvalidParamsError("a mirror's source and destination folders overlap", {"field": "dst"})
    server_side = copies_itself(remotes, src, dst)
    if ctx.checkpoint_data is None:
        await ctx.checkpoint({"begun": True})
    run = MirrorRun(ctx, spec, src, dst, server_side)
    src_files = await _source_files(ctx, src)
    dst_files, temps = await list_files(dst)
    plan = make_plan(spec, src_files, dst_files, await run.state())  # (inflight files are not in state)
    cleaned = await run.clean_inflight(temps, {name for name, _, _ in plan.copy})
    parallel = (await ctx.daemon.pipes.config(ctx.profile))["parallel_files"]
    result = await run.run(plan, parallel)
    result["summary"]["elapsed_s"] = round(time.monotonic() - started, 3)
    result["summary"]["cleaned"] = cleaned
    return result


async def _source_files(ctx: JobContext, src: Side) -> dict[str, Entry]:
    """The source listing, through the scan cache (so watchers hear what it found changed)."""
    scan = ctx.daemon.pipes.scan
    files, _ = await scan.files(
        (src.remote.profile, src.remote.name), src.folder, src.folder, 0.0, cached=False
    )
    out: dict[str, Entry] = {}
    for f in files:
        try:
            name = clean(f.name)
        except E.UnsafePathError:
            name = ""
        if name != f.name:
            raise E.UnsafePathError(
                f"the mirror's source holds a name that would land outside its folder: "
                f"{f.name!r}; nothing was copied",
                {"path": f.name},
            )
        out[name] = Entry(name=name, size=f.size, mtime=f.mtime, etag=f.etag)
    return out


JOB_KINDS = JobKinds()


@JOB_KINDS.kind("mirror")
async def job_mirror(ctx: JobContext) -> dict[str, Any]:
    p = msgspec.convert(ctx.params, MirrorParams)
    spec = await pipe_spec(ctx, p.profile, p.pipe) if p.pipe else spec_of(p)
    return await run_mirror(ctx, spec)


METHODS = Methods()


@METHODS.rpc("mirror.run", MirrorParams)
async def rpc_mirror(ctx: Context, p: MirrorParams) -> Any:
    """Start a job copying new and changed files from one remote folder to another (delete: also remove
    destination files the source no longer has)."""
    spec = await pipe_spec(ctx, p.profile, p.pipe) if p.pipe else spec_of(p)
    remotes: Remotes = ctx.daemon.remotes
    (a, af), (b, bf) = split_endpoint(spec.src, "src"), split_endpoint(spec.dst, "dst")
    if a == b and (af.startswith(bf) or bf.startswith(af)):
        raise E.InvalidParamsError("a mirror's source and destination folders overlap", {"field": "dst"})
    for endpoint, field in ((spec.src, "src"), (spec.dst, "dst")):
        name, _ = split_endpoint(endpoint, field)
        try:
            await remotes.get(p.profile, name)
        except E.NotFoundError as err:
            err.data["field"] = field
            raise
    return await ctx.daemon.jobs.submit("mirror", msgspec.to_builtins(p), p.profile, ctx.conn)
