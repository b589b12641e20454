"""Provenance a pull or push records by itself (``record=True``).

A pulled file is linked ``derived_from`` the object version it came from
(``pipe:name/file@sha256:...`` -> ``remote:key@etag:...``); a pushed object the
other way round. Re-running a job records nothing twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipedaemon_sdk.protocol import errors as E

from ..backends.base import Backend, Entry
from ..retry import retry
from .graph import Link
from .refs import entry_node, file_node

if TYPE_CHECKING:
    from ..pipes.store import Resolved
    from ..pipes.syncstate import DoneFile
    from ..server import Daemon

REL_TYPE = "derived_from"


async def record_sync(
    daemon: Daemon, rp: Resolved, direction: str, moved: list[DoneFile], backend: Backend, job_id: str
) -> int:
    """Link each moved file to the version it was made from; how many links are new."""
    graph = daemon.provenance
    remote = await daemon.remotes.get(*rp.remote_key)
    link = Link(rel_type=REL_TYPE, qualifiers={"via": direction, "job_id": job_id})
    new = 0
    for row in moved:
        name = row.filename
        path = rp.folder + name
        key = path[len(remote.root) :] if path.startswith(remote.root) else path
        entry = Entry(name=path, size=row.size, mtime=row.modified_at, etag=row.etag)
        if direction == "push" and not entry.etag:  # the local mtime is in the row: ask the storage
            try:
                entry = await retry(lambda path=path: backend.stat(path), what=f"stat {path}")
            except E.NotFoundError:
                continue  # gone again already: nothing to link
        obj = entry_node(f"{rp.remote}:{key}", entry)
        try:
            local = await file_node(f"pipe:{rp.name}/{name}", rp.dirpath / name)
        except E.NotFoundError:
            continue
        src, dst = (local, obj) if direction == "pull" else (obj, local)
        _, created = await graph.add(rp.profile, src, dst, link)
        new += created
    return new
