"""Dask on a LocalCluster of 2 worker processes, each with its own daemon (home and socket).

One cluster for the module (it is slow to start). The workers' daemons and the
planner's (this process's) know the same S3 (moto) remote and pipes, and share
one filerepo: the stand-in for a folder shared by the machines of a cluster.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import fsspec
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from pipedaemon_sdk import PipeClient
from pipedaemon_sdk import dask as pdask
from pipedaemon_sdk.fsspec import PipedaemonFileSystem, PipeFileSystem
from tests.fsspec.helpers import daemon_dir, remote_spec, start_daemon, stop_daemon, unique
from tests.support.spine import stop_all


def _setup_worker(settings: dict[str, Any], filerepo: str) -> str:
    """On a worker: its own daemon learns the remote and uses the shared filerepo."""
    with PipeClient() as c:
        c.upsert_remote(settings)
        c.update_profile_config({"filerepo": filerepo})
        return str(c.socket_path)


def _add_pipe(settings: dict[str, Any]) -> None:
    with PipeClient() as c:
        c.upsert_pipe(settings)


def _pull_jobs() -> int:
    with PipeClient() as c:
        return len([j for j in c.jobs(limit=1000) if j.kind == "pipe.pull"])


def _running_pulls() -> int:
    with PipeClient() as c:
        return len([j for j in c.jobs(state="running") if j.kind == "pipe.pull"])


def _bwlimit(bps: int) -> None:
    with PipeClient() as c:
        c.limits(bwlimit_bps=bps)


def _shutdown() -> None:
    with PipeClient() as c:
        c.shutdown()


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    with daemon_dir() as base:
        planner = start_daemon(base, "planner")
        spec = remote_spec(request, "s3")
        settings = {"name": "s3", "protocol": "s3", "options": dict(spec["options"]),
                    "credentials": spec["credentials"]}
        filerepo = base / "shared"
        planner.client.upsert_remote(settings)
        planner.client.update_profile_config({"filerepo": str(filerepo)})
        lc = LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0",
                          env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        client = Client(lc)
        try:
            client.register_plugin(pdask.PipedaemonPlugin(socket=f"{base}/w{{name}}/run/pd.sock",
                                                          home=f"{base}/w{{name}}/home"))
            sockets = client.run(_setup_worker, settings, str(filerepo))
            assert len(set(sockets.values())) == 2 and planner.socket not in sockets.values()
            yield {"client": client, "planner": planner, "bucket": spec["root"].rstrip("/"),
                   "filerepo": filerepo, "sockets": sockets}
        finally:
            try:
                client.run(_shutdown)
            finally:
                client.close()
                lc.close()
                for s in sockets.values():
                    stop_all(Path(s))
                stop_daemon(planner)


@pytest.fixture
def env(cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """This process plans (and builds Dask graphs) with the planner's daemon."""
    for k, v in cluster["planner"].env().items():
        monkeypatch.setenv(k, v)
    for proto, cls in (("pipedaemon", PipedaemonFileSystem), ("pipe", PipeFileSystem)):
        fsspec.register_implementation(proto, cls, clobber=True)
    return cluster


def _pipe_everywhere(env: dict[str, Any], name: str, folder: str) -> None:
    settings = {"name": name, "remote": "s3", "options": {"dir": folder}}
    env["planner"].client.upsert_pipe(settings)
    env["client"].run(_add_pipe, settings)


def test_read_csv_and_parquet_on_workers(env: dict[str, Any], s3_client: Any) -> None:
    name = unique("vendor-daily")
    _pipe_everywhere(env, name, name)
    frames = [pd.DataFrame({"day": [d] * 20, "v": [i * d for i in range(20)]}) for d in range(4)]
    for d, df in enumerate(frames):
        s3_client.put_object(Bucket=env["bucket"], Key=f"{name}/daily-{d}.csv",
                             Body=df.to_csv(index=False).encode())
    local = pd.concat(frames, ignore_index=True)
    got = dd.read_csv(f"pipe://{name}/*.csv").compute().sort_values(["day", "v"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, local)
    local.to_parquet(f"pipedaemon://s3/{name}-pq/part.0.parquet")
    back = dd.read_parquet(f"pipedaemon://s3/{name}-pq/").compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(back, local)
    # the workers read through their own daemons (auto-started on their own sockets)
    alive = env["client"].run(lambda: PipeClient(auto_start=False).ping()["pong"])
    assert list(alive.values()) == [True, True]


def test_shards_balance_bytes() -> None:
    rows = [{"filename": f"f{i}", "size": s} for i, s in enumerate([10, 9, 8, 7, 1, 1])]
    groups = pdask.shards(rows, 2)
    sizes = sorted(sum(r["size"] for r in rows if r["filename"] in g) for g in groups)
    assert sizes == [18, 18] and sorted(n for g in groups for n in g) == [r["filename"] for r in rows]
    assert pdask.shards(rows[:1], 2) == [["f0"]]  # never an empty shard
    assert pdask.shards([], 2) == []


def test_fan_out_pull_moves_each_file_once(env: dict[str, Any], s3_client: Any) -> None:
    name = unique("fan")
    _pipe_everywhere(env, name, name)
    bodies = {f"f{i}.bin": os.urandom(1000 * (i + 1)) for i in range(6)}
    for fn, body in bodies.items():
        s3_client.put_object(Bucket=env["bucket"], Key=f"{name}/{fn}", Body=body)
    before = sum(env["client"].run(_pull_jobs).values())
    # written behind the daemons' backs: plan on a fresh listing (the cached one is within its TTL)
    result = pdask.pull(name, client=env["client"], cached=False)
    assert sorted(r["filename"] for r in result) == sorted(bodies)
    assert result.summary["shards"] == 2
    folder = env["filerepo"] / name
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == bodies
    # each shard was one pull job in some worker's daemon
    assert sum(env["client"].run(_pull_jobs).values()) - before == 2
    # a shard run again (as after a worker died) finds its files in place: nothing moves twice
    again = env["client"].submit(pdask._move_shard, "pull", name, sorted(bodies), None, None,
                                 pure=False).result()
    assert again["files"] == []
    assert list(pdask.pull(name, client=env["client"])) == []


def _push_jobs() -> int:
    with PipeClient() as c:
        return len([j for j in c.jobs(limit=1000) if j.kind == "pipe.push"])


def test_fan_out_push_moves_each_file_once(env: dict[str, Any], s3_client: Any) -> None:
    name = unique("fanpush")
    _pipe_everywhere(env, name, name)
    folder = env["filerepo"] / name
    (folder / "sub").mkdir(parents=True)
    bodies = {f"p{i}.bin": os.urandom(700 * (i + 1)) for i in range(5)} | {"sub/q.bin": os.urandom(3000)}
    for fn, body in bodies.items():
        (folder / fn).write_bytes(body)
    before = sum(env["client"].run(_push_jobs).values())
    result = pdask.push(name, client=env["client"], cached=False)
    names = [r["filename"] for r in result]
    assert sorted(names) == sorted(bodies) and len(names) == len(set(names))  # every file, once
    assert result.summary["shards"] == 2 and result.summary["bytes"] == sum(map(len, bodies.values()))
    assert sum(env["client"].run(_push_jobs).values()) - before == 2  # one push job per shard
    listed = s3_client.list_objects_v2(Bucket=env["bucket"], Prefix=f"{name}/")["Contents"]
    on_s3 = {o["Key"][len(name) + 1:]: s3_client.get_object(Bucket=env["bucket"], Key=o["Key"])["Body"].read()
             for o in listed}
    assert on_s3 == bodies
    assert list(pdask.push(name, client=env["client"], cached=False)) == []  # nothing left to push


def test_worker_death_reruns_its_shard(env: dict[str, Any], s3_client: Any) -> None:
    name = unique("die")
    _pipe_everywhere(env, name, name)
    bodies = {f"g{i}.bin": os.urandom(400_000) for i in range(4)}
    for fn, body in bodies.items():
        s3_client.put_object(Bucket=env["bucket"], Key=f"{name}/{fn}", Body=body)
    dc = env["client"]
    dc.run(_bwlimit, 300_000)  # each shard takes a few seconds: time to kill its worker
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(pdask.pull, name, client=dc, cached=False)
            victim = None
            deadline = time.monotonic() + 60
            while victim is None and time.monotonic() < deadline and not pending.done():
                victim = next((w for w, n in dc.run(_running_pulls).items() if n), None)
                time.sleep(0.05)
            assert victim is not None, "no shard was seen running"
            os.kill(dc.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
            result = pending.result(timeout=180)
    finally:
        dc.run(_bwlimit, 0)
    assert sorted(r["filename"] for r in result) == sorted(bodies)  # every file, once
    folder = env["filerepo"] / name
    assert {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")} == bodies


def test_rerun_waits_for_files_another_daemon_is_writing(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"done")
    tmp = tmp_path / "sub" / ".b[1].bin.pdpart-job1"  # the engine's temporary name (a glob-like name)
    tmp.write_bytes(b"half")
    assert pdask._in_flight(tmp_path, ["a.bin"]) == {}
    assert pdask._in_flight(tmp_path, ["a.bin", "sub/b[1].bin"]) == {str(tmp): 4}
    pdask._wait_others(tmp_path, ["sub/b[1].bin"], stall_s=0.4)  # it never grows: given up, left alone
    assert tmp.read_bytes() == b"half"


@pytest.mark.parametrize(("stall_s", "polls"), [(1.0 - 1e-6, 2), (1.0, 2), (1.0 + 1e-6, 3)])
def test_rerun_gives_up_after_stall_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      stall_s: float, polls: int) -> None:
    """STALL_S's edge, on a clock of polls (POLL_S each): a temporary file that grew at the first
    poll restarts the count; then the wait ends at the first poll where stall_s has passed."""
    tmp = tmp_path / ".c.bin.pdpart-job2"
    tmp.write_bytes(b"1")
    seen: list[float] = []

    def poll(s: float) -> None:
        seen.append(s)
        if len(seen) == 1:
            tmp.write_bytes(b"12")  # another daemon is still writing it

    monkeypatch.setattr(pdask.time, "sleep", poll)
    pdask._wait_others(tmp_path, ["c.bin"], stall_s=stall_s)
    assert seen == [pdask.POLL_S] * (1 + polls) and pdask.POLL_S * 2 == 1.0
    assert tmp.read_bytes() == b"12"
