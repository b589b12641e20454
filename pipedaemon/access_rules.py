"""The one table from method to the role it needs on a shared daemon (access.py runs it).

Methods not listed are refused to users (operator only): those that read or write the
daemon machine's own files (transfers, pull, push, hashing, imports), its jobs and its
limits. Storage a user registers must carry its own credentials: nothing may borrow the
service account's (its files, its AWS profile, its SSH keys or agent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipedaemon_sdk.protocol import errors as E

from .access import Rule
from .acl import Target

if TYPE_CHECKING:
    from .access import Guard


def _pipe(p: Any) -> Target:
    return ("pipe", p.profile, p.name)


def _remote(p: Any) -> Target:
    return ("remote", p.profile, p.name)


def _named(kind: str) -> Any:
    def target(p: Any) -> Target | None:
        name = p.settings.get("name") if isinstance(p.settings, dict) else None
        return (kind, p.profile, name) if isinstance(name, str) else None
    return target


def _storage(p: Any) -> Target:
    """object.* and bucket.*: the pipe they address (``pipe=``), else the remote."""
    pipe = getattr(p, "pipe", None)
    return ("pipe", p.profile, pipe) if pipe else ("remote", p.profile, p.remote)


# -- checks of their own -----------------------------------------------------------------------
def storage_policy(settings: Any, new: bool) -> None:
    """Refuse storage that would act with the service account's own files or credentials."""
    if not isinstance(settings, dict):
        return  # the handler says what is wrong with it
    proto = settings.get("protocol")
    options = settings.get("options") if isinstance(settings.get("options"), dict) else {}
    creds = settings.get("credentials")
    split = isinstance(creds, dict) and bool(creds) and set(creds) <= {"read", "write"}
    sets = list(creds.values()) if split else [creds]

    def refuse(why: str, field: str) -> E.PermissionDeniedError:
        return E.PermissionDeniedError(f"on a shared daemon {why}", {"field": field, "role": "operator"})

    if proto in ("local", "pipedaemon"):
        raise refuse(f"{proto} storage is for the operator: it would act as the service account",
                     "protocol")
    for field in ("profile", "tls_cafile"):
        if options.get(field) is not None:
            raise refuse(f"options.{field} would use the service account's files", f"options.{field}")
    kh = options.get("known_hosts")
    if kh is not None and kh != "accept-new":
        raise refuse("options.known_hosts may only be \"accept-new\" (a path is the service account's)",
                     "options.known_hosts")
    for cset in sets:
        key = cset.get("private_key") if isinstance(cset, dict) else None
        if isinstance(key, str) and "-----BEGIN" not in key:
            raise refuse("credentials.private_key must be the key itself, not a path", "credentials")
    if proto in ("s3", "sftp") and (creds == {} or (new and creds is None)):
        raise refuse(f"a {proto} remote needs its own credentials (the service account's are not lent)",
                     "credentials")


async def _create(g: Guard, user: str, p: Any, t: Target | None, settings: Any) -> None:
    """A new name: anyone (they will own it); an existing one: its admins."""
    if t is None:
        return  # no name: the handler refuses the settings
    new = not await g.exists(t)
    if not new:
        if await g.rank(user, t) == 0:
            raise E.AlreadyExistsError(f"the name {t[2]} is taken on this shared daemon", {t[0]: t[2]})
        await g.need(user, t, "admin")
    storage_policy(settings, new)


async def _pipe_refs(g: Guard, user: str, profile: str, settings: Any) -> None:
    """A pipe over a remote or a parent opens their files: their admins only."""
    if not isinstance(settings, dict):
        return
    if isinstance(settings.get("remote"), str):
        await g.need(user, ("remote", profile, settings["remote"]), "admin")
    if isinstance(settings.get("parent"), str):
        await g.need(user, ("pipe", profile, settings["parent"]), "admin")


async def remote_upsert(g: Guard, user: str, p: Any, t: Target | None) -> None:
    await _create(g, user, p, t, p.settings)


async def pipe_upsert(g: Guard, user: str, p: Any, t: Target | None) -> None:
    await _create(g, user, p, t, p.settings if isinstance(p.settings, dict) and "protocol" in p.settings
                  else None)
    await _pipe_refs(g, user, p.profile, p.settings)


async def pipe_update(g: Guard, user: str, p: Any, t: Target | None) -> None:
    assert t is not None
    await g.need(user, t, "admin")
    storage_policy(p.settings, new=False)
    await _pipe_refs(g, user, p.profile, p.settings)
    options = p.settings.get("options") if isinstance(p.settings, dict) else None
    if isinstance(options, dict) and "dir" in options:
        # Moving a pipe over a remote to another folder opens that folder: the remote's admins only.
        rp = await g.daemon.pipes.store.resolve(p.profile, p.name)
        if rp.self_hosted_by is None:
            await g.need(user, ("remote", rp.remote_profile, rp.remote), "admin")


async def remote_check(g: Guard, user: str, p: Any, t: Target | None) -> None:
    assert t is not None
    await g.need(user, t, "write" if p.write_probe else "read")


async def scan_check(g: Guard, user: str, p: Any, t: Target | None) -> None:
    """Readers share the central listing; a fresh one (``cached=false``) lists the storage
    and is the writers' (who may have just changed it), so ten readers cost one listing."""
    assert t is not None
    await g.need(user, t, "read" if p.cached else "write")


# -- after the handler ----------------------------------------------------------------------------
async def own_if_created(g: Guard, user: str, p: Any, t: Target | None, result: Any) -> Any:
    if t is not None and isinstance(result, dict) and result.get("created"):
        await g.acl.set_owner(t, user)
    return result


async def forget(g: Guard, user: str, p: Any, t: Target | None, result: Any) -> Any:
    if t is not None:
        await g.acl.forget(t)
    return result


def visible_only(kind: str) -> Any:
    async def after(g: Guard, user: str, p: Any, t: Target | None, result: Any) -> Any:
        if g.is_operator(user) or not isinstance(result, list):
            return result
        names = [r if isinstance(r, str) else r.get("name") for r in result]
        seen = await g.visible(user, kind, p.profile, [n for n in names if isinstance(n, str)])
        return [r for r, n in zip(result, names, strict=True) if n in seen]
    return after


ANYONE = Rule()
RULES: dict[str, Rule] = {
    "daemon.ping": ANYONE, "daemon.status": ANYONE, "daemon.methods": ANYONE,
    "remote.upsert": Rule(target=_named("remote"), check=remote_upsert, after=own_if_created),
    "remote.get": Rule("read", _remote),
    "remote.list": Rule(after=visible_only("remote")),
    "remote.delete": Rule("admin", _remote, after=forget),
    "remote.check": Rule(target=_remote, check=remote_check),
    "remote.upsert_permissions": Rule("admin", _remote),
    "remote.list_permissions": Rule("admin", _remote),
    "pipe.upsert": Rule(target=_named("pipe"), check=pipe_upsert, after=own_if_created),
    "pipe.update_settings": Rule(target=_pipe, check=pipe_update),
    "pipe.get": Rule("read", _pipe),
    "pipe.list": Rule(after=visible_only("pipe")),
    "pipe.delete": Rule("admin", _pipe, after=forget),
    "pipe.scan_remote": Rule(target=_pipe, check=scan_check),
    "pipe.upsert_permissions": Rule("admin", _pipe),
    "pipe.list_permissions": Rule("admin", _pipe),
    "bucket.list": Rule("read", _storage),
    "bucket.exists": Rule("read", _storage),
    "bucket.create": Rule("write", _storage),
    "bucket.remove": Rule("write", _storage),
    "object.list": Rule("read", _storage),
    "object.stat": Rule("read", _storage),
    "object.read": Rule("read", _storage),
    "object.write": Rule("write", _storage),
    "object.delete": Rule("write", _storage),
    "object.get_metadata": Rule("read", _storage),
    "object.set_metadata": Rule("write", _storage),
}
