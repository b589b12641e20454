"""d6tpipe.api on pipedaemon: APILocal, ConfigManager, upsert_pipe and friends.

d6tpipe's local mode kept pipe settings in a TinyDB file next to the data; here the
daemon keeps them (credentials sealed), and each d6tpipe profile is the pipedaemon
profile of the same name. The config file (``~/d6tpipe/cfg.json`` by default, the
same shape as d6tpipe's) keeps the keys the daemon has no use for (``server``,
``token``, ``key``); ``filerepo`` is the daemon's.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..client import PipeClient
from ..protocol.errors import DaemonError, MethodNotFoundError, NotFoundError
from . import exceptions as X
from ._out import ask, say
from .utils import loadjson

DEFAULT_FILECFG = "~/d6tpipe/cfg.json"
DEFAULT_SERVER = "https://pipe.databolt.tech"


class Response:
    """The first half of d6tpipe's ``(response, data)``: only ``status_code``."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code

    def __repr__(self) -> str:
        return f"Response({self.status_code})"


def _client(profile: str | None) -> PipeClient:
    return PipeClient(profile=profile or "default").connect()


class ConfigManager:
    """A profile's config: d6tpipe's keys in ``filecfg``, ``filerepo`` in the daemon."""

    def __init__(self, profile: str | None = None, filecfg: str | os.PathLike[str] = DEFAULT_FILECFG,
                 client: PipeClient | None = None) -> None:
        self.profile = "default" if profile is None else profile
        self.filecfg = os.path.expanduser(os.fspath(filecfg))
        self._c = client

    @property
    def client(self) -> PipeClient:
        if self._c is None:
            self._c = _client(self.profile)
        return self._c

    def _loadall(self) -> dict[str, Any]:
        try:
            with open(self.filecfg) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _save(self, config: dict[str, Any]) -> bool:
        allcfg = self._loadall()
        allcfg[self.profile] = config
        Path(self.filecfg).parent.mkdir(parents=True, exist_ok=True)
        with open(self.filecfg, "w") as f:
            json.dump(allcfg, f, indent=4)
        return True

    def _set_filerepo(self, path: str) -> str:
        self.client.update_profile_config({"filerepo": os.path.expanduser(path)})
        return str(self.client.get_profile_config()["filerepo"])

    def init(self, config: dict[str, Any] | None = None, server: str = DEFAULT_SERVER,
             reset: bool = False) -> None:
        """Create the profile's config; ``filerepo`` puts its files in ``<filerepo>/files/<profile>/``
        as d6tpipe does. An existing profile is kept (a warning) unless ``reset``."""
        if not reset and self.profile in self._loadall():
            warnings.warn(f"Config for profile {self.profile} in {self.filecfg} already exists, skipping "
                          "init. Use reset=True to reset config.", stacklevel=2)
            return None
        config = dict(config or {})
        config.setdefault("server", server)
        if config.get("filerepo"):
            root = os.path.expanduser(str(config["filerepo"]))
            config["filereporoot"] = root
            config["filerepo"] = self._set_filerepo(str(Path(root) / "files" / self.profile))
        else:  # keep the daemon's folder for this profile
            config["filerepo"] = str(self.client.get_profile_config()["filerepo"])
            config["filereporoot"] = config["filerepo"]
        config.setdefault("filedb", str(Path(config["filerepo"]) / ".filedb.json"))
        self._save(config)
        return None

    def update(self, config: dict[str, Any]) -> bool:
        """Change some keys; ``filerepo`` here moves no files (``api.move_repo`` does)."""
        current = self.load()
        current.update(config)
        if "filerepo" in config:
            current["filerepo"] = self._set_filerepo(str(config["filerepo"]))
        return self._save(current)

    def load(self) -> dict[str, Any]:
        """The profile's config (made when missing, with a warning, as d6tpipe does)."""
        allcfg = self._loadall()
        if self.profile not in allcfg:
            self.init()
            warnings.warn(f'auto created profile "{self.profile}", see docs how to customize profile',
                          stacklevel=2)
            allcfg = self._loadall()
        config = dict(allcfg[self.profile])
        config["filerepo"] = str(self.client.get_profile_config()["filerepo"])
        Path(config["filerepo"]).mkdir(parents=True, exist_ok=True)
        return config


# -- d6tpipe's REST-style access (api.cnxn.pipes._('name').get() ...) ----------------------------
class _Permissions:
    def __init__(self, api: APILocal, name: str) -> None:
        self._api, self._name = api, name

    def _method(self, verb: str) -> Any:
        method = getattr(self._api.client, verb, None)
        if method is None:
            raise X.PermissionsUnavailableError(
                f"pipe permissions need a daemon that shares pipes (RPC pipe.{verb}); this one has none",
                {"method": f"pipe.{verb}"})
        return method

    def post(self, request_body: dict[str, Any]) -> tuple[Response, Any]:
        try:
            return Response(201), self._method("upsert_permissions")(self._name, request_body)
        except MethodNotFoundError as err:
            raise X.PermissionsUnavailableError(
                "pipe permissions need a daemon that shares pipes (RPC pipe.upsert_permissions); "
                f"this one answered: {err.message}", {"method": "pipe.upsert_permissions"}) from None

    def get(self) -> tuple[Response, Any]:
        try:
            return Response(200), self._method("list_permissions")(self._name)
        except MethodNotFoundError as err:
            raise X.PermissionsUnavailableError(
                f"pipe permissions need a daemon that shares pipes; this one answered: {err.message}",
                {"method": "pipe.list_permissions"}) from None


class _PipeResource:
    """``api.cnxn.pipes`` (the collection) or ``api.cnxn.pipes._(name)`` (one pipe)."""

    def __init__(self, api: APILocal, name: str | None = None) -> None:
        self._api, self._name = api, name

    def _(self, name: str) -> _PipeResource:
        return _PipeResource(self._api, name)

    @property
    def permissions(self) -> _Permissions:
        return _Permissions(self._api, self._need())

    def _need(self) -> str:
        if self._name is None:
            raise X.InvalidValueError("for actions, need table and/or pk set", {"field": "name"})
        return self._name

    def _settings(self, name: str) -> dict[str, Any]:
        try:
            return self._api.client.get_pipe(name)["settings"]
        except NotFoundError as err:
            raise X.PipeNotFoundError(f"{name} Not found", err.data) from None

    def get(self) -> tuple[Response, Any]:
        if self._name is None:
            return Response(200), [p["settings"] for p in self._api.client.list_pipes(names_only=False)
                                   if "settings" in p]
        return Response(200), self._settings(self._name)

    def post(self, request_body: dict[str, Any]) -> tuple[Response, Any]:
        if self._name is not None:
            return self.put(request_body)
        name = request_body.get("name")
        if name in self._api.client.list_pipes():
            raise X.ResourceExistsError(f"entry {name} already exists, needs to be unique", {"pipe": name})
        self._api.client.upsert_pipe(request_body)
        return Response(201), self._settings(str(name))

    def put(self, request_body: dict[str, Any]) -> tuple[Response, Any]:
        name = self._need()
        self._api.client.upsert_pipe({**request_body, "name": name})
        return Response(200), self._settings(name)

    def patch(self, request_body: dict[str, Any]) -> tuple[Response, Any]:
        """Top-level keys replaced, the others kept (stored credentials too, unless given)."""
        name = self._need()
        try:
            own = self._api.client.get_pipe(name)["own"]
        except NotFoundError as err:
            raise X.PipeNotFoundError(f"{name} Not found", err.data) from None
        return self.put({**own, **request_body})

    def delete(self) -> tuple[Response, Any]:
        self._api.client.delete_pipe(self._need())
        return Response(204), True


class _Cnxn:
    def __init__(self, api: APILocal) -> None:
        self.pipes = _PipeResource(api)


# -- the APIs ---------------------------------------------------------------------------------------
class _APIBase:
    def __init__(self, config: dict[str, Any] | None = None, profile: str | None = None,
                 filecfg: str | os.PathLike[str] = DEFAULT_FILECFG, quiet: bool = False) -> None:
        self.profile = "default" if profile is None else profile
        self.quiet = quiet
        self.client = _client(self.profile)
        self.configmgr = ConfigManager(self.profile, filecfg, client=self.client)
        if config is None:
            self.config = self.configmgr.load()
        else:
            warnings.warn("Using manual config override, some api functions might not work", stacklevel=3)
            self.config = dict(config)
            if config.get("filerepo"):
                self.config["filerepo"] = self.configmgr._set_filerepo(str(config["filerepo"]))
            else:
                self.config["filerepo"] = str(self.client.get_profile_config()["filerepo"])
        self.cfg_profile = self.config
        self.cfg_filecfg = filecfg
        self.filerepo = self.config["filerepo"]
        self.dir = self.filerepo
        self.dirpath = Path(self.dir)
        self.repopath, self.repo = self.dirpath, self.dir  # names of older d6tpipe docs
        self.key = self.config.get("key")
        if self.key is None:
            import uuid

            self.key = str(uuid.uuid4())
            if config is None:
                self.configmgr.update({"key": self.key})
        self.encrypt_keys = ["location", "readCredentials", "writeCredentials", "settings", "files",
                             "readParams"]  # d6tpipe's; nothing is encrypted here (the daemon seals)
        self.cnxn = _Cnxn(self)  # type: ignore[arg-type]
        self.mode = "local"

    def list_pipes(self, names_only: bool = True, parent_only: bool = False) -> list[Any]:
        """Pipes of the profile: sorted names, or their settings (``names_only=False``)."""
        rows = self.cnxn.pipes.get()[1]
        if parent_only:
            rows = [r for r in rows if not r.get("parent")]
        return sorted(r["name"] for r in rows) if names_only else rows

    def list_local_pipes(self) -> list[str]:
        """Pipes whose local folder holds files."""
        repo = Path(self.filerepo)
        if not repo.is_dir():
            return []
        return sorted(d.name for d in repo.iterdir() if d.is_dir() and any(d.iterdir()))

    def move_repo(self, path: str | os.PathLike[str]) -> bool:
        """Move all the profile's files to ``path`` (which becomes the filerepo); reload."""
        self.client.move_repo(path)
        say(f"Moved repo to {path}. Reloading api", self.quiet)
        self.client.close()
        self.__init__(profile=self.profile, filecfg=self.cfg_filecfg, quiet=self.quiet)  # type: ignore[misc]
        return True

    def wipe_all(self, confirm: bool = True) -> None:
        """Remove the profile's pipes, their local files and its config. Cannot be undone."""
        question = f"Confirm deleting files in {self.dir}. WARNING: this cannot be undone (y/n)"
        if confirm and ask(question) != "y":
            return None
        pipes = self.list_pipes(names_only=False)
        children = {p["name"] for p in pipes if p.get("parent")}
        for name in sorted(children) + sorted({p["name"] for p in pipes} - children):
            try:
                self.client.delete_pipe(name)
            except DaemonError:  # a pipe with children of its own: retried below
                continue
        for _ in range(len(pipes)):  # deepest pipes go first, one generation per pass
            for name in self.list_pipes():
                try:
                    self.client.delete_pipe(name)
                except DaemonError:
                    continue
        shutil.rmtree(self.filerepo, ignore_errors=True)
        allcfg = self.configmgr._loadall()
        allcfg.pop(self.profile, None)
        if allcfg:
            with open(self.configmgr.filecfg, "w") as f:
                json.dump(allcfg, f, indent=4)
        else:
            Path(self.configmgr.filecfg).unlink(missing_ok=True)
        return None

    def encode(self, dict_: dict[str, Any]) -> dict[str, Any]:
        """The settings as they are: the daemon seals every credential it stores anyway."""
        return dict_

    def decode(self, dict_: dict[str, Any]) -> dict[str, Any]:
        return dict_


class APILocal(_APIBase):
    """d6tpipe's local mode: pipes, settings and credentials kept by the local daemon."""


class APIClient:
    """d6tpipe's cloud repo API client: not available, pipedaemon runs the local mode."""

    def __init__(self, token: str | None = "config", config: dict[str, Any] | None = None,
                 profile: str | None = None, filecfg: str | os.PathLike[str] = DEFAULT_FILECFG) -> None:
        raise X.LocalModeOnlyError(
            "d6tpipe.api.APIClient connects to d6tpipe's cloud repo API, which pipedaemon does not use: "
            "use the local mode, d6tpipe.api.APILocal(profile=...), where the local daemon keeps the pipes "
            "and their credentials (see docs/d6tpipe.md)", {"field": "APIClient", "use": "APILocal"})


def list_profiles(filecfg: str | os.PathLike[str] = DEFAULT_FILECFG) -> list[str]:
    """Print the config file, as d6tpipe does; the profiles (the daemon's and the file's)."""
    path = os.path.expanduser(os.fspath(filecfg))
    names: set[str] = set()
    try:
        with open(path) as f:
            text = f.read()
        say(text)
        names |= set(json.loads(text))
    except FileNotFoundError:
        pass
    with PipeClient() as c:
        names |= set(c.list_profiles())
    return sorted(names)


def upsert_resource(apiroot: _PipeResource, settings: dict[str, Any]) -> tuple[Response, Any]:
    """Create the resource, or update its top-level keys when it exists; ``(response, data)``."""
    try:
        apiroot._(settings["name"]).patch(settings)
    except X.PipeNotFoundError:
        return apiroot.post(settings)
    return apiroot._(settings["name"]).get()


def upsert_pipe(api: _APIBase, settings: dict[str, Any]) -> tuple[Response, Any]:
    """Create or update a pipe; ``(response, data)`` with data the pipe's settings."""
    return upsert_resource(api.cnxn.pipes, settings)


def upsert_pipe_json(api: _APIBase, path_json: str | os.PathLike[str], name: str) -> tuple[Response, Any]:
    """Create or update pipe ``name`` from its entry in a JSON or YAML file (``.creds.json``)."""
    data = loadjson(path_json)
    if not isinstance(data, dict) or name not in data:
        raise X.PipeNotFoundError(f"no entry {name!r} in {path_json}", {"path": str(path_json), "name": name})
    return upsert_pipe(api, {"name": name, **data[name]})


def upsert_permissions(api: _APIBase, pipe_name: str, settings: dict[str, Any]) -> tuple[Response, Any]:
    """Grant ``{"username", "role"}`` (read, write, admin) on a pipe; ``(response, data)``."""
    return api.cnxn.pipes._(pipe_name).permissions.post(settings)


__all__ = ["APIClient", "APILocal", "ConfigManager", "Response", "list_profiles", "upsert_permissions",
           "upsert_pipe", "upsert_pipe_json", "upsert_resource"]
