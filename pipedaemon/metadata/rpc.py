"""The metadata methods: thin faces over the service, for remote keys and for pipe files."""

from __future__ import annotations

from typing import Any

import msgspec

from pipedaemon_sdk.protocol import errors as E

from .. import safepath
from ..backends.base import Backend
from ..datastore import KeyTarget, resolve
from ..remotes import Mode
from ..rpc import Context, Methods, ProfileParams
from .fields import Record, Update, check
from .service import limits_for, public


class GetMetadata(KeyTarget):
    pass


class SetMetadata(KeyTarget):
    fields: dict[str, Any]


class PipeFile(ProfileParams):
    name: str
    file: str


class SetPipeMetadata(PipeFile):
    fields: dict[str, Any]


def update_of(fields: dict[str, Any]) -> Update:
    """The fields to change; an unknown one or a wrong type is 1003 naming it."""
    return msgspec.convert(fields, Update)


def record_of(
    title: str | None,
    description: str | None,
    alias: str | None,
    tags: list[str] | None,
    metadata: dict[str, Any] | None,
) -> Record | None:
    """The record an upload carries; None when it carries none."""
    if title is None and description is None and alias is None and tags is None and metadata is None:
        return None
    return Record(
        title=title or None,
        description=description or None,
        alias=alias or None,
        tags=list(tags or []),
        metadata={k: v for k, v in (metadata or {}).items() if v is not None},
    )


def check_upload(rec: Record | None, protocol: str) -> None:
    """Refuse (1003) an upload whose metadata the storage could not hold, before it starts."""
    if rec is not None:
        check(rec, limits_for(protocol))


async def _object(ctx: Context, p: KeyTarget, mode: Mode) -> tuple[Backend, str, str]:
    backend, path = await resolve(ctx, p, mode)
    remote = await ctx.daemon.remotes.get(p.profile, p.remote)
    return backend, path, remote.protocol


METHODS = Methods()


@METHODS.rpc("object.get_metadata", GetMetadata)
async def object_get_metadata(ctx: Context, p: GetMetadata) -> dict[str, Any]:
    """An object's metadata (title, description, alias, tags, metadata), from the storage if it holds it."""
    backend, path, _ = await _object(ctx, p, "read")
    rec, entry, where = await ctx.daemon.metadata.read(p.profile, p.remote, backend, path)
    return public(rec, p.remote, safepath.clean_key(p.key), entry, where)


@METHODS.rpc("object.set_metadata", SetMetadata)
async def object_set_metadata(ctx: Context, p: SetMetadata) -> dict[str, Any]:
    """Change fields of an object's metadata (written natively on S3); the merged record."""
    up = update_of(p.fields)
    backend, path, protocol = await _object(ctx, p, "write")
    rec, entry, where = await ctx.daemon.metadata.update(p.profile, p.remote, protocol, backend, path, up)
    return public(rec, p.remote, safepath.clean_key(p.key), entry, where)


async def _pipe_object(ctx: Context, p: PipeFile, mode: Mode) -> tuple[Backend, str, str, str, str, str]:
    """A pipe file's object on the pipe's remote: backend, path, remote profile, remote, protocol, key."""
    rp = await ctx.daemon.pipes.store.resolve(p.profile, p.name)
    name = safepath.clean_key(p.file)
    if name.endswith("/"):
        raise E.InvalidParamsError(f"{p.file!r} names a folder, not a file", {"field": "file"})
    backend, remote = await ctx.daemon.remotes.backend(*rp.remote_key, mode)
    path = rp.folder + name
    key = path[len(remote.root) :] if path.startswith(remote.root) else path
    return backend, path, rp.remote_profile, rp.remote, remote.protocol, key


@METHODS.rpc("pipe.get_metadata", PipeFile)
async def pipe_get_metadata(ctx: Context, p: PipeFile) -> dict[str, Any]:
    """A pipe file's metadata: that of its object on the pipe's remote."""
    backend, path, profile, remote, _, key = await _pipe_object(ctx, p, "read")
    rec, entry, where = await ctx.daemon.metadata.read(profile, remote, backend, path)
    return {**public(rec, remote, key, entry, where), "pipe": p.name, "file": safepath.clean_key(p.file)}


@METHODS.rpc("pipe.set_metadata", SetPipeMetadata)
async def pipe_set_metadata(ctx: Context, p: SetPipeMetadata) -> dict[str, Any]:
    """Change fields of a pipe file's metadata (on its object on the pipe's remote)."""
    up = update_of(p.fields)
    backend, path, profile, remote, protocol, key = await _pipe_object(ctx, p, "write")
    rec, entry, where = await ctx.daemon.metadata.update(profile, remote, protocol, backend, path, up)
    return {**public(rec, remote, key, entry, where), "pipe": p.name, "file": safepath.clean_key(p.file)}
