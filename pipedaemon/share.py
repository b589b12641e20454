"""``pipe.upsert_permissions`` / ``pipe.list_permissions`` (and the same for remotes).

d6tpipe's shape: ``upsert_permissions(pipe, {"username": "bob", "role": "read"})`` with
role read, write or admin; ``"public"`` is every user who can connect; role None, "",
"none" or "revoke" removes the grant. Only a shared daemon has users to grant to; the
Guard (access.py) has already checked that the caller is an admin of the target.
"""

from __future__ import annotations

import pwd
from typing import Any

import msgspec

from pipedaemon_sdk import AsyncPipeClient
from pipedaemon_sdk.protocol import errors as E

from .acl import PUBLIC, ROLES, Target
from .rpc import Context, Methods, ProfileParams

REVOKE = (None, "", "none", "revoke")


class Grant(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    role: str | None = None


class UpsertPermissions(ProfileParams):
    name: str
    settings: dict[str, Any]


class ListPermissions(ProfileParams):
    name: str


def _guard(ctx: Context) -> Any:
    guard = ctx.daemon.guard
    if guard is None:
        raise E.InvalidSettingsError(
            "permissions exist on a shared daemon only (pipedaemon serve --shared); this daemon "
            "serves its own user alone", {"field": "settings", "reason": "not a shared daemon"})
    return guard


def _grant(settings: dict[str, Any]) -> Grant:
    try:
        g = msgspec.convert(settings, Grant)
    except msgspec.ValidationError as exc:
        raise E.InvalidSettingsError(f"permission settings: {exc}", {"field": "settings"}) from None
    if g.role not in REVOKE and g.role not in ROLES:
        raise E.InvalidSettingsError(f"unknown role {g.role!r}: use read, write or admin (or None to revoke)",
                                     {"field": "settings.role"})
    if g.username != PUBLIC:
        try:
            pwd.getpwnam(g.username)
        except KeyError:
            raise E.InvalidSettingsError(f"no such user on this machine: {g.username!r}",
                                         {"field": "settings.username"}) from None
    return g


async def _upsert(ctx: Context, t: Target, settings: dict[str, Any]) -> dict[str, Any]:
    guard = _guard(ctx)
    await _exists(guard, t)
    g = _grant(settings)
    owner = await guard.acl.owner(t)
    if g.username == owner:
        raise E.InvalidSettingsError(f"{owner} owns {t[0]} {t[2]}; an owner's role does not change",
                                     {"field": "settings.username"})
    if g.role in REVOKE:
        await guard.acl.revoke(t, g.username)
    else:
        if g.username == PUBLIC and g.role == "admin":
            raise E.InvalidSettingsError("public may have read or write, not admin",
                                         {"field": "settings.role"})
        await guard.acl.grant(t, g.username, g.role, ctx.user or "")
    return await _list(ctx, t)


async def _exists(guard: Any, t: Target) -> None:
    if not await guard.exists(t):
        raise E.NotFoundError(f"no such {t[0]}: {t[2]}", {t[0]: t[2], "profile": t[1]})


async def _list(ctx: Context, t: Target) -> dict[str, Any]:
    guard = _guard(ctx)
    await _exists(guard, t)
    rows = await guard.acl.rows(t)
    owner = next((r["username"] for r in rows if r["role"] == "owner"), None)
    return {t[0]: t[2], "owner": owner, "permissions": [r for r in rows if r["role"] != "owner"]}


async def _shared_pipe(ctx: Context, profile: str, name: str) -> dict[str, Any] | None:
    """On a user's own daemon, a pipe over a shared pipe (a remote of protocol pipedaemon with
    ``options.pipe``): that remote's options, so its permissions are asked of the shared daemon."""
    if ctx.daemon.guard is not None:
        return None
    try:
        rp = await ctx.daemon.pipes.store.resolve(profile, name)
        remote = await ctx.daemon.remotes.get(rp.remote_profile, rp.remote)
    except E.NotFoundError:
        return None  # the refusal below says permissions are a shared daemon's
    if remote.protocol != "pipedaemon" or not remote.options.get("pipe"):
        return None
    return dict(remote.options)


async def _forward(options: dict[str, Any], method: str, params: dict[str, Any]) -> Any:
    """Ask the shared daemon as this daemon's user (its peer credentials), so the shared daemon's
    roles decide, exactly as for the user's own client."""
    timeout = float(options.get("timeout", 60))
    client = AsyncPipeClient(options["socket"], shared=True, request_timeout_s=timeout)
    try:
        await client.connect()
        return await client.call(method, {"profile": options.get("profile", "default"),
                                          "name": options["pipe"], **params})
    finally:
        await client.close()


METHODS = Methods()


@METHODS.rpc("pipe.upsert_permissions", UpsertPermissions)
async def pipe_upsert_permissions(ctx: Context, p: UpsertPermissions) -> dict[str, Any]:
    """Grant a user (or public) read, write or admin on a pipe of a shared daemon; role None revokes.
    On a user's own daemon, a pipe over a shared pipe asks the shared daemon (as this user)."""
    shared = await _shared_pipe(ctx, p.profile, p.name)
    if shared is not None:
        return dict(await _forward(shared, "pipe.upsert_permissions", {"settings": p.settings}))
    return await _upsert(ctx, ("pipe", p.profile, p.name), p.settings)


@METHODS.rpc("pipe.list_permissions", ListPermissions)
async def pipe_list_permissions(ctx: Context, p: ListPermissions) -> dict[str, Any]:
    """A shared pipe's owner and grants (its owner and admins only); a user's own daemon asks the
    shared daemon for a pipe over a shared pipe."""
    shared = await _shared_pipe(ctx, p.profile, p.name)
    if shared is not None:
        return dict(await _forward(shared, "pipe.list_permissions", {}))
    return await _list(ctx, ("pipe", p.profile, p.name))


@METHODS.rpc("remote.upsert_permissions", UpsertPermissions)
async def remote_upsert_permissions(ctx: Context, p: UpsertPermissions) -> dict[str, Any]:
    """Grant a user (or public) read, write or admin on a remote of a shared daemon; role None revokes."""
    return await _upsert(ctx, ("remote", p.profile, p.name), p.settings)


@METHODS.rpc("remote.list_permissions", ListPermissions)
async def remote_list_permissions(ctx: Context, p: ListPermissions) -> dict[str, Any]:
    """A shared remote's owner and grants (its owner and admins only)."""
    return await _list(ctx, ("remote", p.profile, p.name))
