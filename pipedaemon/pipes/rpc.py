"""The ``pipe.*`` methods and the ``pipe.pull``/``pipe.push`` job kinds: thin faces over the service."""

from __future__ import annotations

from typing import Any

import msgspec

from pipedaemon_sdk.protocol import errors as E

from ..jobs import JobContext, JobKinds
from ..rpc import Context, Methods, ProfileParams
from . import manage
from .service import SyncOptions, clean, rows_sorted
from .store import Resolved
from .sync import run_sync


async def _resolve(ctx: Context, p: Any) -> Resolved:
    return await ctx.daemon.pipes.store.resolve(p.profile, p.name)


# -- params ----------------------------------------------------------------------------------
class PipeName(ProfileParams):
    name: str


class Upsert(ProfileParams):
    settings: dict[str, Any]


class UpdateSettings(PipeName):
    settings: dict[str, Any]


class ListPipes(ProfileParams):
    names_only: bool = True


class ScanRemote(PipeName):
    attributes: bool = False
    cached: bool = True
    sortby: str = "filename"
    include: str | None = None
    exclude: str | None = None


class ScanLocal(PipeName):
    attributes: bool = False
    sortby: str = "filename"
    include: str | None = None
    exclude: str | None = None
    files: list[str] | None = None
    fromdb: bool = False


class Sync(PipeName):
    mode: str = "default"
    files: list[str] | None = None
    include: str | None = None
    exclude: str | None = None
    nrecent: int = 0
    merge_mode: str | None = None
    cached: bool = True
    record: bool = False  # provenance: link each moved file to the version it came from


class Preview(Sync):
    direction: str = "pull"


class IsSynced(PipeName):
    cached: bool = True
    israise: bool = False


class Orphans(PipeName):
    direction: str = "local"
    files: list[str] | None = None
    dryrun: bool = True
    cached: bool = True


class DeleteFiles(PipeName):
    side: str = "local"
    files: list[str] | None = None
    dryrun: bool = False


class Reset(PipeName):
    delete: bool = False


class Import(PipeName):
    paths: list[str]
    subdir: str | None = None
    move: bool = False
    tree: bool = False


class ConfigUpdate(ProfileParams):
    config: dict[str, Any]


class MoveRepo(ProfileParams):
    path: str


def _options(p: Sync, direction: str) -> SyncOptions:
    return SyncOptions(direction, p.mode, p.files, p.include, p.exclude, p.nrecent, p.merge_mode, p.cached)


def _opts(p: Sync, direction: str) -> SyncOptions:
    opts = _options(p, direction)
    opts.check()
    return opts


METHODS = Methods()


# -- pipes -------------------------------------------------------------------------------------


@METHODS.rpc("pipe.upsert", Upsert)
async def pipe_upsert(ctx: Context, p: Upsert) -> dict[str, Any]:
    """Create or replace a pipe (remote, parent, or self-hosted protocol/location/credentials)."""
    return await ctx.daemon.pipes.store.upsert(p.profile, p.settings)


@METHODS.rpc("pipe.update_settings", UpdateSettings)
async def pipe_update(ctx: Context, p: UpdateSettings) -> dict[str, Any]:
    """Merge settings into a pipe's own (nested dicts key by key); its effective settings."""
    store = ctx.daemon.pipes.store
    await store.update(p.profile, p.name, p.settings)
    return (await store.resolve(p.profile, p.name)).info()


@METHODS.rpc("pipe.get", PipeName)
async def pipe_get(ctx: Context, p: PipeName) -> dict[str, Any]:
    """A pipe's effective settings, schema and local folder (credentials shown as ***)."""
    return (await _resolve(ctx, p)).info()


@METHODS.rpc("pipe.list", ListPipes)
async def pipe_list(ctx: Context, p: ListPipes) -> list[Any]:
    """Pipe names (or their settings with names_only=false)."""
    store = ctx.daemon.pipes.store
    names = await store.names(p.profile)
    if p.names_only:
        return names
    out = []
    for n in names:
        try:
            out.append((await store.resolve(p.profile, n)).info())
        except E.DaemonError as err:
            out.append({"name": n, "error": {"code": err.code, "message": err.message}})
    return out


@METHODS.rpc("pipe.delete", PipeName)
async def pipe_delete(ctx: Context, p: PipeName) -> dict[str, Any]:
    """Forget a pipe and its sync state; files stay where they are on both sides."""
    await ctx.daemon.pipes.store.delete(p.profile, p.name)
    return {"name": p.name, "deleted": True}


# -- scanning -----------------------------------------------------------------------------------
@METHODS.rpc("pipe.scan_remote", ScanRemote)
async def pipe_scan_remote(ctx: Context, p: ScanRemote) -> list[Any]:
    """The pipe's remote files (names, or rows with attributes), from the cache within its TTL."""
    files, _ = await ctx.daemon.pipes.remote_files(await _resolve(ctx, p), p.cached, p.include, p.exclude)
    rows = rows_sorted([f.row() for f in files.values()], p.sortby)
    return rows if p.attributes else [r["filename"] for r in rows]


@METHODS.rpc("pipe.scan_local", ScanLocal)
async def pipe_scan_local(ctx: Context, p: ScanLocal) -> list[Any]:
    """The pipe's local files (names, or rows with attributes); fromdb: only files synced before."""
    svc = ctx.daemon.pipes
    rp = await _resolve(ctx, p)
    local = await svc.local_files(rp, p.include, p.exclude, filtered=False)
    wanted = {clean(f) for f in p.files} if p.files is not None else None
    synced = await svc.state.load(rp.profile, rp.name) if p.fromdb else None
    rows = rows_sorted([f.row() for n, f in local.items() if (wanted is None or n in wanted)
                        and (synced is None or n in synced)], p.sortby)
    return rows if p.attributes else [r["filename"] for r in rows]


# -- pull and push ----------------------------------------------------------------------------------
@METHODS.rpc("pipe.preview", Preview)
async def pipe_preview(ctx: Context, p: Preview) -> dict[str, Any]:
    """What a pull or push would move, with sizes, and its conflicts; moves nothing."""
    svc = ctx.daemon.pipes
    rp = await _resolve(ctx, p)
    opts = _opts(p, p.direction)
    plan, _ = await svc.plan(rp, opts)  # read-only: no need to wait for a running pull or push
    if plan.missing:
        raise E.NotFoundError(f"no such file in pipe {p.name}: {', '.join(plan.missing[:10])}",
                              {"files": plan.missing})
    return {"files": [m.wire() for m in plan.moves],
            "conflicts": [c.row("conflict", opts.direction) for c in plan.conflicts],  # type: ignore[arg-type]
            "kept": [c.row("kept", opts.direction) for c in plan.kept],  # type: ignore[arg-type]
            "skipped": [], "docs": {}, "dryrun": True,
            "summary": {"moved": len(plan.moves), "bytes": plan.bytes_total, "conflicts": len(plan.conflicts),
                        "kept": len(plan.kept), "adopted": len(plan.adopt)}}


async def _submit(ctx: Context, kind: str, p: Sync) -> Any:
    await _resolve(ctx, p)
    _opts(p, kind.split(".")[1])
    return await ctx.daemon.jobs.submit(kind, msgspec.to_builtins(p), p.profile, ctx.conn)


@METHODS.rpc("pipe.pull", Sync)
async def pipe_pull(ctx: Context, p: Sync) -> Any:
    """Start a job pulling new and changed remote files (per mode); conflicts are never overwritten."""
    return await _submit(ctx, "pipe.pull", p)


@METHODS.rpc("pipe.push", Sync)
async def pipe_push(ctx: Context, p: Sync) -> Any:
    """Start a job pushing new and changed local files (per mode); conflicts are never overwritten."""
    return await _submit(ctx, "pipe.push", p)


def _job_opts(ctx: JobContext, direction: str) -> SyncOptions:
    return _options(msgspec.convert(ctx.params, Sync), direction)


JOB_KINDS = JobKinds()


@JOB_KINDS.kind("pipe.pull")
async def job_pull(ctx: JobContext) -> dict[str, Any]:
    return await run_sync(ctx.daemon.pipes, ctx, _job_opts(ctx, "pull"))


@JOB_KINDS.kind("pipe.push")
async def job_push(ctx: JobContext) -> dict[str, Any]:
    return await run_sync(ctx.daemon.pipes, ctx, _job_opts(ctx, "push"))


@METHODS.rpc("pipe.is_synced", IsSynced)
async def pipe_is_synced(ctx: Context, p: IsSynced) -> dict[str, Any]:
    """Whether a default pull and push would move nothing (and nothing conflicts)."""
    out = await manage.sync_check(ctx.daemon.pipes, await _resolve(ctx, p), p.cached)
    if p.israise and not out["synced"]:
        raise E.ConflictError(f"pipe {p.name} is not in sync: {len(out['pull'])} to pull, "
                              f"{len(out['push'])} to push, {len(out['conflicts'])} conflicts", out)
    return out


@METHODS.rpc("pipe.reset", Reset)
async def pipe_reset(ctx: Context, p: Reset) -> Any:
    """Pull every file again (delete=true: delete the local files first); a pull job."""
    svc = ctx.daemon.pipes
    rp = await _resolve(ctx, p)
    if p.delete:
        await manage.delete_files(svc, rp, "local", None, dryrun=False)
        await svc.state.forget(rp.profile, rp.name)
    params = Sync(profile=p.profile, name=p.name, mode="all")
    return await ctx.daemon.jobs.submit("pipe.pull", msgspec.to_builtins(params), p.profile, ctx.conn)


# -- files --------------------------------------------------------------------------------------------
@METHODS.rpc("pipe.orphans", Orphans)
async def pipe_orphans(ctx: Context, p: Orphans) -> list[dict[str, Any]]:
    """Files on one side only (local: not on the remote); deleted unless dryrun."""
    rp = await _resolve(ctx, p)
    return await manage.orphans(ctx.daemon.pipes, rp, p.direction, p.files, p.dryrun, p.cached)


@METHODS.rpc("pipe.delete_files", DeleteFiles)
async def pipe_delete_files(ctx: Context, p: DeleteFiles) -> list[dict[str, Any]]:
    """Delete files (all the pipe's when none are named) locally, remotely or both."""
    return await manage.delete_files(ctx.daemon.pipes, await _resolve(ctx, p), p.side, p.files, p.dryrun)


@METHODS.rpc("pipe.import", Import)
async def pipe_import(ctx: Context, p: Import) -> list[dict[str, Any]]:
    """Copy (or move) local files or a folder tree into the pipe's local folder."""
    rp = await _resolve(ctx, p)
    return await manage.import_files(ctx.daemon.pipes, rp, p.paths, p.subdir, p.move, p.tree)


# -- profile config ---------------------------------------------------------------------------------
@METHODS.rpc("pipe.config_get", ProfileParams)
async def pipe_config_get(ctx: Context, p: ProfileParams) -> dict[str, Any]:
    """The profile's config: filerepo, scan_ttl_s, parallel_files, bwlimit_bps."""
    return await ctx.daemon.pipes.store.config(p.profile)


@METHODS.rpc("pipe.config_update", ConfigUpdate)
async def pipe_config_update(ctx: Context, p: ConfigUpdate) -> dict[str, Any]:
    """Change keys of the profile's config (filerepo here moves no files: see pipe.move_repo)."""
    return await ctx.daemon.pipes.store.update_config(p.profile, p.config)


@METHODS.rpc("pipe.move_repo", MoveRepo)
async def pipe_move_repo(ctx: Context, p: MoveRepo) -> dict[str, Any]:
    """Move the profile's local pipe files to a new folder and make it the filerepo."""
    return await ctx.daemon.pipes.store.move_repo(p.profile, p.path)


@METHODS.rpc("pipe.profiles", ProfileParams)
async def pipe_profiles(ctx: Context, p: ProfileParams) -> list[str]:
    """Profiles that have remotes, pipes or config."""
    return await ctx.daemon.pipes.store.profiles()

