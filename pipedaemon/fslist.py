"""``fs.list``: a remote folder's files from the scan cache, for the SDK's fsspec filesystem.

The same SQLite-cached listings the pipes use (pipes/scan.py): served within the
profile's ``scan_ttl_s`` (or the caller's ``ttl_s``), kept true by the daemon's own
writes and deletes, listed afresh with ``cached=False``. Folders are implied by the
names (as on S3): the cache holds files only.
"""

from __future__ import annotations

from typing import Any

from . import safepath
from .rpc import Context, Methods, ProfileParams


class ListFolder(ProfileParams):
    remote: str
    path: str = ""  # a folder under the remote's root ('' for the root itself)
    cached: bool = True
    ttl_s: float | None = None


METHODS = Methods()


@METHODS.rpc("fs.list", ListFolder)
async def fs_list(ctx: Context, p: ListFolder) -> dict[str, Any]:
    """Every file under ``path`` (recursively), names relative to it, and when it was listed."""
    remote = await ctx.daemon.remotes.get(p.profile, p.remote)
    sub = safepath.clean_key(p.path, allow_empty=True).rstrip("/")
    folder = remote.root + (f"{sub}/" if sub else "")
    pipes = ctx.daemon.pipes
    ttl = p.ttl_s if p.ttl_s is not None else float((await pipes.config(p.profile))["scan_ttl_s"])
    files, listed_at = await pipes.scan.files((p.profile, p.remote), folder, folder, ttl, p.cached)
    rows = [{"name": f.name, "size": f.size, "modified_at": f.mtime, "etag": f.etag} for f in files]
    return {"listed_at": listed_at, "files": rows}
