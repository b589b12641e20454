"""Reading and writing an object's metadata: the daemon's store, and the storage's own place.

On a backend with native metadata (S3) the storage is the truth: what the daemon
wrote there is read back from there (with the types the daemon was given, while S3
still holds the same text), and what another tool wrote is read as it is. Elsewhere
the daemon's store is the only place. Each write also lands in the store, so a
record survives restarts and names the object version it was written on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from pipedaemon_sdk.protocol import errors as E

from ..backends.base import Backend, Entry
from ..retry import retry
from .fields import S3_LIMITS, STORE_LIMITS, Limits, Record, Update, check, from_native, merged, to_native

if TYPE_CHECKING:
    from ..provenance.graph import Graph
    from ..remotes import Remotes
    from ..state import State

log = logging.getLogger("pipedaemon.metadata")
SAME_CONTENT = "same_content_as"  # a metadata rewrite that gave the same bytes a new version


def limits_for(protocol: str) -> Limits:
    return S3_LIMITS if protocol == "s3" else STORE_LIMITS


def public(rec: Record, remote: str, key: str, entry: Entry | None, stored_in: str) -> dict[str, Any]:
    out = msgspec.to_builtins(rec)
    out.update(
        {
            "remote": remote,
            "key": key,
            "stored_in": stored_in,
            "object": None
            if entry is None
            else {"size": entry.size, "etag": entry.etag, "modified_at": entry.mtime},
        }
    )
    return out


class MetaService:
    """The metadata records in ``state``; writes are told to the remotes' listeners (scan
    caches), and a metadata copy that changed an ETag is linked in ``provenance``."""

    def __init__(self, state: State, remotes: Remotes, provenance: Graph) -> None:
        self.state = state
        self.remotes = remotes
        self.provenance = provenance
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def stored(self, profile: str, remote: str, path: str) -> Record | None:
        row = await self.state.fetchone(
            "SELECT record FROM object_metadata WHERE profile=? AND remote=? AND path=?",
            (profile, remote, path),
        )
        return None if row is None else msgspec.json.decode(row[0], type=Record)

    async def save(
        self, profile: str, remote: str, path: str, rec: Record, native: bool, entry: Entry
    ) -> None:
        await self.state.execute(
            "INSERT INTO object_metadata(profile, remote, path, record, native, etag, size, mtime, "
            "updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(profile, remote, path) DO UPDATE SET "
            "record=excluded.record, "
            "native=excluded.native, etag=excluded.etag, size=excluded.size, mtime=excluded.mtime, "
            "updated_at=excluded.updated_at",
            (
                profile,
                remote,
                path,
                msgspec.json.encode(rec),
                int(native),
                entry.etag,
                entry.size,
                entry.mtime,
                time.time(),
            ),
        )

    def forget(self, profile: str, remote: str, path: str, entry: Entry | None) -> None:
        """A listener of the remotes: an object the daemon deleted takes its metadata along."""
        if entry is not None:
            return

        async def drop() -> None:
            with contextlib.suppress(Exception):
                await self.state.execute(
                    "DELETE FROM object_metadata WHERE profile=? AND remote=? AND path=?",
                    (profile, remote, path),
                )

        task = asyncio.get_running_loop().create_task(drop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def read(self, profile: str, remote: str, backend: Backend, path: str) -> tuple[Record, Entry, str]:
        """The record, the object's entry, and where the record lives ("storage" or "daemon")."""
        stored = await self.stored(profile, remote, path)
        native = backend.features.native_metadata
        if native is not None:
            nat = await retry(lambda: native.read(path), what=f"read the metadata of {path}")
            return from_native(nat.meta, nat.tags, stored), nat.entry, "storage"
        entry = await retry(lambda: backend.stat(path), what=f"stat {path}")
        if entry.is_dir:
            raise E.NotFoundError(f"{path} is a folder, not an object", {"path": path})
        return stored or Record(), entry, "daemon"

    async def update(
        self, profile: str, remote: str, protocol: str, backend: Backend, path: str, up: Update
    ) -> tuple[Record, Entry, str]:
        lock = self._locks.setdefault((profile, remote, path), asyncio.Lock())
        async with lock:
            rec, entry, where = await self.read(profile, remote, backend, path)
            new = merged(rec, up)
            check(new, limits_for(protocol))
            native = backend.features.native_metadata
            if native is not None:
                meta, tags = to_native(new)
                before = entry
                entry = await retry(
                    lambda: native.write(path, meta, tags, before.etag), what=f"write the metadata of {path}"
                )
                if before.etag and entry.etag and entry.etag != before.etag:
                    await self._same_content(profile, remote, path, entry, before)
                self.remotes.changed(profile, remote, path, entry)  # scan caches
            await self.save(profile, remote, path, new, native is not None, entry)
        return new, entry, where

    async def _same_content(self, profile: str, remote: str, path: str, now: Entry, was: Entry) -> None:
        """The copy that rewrote the metadata gave the same bytes a new ETag (a layout S3 would not
        tell us): link the new version to the old, so its provenance stays reachable."""
        from ..provenance.graph import Link
        from ..provenance.refs import entry_node

        root = (await self.remotes.get(profile, remote)).root
        if not path.startswith(root):
            return
        ref = f"{remote}:{path[len(root):]}"
        link = Link(rel_type=SAME_CONTENT, qualifiers={"via": "set_metadata"})
        graph = self.provenance
        await graph.add(profile, entry_node(ref, now), entry_node(ref, was), link)
        log.info("%s: the metadata copy changed its ETag %s -> %s (linked)", path, was.etag, now.etag)

    def upload_args(self, backend: Backend, rec: Record | None) -> dict[str, Any] | None:
        """The storage's own place gets ``rec`` with the bytes: the backend's arguments of that
        one upload (S3: its PUT or CreateMultipartUpload), handed to the engine's call for it."""
        native = backend.features.native_metadata if rec is not None else None
        if native is None or rec is None:
            return None
        return native.upload_args(*to_native(rec))

    async def uploaded(
        self, profile: str, remote: str, backend: Backend, path: str, rec: Record | None, entry: Entry
    ) -> None:
        """The store's record of what an upload carried, once the upload landed as ``entry``.

        On S3 the record only keeps the types of the values (S3 holds text): it is saved while
        the object is still this upload's, checked under the path's lock, so when uploads of one
        key race, the record kept is the one whose bytes the storage kept."""
        if rec is None:
            return
        if backend.features.native_metadata is None:
            await self.save(profile, remote, path, rec, False, entry)
            return
        async with self._locks.setdefault((profile, remote, path), asyncio.Lock()):
            try:
                now = await retry(lambda: backend.stat(path), what=f"stat {path}")
            except E.NotFoundError:
                return
            if not entry.etag or now.etag == entry.etag:
                await self.save(profile, remote, path, rec, True, entry)

