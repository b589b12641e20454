"""The client's RPC methods, written once for both clients: as coroutines in ``_async/api.py``,
from which ``tools/unasync.py`` generates the blocking ``_sync/api.py``, so the two clients share
every name and signature.

Each method names an RPC and how to convert its answer; the client (client.py) adds the
connection.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal, overload

import msgspec

from .._common import Convert, ProgressCallback
from ..protocol.wire import DownloadResult, JobInfo, Status, UploadResult
from .meta import AsyncMetaApi

if TYPE_CHECKING:
    from ..datastore import Datastore
    from ..pipe import Pipe
    from .job import AsyncJob
    from .watch import AsyncWatch

HASH_ALGORITHMS = ("md5", "sha256", "s3etag")


def _status(raw: Any) -> Status:
    return msgspec.convert(raw, Status)


def _job_infos(raw: Any) -> list[JobInfo]:
    return msgspec.convert(raw, list[JobInfo])


def _upload_result(raw: Any) -> UploadResult:
    return msgspec.convert(raw, UploadResult)


def _download_result(raw: Any) -> DownloadResult:
    return msgspec.convert(raw, DownloadResult)


def _abspath(path: str | os.PathLike[str]) -> str:
    # The daemon runs as the same user but not in the caller's folder.
    return os.path.abspath(os.fspath(path))


class AsyncApi(AsyncMetaApi):
    """The methods of both clients; the client supplies the plumbing below."""

    async def _start_job(self, method: str, params: dict[str, Any], *, on_progress: ProgressCallback | None,
                         wait: bool, convert: Convert = None, timeout: float | None = None) -> Any:
        raise NotImplementedError

    def _job_handle(self, info: JobInfo) -> AsyncJob:
        raise NotImplementedError

    def _watch(self, params: dict[str, Any]) -> AsyncWatch:
        raise NotImplementedError

    async def _open_read(self, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def _write_stream(self, params: dict[str, Any], data: Any, length: int, convert: Convert) -> Any:
        raise NotImplementedError

    # -- daemon ----------------------------------------------------------------
    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Raw JSON-RPC call: the decoded ``result``."""
        return await self._call(method, params or {})

    async def ping(self) -> Any:
        return await self._call("daemon.ping", {})

    async def status(self) -> Status:
        """Version, pid, uptime_s, socket_path, home and job counts by state."""
        return await self._call("daemon.status", {}, _status)

    # -- jobs ------------------------------------------------------------------
    async def hash_file(self, path: str | os.PathLike[str], algorithm: str = "sha256",
                        part_size: int = 8 * 2**20, on_progress: ProgressCallback | None = None,
                        wait: bool = True) -> Any:
        """md5, sha256 or the S3 ETag of a local file; ``{algorithm: hexdigest}``."""
        params = {"path": _abspath(path), "algorithm": algorithm, "part_size": part_size}
        return await self._start_job("hash.file", params, on_progress=on_progress, wait=wait)

    async def limits(self, max_streams: int | None = None, remote_streams: int | None = None,
                     bwlimit_bps: int | None = None) -> Any:
        """The daemon's stream and bandwidth limits; arguments given change them (until restart)."""
        params = {k: v for k, v in (("max_streams", max_streams), ("remote_streams", remote_streams),
                                    ("bwlimit_bps", bwlimit_bps)) if v is not None}
        return await self._call("daemon.limits", params)

    async def jobs(self, state: str | None = None, limit: int = 100) -> list[JobInfo]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return await self._call("job.list", params, _job_infos)

    async def job(self, job_id: str) -> AsyncJob:
        """A handle on any job (started by any client), to watch, wait for or cancel."""
        return await self._call("job.get", {"job_id": job_id},
                                lambda raw: self._job_handle(msgspec.convert(raw, JobInfo)))

    async def cancel(self, job_id: str) -> JobInfo:
        return await self._call("job.cancel", {"job_id": job_id}, lambda raw: msgspec.convert(raw, JobInfo))

    # -- remotes -----------------------------------------------------------------
    async def upsert_remote(self, settings: dict[str, Any]) -> Any:
        """Create or replace a remote; the daemon keeps its credentials encrypted."""
        return await self._call("remote.upsert", self._p(settings=settings))

    async def get_remote(self, name: str) -> Any:
        """A remote's settings, secrets shown as "***"."""
        return await self._call("remote.get", self._p(name=name))

    async def list_remotes(self, names_only: bool = True) -> Any:
        return await self._call("remote.list", self._p(names_only=names_only))

    async def delete_remote(self, name: str) -> Any:
        return await self._call("remote.delete", self._p(name=name))

    async def check_remote(self, name: str, write_probe: bool = True) -> Any:
        """Connect and try reading (and writing a probe file): ok, endpoint, can_read, can_write, error."""
        return await self._call("remote.check", self._p(name=name, write_probe=write_probe))

    # -- sharing (a shared daemon, docs/sharing.md) ------------------------------------
    async def upsert_permissions(self, pipe: str, settings: dict[str, Any]) -> Any:
        """Grant ``{"username": "bob", "role": "read"}`` (read | write | admin; user "public" is
        everyone who can connect) on a pipe; role None or "" revokes. The pipe's permissions after."""
        return await self._call("pipe.upsert_permissions", self._p(name=pipe, settings=settings))

    async def list_permissions(self, pipe: str) -> Any:
        """A pipe's owner and grants (its owner and admins only)."""
        return await self._call("pipe.list_permissions", self._p(name=pipe))

    def datastore(self, remote: str) -> Datastore:
        """The bucket connector over one remote."""
        from ..datastore import Datastore

        return Datastore(self, remote)

    # -- pipes (see pipe.py) -------------------------------------------------------
    async def upsert_pipe(self, settings: dict[str, Any]) -> Any:
        """Create or replace a pipe: a ``remote``, a ``parent`` to inherit from, or self-hosted storage."""
        return await self._call("pipe.upsert", self._p(settings=settings))

    async def get_pipe(self, name: str) -> Any:
        """A pipe's effective settings, schema and local folder (credentials as "***")."""
        return await self._call("pipe.get", self._p(name=name))

    async def list_pipes(self, names_only: bool = True) -> Any:
        return await self._call("pipe.list", self._p(names_only=names_only))

    async def delete_pipe(self, name: str) -> Any:
        """Forget a pipe and its sync state; its files stay on both sides."""
        return await self._call("pipe.delete", self._p(name=name))

    async def pipe(self, name: str, mode: str = "default", sortby: str = "filename") -> Pipe:
        """d6tpipe's Pipe: pull and push only what changed (NotFoundError for an unknown pipe)."""
        from ..pipe import Pipe

        return await self._call("pipe.get", self._p(name=name),
                                lambda info: Pipe(self, name, info, mode=mode, sortby=sortby))

    async def get_profile_config(self) -> Any:
        """This profile's config: filerepo, scan_ttl_s, parallel_files, bwlimit_bps."""
        return await self._call("pipe.config_get", self._p())

    async def update_profile_config(self, config: dict[str, Any]) -> Any:
        """Change keys of this profile's config (changing filerepo moves no files: see move_repo)."""
        return await self._call("pipe.config_update", self._p(config=config))

    async def move_repo(self, path: str | os.PathLike[str]) -> Any:
        """Move this profile's local pipe files to ``path`` and make it the filerepo."""
        return await self._call("pipe.move_repo", self._p(path=_abspath(os.path.expanduser(os.fspath(path)))))

    async def list_profiles(self) -> Any:
        return await self._call("pipe.profiles", self._p())

    # -- events, schedules and mirrors (watch.py; docs/schedules.md) ----------------------
    def watch(self, pipes: list[str] | None = None, since: int | None = None) -> AsyncWatch:
        """Change events (``pipe.changed``, scheduled ``job.finished``) of this profile's pipes, as an
        iterator (an async iterator with the asyncio client) of Event; ``since``: first the events after
        that id."""
        return self._watch(self._p(pipes=list(pipes) if pipes is not None else None, since=since))

    async def events(self, since: int = 0, pipes: list[str] | None = None, limit: int = 1000) -> Any:
        """Stored events after ``since``: events (oldest first), last_id, oldest_id, complete."""
        return await self._call("daemon.events", self._p(since=since, pipes=pipes, limit=limit))

    async def schedules(self) -> Any:
        """Scheduled pipes: schedule, next_run, last_run, last_status, last_error, failures, job_id."""
        return await self._call("schedule.list", self._p())

    async def set_schedule(self, name: str, schedule: dict[str, Any]) -> Any:
        """Give a pipe a schedule, e.g. ``{"every": "15m", "action": "pull", "jitter": "1m"}``."""
        return await self._call("schedule.set", self._p(name=name, schedule=schedule))

    async def remove_schedule(self, name: str) -> Any:
        return await self._call("schedule.rm", self._p(name=name))

    async def run_schedule_now(self, name: str) -> Any:
        """Run a scheduled pipe now (not while its previous run is still going)."""
        return await self._call("schedule.run_now", self._p(name=name))

    async def mirror(self, src: str | None = None, dst: str | None = None, mode: str = "default",
                     include: str | None = None, exclude: str | None = None, delete: bool = False, *,
                     pipe: str | None = None, on_progress: ProgressCallback | None = None, wait: bool = True,
                     timeout: float | None = None) -> Any:
        """Copy new and changed files from ``src`` to ``dst`` (both ``REMOTE:folder/``) without a
        local copy (or run mirror pipe ``pipe``); ``delete`` removes what the source no longer has."""
        params = self._p(src=src, dst=dst, mode=mode, include=include, exclude=exclude, delete=delete,
                         pipe=pipe)
        return await self._start_job("mirror.run", params, on_progress=on_progress, wait=wait,
                                     timeout=timeout)

    # -- single files ------------------------------------------------------------
    @overload
    async def upload(self, path: str | os.PathLike[str], *, remote: str, key: str,
                     chunk_size_mb: int | None = ..., on_progress: ProgressCallback | None = ...,
                     transfer_timeout_s: float | None = ..., wait: Literal[True] = ...,
                     bwlimit_bps: int = ..., title: str | None = ..., description: str | None = ...,
                     alias: str | None = ..., tags: list[str] | None = ...,
                     metadata: dict[str, Any] | None = ...) -> UploadResult: ...

    @overload
    async def upload(self, path: str | os.PathLike[str], *, remote: str, key: str,
                     chunk_size_mb: int | None = ..., on_progress: ProgressCallback | None = ...,
                     transfer_timeout_s: float | None = ..., wait: Literal[False],
                     bwlimit_bps: int = ..., title: str | None = ..., description: str | None = ...,
                     alias: str | None = ..., tags: list[str] | None = ...,
                     metadata: dict[str, Any] | None = ...) -> AsyncJob: ...

    async def upload(self, path: str | os.PathLike[str], *, remote: str, key: str,
                     chunk_size_mb: int | None = None, on_progress: ProgressCallback | None = None,
                     transfer_timeout_s: float | None = 3600.0, wait: bool = True,
                     bwlimit_bps: int = 0, title: str | None = None, description: str | None = None,
                     alias: str | None = None, tags: list[str] | None = None,
                     metadata: dict[str, Any] | None = None) -> UploadResult | AsyncJob:
        """Upload one local file to ``key`` under the remote's root: an UploadResult (with
        ``wait=False``, the job at once).

        ``title``, ``description``, ``alias``, ``tags`` and ``metadata`` are stored with it
        (see ``set_metadata``)."""
        params = self._p(path=_abspath(path), remote=remote, key=key, chunk_size_mb=chunk_size_mb,
                         bwlimit_bps=bwlimit_bps)
        given = {"title": title, "description": description, "alias": alias, "tags": tags,
                 "metadata": metadata}
        params.update({k: v for k, v in given.items() if v is not None})
        return await self._start_job("transfer.upload", params, on_progress=on_progress, wait=wait,
                                     timeout=transfer_timeout_s, convert=_upload_result)

    @overload
    async def download(self, *, remote: str, key: str, dest: str | os.PathLike[str],
                       chunk_size_mb: int | None = ..., on_progress: ProgressCallback | None = ...,
                       transfer_timeout_s: float | None = ..., wait: Literal[True] = ...,
                       bwlimit_bps: int = ...) -> DownloadResult: ...

    @overload
    async def download(self, *, remote: str, key: str, dest: str | os.PathLike[str],
                       chunk_size_mb: int | None = ..., on_progress: ProgressCallback | None = ...,
                       transfer_timeout_s: float | None = ..., wait: Literal[False],
                       bwlimit_bps: int = ...) -> AsyncJob: ...

    async def download(self, *, remote: str, key: str, dest: str | os.PathLike[str],
                       chunk_size_mb: int | None = None, on_progress: ProgressCallback | None = None,
                       transfer_timeout_s: float | None = 3600.0, wait: bool = True,
                       bwlimit_bps: int = 0) -> DownloadResult | AsyncJob:
        """Download ``key``: a DownloadResult (with ``wait=False``, the job at once); ``dest``
        ending in '/' (or a folder) keeps the key's base name."""
        d = os.fspath(dest)
        target = _abspath(d) + ("/" if d.endswith("/") else "")
        params = self._p(remote=remote, key=key, dest=target, chunk_size_mb=chunk_size_mb,
                         bwlimit_bps=bwlimit_bps)
        return await self._start_job("transfer.download", params, on_progress=on_progress, wait=wait,
                                     timeout=transfer_timeout_s, convert=_download_result)
