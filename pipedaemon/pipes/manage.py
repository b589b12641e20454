"""Deleting a pipe's files, removing orphans, importing files, and the sync check.

Deleting is only ever done on an explicit request: the SDK asks on a terminal
(``confirm=True``) before it calls these with ``dryrun=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.pipefiles import import_paths

from .. import safepath
from ..retry import retry
from ..transfer.common import run_bounded
from .service import Pipes, SyncOptions, clean
from .store import Resolved


def _row(name: str, size: int, mtime: float | None, side: str, action: str) -> dict[str, Any]:
    return {"filename": name, "size": size, "modified_at": mtime, "side": side, "action": action}


async def delete_local(svc: Pipes, rp: Resolved, names: list[str], dryrun: bool) -> list[dict[str, Any]]:
    local = await svc.local_files(rp, filtered=False)
    rows = [_row(n, local[n].size, local[n].modified_at, "local", "would delete" if dryrun else "deleted")
            for n in sorted(names) if n in local]
    if dryrun or not rows:
        return rows
    done = [r["filename"] for r in rows]
    await asyncio.to_thread(_unlink_all, rp.dirpath, done)
    await svc.state.forget(rp.profile, rp.name, done)
    return rows


def _unlink_all(folder: Path, names: list[str]) -> None:
    base = folder.resolve()
    for n in names:
        target = safepath.local_target(folder, n)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        parent = target.parent
        while parent != base and base in parent.parents:  # prune folders left empty
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


async def delete_remote(svc: Pipes, rp: Resolved, names: list[str], dryrun: bool,
                        cached: bool = True) -> list[dict[str, Any]]:
    remote, _ = await svc.remote_files(rp, cached)
    rows = [_row(n, remote[n].size, remote[n].mtime, "remote", "would delete" if dryrun else "deleted")
            for n in sorted(names) if n in remote]
    if dryrun or not rows:
        return rows
    backend, _ = await svc.remotes.backend(*rp.remote_key, "write")
    done: list[str] = []

    def deleter(name: str) -> Any:
        async def go() -> None:
            path = rp.folder + name
            with contextlib.suppress(E.NotFoundError):
                await retry(lambda: backend.delete(path), what=f"delete {path}")
            svc.remotes.changed(*rp.remote_key, path, None)
            done.append(name)

        return go

    try:
        await run_bounded([deleter(r["filename"]) for r in rows], 8)
    finally:
        await svc.state.forget(rp.profile, rp.name, done)
    return rows


async def delete_files(svc: Pipes, rp: Resolved, side: str, files: list[str] | None,
                       dryrun: bool) -> list[dict[str, Any]]:
    """Delete the given files (all the pipe's files when None) on one side or both."""
    if side not in ("local", "remote", "both"):
        raise E.InvalidParamsError("side must be local, remote or both", {"field": "side"})
    out: list[dict[str, Any]] = []
    async with svc.lock(rp):
        if side in ("remote", "both"):
            names = [clean(f) for f in files] if files is not None else list((await svc.remote_files(rp))[0])
            out += await delete_remote(svc, rp, names, dryrun)
        if side in ("local", "both"):
            names = [clean(f) for f in files] if files is not None else list(
                await svc.local_files(rp, filtered=False))
            out += await delete_local(svc, rp, names, dryrun)
    return out


async def orphans(svc: Pipes, rp: Resolved, direction: str, files: list[str] | None, dryrun: bool,
                  cached: bool) -> list[dict[str, Any]]:
    """Files on one side only (within the pipe's filters); deleted unless ``dryrun``.

    ``local``: local files the remote does not have; ``remote``: the reverse.
    """
    if direction not in ("local", "remote", "both"):
        raise E.InvalidParamsError("direction must be local, remote or both", {"field": "direction"})
    wanted = {clean(f) for f in files} if files is not None else None
    out: list[dict[str, Any]] = []
    async with svc.lock(rp):
        remote, _ = await svc.remote_files(rp, cached)
        local = await svc.local_files(rp)
        if direction in ("remote", "both"):
            names = [n for n in remote if n not in local and (wanted is None or n in wanted)]
            out += await delete_remote(svc, rp, names, dryrun, cached=True)
        if direction in ("local", "both"):
            names = [n for n in local if n not in remote and (wanted is None or n in wanted)]
            out += await delete_local(svc, rp, names, dryrun)
    return out


async def import_files(svc: Pipes, rp: Resolved, paths: list[str], subdir: str | None, move: bool,
                       tree: bool) -> list[dict[str, Any]]:
    for p in paths:
        if not os.path.isabs(p):
            raise E.InvalidParamsError(f"paths must be absolute: {p!r}", {"field": "paths"})
    if subdir:
        clean(subdir)
    await asyncio.to_thread(_writable, rp.dirpath)
    names = await asyncio.to_thread(import_paths, rp.dirpath, paths, subdir, move, tree)
    local = await svc.local_files(rp, filtered=False)
    return [local[n].row() | {"action": "imported"} for n in names if n in local]


def _writable(folder: Path) -> None:
    from .service import ensure_writable

    ensure_writable(folder)


async def sync_check(svc: Pipes, rp: Resolved, cached: bool) -> dict[str, Any]:
    """What a default pull and push would move, and the conflicts: synced when all are empty."""
    pull, _ = await svc.plan(rp, SyncOptions("pull", cached=cached))
    push, _ = await svc.plan(rp, SyncOptions("push", cached=True))
    out = {"pull": [m.row() for m in pull.moves], "push": [m.row() for m in push.moves],
           "conflicts": [c.row("conflict", "pull") for c in pull.conflicts]}
    out["synced"] = not (out["pull"] or out["push"] or out["conflicts"])
    return out
