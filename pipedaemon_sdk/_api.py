"""The client's methods, written once for both clients.

Each method names an RPC and how to convert its answer. ``PipeClient`` runs the
call and returns the value; ``AsyncPipeClient`` returns an awaitable of it, so the
two clients share every name and signature.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import msgspec

from .wire import JobInfo, ProgressEvent, Status

Convert = Callable[[Any], Any] | None
ProgressCallback = Callable[[ProgressEvent], Any] | None

HASH_ALGORITHMS = ("md5", "sha256", "s3etag")


def _status(raw: Any) -> Status:
    return msgspec.convert(raw, Status)


def _job_infos(raw: Any) -> list[JobInfo]:
    return msgspec.convert(raw, list[JobInfo])


def _abspath(path: str | os.PathLike[str]) -> str:
    # The daemon runs as the same user but not in the caller's folder.
    return os.path.abspath(os.fspath(path))


class Api:
    """Methods common to PipeClient and AsyncPipeClient."""

    profile: str

    def _call(self, method: str, params: dict[str, Any], convert: Convert = None) -> Any:
        raise NotImplementedError

    def _start_job(self, method: str, params: dict[str, Any], *, on_progress: ProgressCallback,
                   wait: bool, convert: Convert = None, timeout: float | None = None) -> Any:
        raise NotImplementedError

    def _job_handle(self, info: JobInfo) -> Any:
        raise NotImplementedError

    # -- daemon ----------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Raw JSON-RPC call: the decoded ``result``."""
        return self._call(method, params or {})

    def ping(self) -> Any:
        return self._call("daemon.ping", {})

    def status(self) -> Status:
        """Version, pid, uptime_s, socket_path, home and job counts by state."""
        return self._call("daemon.status", {}, _status)

    def shutdown(self) -> Any:
        """Ask the daemon to stop: it checkpoints running jobs and exits."""
        return self._call("daemon.shutdown", {})

    # -- jobs ------------------------------------------------------------------
    def hash_file(self, path: str | os.PathLike[str], algorithm: str = "sha256",
                  part_size: int = 8 * 2**20, on_progress: ProgressCallback = None,
                  wait: bool = True) -> Any:
        """md5, sha256 or the S3 ETag of a local file; ``{algorithm: hexdigest}``."""
        params = {"path": _abspath(path), "algorithm": algorithm, "part_size": part_size}
        return self._start_job("hash.file", params, on_progress=on_progress, wait=wait)

    def jobs(self, state: str | None = None, limit: int = 100) -> list[JobInfo]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._call("job.list", params, _job_infos)

    def job(self, job_id: str) -> Any:
        """A handle on any job (started by any client), to watch, wait for or cancel."""
        return self._call("job.get", {"job_id": job_id},
                          lambda raw: self._job_handle(msgspec.convert(raw, JobInfo)))

    def cancel(self, job_id: str) -> JobInfo:
        return self._call("job.cancel", {"job_id": job_id}, lambda raw: msgspec.convert(raw, JobInfo))
