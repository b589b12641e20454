"""Pipes and profile config in SQLite; resolving a pipe to its remote, folders and filters.

The daemon also mirrors what ``PipeLocal`` needs (non-secret effective settings,
local folders, each profile's filerepo) into ``$PIPEDAEMON_HOME/pipes.json``, so
scripts read local files without starting or reaching the daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from pipedaemon_sdk.protocol import errors as E

from ..remotes import Remotes
from ..state import State
from . import settings as S

if TYPE_CHECKING:
    from ..server import Daemon

log = logging.getLogger("pipedaemon.pipes")
MIRROR = "pipes.json"
# Stored pipe settings and profile configs: JSON objects (as users wrote them, checked by S).
_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode


@dataclass
class Resolved:
    """A pipe made concrete: where its files are on the remote and on this machine."""

    profile: str
    name: str
    own: dict[str, Any]
    settings: dict[str, Any]  # effective (merged with its parents), never credentials
    chain: list[str]
    remote_profile: str  # the remote's own profile (hidden for self-hosted pipes)
    remote: str
    self_hosted_by: str | None
    folder: str  # backend path of the pipe's folder (remote root + options.dir), ends in '/' or ''
    scan_folder: str  # the folder listed for it: the outermost same-remote ancestor's that contains it
    include: str | None
    exclude: str | None
    scan_ttl_s: float | None
    dirpath: Path
    first_pull_done: bool

    @property
    def remote_key(self) -> tuple[str, str]:
        return self.remote_profile, self.remote

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "profile": self.profile, "settings": self.settings, "own": self.own,
                "schema": self.settings.get("schema") or {}, "parent": self.own.get("parent"),
                "chain": self.chain, "remote": None if self.self_hosted_by else self.remote,
                "self_hosted_by": self.self_hosted_by, "dir": S.clean_dir(self.settings.get("options", {})
                                                                          .get("dir")),
                "dirpath": str(self.dirpath)}


class PipeStore:
    def __init__(self, daemon: Daemon, db: State, remotes: Remotes) -> None:
        self.daemon = daemon
        self.db = db
        self.remotes = remotes
        self._mirror_lock = asyncio.Lock()

    # -- pipes -----------------------------------------------------------------------
    async def own_all(self, profile: str) -> dict[str, dict[str, Any]]:
        S.check_name(profile, "profile", "profile")  # never "<profile>/pipes", the hidden remotes' own
        rows = await self.db.fetchall("SELECT name, settings FROM pipes WHERE profile=? ORDER BY name",
                                      (profile,))
        return {n: _decode(s) for n, s in rows}

    async def names(self, profile: str) -> list[str]:
        S.check_name(profile, "profile", "profile")
        rows = await self.db.fetchall("SELECT name FROM pipes WHERE profile=? ORDER BY name", (profile,))
        return [r[0] for r in rows]

    async def upsert(self, profile: str, raw: Any) -> dict[str, Any]:
        own, remote_settings = S.validate(raw)
        name = own["name"]
        pipes = await self.own_all(profile)
        old = pipes.get(name)
        pipes[name] = own
        chain = S.chain_of(name, pipes.get)  # unknown parent: 1001; cycle: 1003
        for child in self._descendants(name, pipes):
            S.chain_of(child, pipes.get)  # an update must not make a cycle further down
        if remote_settings is not None:
            await self.remotes.upsert(S.hidden_profile(profile), remote_settings)
        elif own.get("mirror") is None:  # (a mirror pipe names its remotes in `mirror`)
            _, kind, ref = S.effective(chain)
            if kind == "remote":
                await self.remotes.get(profile, ref)  # unknown remote: 1001
        if old is not None and old.get("protocol") and not own.get("protocol"):
            await self._drop_hidden(profile, name)
        now = time.time()
        await self.db.execute(
            "INSERT INTO pipes(profile, name, settings, created_at, updated_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(profile, name) DO UPDATE SET settings=excluded.settings, "
            "updated_at=excluded.updated_at",
            (profile, name, _encode(own), now, now))
        await self.write_mirror()
        return {"name": name, "created": old is None}

    async def update(self, profile: str, name: str, partial: Any) -> dict[str, Any]:
        """Merge ``partial`` into the pipe's own settings (d6tpipe's update_settings)."""
        if not isinstance(partial, dict):
            raise E.InvalidSettingsError("settings must be an object", {"field": ""})
        own = (await self.own_all(profile)).get(name)
        if own is None:
            raise E.NotFoundError(f"no such pipe: {name}", {"pipe": name})
        if partial.get("name", name) != name:
            raise E.InvalidSettingsError("update_settings cannot rename a pipe", {"field": "name"})
        merged = S.deep_merge(own, partial)
        return await self.upsert(profile, merged)

    async def delete(self, profile: str, name: str) -> None:
        pipes = await self.own_all(profile)
        if name not in pipes:
            raise E.NotFoundError(f"no such pipe: {name}", {"pipe": name})
        children = sorted(n for n, o in pipes.items() if o.get("parent") == name)
        if children:
            raise E.InvalidSettingsError(f"pipe {name} is the parent of {', '.join(children)}; "
                                         "delete or re-parent those first", {"field": "name",
                                                                             "children": children})
        if pipes[name].get("protocol"):
            await self._drop_hidden(profile, name)
        async with self.db.tx() as tx:
            await tx.execute("DELETE FROM pipes WHERE profile=? AND name=?", (profile, name))
            await tx.execute("DELETE FROM sync_state WHERE profile=? AND pipe=?", (profile, name))
        await self.write_mirror()

    async def _drop_hidden(self, profile: str, name: str) -> None:
        try:
            await self.remotes.delete(S.hidden_profile(profile), name)
        except E.NotFoundError:
            pass

    @staticmethod
    def _descendants(name: str, pipes: dict[str, dict[str, Any]]) -> list[str]:
        out, todo = [], [name]
        while todo:
            cur = todo.pop()
            kids = [n for n, o in pipes.items() if o.get("parent") == cur and n not in out and n != name]
            out += kids
            todo += kids
        return out

    async def mark_first_pull(self, profile: str, name: str) -> None:
        await self.db.execute("UPDATE pipes SET first_pull_done=1 WHERE profile=? AND name=?",
                              (profile, name))

    # -- resolving ---------------------------------------------------------------------
    async def resolve(self, profile: str, name: str) -> Resolved:
        S.check_name(profile, "profile", "profile")
        row = await self.db.fetchone("SELECT first_pull_done FROM pipes WHERE profile=? AND name=?",
                                     (profile, name))
        if row is None:
            raise E.NotFoundError(f"no such pipe: {name}", {"pipe": name, "profile": profile})
        pipes = await self.own_all(profile)
        config = await self.config(profile)
        return await self._resolve(profile, name, pipes, config, bool(row[0]))

    async def _resolve(self, profile: str, name: str, pipes: dict[str, dict[str, Any]],
                       config: dict[str, Any], first_pull_done: bool = False) -> Resolved:
        chain = S.chain_of(name, pipes.get)
        settings, kind, ref = S.effective(chain)
        self_by = ref if kind == "self" else None
        folders: list[tuple[tuple[str, str], str]] = []  # (remote key, folder) of the pipe, then ancestors
        for i in range(len(chain)):
            eff, kind, ref = S.effective(chain[i:])
            key = (profile, ref) if kind == "remote" else (S.hidden_profile(profile), ref)
            remote = await self.remotes.get(*key)
            d = S.clean_dir(eff.get("options", {}).get("dir"))
            folders.append((key, remote.root + (d + "/" if d else "")))
        key, folder = folders[0]
        scan_folder = folder
        for akey, afolder in folders[1:]:
            if akey == key and folder.startswith(afolder) and len(afolder) < len(scan_folder):
                scan_folder = afolder
        if self_by is not None:
            hidden = await self.remotes.get(*key)
            settings["credentials"] = hidden.public(self.remotes.vault)["credentials"]
        opts = settings.get("options", {})
        return Resolved(
            profile=profile, name=name, own=chain[0], settings=settings, chain=[c["name"] for c in chain],
            remote_profile=key[0], remote=key[1], self_hosted_by=self_by, folder=folder,
            scan_folder=scan_folder, include=opts.get("include"), exclude=opts.get("exclude"),
            scan_ttl_s=opts.get("scan_ttl_s"), dirpath=Path(config["filerepo"]) / name,
            first_pull_done=first_pull_done)

    # -- profile config ----------------------------------------------------------------
    async def config(self, profile: str) -> dict[str, Any]:
        S.check_name(profile, "profile", "profile")
        row = await self.db.fetchone("SELECT config FROM pipe_profiles WHERE profile=?", (profile,))
        return S.config_with_defaults(profile, _decode(row[0]) if row else {})

    async def update_config(self, profile: str, update: Any) -> dict[str, Any]:
        S.check_name(profile, "profile", "profile")
        changes = S.check_config(update)
        row = await self.db.fetchone("SELECT config FROM pipe_profiles WHERE profile=?", (profile,))
        stored = {**(_decode(row[0]) if row else {}), **changes}
        await self.db.execute(
            "INSERT INTO pipe_profiles(profile, config, updated_at) VALUES (?,?,?) ON CONFLICT(profile) "
            "DO UPDATE SET config=excluded.config, updated_at=excluded.updated_at",
            (profile, _encode(stored), time.time()))
        await self.write_mirror()
        return await self.config(profile)

    async def profiles(self) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT profile FROM pipes UNION SELECT profile FROM pipe_profiles "
            "UNION SELECT profile FROM remotes WHERE profile NOT LIKE '%/%'")
        return sorted({r[0] for r in rows if S.NAME_RE.match(r[0])} | {"default"})

    async def move_repo(self, profile: str, path: str) -> dict[str, Any]:
        """Move the profile's pipe files to ``path`` and make it the filerepo."""
        new = S.check_config({"filerepo": path})["filerepo"]
        busy = [i.id for i in self.daemon.jobs.live.values()
                if i.kind.startswith("pipe.") and i.params.get("profile") == profile]
        if busy:
            raise E.BusyError("pipe jobs of this profile are running; move the files when they end",
                              {"jobs": busy})
        old = (await self.config(profile))["filerepo"]
        moved = False
        if os.path.realpath(old) != os.path.realpath(new):
            if os.path.exists(new) and (not os.path.isdir(new) or os.listdir(new)):
                raise E.AlreadyExistsError(f"{new} exists and is not an empty folder", {"path": new})
            if os.path.isdir(old):
                await asyncio.to_thread(_move_tree, old, new)
                moved = True
        config = await self.update_config(profile, {"filerepo": new})
        return {"old": old, "filerepo": config["filerepo"], "moved": moved}

    # -- the mirror PipeLocal reads --------------------------------------------------------
    async def write_mirror(self) -> None:
        """Rewrite pipes.json: every profile's filerepo and pipes (no secrets)."""
        async with self._mirror_lock:
            out: dict[str, Any] = {"version": 1, "profiles": {}}
            for profile in await self.profiles():
                config = await self.config(profile)
                pipes = await self.own_all(profile)
                entries = {}
                for name in pipes:
                    try:
                        r = await self._resolve(profile, name, pipes, config)
                    except E.DaemonError:
                        continue  # a broken chain (deleted remote): PipeLocal reports it unknown
                    info = r.info()
                    info["settings"] = {k: v for k, v in info["settings"].items() if k != "credentials"}
                    info.pop("own")
                    entries[name] = info
                out["profiles"][profile] = {"config": config, "pipes": entries}
            await asyncio.to_thread(_write_json, self.daemon.home / MIRROR, out)


def _move_tree(old: str, new: str) -> None:
    os.makedirs(os.path.dirname(new) or "/", exist_ok=True)
    if os.path.isdir(new):
        os.rmdir(new)  # empty (checked): shutil.move would nest old inside it
    shutil.move(old, new)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
