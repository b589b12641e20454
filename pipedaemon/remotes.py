"""Remotes: registered storage with daemon-owned credentials, and their open backends.

Credentials are sealed at rest (secrets.Vault), never returned (``"***"``), and
handed only to the backend that needs them. Backends are opened on first use,
kept for reuse, and closed when their remote changes or the daemon stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from pipedaemon_sdk.protocol import errors as E

from . import settings as S
from .backends.base import Backend, Entry, backend_class
from .retry import retry
from .rpc import Context, Methods, ProfileParams
from .secrets import Vault, mask

if TYPE_CHECKING:
    from pathlib import Path

    from .state import State

log = logging.getLogger("pipedaemon.remotes")
Mode = Literal["read", "write"]
DEFAULT_STREAMS = 8


@dataclass
class Remote:
    profile: str
    name: str
    protocol: str
    location: str | None
    options: dict[str, Any]
    sealed: bytes
    host_key: str | None
    created_at: float
    updated_at: float

    @property
    def root(self) -> str:
        return S.root_of(self.protocol, self.options)

    def public(self, vault: Vault) -> dict[str, Any]:
        out = {"name": self.name, "protocol": self.protocol, "location": self.location,
               "options": self.options, "credentials": {}, "root": self.root,
               "created_at": self.created_at, "updated_at": self.updated_at}
        try:
            out["credentials"] = mask(vault.open(self.sealed, self.name) if self.sealed else {})
        except E.InvalidSettingsError as err:
            # Sealed with another key: still show the settings (to re-register), never the blob.
            out["credentials"] = "***"
            out["credentials_error"] = err.message
        return out


class Remotes:
    """The remotes in ``state``, their credentials sealed with the key under ``home``."""

    def __init__(self, state: State, home: Path, max_streams: int = DEFAULT_STREAMS) -> None:
        self.state = state
        self.vault = Vault(home)
        self.max_streams = max_streams
        self._open: dict[tuple[str, str, str], Backend] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        # Told of every write (entry) and delete (None) the daemon makes: keeps scan caches true.
        self.listeners: list[Callable[[str, str, str, Entry | None], None]] = []

    def changed(self, profile: str, remote: str, path: str, entry: Entry | None) -> None:
        for listener in self.listeners:
            listener(profile, remote, path, entry)

    async def get(self, profile: str, name: str) -> Remote:
        row = await self.state.fetchone(
            "SELECT profile, name, protocol, location, options, credentials, host_key, created_at, "
            "updated_at FROM remotes WHERE profile=? AND name=?", (profile, name))
        if row is None:
            raise E.NotFoundError(f"no such remote: {name}", {"remote": name, "profile": profile})
        p, n, proto, loc, opts, creds, hk, c, u = row
        return Remote(p, n, proto, loc, msgspec.json.decode(opts), creds, hk, c, u)

    async def names(self, profile: str) -> list[str]:
        rows = await self.state.fetchall("SELECT name FROM remotes WHERE profile=? ORDER BY name", (profile,))
        return [r[0] for r in rows]

    async def upsert(self, profile: str, raw: Any) -> dict[str, Any]:
        settings, options = S.validate(raw)
        now = time.time()
        try:
            old = await self.get(profile, settings.name)
        except E.NotFoundError:
            old = None
        if settings.credentials is None:  # keep the stored ones: options change without secrets
            sealed = old.sealed if old else self.vault.seal({})
        else:
            sealed = self.vault.seal(settings.credentials)
        # A pinned key belongs to host:port (as in known_hosts): another server gets its own pin.
        same_server = old is not None and all(old.options.get(k) == options.get(k) for k in ("host", "port"))
        host_key = old.host_key if old and same_server else None
        await self.state.execute(
            "INSERT INTO remotes(profile, name, protocol, location, options, credentials, host_key, "
            "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(profile, name) DO UPDATE SET "
            "protocol=excluded.protocol, location=excluded.location, options=excluded.options, "
            "credentials=excluded.credentials, host_key=excluded.host_key, updated_at=excluded.updated_at",
            (profile, settings.name, settings.protocol, settings.location, msgspec.json.encode(options),
             sealed, host_key, old.created_at if old else now, now))
        await self._evict(profile, settings.name)
        return {"name": settings.name, "created": old is None}

    async def delete(self, profile: str, name: str) -> None:
        await self.get(profile, name)
        await self.state.execute("DELETE FROM remotes WHERE profile=? AND name=?", (profile, name))
        await self._evict(profile, name)

    # -- backends ------------------------------------------------------------------
    async def backend(self, profile: str, name: str, mode: Mode = "read") -> tuple[Backend, Remote]:
        """The open backend for a remote (read or write credentials), connecting on first use."""
        remote = await self.get(profile, name)
        creds = S.split_credentials(self.vault.open(remote.sealed, name))
        if creds["read"] == creds["write"]:
            mode = "read"  # one set of credentials: one backend serves both
        key = (profile, name, mode)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            backend = self._open.get(key)
            if backend is None:
                backend = await self._connect(remote, creds[mode])
                self._open[key] = backend
        return backend, remote

    async def _connect(self, remote: Remote, creds: dict[str, Any]) -> Backend:
        options = dict(remote.options)
        if creds.get("username"):  # d6tpipe puts the login with the password (per read/write set)
            options["username"] = creds["username"]
        if remote.host_key:
            options["_pinned_host_key"] = remote.host_key
        backend = backend_class(remote.protocol)(options, creds, max_streams=self.max_streams)
        try:
            await retry(backend.connect, what=f"connecting to remote {remote.name}")
        except BaseException as err:
            # Any failure, a cancelled request too: what connect() started (an OpenSSH
            # backend's agent and private folder) must not outlive it.
            if isinstance(err, E.DaemonError):
                err.data.setdefault("remote", remote.name)
            with contextlib.suppress(Exception):
                await backend.close()
            raise
        keys = backend.features.host_keys
        seen = keys.seen_host_key if keys is not None else None
        if seen and not remote.host_key and options.get("known_hosts") == "accept-new":
            await self.state.execute("UPDATE remotes SET host_key=? WHERE profile=? AND name=?",
                                     (seen, remote.profile, remote.name))
            log.info("pinned the host key of %s for remote %s", options.get("host"), remote.name)
        return backend

    async def _evict(self, profile: str, name: str) -> None:
        for key in [k for k in self._open if k[:2] == (profile, name)]:
            backend = self._open.pop(key)
            await backend.close()

    def open_backends(self) -> list[Backend]:
        return list(self._open.values())

    async def drop(self, profile: str, name: str) -> None:
        """Forget open backends of a remote (after a connection-level failure)."""
        await self._evict(profile, name)

    async def close(self) -> None:
        for backend in self._open.values():
            try:
                await backend.close()
            except Exception:  # closing at shutdown must not stop the rest
                log.warning("closing a backend failed", exc_info=True)
        self._open.clear()

    async def check(self, profile: str, name: str, write_probe: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "remote": name, "endpoint": None, "can_read": False,
                               "can_write": None, "error": None}
        await self.get(profile, name)  # an unknown remote is NotFound, not a failed check
        try:
            backend, remote = await self.backend(profile, name, "read")
            out["endpoint"] = backend.describe()
            async for _ in backend.list(remote.root, recursive=False):
                break
            out["can_read"] = True
            if write_probe:
                wb, _ = await self.backend(profile, name, "write")
                probe = f"{remote.root}.pipedaemon-check-{uuid.uuid4().hex[:8]}"

                async def body() -> Any:
                    yield b"pipedaemon write check\n"

                await wb.write(probe, body(), 23)
                await wb.delete(probe)
                out["can_write"] = True
            out["ok"] = True
        except E.DaemonError as err:
            log.warning("remote %s check failed: %s [code %d]", name, err.message, err.code)
            out["error"] = {"code": err.code, "message": err.message, "data": err.data}
            if out["can_read"]:
                out["can_write"] = False
        return out



# -- RPC ---------------------------------------------------------------------------
class UpsertRemote(ProfileParams):
    settings: dict[str, Any]


class RemoteName(ProfileParams):
    name: str


class ListRemotes(ProfileParams):
    names_only: bool = True


class CheckRemote(ProfileParams):
    name: str
    write_probe: bool = True


METHODS = Methods()


@METHODS.rpc("remote.upsert", UpsertRemote)
async def remote_upsert(ctx: Context, p: UpsertRemote) -> dict[str, Any]:
    """Create or replace a remote; credentials omitted keep the stored ones."""
    return await ctx.daemon.remotes.upsert(p.profile, p.settings)


@METHODS.rpc("remote.get", RemoteName)
async def remote_get(ctx: Context, p: RemoteName) -> dict[str, Any]:
    """A remote's settings, secrets shown as ***."""
    r = ctx.daemon.remotes
    return (await r.get(p.profile, p.name)).public(r.vault)


@METHODS.rpc("remote.list", ListRemotes)
async def remote_list(ctx: Context, p: ListRemotes) -> list[Any]:
    """Remote names (or settings with names_only=false)."""
    r = ctx.daemon.remotes
    names = await r.names(p.profile)
    if p.names_only:
        return names
    return [(await r.get(p.profile, n)).public(r.vault) for n in names]


@METHODS.rpc("remote.delete", RemoteName)
async def remote_delete(ctx: Context, p: RemoteName) -> dict[str, Any]:
    """Forget a remote and its credentials (nothing on the storage is touched)."""
    await ctx.daemon.remotes.delete(p.profile, p.name)
    return {"name": p.name, "deleted": True}


@METHODS.rpc("remote.check", CheckRemote)
async def remote_check(ctx: Context, p: CheckRemote) -> dict[str, Any]:
    """Connect, list the root, and (write_probe) write and delete a probe file."""
    return await ctx.daemon.remotes.check(p.profile, p.name, p.write_probe)
