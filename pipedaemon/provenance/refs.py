"""References to objects and pipe files, and the versions they name.

A ref is ``"remote:key"`` (an object a remote holds, the key under its root) or
``"pipe:name/file"`` (a pipe's local file). A relationship never links a ref alone:
it links one *version* of it, so a later overwrite does not re-point history.
The version is the object's ETag where the storage gives one (``etag:<etag>``),
a pipe file's content hash (``sha256:<hex>``), else its size and modified time
(``stat:<size>:<mtime>``). ``ref@version`` names a version explicitly.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipedaemon_sdk.protocol import errors as E

from .. import safepath
from ..backends.base import Entry
from ..retry import retry

if TYPE_CHECKING:
    from ..server import Daemon

_VERSION = re.compile(r"@(etag:[0-9A-Za-z-]{1,128}|sha256:[0-9a-f]{64}|stat:\d+:[0-9.-]+)\Z")


@dataclass(frozen=True)
class Node:
    ref: str
    version: str
    identity: dict[str, Any]  # what the version was computed from: etag / sha256, size, mtime

    @property
    def id(self) -> str:
        return f"{self.ref}@{self.version}"


def _bad(field: str, text: str, why: str) -> E.InvalidSettingsError:
    return E.InvalidSettingsError(f"invalid {field} {text!r}: {why}", {"field": field, "ref": text})


def split(text: str, field: str) -> tuple[str, str, str, str | None]:
    """``(kind, owner, name, version)``: kind "remote" or "pipe", the remote or pipe, the key
    or file, and the explicit version (None when not given)."""
    if not isinstance(text, str) or not text:  # (a key's own length limit is safepath's)
        raise _bad(field, str(text)[:64], "a ref is 'remote:key' or 'pipe:name/file'")
    m = _VERSION.search(text)
    version = m.group(1) if m else None
    body = text[: m.start()] if m else text
    if body.startswith("pipe:"):
        owner, _, name = body[5:].partition("/")
        kind = "pipe"
    else:
        owner, _, name = body.partition(":")
        kind = "remote"
    if not owner or not name:
        raise _bad(field, text, "a ref is 'remote:key' or 'pipe:name/file'")
    try:
        name = safepath.clean_key(name)
    except E.UnsafePathError as err:
        raise _bad(field, text, err.message) from None
    if name.endswith("/"):
        raise _bad(field, text, "names a folder, not a file")
    return kind, owner, name, version


def canonical(kind: str, owner: str, name: str) -> str:
    return f"pipe:{owner}/{name}" if kind == "pipe" else f"{owner}:{name}"


def entry_version(entry: Entry) -> str:
    if entry.etag:
        return f"etag:{entry.etag}"
    mtime = "-" if entry.mtime is None else f"{entry.mtime:.6f}".rstrip("0").rstrip(".")
    return f"stat:{entry.size}:{mtime}"


def entry_node(ref: str, entry: Entry) -> Node:
    return Node(ref, entry_version(entry), {"etag": entry.etag, "size": entry.size, "mtime": entry.mtime})


def _sha256(path: Path) -> tuple[str, int, float]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        st = path.stat()
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest(), st.st_size, st.st_mtime


async def file_node(ref: str, path: Path) -> Node:
    try:
        digest, size, mtime = await asyncio.to_thread(_sha256, path)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise E.NotFoundError(f"{ref}: no such local file {path}", {"ref": ref, "path": str(path)}) from None
    return Node(ref, f"sha256:{digest}", {"sha256": digest, "size": size, "mtime": mtime})


async def current(daemon: Daemon, profile: str, text: str, field: str) -> Node:
    """The version ``text`` names now (stat'ing the object or hashing the file); an explicit
    version must still be the current one (1006 when the object changed since)."""
    kind, owner, name, version = split(text, field)
    ref = canonical(kind, owner, name)
    if kind == "pipe":
        rp = await daemon.pipes.store.resolve(profile, owner)
        node = await file_node(ref, safepath.local_target(rp.dirpath, name))
    else:
        remotes = daemon.remotes
        backend, remote = await remotes.backend(profile, owner)
        path = safepath.join(remote.root, name)
        entry = await retry(lambda: backend.stat(path), what=f"stat {text}")
        if entry.is_dir:
            raise E.NotFoundError(f"{text} is a folder, not an object", {"ref": text})
        node = entry_node(ref, entry)
    if version is not None and version != node.version:
        raise E.ConflictError(
            f"{text}: the object is now {node.version}, not the version named",
            {"field": field, "ref": text, "current": node.version},
        )
    return node


async def named(daemon: Daemon, profile: str, text: str, field: str) -> tuple[str, str | None]:
    """For queries: the canonical ref and the version (explicit, else the current one; None
    when the object is gone)."""
    kind, owner, name, version = split(text, field)
    ref = canonical(kind, owner, name)
    if version is not None:
        return ref, version
    try:
        return ref, (await current(daemon, profile, text, field)).version
    except E.NotFoundError:
        return ref, None
