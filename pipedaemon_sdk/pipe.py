"""d6tpipe's ``Pipe`` on the daemon, and ``PipeLocal`` for local files without it.

``Pipe`` works with both clients: with ``AsyncPipeClient`` (``pipe = await
client.pipe("name")``) every method that talks to the daemon returns an awaitable,
exactly as the client's own methods do. ``settings``, ``schema``, ``dirpath``,
``name`` and ``mode`` are plain attributes in both.

Deleting asks first: ``confirm=True`` prompts on the caller's terminal and refuses
(PermissionDeniedError, nothing deleted) when there is none; scripts pass
``confirm=False``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .protocol.errors import InvalidParamsError, NotFoundError, PermissionDeniedError
from .protocol.paths import home_dir

if TYPE_CHECKING:
    from ._async.api import AsyncApi
    from ._common import ProgressCallback
    from ._sync.api import Api

MODES = ("default", "new", "mod", "all")
Paths = Iterable[str | os.PathLike[str]]


class SyncResult(list):  # type: ignore[type-arg]
    """The files a pull or push moved (dicts: filename, size, modified_at, action).

    Also: ``conflicts`` (changed on both sides, not moved), ``kept`` (conflicts
    kept with merge_mode="keep"), ``skipped`` (gone before they could move),
    ``docs`` (README.md/LICENSE.md text on a pipe's first pull), ``summary``.
    """

    conflicts: list[dict[str, Any]]
    kept: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    docs: dict[str, str]
    summary: dict[str, Any]
    dryrun: bool

    @classmethod
    def of(cls, raw: dict[str, Any]) -> SyncResult:
        out = cls(raw.get("files", []))
        out.conflicts = raw.get("conflicts", [])
        out.kept = raw.get("kept", [])
        out.skipped = raw.get("skipped", [])
        out.docs = raw.get("docs", {})
        out.summary = raw.get("summary", {})
        out.dryrun = bool(raw.get("dryrun", False))
        return out


def _then(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn(value)``, or for an awaitable (async client) a coroutine doing the same."""
    if hasattr(value, "__await__"):
        async def chain() -> Any:
            out = fn(await value)
            return (await out) if hasattr(out, "__await__") else out

        return chain()
    return fn(value)


def ask(question: str, names: list[str]) -> bool:
    """Ask on the terminal; without one, refuse: nothing is deleted without consent."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        raise PermissionDeniedError(
            "confirm=True needs a terminal to ask on; pass confirm=False to delete without asking",
            {"reason": "no terminal", "files": names[:50]})
    more = f"\n  ... and {len(names) - 20} more" if len(names) > 20 else ""
    shown = "\n".join(f"  {n}" for n in names[:20]) + more
    sys.stderr.write(f"{question}\n{shown}\nProceed? [y/N] ")
    sys.stderr.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def _mode(mode: str) -> str:
    if mode not in MODES:
        raise InvalidParamsError(f"mode must be one of {', '.join(MODES)}, not {mode!r}", {"field": "mode"})
    return mode


def _abs(paths: Paths) -> list[str]:
    return [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]


class _Local:
    """What both pipes know without the daemon: settings, schema, local folder."""

    name: str
    sortby: str
    _info: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        """Effective settings (merged with the parents'); credentials never included."""
        return self._info.get("settings", {})

    @property
    def schema(self) -> dict[str, Any]:
        return self._info.get("schema") or {}

    @property
    def dirpath(self) -> Path:
        """The pipe's local folder (pathlib)."""
        return Path(self._info["dirpath"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Pipe(_Local):
    """A data pipe: pull and push only what changed, through the daemon."""

    def __init__(self, client: Api | AsyncApi, name: str, info: dict[str, Any], mode: str = "default",
                 sortby: str = "filename") -> None:
        self._client = client
        self.name = name
        self._info = info
        self.mode = _mode(mode)
        self.sortby = sortby

    def _call(self, verb: str, convert: Callable[[Any], Any] | None = None, **kw: Any) -> Any:
        return self._client._call(f"pipe.{verb}", self._client._p(name=self.name, **kw), convert)

    def setmode(self, mode: str) -> None:
        """Sync mode: default (new and modified), new, mod (modified only), all."""
        self.mode = _mode(mode)

    def refresh(self) -> Any:
        """Read the settings again from the daemon."""
        return self._call("get", self._store)

    def _store(self, info: dict[str, Any]) -> Pipe:
        self._info = info
        return self

    def update_settings(self, settings: dict[str, Any]) -> Any:
        """Merge ``settings`` into the pipe's own (nested dicts key by key)."""
        return self._call("update_settings", lambda info: self._store(info).settings, settings=settings)

    # -- listing ---------------------------------------------------------------------
    def scan_remote(self, attributes: bool = False, cached: bool = True, sortby: str | None = None,
                    include: str | None = None, exclude: str | None = None) -> Any:
        """Remote files (names; rows with ``attributes``), from the daemon's cache within the TTL."""
        return self._call("scan_remote", attributes=attributes, cached=cached, sortby=sortby or self.sortby,
                          include=include, exclude=exclude)

    def scan_local(self, include: str | None = None, exclude: str | None = None, attributes: bool = False,
                   sortby: str | None = None, files: list[str] | None = None, fromdb: bool = False) -> Any:
        """Local files of the pipe (names; rows with ``attributes``)."""
        return self._call("scan_local", include=include, exclude=exclude, attributes=attributes,
                          sortby=sortby or self.sortby, files=files, fromdb=fromdb)

    def files(self, include: str | None = None, exclude: str | None = None, sortby: str | None = None,
              fromdb: bool = False) -> Any:
        """Names of the pipe's local files (fromdb: only those synced before)."""
        return self.scan_local(include=include, exclude=exclude, sortby=sortby, fromdb=fromdb)

    def filepaths(self, include: str | None = None, exclude: str | None = None, sortby: str | None = None,
                  aspathlib: bool = True, fromdb: bool = False) -> Any:
        """Full paths of the pipe's local files (pathlib.Path, or str)."""
        base = self.dirpath
        return _then(self.files(include, exclude, sortby, fromdb),
                     lambda names: [base / n if aspathlib else str(base / n) for n in names])

    # -- pull and push ---------------------------------------------------------------------
    def _sync_params(self, files: list[str] | None, include: str | None, exclude: str | None, nrecent: int,
                     cached: bool, merge_mode: str | None = None, record: bool = False) -> dict[str, Any]:
        out = {"mode": self.mode, "files": list(files) if files is not None else None, "include": include,
               "exclude": exclude, "nrecent": nrecent, "merge_mode": merge_mode, "cached": cached}
        if record:
            out["record"] = True
        return out

    def _preview(self, direction: str, **kw: Any) -> Any:
        return self._call("preview", SyncResult.of, direction=direction, **kw)

    def _run(self, direction: str, params: dict[str, Any], dryrun: bool, on_progress: ProgressCallback | None,
             wait: bool) -> Any:
        if dryrun:
            return self._preview(direction, **params)
        return self._client._start_job(f"pipe.{direction}", self._client._p(name=self.name, **params),
                                       on_progress=on_progress, wait=wait, convert=SyncResult.of)

    def pull_preview(self, files: list[str] | None = None, include: str | None = None,
                     exclude: str | None = None, nrecent: int = 0, cached: bool = True,
                     merge_mode: str | None = None) -> Any:
        """What pull would move, with sizes (and ``.conflicts``); moves nothing."""
        params = self._sync_params(files, include, exclude, nrecent, cached, merge_mode)
        return self._preview("pull", **params)

    def pull(self, files: list[str] | None = None, dryrun: bool = False, include: str | None = None,
             exclude: str | None = None, nrecent: int = 0, merge_mode: str | None = None, cached: bool = True,
             on_progress: ProgressCallback | None = None, wait: bool = True, record: bool = False) -> Any:
        """Download new and changed files (per mode): a SyncResult, or a Job with wait=False.

        Files changed on both sides are conflicts: not moved (ConflictError, 1006, when
        nothing else moved) unless merge_mode is "keep" (keep local) or "overwrite".
        ``record=True`` links each pulled file to the object version it came from.
        """
        params = self._sync_params(files, include, exclude, nrecent, cached, merge_mode, record)
        return self._run("pull", params, dryrun, on_progress, wait)

    def push_preview(self, files: list[str] | None = None, include: str | None = None,
                     exclude: str | None = None, nrecent: int = 0, cached: bool = True,
                     merge_mode: str | None = None) -> Any:
        params = self._sync_params(files, include, exclude, nrecent, cached, merge_mode)
        return self._preview("push", **params)

    def push(self, files: list[str] | None = None, dryrun: bool = False, include: str | None = None,
             exclude: str | None = None, nrecent: int = 0, merge_mode: str | None = None, cached: bool = True,
             on_progress: ProgressCallback | None = None, wait: bool = True, record: bool = False) -> Any:
        """Upload new and changed local files (per mode); conflicts as for pull
        ("keep" keeps the remote file, "overwrite" replaces it). ``record=True`` links each
        pushed object version to the local file it came from."""
        params = self._sync_params(files, include, exclude, nrecent, cached, merge_mode, record)
        return self._run("push", params, dryrun, on_progress, wait)

    def is_synced(self, israise: bool = False, cached: bool = True) -> Any:
        """True when a default pull and push would move nothing (israise: ConflictError instead of False)."""
        return self._call("is_synced", lambda r: r["synced"], cached=cached, israise=israise)

    def reset(self, delete: bool = False, on_progress: ProgressCallback | None = None,
              wait: bool = True) -> Any:
        """Pull every file again (local edits stay, reported as conflicts).

        delete=True deletes the local files first.
        """
        return self._client._start_job("pipe.reset", self._client._p(name=self.name, delete=delete),
                                       on_progress=on_progress, wait=wait, convert=SyncResult.of)

    # -- metadata ----------------------------------------------------------------------------
    def get_metadata(self, file: str) -> Any:
        """The metadata of a pipe file (that of its object on the pipe's remote)."""
        return self._call("get_metadata", file=file)

    def set_metadata(self, file: str, **fields: Any) -> Any:
        """Change a pipe file's metadata fields (as ``client.set_metadata``); the merged record."""
        return self._call("set_metadata", file=file, fields=dict(fields))

    # -- deleting ----------------------------------------------------------------------------
    def _confirmed(self, verb: str, question: str, confirm: bool, **kw: Any) -> Any:
        """Run ``verb`` with dryrun; after a yes on the terminal, delete exactly what was shown."""
        if not confirm:
            return self._call(verb, dryrun=False, **kw)

        def decide(rows: list[dict[str, Any]]) -> Any:
            names = [r["filename"] for r in rows]
            if not rows or not ask(question.format(n=len(rows), pipe=self.name), names):
                return []
            kw["files"] = names
            return self._call(verb, dryrun=False, **kw)

        return _then(self._call(verb, dryrun=True, **kw), decide)

    def delete_files_local(self, files: list[str] | None = None, confirm: bool = True) -> Any:
        """Delete local files of the pipe (all when ``files`` is None); the rows deleted."""
        return self._confirmed("delete_files", "Delete {n} local file(s) of pipe {pipe}?", confirm,
                               side="local", files=files)

    def delete_files_remote(self, files: list[str] | None = None, confirm: bool = True) -> Any:
        """Delete remote files of the pipe (all within its filters when ``files`` is None)."""
        return self._confirmed("delete_files", "Delete {n} REMOTE file(s) of pipe {pipe}?", confirm,
                               side="remote", files=files)

    def delete_files(self, files: list[str] | None = None, confirm: bool = True) -> Any:
        """Delete files locally and remotely."""
        return self._confirmed("delete_files", "Delete {n} file(s) of pipe {pipe}, local and remote?",
                               confirm, side="both", files=files)

    def remove_orphans(self, files: list[str] | None = None, direction: str = "local",
                       dryrun: bool | None = None, cached: bool = True) -> Any:
        """Delete files present on one side only: ``local`` (not on the remote), ``remote``, ``both``.

        dryrun=True lists them; None asks on the terminal first; False deletes at once.
        """
        if dryrun:
            return self._call("orphans", direction=direction, files=files, dryrun=True, cached=cached)
        return self._confirmed("orphans", "Delete {n} orphan file(s) of pipe {pipe}?", dryrun is None,
                               direction=direction, files=files, cached=cached)

    # -- importing ---------------------------------------------------------------------------
    def import_dir(self, dir: str | os.PathLike[str], move: bool = False, subdir: str | None = None) -> Any:
        """Copy (or move) a folder's files, with their sub-folders, into the pipe's folder."""
        return self._call("import", paths=_abs([dir]), subdir=subdir, move=move, tree=True)

    def import_files(self, files: Paths, subdir: str | None = None, move: bool = False) -> Any:
        """Copy (or move) files into the pipe's folder (under ``subdir``), by base name."""
        return self._call("import", paths=_abs(files), subdir=subdir, move=move, tree=False)

    def import_file(self, file: str | os.PathLike[str], subdir: str | None = None, move: bool = False) -> Any:
        return self.import_files([file], subdir=subdir, move=move)


class PipeLocal(_Local):
    """A pipe's local files and settings, read without starting or reaching the daemon.

    The daemon mirrors each pipe's non-secret settings and local folder into
    ``$PIPEDAEMON_HOME/pipes.json``; a pipe must have been created (through any
    client) before it can be opened here.
    """

    def __init__(self, name: str, profile: str | None = None, sortby: str = "filename") -> None:
        self.name = name
        self.profile = profile or os.environ.get("PIPEDAEMON_PROFILE") or "default"
        self.sortby = sortby
        import json

        path = home_dir() / "pipes.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise NotFoundError(f"cannot read {path}: {exc}", {"path": str(path)}) from exc
        info = data.get("profiles", {}).get(self.profile, {}).get("pipes", {}).get(name)
        if info is None:
            raise NotFoundError(f"no pipe {name!r} in profile {self.profile!r} on this machine "
                                "(create it with PipeClient.upsert_pipe first)",
                                {"pipe": name, "profile": self.profile})
        self._info = info

    def scan_local(self, include: str | None = None, exclude: str | None = None, attributes: bool = False,
                   sortby: str | None = None, files: list[str] | None = None) -> list[Any]:
        from .protocol import pipefiles

        rows = pipefiles.local_rows(self.dirpath, include, exclude, sortby or self.sortby, files)
        return rows if attributes else [r["filename"] for r in rows]

    def files(self, include: str | None = None, exclude: str | None = None,
              sortby: str | None = None) -> list[str]:
        return self.scan_local(include, exclude, sortby=sortby)

    def filepaths(self, include: str | None = None, exclude: str | None = None, sortby: str | None = None,
                  aspathlib: bool = True) -> list[Any]:
        base = self.dirpath
        return [base / n if aspathlib else str(base / n) for n in self.files(include, exclude, sortby)]

    def import_dir(self, dir: str | os.PathLike[str], move: bool = False,
                   subdir: str | None = None) -> list[str]:
        """Copy (or move) a folder's files, with their sub-folders, into the pipe's folder."""
        from .protocol.pipefiles import import_paths

        return import_paths(self.dirpath, _abs([dir]), subdir, move, tree=True)

    def import_files(self, files: Paths, subdir: str | None = None, move: bool = False) -> list[str]:
        from .protocol.pipefiles import import_paths

        return import_paths(self.dirpath, _abs(files), subdir, move)

    def import_file(self, file: str | os.PathLike[str], subdir: str | None = None,
                    move: bool = False) -> list[str]:
        return self.import_files([file], subdir, move)
