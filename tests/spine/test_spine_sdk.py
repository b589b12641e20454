"""The SDK's own promises: a light import, its names and errors, threads and asyncio."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import pipedaemon_sdk as sdk
from pipedaemon_sdk import (
    AsyncPipeClient,
    CancelledError,
    DaemonError,
    NotFoundError,
    PipeClient,
    ProgressEvent,
)
from pipedaemon_sdk import errors as E
from tests.support.spine import random_file, sparse_file

MiB = 2**20
HUGE = 64 * 2**30
HEAVY = ["aiobotocore", "botocore", "asyncssh", "aioftp", "click", "asyncio", "uvloop", "aiosqlite",
         "pipedaemon"]


def test_import_stays_light() -> None:
    code = ("import json, sys; import pipedaemon_sdk; "
            "from pipedaemon_sdk import PipeClient, AsyncPipeClient, ProgressEvent; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_error_classes_follow_the_table() -> None:
    table = {1001: "NotFoundError", 1002: "AlreadyExistsError", 1003: "InvalidSettingsError",
             1004: "AuthFailedError", 1005: "PermissionDeniedError", 1006: "ConflictError",
             1007: "CancelledError", 1008: "StorageError", 1009: "ChecksumMismatchError",
             1010: "UnsafePathError", 1011: "BusyError", -32700: "ParseError",
             -32600: "InvalidRequestError", -32601: "MethodNotFoundError", -32602: "InvalidParamsError",
             -32603: "InternalError"}
    for code, name in table.items():
        err = E.error_from_code(code, "boom", {"path": "x"})
        assert type(err) is getattr(sdk, name, None) or type(err).__name__ == name
        assert isinstance(err, DaemonError)
        assert (err.code, err.message, err.data) == (code, "boom", {"path": "x"})
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err) and again.data == err.data
    odd = E.error_from_code(4242, "unknown code")
    assert type(odd) is DaemonError and odd.code == 4242
    assert issubclass(sdk.DaemonConnectionError, ConnectionError)
    assert issubclass(sdk.DaemonTimeoutError, TimeoutError)


def test_progress_event_properties() -> None:
    ev = ProgressEvent(job_id="j", bytes_done=50, bytes_total=200, rate_bps=3_000_000)
    assert ev.percent == 25.0 and ev.rate_mbps == 3.0
    assert ProgressEvent(job_id="j", bytes_done=0, bytes_total=0).percent == 100.0
    assert ProgressEvent(job_id="j", bytes_done=300, bytes_total=200).percent == 100.0


def test_connect_close_connect() -> None:
    c = PipeClient()
    assert c.connect() is c
    pid = c.status().pid
    c.close()
    c.close()  # twice is fine
    assert c.connect().status().pid == pid
    c.close()


def test_one_client_shared_by_threads(tmp_path: Path) -> None:
    path = random_file(tmp_path / "f", 2 * MiB)
    errors: list[BaseException] = []
    with PipeClient() as c:
        def work(i: int) -> None:
            try:
                for _ in range(100):
                    assert c.ping()["pong"] is True
                algo = ("md5", "sha256")[i % 2]
                want = hashlib.new(algo, path.read_bytes()).hexdigest()
                assert c.hash_file(path, algorithm=algo)[algo] == want
            except BaseException as exc:  # noqa: BLE001 - collected for the test thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert errors == []
    assert not any(t.is_alive() for t in threads)


async def test_async_client_end_to_end(tmp_path: Path) -> None:
    path = random_file(tmp_path / "f", 3 * MiB)
    data = path.read_bytes()
    async with AsyncPipeClient() as c:
        st = await c.status()
        assert (await c.ping())["pong"] is True
        assert "hash.file" in {m["name"] for m in await c.call("daemon.methods")}
        seen: list[ProgressEvent] = []

        def boom(ev: ProgressEvent) -> None:
            seen.append(ev)
            raise ValueError("callback bug")

        result = await c.hash_file(path, algorithm="sha256", on_progress=boom)
        assert result == {"sha256": hashlib.sha256(data).hexdigest()}
        assert seen and seen[-1].bytes_done == len(data)
        job = await c.hash_file(path, algorithm="s3etag", part_size=MiB, wait=False)
        events = [ev async for ev in job.events()]
        assert events and events[-1].bytes_done == len(data)
        assert (await job.wait()).result["s3etag"].endswith("-3")
        assert [j.id for j in await c.jobs(limit=1)] == [job.id]
        with pytest.raises(NotFoundError):
            await c.job("nosuchjob")
        assert (await c.status()).pid == st.pid


async def test_async_cancel_from_another_client(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    async with AsyncPipeClient() as a, AsyncPipeClient() as b:
        job = await a.hash_file(path, algorithm="md5", wait=False)
        async for _ in job.events():
            break
        waiting = asyncio.ensure_future(job.wait())
        assert (await b.cancel(job.id)).state == "cancelled"
        with pytest.raises(CancelledError):
            await asyncio.wait_for(waiting, 60)
        handle = await b.job(job.id)
        assert handle.state == "cancelled"
        with pytest.raises(CancelledError):
            await handle.wait()  # a finished job's outcome, at once


async def test_async_clients_in_one_loop(tmp_path: Path) -> None:
    async with AsyncPipeClient() as first:
        pid = (await first.status()).pid

    async def many(n: int) -> int:
        async with AsyncPipeClient() as c:
            for _ in range(n):
                await c.ping()
            return (await c.status()).pid

    assert set(await asyncio.gather(*(many(50) for _ in range(8)))) == {pid}


def _big_pipes(c: PipeClient, tmp_path: Path, count: int, description: int) -> None:
    (tmp_path / "big").mkdir()
    c.upsert_remote({"name": "big", "protocol": "local", "options": {"remotepath": f"{tmp_path}/big/"}})
    for n in range(count):
        c.upsert_pipe({"name": f"big{n}", "remote": "big", "description": "d" * description})


def test_answers_longer_than_the_request_limit_reach_both_clients(client: PipeClient, tmp_path: Path) -> None:
    """The 16 MiB line limit is the daemon's on requests; its answers can be longer (a pull of a
    million files answers with one line of ~100 MB): both clients read them whole."""
    from pipedaemon_sdk.protocol.wire import MAX_LINE, encode_line

    _big_pipes(client, tmp_path, 3, MAX_LINE // 4)
    pipes = client.list_pipes(names_only=False)
    assert len(encode_line(pipes)) > MAX_LINE + 1  # the line the daemon sent was longer still
    assert sorted(p["name"] for p in pipes if p["name"].startswith("big")) == ["big0", "big1", "big2"]

    async def read_async() -> Any:
        async with AsyncPipeClient() as ac:
            return await ac.list_pipes(names_only=False)

    assert asyncio.run(read_async()) == pipes
    assert client.ping()["pong"] is True  # and the connection goes on
