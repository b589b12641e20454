"""Pipes on a Dask cluster: each worker's own daemon moves a shard of one plan.

``pull(pipe, client=dask_client)`` asks this machine's daemon once what the pull
would move, splits those files into shards of about equal bytes, and runs one
task per shard: the worker's daemon (the daemon of the machine the worker runs
on) pulls exactly those files, through its engine (resumable, verified, each file
under a temporary name until complete). A worker that dies loses its task and
Dask runs it again on another worker: files the dead one finished are already in
place and equal, so they are not moved again, and a half-moved file never had its
final name. The result lists every file once.

The pipe must exist in every worker's daemon (same name, same remote) and its
local folder should be shared by the workers (or each machine keeps its shard).
``PipedaemonPlugin`` registers the fsspec protocols in each worker and can point
each worker at its own daemon (``socket``/``home`` templates).
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin

from .pipe import SyncResult
from .protocol.pipefiles import TMP_MARK

STALL_S = 30.0  # a temporary file not growing for this long is no longer being written (``stall_s``)
POLL_S = 0.5  # how often a re-run looks at the temporary files


def shards(rows: list[dict[str, Any]], n: int) -> list[list[str]]:
    """File names in ``n`` (or fewer) groups of about equal bytes: largest first, each to the lightest."""
    n = max(1, min(n, len(rows)))
    groups: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for row in sorted(rows, key=lambda r: (-(r.get("size") or 0), r["filename"])):
        i = load.index(min(load))
        groups[i].append(row["filename"])
        load[i] += row.get("size") or 0
    return [g for g in groups if g]


def _in_flight(dirpath: Path, names: list[str]) -> dict[str, int]:
    """Sizes of the temporary files another daemon is writing for ``names`` in the pipe's folder."""
    out: dict[str, int] = {}
    for n in names:
        final = dirpath / n
        for tmp in final.parent.glob(f".{glob.escape(final.name)}{TMP_MARK}-*"):
            with contextlib.suppress(OSError):
                out[str(tmp)] = tmp.stat().st_size
    return out


def _wait_others(dirpath: Path, names: list[str], stall_s: float = STALL_S) -> None:
    """A re-run after a worker died: that worker's daemon may still be moving files of the shard
    (the daemon outlives its worker). Wait while its temporary files grow, so no file is moved
    twice; once none has grown for ``stall_s`` they are left to the engine's cleanup (measured in
    polls of POLL_S: the wait ends at the first poll where ``stall_s`` has passed without growth)."""
    last, still = _in_flight(dirpath, names), 0.0
    while last and still < stall_s:
        time.sleep(POLL_S)
        now = _in_flight(dirpath, names)
        grew = any(now.get(k, -1) != v for k, v in last.items()) or bool(set(now) - set(last))
        still = 0.0 if grew else still + POLL_S
        last = now


def _move_shard(direction: str, pipe: str, files: list[str], profile: str | None,
                merge_mode: str | None, stall_s: float = STALL_S) -> dict[str, Any]:
    """Run on a worker: its daemon pulls (or pushes) ``files`` of ``pipe``."""
    from .client import PipeClient

    with PipeClient(profile=profile, request_timeout_s=120.0) as client:
        p = client.pipe(pipe)
        if direction == "pull":
            _wait_others(p.dirpath, files, stall_s)
        # files=[...] would move them even when already in place (a re-run after a worker
        # died): move only those this daemon still sees as needing it, on a fresh listing
        # (this daemon's cached one may predate the planner's)
        wanted = set(files)
        preview = getattr(p, f"{direction}_preview")(merge_mode=merge_mode, cached=False)
        todo = [r["filename"] for r in preview if r["filename"] in wanted]
        blocked = {r["filename"] for r in preview.conflicts}
        conflicts = [r for r in preview.conflicts if r["filename"] in wanted]
        out: dict[str, Any] = {"files": [], "conflicts": conflicts, "skipped": [], "kept": [],
                               "worker_pid": os.getpid()}
        if todo:
            result = getattr(p, direction)(files=todo, merge_mode=merge_mode)
            out.update(files=list(result), conflicts=result.conflicts, skipped=result.skipped,
                       kept=result.kept)
        out["in_place"] = sorted(wanted - set(todo) - blocked)
        return out


def _fan_out(direction: str, pipe: Any, client: Any, shard_count: int | None, merge_mode: str | None,
             cached: bool, stall_s: float = STALL_S, **filters: Any) -> SyncResult:
    local = pipe if not isinstance(pipe, str) else None
    if local is None:
        from .client import PipeClient

        with PipeClient() as planner:
            return _fan_out(direction, planner.pipe(pipe), client, shard_count, merge_mode, cached,
                            stall_s, **filters)
    preview = getattr(local, f"{direction}_preview")(merge_mode=merge_mode, cached=cached, **filters)
    workers = len(client.scheduler_info(n_workers=-1)["workers"]) or 1
    groups = shards(list(preview), shard_count or workers)
    profile = local._client.profile
    futures = [client.submit(_move_shard, direction, local.name, g, profile, merge_mode, stall_s, pure=False,
                             key=f"pipedaemon-{direction}-{local.name}-{i}-{os.urandom(4).hex()}")
               for i, g in enumerate(groups)]
    parts = client.gather(futures)
    planned = {r["filename"]: r for r in preview}
    seen: dict[str, dict[str, Any]] = {}
    raw: dict[str, Any] = {"files": [], "conflicts": [], "skipped": [], "kept": []}
    for part in parts:
        for row in part["files"]:
            seen.setdefault(row["filename"], row)
        for name in part["in_place"]:  # moved by a daemon whose worker died before reporting it
            seen.setdefault(name, {**planned[name], "action": "in place"})
        for k in ("conflicts", "skipped", "kept"):
            raw[k] += part[k]
    raw["files"] = sorted(seen.values(), key=lambda r: r["filename"])
    raw["summary"] = {"shards": len(groups), "workers": workers,
                      "files": len(raw["files"]), "bytes": sum(r.get("size") or 0 for r in raw["files"])}
    return SyncResult.of(raw)


def pull(pipe: Any, client: Any, shard_count: int | None = None, merge_mode: str | None = None,
         cached: bool = True, stall_s: float = STALL_S, **filters: Any) -> SyncResult:
    """Pull ``pipe`` (a Pipe or its name) with the Dask ``client``'s workers; ``filters``:
    files, include, exclude, nrecent, as for ``Pipe.pull``; ``cached`` plans on this daemon's
    cached listing (within its TTL). One shard per worker by default. Each worker checks
    its shard on a fresh listing before moving it. ``stall_s``: how long a re-run of a shard
    waits for a temporary file (of a dead worker's still-running daemon) that stopped growing."""
    return _fan_out("pull", pipe, client, shard_count, merge_mode, cached, stall_s, **filters)


def push(pipe: Any, client: Any, shard_count: int | None = None, merge_mode: str | None = None,
         cached: bool = True, **filters: Any) -> SyncResult:
    """Push ``pipe``'s new and changed local files with the workers' daemons (a shared folder)."""
    return _fan_out("push", pipe, client, shard_count, merge_mode, cached, **filters)


class PipedaemonPlugin(WorkerPlugin):
    """A Dask WorkerPlugin: registers ``pipedaemon://`` and ``pipe://`` in each worker and,
    with templates, gives each worker its own daemon socket and home (``{name}`` is the
    worker's name). Without templates, workers use ``$PIPEDAEMON_SOCKET`` or the default
    socket: the daemon of the machine they run on.

    ``client.register_plugin(PipedaemonPlugin(socket="/tmp/pd-{name}/pd.sock"))``
    """

    name = "pipedaemon"

    def __init__(self, socket: str | None = None, home: str | None = None,
                 profile: str | None = None) -> None:
        self.socket, self.home, self.profile = socket, home, profile

    def setup(self, worker: Any) -> None:
        import fsspec

        name = str(worker.name).replace("/", "_")
        if self.socket:
            os.environ["PIPEDAEMON_SOCKET"] = self.socket.format(name=name)
        if self.home:
            os.environ["PIPEDAEMON_HOME"] = self.home.format(name=name)
        if self.profile:
            os.environ["PIPEDAEMON_PROFILE"] = self.profile
        for proto, cls in (("pipedaemon", "PipedaemonFileSystem"), ("pipe", "PipeFileSystem")):
            fsspec.register_implementation(proto, f"pipedaemon_sdk.fsspec.{cls}", clobber=True)
