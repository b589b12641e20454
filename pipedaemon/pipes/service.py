"""The pipes service: a pipe's remote and local views, and the plans built on them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.pipefiles import LocalFile, name_filter, scan_dir

from .. import safepath
from ..remotes import Remotes
from .plan import Plan, make_plan
from .scan import RemoteFile, ScanCache
from .settings import MERGE_MODES, MODES
from .store import PipeStore, Resolved
from .syncstate import FileState, SyncState

if TYPE_CHECKING:
    from ..server import Daemon

log = logging.getLogger("pipedaemon.pipes")
DOC_NAMES = ("README.md", "LICENSE.md")
DOC_MAX = 64 * 1024  # bytes of a README/LICENSE shown


@dataclass
class SyncOptions:
    direction: str = "pull"
    mode: str = "default"
    files: list[str] | None = None
    include: str | None = None
    exclude: str | None = None
    nrecent: int = 0
    merge_mode: str | None = None
    cached: bool = True

    def check(self) -> None:
        if self.direction not in ("pull", "push"):
            raise E.InvalidParamsError("direction must be pull or push", {"field": "direction"})
        if self.mode not in MODES:
            raise E.InvalidParamsError(f"mode must be one of {', '.join(MODES)}", {"field": "mode"})
        if self.merge_mode not in MERGE_MODES:
            raise E.InvalidParamsError("merge_mode must be null, 'keep' or 'overwrite'",
                                       {"field": "merge_mode"})
        name_filter(self.include, self.exclude)  # a bad pattern is 1003
        if self.files is not None:
            self.files = [clean(f) for f in self.files]


# A plain relative name: no empty, '.' or '..' part, no backslash or control character.
_PLAIN = re.compile(r"(?:[^/\\\x00-\x1f]+/)*[^/\\\x00-\x1f]+")


def clean(name: str) -> str:
    if len(name) < 512 and _PLAIN.fullmatch(name) and "/." not in "/" + name:
        return name  # the common case, checked cheaply (listings hold thousands of names)
    return safepath.clean_key(name).rstrip("/")


@dataclass
class View:
    """Both sides of a pipe and its sync state, filtered the same way."""

    local: dict[str, LocalFile]
    remote: dict[str, RemoteFile]
    state: dict[str, FileState]
    listed_at: float


class Pipes:
    def __init__(self, daemon: Daemon, remotes: Remotes) -> None:
        self.daemon = daemon
        self.remotes = remotes
        self.db = daemon.state  # (opened and closed by the daemon)
        self.store = PipeStore(daemon, self.db, self.remotes)
        self.scan = ScanCache(self.db, self.remotes)
        self.state = SyncState(self.db)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def open(self) -> None:
        await self.state.open()
        await self.scan.open()
        await self.store.write_mirror()

    async def close(self) -> None:
        await self.scan.settle()

    def lock(self, rp: Resolved) -> asyncio.Lock:
        """One pull, push or delete at a time per pipe."""
        return self._locks.setdefault((rp.profile, rp.name), asyncio.Lock())

    async def config(self, profile: str) -> dict[str, Any]:
        return await self.store.config(profile)

    async def ttl(self, rp: Resolved) -> float:
        if rp.scan_ttl_s is not None:
            return float(rp.scan_ttl_s)
        return float((await self.config(rp.profile))["scan_ttl_s"])

    # -- views -------------------------------------------------------------------------
    async def remote_files(self, rp: Resolved, cached: bool = True, include: str | None = None,
                           exclude: str | None = None,
                           filtered: bool = True) -> tuple[dict[str, RemoteFile], float]:
        """The pipe's remote files by name; names that would escape its folder are refused (1010)."""
        files, listed_at = await self.scan.files(rp.remote_key, rp.folder, rp.scan_folder, await self.ttl(rp),
                                                 cached)
        keep = _filters(rp, include, exclude, filtered)
        out: dict[str, RemoteFile] = {}
        unsafe: list[str] = []
        for f in files:
            if keep is not None and not keep(f.name):
                continue
            try:
                name = clean(f.name)
            except E.UnsafePathError:
                name = ""
            if name != f.name:  # '..', absolute, backslashes hiding '..', or a name we would rewrite
                unsafe.append(f.name)
                continue
            out[name] = f
        if unsafe:
            raise E.UnsafePathError(
                f"the remote folder of pipe {rp.name} holds {len(unsafe)} name(s) that would land outside "
                f"the pipe's folder, e.g. {unsafe[0]!r}; nothing was moved",
                {"pipe": rp.name, "paths": unsafe[:50]})
        return out, listed_at

    async def local_files(self, rp: Resolved, include: str | None = None, exclude: str | None = None,
                          filtered: bool = True) -> dict[str, LocalFile]:
        keep = _filters(rp, include, exclude, filtered)
        found = await asyncio.to_thread(scan_dir, rp.dirpath)
        return {f.name: f for f in found if keep is None or keep(f.name)}

    async def view(self, rp: Resolved, opts: SyncOptions) -> View:
        remote, listed_at = await self.remote_files(rp, opts.cached, opts.include, opts.exclude)
        local = await self.local_files(rp, opts.include, opts.exclude)
        # One string per name for all three views (a million names are ~60 MB each time).
        canon = {n: n for n in remote}
        shared = {}
        for n, f in local.items():
            f.name = canon.get(n, n)
            shared[f.name] = f
        local = shared
        state = await self.state.load(rp.profile, rp.name, canon)
        return View(local=local, remote=remote, state=state, listed_at=listed_at)

    async def plan(self, rp: Resolved, opts: SyncOptions) -> tuple[Plan, View]:
        opts.check()
        v = await self.view(rp, opts)
        unknown = [n for n in v.local if n in v.remote and n not in v.state]
        equal = await asyncio.to_thread(_equal_copies, rp.dirpath, unknown, v.local, v.remote)
        plan = make_plan(opts.direction, v.local, v.remote, v.state, mode=opts.mode,  # type: ignore[arg-type]
                         files=opts.files, nrecent=opts.nrecent, merge_mode=opts.merge_mode, equal=equal)
        return plan, v

    # -- README and LICENSE on the first pull ------------------------------------------------
    async def docs(self, rp: Resolved) -> dict[str, str]:
        """README.md and LICENSE.md at the pipe's root: the local copy, else the remote one."""
        out: dict[str, str] = {}
        remote: dict[str, RemoteFile] | None = None
        for name in DOC_NAMES:
            path = rp.dirpath / name
            if path.is_file():
                out[name] = await asyncio.to_thread(_read_text, path)
                continue
            if remote is None:
                remote, _ = await self.remote_files(rp, filtered=False)
            if name in remote:
                backend, _ = await self.remotes.backend(*rp.remote_key, "read")
                data = bytearray()
                async for piece in backend.read(rp.folder + name, 0, min(DOC_MAX, remote[name].size) or None):
                    data += piece
                out[name] = bytes(data[:DOC_MAX]).decode("utf-8", "replace")
        return out


def _filters(rp: Resolved, include: str | None, exclude: str | None,
             filtered: bool) -> Callable[[str], bool] | None:
    """The pipe's filters (when ``filtered``) and the call's, as one test; None keeps everything."""
    tests = [name_filter(include, exclude)] if include or exclude else []
    if filtered and (rp.include or rp.exclude):
        tests.append(name_filter(rp.include, rp.exclude))
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    first, second = tests
    return lambda n: first(n) and second(n)


def _read_text(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(DOC_MAX).decode("utf-8", "replace")


def _equal_copies(root: Path, names: list[str], local: dict[str, LocalFile],
                  remote: dict[str, RemoteFile]) -> set[str]:
    """Files on both sides without a recorded sync that hold the same bytes.

    Same size and mtime within a second (a copy we downloaded carries the remote's
    mtime), or the local file reproduces the S3 ETag: its md5, or for a multipart ETag
    the md5 of its part md5s at the usual part sizes (a push killed after the upload
    completed but before its sync state was written leaves exactly such a copy).
    """
    out = set()
    for n in names:
        lo, re_ = local[n], remote[n]
        if lo.size != re_.size:
            continue
        if lo.mtime is not None and re_.mtime is not None and abs(lo.mtime - re_.mtime) < 1.0:
            out.add(n)
        elif re_.etag and len(re_.etag) == 32 and "-" not in re_.etag and _md5(root / n) == re_.etag:
            out.add(n)
        elif re_.etag and "-" in re_.etag and _multipart_etag_matches(root / n, re_.size, re_.etag):
            out.add(n)
    return out


def _multipart_etag_matches(path: Path, size: int, etag: str) -> bool:
    from ..hashing import hash_path
    from ..transfer.download import part_size_candidates

    try:
        return any(hash_path(str(path), "s3etag", part) == etag for part in part_size_candidates(size, etag))
    except OSError:
        return False


def _md5(path: Path) -> str | None:
    h = hashlib.md5()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def rows_sorted(rows: list[dict[str, Any]], sortby: str | None) -> list[dict[str, Any]]:
    from pipedaemon_sdk.protocol.pipefiles import sort_rows

    return sort_rows(rows, sortby)


def ensure_writable(folder: Path) -> None:
    """The pipe's local folder exists and we may write in it (PermissionDenied, 1005)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise E.PermissionDeniedError(f"cannot create the pipe's folder {folder}: {exc.strerror or exc}",
                                      {"path": str(folder)}) from None
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise E.PermissionDeniedError(f"cannot write in the pipe's folder {folder}", {"path": str(folder)})
