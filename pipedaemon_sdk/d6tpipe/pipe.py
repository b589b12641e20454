"""d6tpipe.pipe on pipedaemon: ``Pipe`` and ``PipeLocal`` with d6tpipe's arguments and results.

``Pipe`` drives the SDK's pipe (the daemon plans and moves the files); this layer
gives d6tpipe's shapes: names from ``pull``/``push``, ``(rows, names)`` from
``scan_local(attributes=True)``, ``((), rows)`` from ``scan_remote(attributes=True)``,
d6tpipe's exceptions, its questions and its printed lines.
"""

from __future__ import annotations

import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..pipe import MODES
from ..pipe import PipeLocal as _NativeLocal
from ..protocol import pipefiles
from ..protocol.errors import ConflictError, NotFoundError
from . import exceptions as X
from ._out import ask, say
from .api import DEFAULT_FILECFG, ConfigManager, Response, _APIBase
from .utils import filemd5

DOCS = ("README.md", "LICENSE.md")


def _names(rows: Any) -> list[str]:
    return [r["filename"] for r in rows]


def _mb(rows: Any) -> str:
    return "{:.2f}MB".format(sum(r.get("size") or 0 for r in rows) / 2**20)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise X.InvalidValueError(f"Invalid mode, needs to be {list(MODES)}", {"field": "mode"})
    return mode


class PipeBase:
    """What both pipes do with local files."""

    name: str
    sortby: str
    dirpath: Path
    quiet: bool

    def _set_dir(self, dirpath: str | os.PathLike[str]) -> None:
        self.dirpath = Path(dirpath)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        self.dir = str(self.dirpath) + os.sep

    def _getfilter(self, include: str | None = None, exclude: str | None = None) -> tuple[Any, Any]:
        return include, exclude

    def _synced(self) -> list[str] | None:
        """Names of files synced before (None: this pipe cannot know, all local files count)."""
        return None

    def _sort(self, rows: list[dict[str, Any]], sortby: str | None) -> list[dict[str, Any]]:
        return pipefiles.sort_rows(rows, sortby or self.sortby)

    def _local_rows(self, names: list[str], on_not_exist: str = "warn") -> list[dict[str, Any]]:
        rows = []
        for name in names:
            p = self.dirpath / name
            try:
                st = p.stat()
            except FileNotFoundError:
                if on_not_exist not in ("warn", "skip"):  # d6tpipe: any other value fails on the file
                    raise X.LocalFileMissingError(f"Local file {name} does not exist",
                                                  {"path": str(p)}) from None
                if on_not_exist == "warn":
                    warnings.warn(f"Local file {name} does not exist", stacklevel=3)
                continue
            rows.append({"filename": name, "modified_at": st.st_mtime, "size": st.st_size})
        return rows

    def scan_local(self, include: str | None = None, exclude: str | None = None, attributes: bool = False,
                   sortby: str | None = None, files: list[str] | None = None, fromdb: bool = False,
                   on_not_exist: str = "warn") -> Any:
        """Local files: names, or ``(rows, names)`` with ``attributes`` (rows: filename,
        modified_at as a datetime, size, crc = md5)."""
        if files is None:
            synced = self._synced() if fromdb else None
            files = synced if synced is not None else [f.name for f in pipefiles.scan_dir(self.dirpath)]
            keep = pipefiles.name_filter(*self._getfilter(include, exclude))
            files = [f for f in files if keep(f)]
        else:
            files = [pipefiles.clean_name(f) for f in files]
        rows = self._sort(self._local_rows(files, on_not_exist), sortby)
        if not attributes:
            return _names(rows)
        out = [{"filename": r["filename"], "modified_at": datetime.fromtimestamp(r["modified_at"]),
                "size": r["size"], "crc": filemd5(self.dirpath / r["filename"])} for r in rows]
        return out, files

    def files(self, include: str | None = None, exclude: str | None = None, sortby: str | None = None,
              check_exists: bool = True, fromdb: bool = True) -> list[str]:
        """Names of files synced (``fromdb=False``: every local file of the pipe)."""
        return self.filepaths(include, exclude, sortby, check_exists, aspath=False, fromdb=fromdb)

    def filepaths(self, include: str | None = None, exclude: str | None = None, sortby: str | None = None,
                  check_exists: bool = True, aspathlib: bool = True, aspath: bool = True,
                  fromdb: bool = True) -> list[Any]:
        """Full paths (pathlib, or str with ``aspathlib=False``; names with ``aspath=False``)."""
        synced = self._synced() if fromdb else None
        names = synced if synced is not None else self.scan_local()
        keep = pipefiles.name_filter(include, exclude)
        names = [n for n in names if keep(n)]
        if check_exists:
            rows = self._local_rows(names, on_not_exist="skip")
        else:  # no stat: sort what the names allow
            rows = [{"filename": n, "modified_at": None, "size": None} for n in names]
        names = _names(self._sort(rows, sortby) if check_exists or not sortby else rows)
        if not aspath:
            return names
        return [self.dirpath / n if aspathlib else str(self.dirpath / n) for n in names]

    # -- importing: d6tpipe's signatures; the names placed are returned ------------------------------
    def import_files(self, files: Any, subdir: str | None = None, move: bool = False) -> list[str]:
        return pipefiles.import_paths(self.dirpath, [os.path.abspath(f) for f in files], subdir, move)

    def import_file(self, file: str | os.PathLike[str], subdir: str | None = None,
                    move: bool = False) -> list[str]:
        return self.import_files([file], subdir, move)

    def import_dir(self, dir: str | os.PathLike[str], move: bool = False) -> list[str]:
        return pipefiles.import_paths(self.dirpath, [os.path.abspath(dir)], None, move, tree=True)

    # -- deleting -----------------------------------------------------------------------------------
    def _confirm(self, files: Any, where: str, confirm: bool) -> bool:
        return not confirm or ask(f"Confirm deleting {files or 'all'} files in {where} (y/n)") == "y"

    def _delete_local(self, names: list[str] | None) -> list[str]:
        targets = names if names is not None else [f.name for f in pipefiles.scan_dir(self.dirpath)]
        done = []
        for n in targets:
            try:
                (self.dirpath / pipefiles.clean_name(n)).unlink()
                done.append(n)
            except FileNotFoundError:
                continue
        return done

    def delete_files_local(self, files: list[str] | None = None, confirm: bool = True,
                           delete_all: bool | None = None, ignore_errors: bool = False) -> list[str] | None:
        """Delete local files: ``files``, else all (``delete_all=True``) or the synced ones (False);
        None asks which, as d6tpipe does. The names deleted (None when not confirmed)."""
        if not self._confirm(files, self.dir, confirm):
            return None
        if files:
            missing = [f for f in files if not (self.dirpath / pipefiles.clean_name(f)).is_file()]
            if missing and not ignore_errors:
                raise X.LocalFileMissingError(f"no such local file in pipe {self.name}: {', '.join(missing)}",
                                              {"files": missing})
            names: list[str] | None = [f for f in files if f not in missing]
        else:
            if delete_all is None:
                delete_all = ask("Delete all files or just downloaded files (a/d)") == "a"
            names = None if delete_all else self.files()
        return self._delete_local(names)


class PipeLocal(PipeBase):
    """A pipe's local files without the daemon (settings as the daemon last mirrored them)."""

    def __init__(self, name: str, config: dict[str, Any] | None = None, profile: str | None = None,
                 filecfg: str | os.PathLike[str] = DEFAULT_FILECFG, sortby: str = "filename",
                 quiet: bool = False) -> None:
        self.name, self.sortby, self.quiet = name, sortby, quiet
        self.profile = "default" if profile is None else profile
        self._native = _NativeLocal(name, profile=self.profile, sortby=sortby)
        self.configmgr = ConfigManager(self.profile, filecfg)  # reaches the daemon only when used
        self.config = self.cfg_profile = config or {"filerepo": str(self._native.dirpath.parent)}
        self.filerepo = self.cfg_profile["filerepo"]
        self.settings = self._native.settings
        self.schema = self._native.schema
        self._set_dir(self._native.dirpath)
        say("Operating in local mode, use this to access local files, to run remote operations use `Pipe()`",
            quiet)

    def _getfilter(self, include: str | None = None, exclude: str | None = None) -> tuple[Any, Any]:
        opts = self.settings.get("options", {})
        return (opts.get("include") if include is None else include,
                opts.get("exclude") if exclude is None else exclude)

    def delete_files_remote(self, files: list[str] | None = None, confirm: bool = True) -> None:
        raise X.LocalModeOnlyError("PipeLocal reaches no remote: use d6tpipe.Pipe(api, name) to delete "
                                   "remote files", {"pipe": self.name})

    def delete_files(self, files: list[str] | None = None, confirm: bool = True,
                     all_local: bool | None = None) -> None:
        self.delete_files_remote(files, confirm)


class Pipe(PipeBase):
    """A data pipe: pull and push what changed, run by the daemon.

    ``mode``: ``default`` new and modified files, ``new``, ``mod`` (modified only) or ``all``.
    """

    def __init__(self, api: _APIBase, name: str, mode: str = "default", sortby: str = "filename",
                 credentials: dict[str, Any] | None = None, quiet: bool | None = None) -> None:
        self.api = api
        self.api_islocal = True
        self.name, self.sortby = name, sortby
        self.quiet = api.quiet if quiet is None else quiet
        self.mode = _check_mode(mode)
        self.credentials_override = credentials  # d6tpipe 1.2.7 keeps it unused; the daemon owns them
        self.cnxnapi = api.cnxn
        self.cnxnpipe = api.cnxn.pipes._(name)
        try:
            self._native = api.client.pipe(name, mode=mode, sortby=sortby)
        except NotFoundError as err:
            raise X.PipeNotFoundError(f"{name} Not found: pipe not found, make sure it was created",
                                      err.data) from None
        self.cfg_profile = api.cfg_profile
        self.filerepo = api.filerepo
        self.encrypted_pipe = False
        self._load()
        msg = f"Successfully connected to pipe {self.name}. "
        if self.role == "read":
            msg += " Read only access"
        say(msg, self.quiet)

    def _load(self) -> None:
        info = self._native._info
        self.settings: dict[str, Any] = dict(info.get("settings") or {})
        self.settings["options"] = dict(self.settings.get("options") or {})
        self.schema = self.settings.get("schema") or {}
        self.role = info.get("role", self.settings.get("role"))
        protocol = self.settings.get("protocol")
        remotepath = self.settings["options"].get("remotepath")
        if info.get("remote"):
            remote = self.api.client.get_remote(info["remote"])
            protocol = remote["protocol"]
            remotepath = remote["options"].get("remotepath")
        if remotepath is None and protocol == "s3" and self.settings.get("location"):
            remotepath = f"s3://{self.settings['location']}/"
        base = (remotepath or "").rstrip("/") + "/" if remotepath else ""
        folder = info.get("dir") or ""
        self.protocol = protocol
        self.settings["protocol"] = protocol
        self.settings["options"].setdefault("remotepath", remotepath or "")
        self.remote_prefix = base + (folder + "/" if folder else "")
        self._set_dir(info["dirpath"])

    def _getfilter(self, include: str | None = None, exclude: str | None = None) -> tuple[Any, Any]:
        opts = self.settings.get("options", {})
        return (opts.get("include") if include is None else include,
                opts.get("exclude") if exclude is None else exclude)

    def _synced(self) -> list[str]:
        return self._native.scan_local(fromdb=True)

    def _has_write(self) -> None:
        if self.role == "read":
            raise X.ReadOnlyError("Read-only role, cannot write", {"pipe": self.name, "role": "read"})

    def setmode(self, mode: str) -> None:
        """Sync mode: default (new and modified), new, mod (modified only), all."""
        self.mode = _check_mode(mode)
        self._native.setmode(mode)

    def update_settings(self, settings: dict[str, Any]) -> tuple[Response, Any]:
        """Merge settings into the pipe's own; ``(response, settings)``."""
        self._native.update_settings(settings)
        self._load()
        return Response(200), self.settings

    # -- remote -------------------------------------------------------------------------------------
    def _remote_row(self, r: dict[str, Any]) -> dict[str, Any]:
        ts = r.get("modified_at") or 0.0
        if self.protocol == "s3":
            return {"filename": r["filename"], "modified_at": str(datetime.fromtimestamp(ts, timezone.utc)),
                    "size": r["size"], "crc": (r.get("etag") or "").strip('"')}
        mtime = int(ts) if float(ts).is_integer() and self.protocol == "sftp" else ts
        return {"filename": r["filename"], "modified_at": datetime.fromtimestamp(ts), "size": r["size"],
                "crc": r.get("etag") or f"{mtime}-{r['size']}"}

    def scan_remote(self, attributes: bool = False, cached: bool = True, sortby: str | None = None) -> Any:
        """Remote files: names, or ``((), rows)`` with ``attributes`` (filename, modified_at,
        size, crc), from the daemon's cache within its TTL unless ``cached=False``.

        ``sortby`` (filename, modified_at, size) is in d6tpipe's docs, not in its 1.2.7 code."""
        rows = self._native.scan_remote(attributes=True, cached=cached, sortby=sortby or "filename")
        if attributes:
            return (), [self._remote_row(r) for r in rows]
        return _names(rows)

    # -- pull ---------------------------------------------------------------------------------------
    def pull_preview(self, files: list[str] | None = None, include: str | None = None,
                     exclude: str | None = None, nrecent: int = 0, cached: bool = True) -> list[str]:
        """Names pull would download (``pulling: X.XXMB`` printed); moves nothing."""
        return self.pull(files=files, dryrun=True, include=include, exclude=exclude, nrecent=nrecent,
                         cached=cached)

    def pull(self, files: list[str] | None = None, dryrun: bool = False, include: str | None = None,
             exclude: str | None = None, nrecent: int = 0, merge_mode: str | None = None,
             cached: bool = True) -> list[str]:
        """Download new and changed files (per mode); the names downloaded.

        Local files changed since their last sync whose remote changed too raise PullError
        unless ``merge_mode`` is ``keep`` (they stay) or ``overwrite``.
        """
        if merge_mode not in (None, "keep", "overwrite"):
            raise X.InvalidValueError("invalid merge mode", {"field": "merge_mode"})
        plan = self._native.pull_preview(files, include, exclude, nrecent, cached)
        todo = sorted(plan + plan.conflicts, key=lambda r: r["filename"])
        say(f"pulling: {_mb(todo)}", self.quiet)
        if dryrun:
            return _names(todo)
        if plan.conflicts and merge_mode is None:
            raise X.PullError("Modified files will be overwritten by pull, specify merge mode "
                              + str(_names(plan.conflicts)), {"conflicts": plan.conflicts})
        try:
            result = self._native.pull(files, include=include, exclude=exclude, nrecent=nrecent,
                                       merge_mode=merge_mode, cached=True)
        except ConflictError as err:  # changed between the preview and the pull
            raise X.PullError(err.message, err.data) from None
        names = _names(result)
        self._print_docs(names, getattr(result, "docs", {}))
        return names

    def _print_docs(self, names: list[str], docs: dict[str, str]) -> None:
        for doc in DOCS:
            if doc in names:
                text = (self.dirpath / doc).read_text(errors="replace")
            elif doc in docs:
                text = docs[doc]
            else:
                continue
            banner = f"############### {doc.split('.')[0]} ###############"
            say(f"{banner}\n{text}\n{banner}", self.quiet)

    def is_synced(self, israise: bool = False) -> bool:
        """True when pull has nothing to download; ``israise``: PushError instead of False."""
        todo = self.pull(dryrun=True)
        if todo:
            if israise:
                raise X.PushError(f"Remote has changes not pulled to local repo, run pull first: {todo}",
                                  {"files": todo})
            return False
        return True

    def reset(self, delete: bool = False) -> list[str]:
        """Pull every file again (``delete=True``: delete the local files first, no question:
        the argument is the consent); the names downloaded."""
        if delete:
            self._native.delete_files_local(confirm=False)
        self.setmode("all")
        try:
            return self.pull(cached=False)
        finally:
            self.setmode("default")

    # -- push ---------------------------------------------------------------------------------------
    def push_preview(self, files: list[str] | None = None, include: str | None = None,
                     exclude: str | None = None, nrecent: int = 0, cached: bool = True) -> list[str]:
        return self.push(files=files, dryrun=True, include=include, exclude=exclude, nrecent=nrecent,
                         cached=cached)

    def push(self, files: list[str] | None = None, dryrun: bool = False, fromdb: bool = False,
             include: str | None = None, exclude: str | None = None, nrecent: int = 0,
             cached: bool = True) -> list[str]:
        """Upload new and changed local files (per mode); the names uploaded.

        PushError when the remote has changes not pulled (mode ``all`` and ``files`` skip the
        check); ``fromdb=True`` pushes only files synced before.
        """
        self._has_write()
        if not cached:  # list afresh once; the check and the plan below then share that listing
            self._native.scan_remote(cached=False)
        if files is None and self.mode != "all":
            self.is_synced(israise=True)
        plan = self._native.push_preview(files, include, exclude, nrecent, True)
        todo = sorted(plan + plan.conflicts, key=lambda r: r["filename"])
        if fromdb and files is None:  # as d6tpipe: named files are pushed whatever fromdb says
            synced = set(self._synced())
            todo = [r for r in todo if r["filename"] in synced]
        if dryrun:
            say(f"pushing: {_mb(todo)}", self.quiet)
            return _names(todo)
        if plan.conflicts:
            raise X.PushError("Remote files changed since the last sync would be overwritten by push, "
                              f"pull first: {_names(plan.conflicts)}", {"conflicts": plan.conflicts})
        if not todo:
            return []
        try:
            result = self._native.push(files if files is not None else (_names(todo) if fromdb else None),
                                       include=include, exclude=exclude, nrecent=nrecent, cached=True)
        except ConflictError as err:
            raise X.PushError(err.message, err.data) from None
        return _names(result)

    # -- orphans and deleting -----------------------------------------------------------------------
    def remove_orphans(self, files: list[str] | None = None, direction: str = "local",
                       dryrun: bool | None = None) -> dict[str, list[str]]:
        """Files on one side only: ``local`` (not on the remote), ``remote``, ``both``;
        ``{'local': [...], 'remote': [...]}``. Without ``dryrun`` only lists them (a warning).

        d6tpipe's docs call ``remove_orphans('local')``, which its code takes as ``files``: a
        direction given first is taken as the direction here."""
        if isinstance(files, str):
            files, direction = (None, files) if files in ("both", "local", "remote") else ([files], direction)
        if direction not in ("both", "local", "remote"):
            raise X.InvalidValueError("direction must be both, local or remote", {"field": "direction"})
        if dryrun is None:
            warnings.warn("dryrun active by default, to execute explicitly pass dryrun=False", stacklevel=2)
            dryrun = True
        if direction in ("remote", "both"):
            self._has_write()
        rows = self._native.remove_orphans(files, direction, dryrun=bool(dryrun))
        return {side: [r["filename"] for r in rows if r["side"] == side] for side in ("local", "remote")}

    def delete_files_remote(self, files: list[str] | None = None, confirm: bool = True) -> list[str] | None:
        """Delete remote files (all the pipe's within its filters when none are named)."""
        self._has_write()
        if not self._confirm(files, self.remote_prefix, confirm):
            return None
        if not files:  # "all" is what the remote holds now, as d6tpipe lists it afresh
            self._native.scan_remote(cached=False)
        return _names(self._native.delete_files_remote(files or None, confirm=False))

    def delete_files(self, files: list[str] | None = None, confirm: bool = True,
                     all_local: bool | None = None) -> list[str] | None:
        """Delete files remotely, then locally (``all_local``: every local file, not only synced)."""
        remote = self.delete_files_remote(files, confirm)
        local = self.delete_files_local(files, confirm, delete_all=all_local, ignore_errors=True)
        if remote is None and local is None:
            return None
        return sorted(set(remote or []) | set(local or []))

    def _delete_local(self, names: list[str] | None) -> list[str]:
        return _names(self._native.delete_files_local(names, confirm=False))

    # -- importing through the daemon (it records nothing, but checks the folder) -------------------
    def import_files(self, files: Any, subdir: str | None = None, move: bool = False) -> list[str]:
        return _names(self._native.import_files(list(files), subdir=subdir, move=move))

    def import_dir(self, dir: str | os.PathLike[str], move: bool = False) -> list[str]:
        return _names(self._native.import_dir(dir, move=move))

    # -- credentials stay in the daemon ---------------------------------------------------------------
    def _get_credentials(self, write: bool = False) -> dict[str, Any]:
        raise X.PermissionDeniedError(
            "the daemon keeps the pipe's credentials and never hands them out; use the pipe (or "
            "pipedaemon cp/ls) instead", {"pipe": self.name})

    def _reset_credentials(self) -> None:
        """Nothing to renew by hand: the daemon reconnects with the stored credentials."""
        return None

    def __repr__(self) -> str:
        return f"Pipe({self.name!r}, mode={self.mode!r})"


__all__ = ["ConfigManager", "Pipe", "PipeBase", "PipeLocal"]
