"""``remote.auth_status``: who the daemon acts as on each remote, and whether that works.

Per remote: the identity (S3 access key id, SFTP/FTP login name, the local user for a
folder; never a secret), whether reading and writing work (a probe file written under
a temporary name and deleted again), and when temporary credentials expire (an S3
session token's ``aws_session_expiration``, or what botocore knows of refreshable
credentials).
"""

from __future__ import annotations

import datetime
import os
import pwd
from typing import Any

from pipedaemon_sdk.protocol import errors as E

from . import settings as S
from .backends.base import Backend
from .remotes import Remote, Remotes
from .rpc import Context, Methods, ProfileParams


class AuthStatus(ProfileParams):
    remote: str | None = None
    write_probe: bool = True


def _login(remote: Remote, creds: dict[str, Any]) -> str | None:
    if remote.protocol == "s3":
        return creds.get("aws_access_key_id")
    if remote.protocol == "local":
        return pwd.getpwuid(os.getuid()).pw_name
    return (
        creds.get("username")
        or remote.options.get("username")
        or ("anonymous" if remote.protocol == "ftp" else None)
    )


def _when(value: Any) -> str | None:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value).astimezone(datetime.timezone.utc).isoformat()
        except ValueError:
            return value
    return None


async def _session(backend: Backend) -> tuple[str | None, str | None]:
    """Who the storage sees the backend as, and until when (its Identity capability)."""
    who = backend.features.identity
    if who is None:
        return None, None
    login, expiry = await who.identity()
    return login, _when(expiry)


async def one(remotes: Remotes, profile: str, name: str, write_probe: bool) -> dict[str, Any]:
    remote = await remotes.get(profile, name)
    sets = S.split_credentials(remotes.vault.open(remote.sealed, name) if remote.sealed else {})
    out: dict[str, Any] = {
        "remote": name,
        "protocol": remote.protocol,
        "identity": _login(remote, sets["read"]),
        "write_identity": None,
        "temporary": False,
        "expires_at": None,
        "expired": None,
    }
    if sets["write"] != sets["read"]:
        out["write_identity"] = _login(remote, sets["write"])
    if remote.protocol == "s3":
        out["temporary"] = bool(sets["read"].get("aws_session_token"))
        out["expires_at"] = _when(sets["read"].get("aws_session_expiration"))
    check = await remotes.check(profile, name, write_probe)
    out.update({k: check[k] for k in ("ok", "endpoint", "can_read", "can_write", "error")})
    if remote.protocol == "sftp" and not out["identity"] and check["ok"]:
        backend, _ = await remotes.backend(profile, name)
        out["identity"] = (await _session(backend))[0]  # as the ssh config resolved it
    if remote.protocol == "s3" and check["can_read"]:
        backend, _ = await remotes.backend(profile, name)
        key_id, expiry = await _session(backend)
        out["identity"] = out["identity"] or key_id
        out["expires_at"] = out["expires_at"] or expiry
        out["temporary"] = out["temporary"] or expiry is not None
    if out["expires_at"]:
        try:
            when = datetime.datetime.fromisoformat(out["expires_at"])
            out["expired"] = when <= datetime.datetime.now(datetime.timezone.utc)
        except ValueError:
            out["expired"] = None
    return out


METHODS = Methods()


@METHODS.rpc("remote.auth_status", AuthStatus)
async def remote_auth_status(ctx: Context, p: AuthStatus) -> Any:
    """Per remote (or the one named): who the daemon acts as, can it read and write, expiry."""
    remotes = ctx.daemon.remotes
    if p.remote is not None:
        return await one(remotes, p.profile, p.remote, p.write_probe)
    out = []
    for name in await remotes.names(p.profile):
        try:
            out.append(await one(remotes, p.profile, name, p.write_probe))
        except E.DaemonError as err:  # one broken remote does not hide the others
            out.append({"remote": name, "ok": False, "error": {"code": err.code, "message": err.message}})
    return out
