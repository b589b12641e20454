"""Auto-start without races, and what a client sees when the daemon is gone, stuck or dying."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import (
    AsyncPipeClient,
    CancelledError,
    DaemonConnectionError,
    DaemonTimeoutError,
    PipeClient,
)
from tests.support.spine import (
    Started,
    daemon_pids,
    kill9,
    restart,
    sparse_file,
    start_serve,
    wait_gone,
    wait_refused,
)

HUGE = 64 * 2**30
N = 10


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Pids the test SIGSTOPped: continued at the end, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_ten_threads_start_one_daemon(pd_env: dict[str, Path]) -> None:
    barrier = threading.Barrier(N)

    def one() -> int:
        barrier.wait()
        with PipeClient() as c:
            return c.status().pid

    threads = [in_thread(one) for _ in range(N)]
    for t, _ in threads:
        t.join(120)
    pids = {out.get("value", out.get("error")) for _, out in threads}
    assert len(pids) == 1 and isinstance(next(iter(pids)), int), pids
    assert daemon_pids(pd_env["socket"]) == list(pids)


CLIENT = """
import os, sys, time
from pipedaemon_sdk import PipeClient
go = sys.argv[1]
open(go + "." + str(os.getpid()), "w").close()  # at the starting line
while not os.path.exists(go):
    time.sleep(0.001)
with PipeClient() as c:
    print(c.status().pid)
"""


def test_ten_processes_start_one_daemon(pd_env: dict[str, Path]) -> None:
    go = pd_env["base"] / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, str(go)], stdout=subprocess.PIPE)
             for _ in range(N)]
    deadline = time.monotonic() + 120
    while len(list(pd_env["base"].glob("go.*"))) < N:  # all ten wait at the line, then: go
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * N
    pids = {int(o) for o in outs}
    assert len(pids) == 1
    assert daemon_pids(pd_env["socket"]) == list(pids)


async def test_ten_async_clients_start_one_daemon(pd_env: dict[str, Path]) -> None:
    async def one() -> int:
        async with AsyncPipeClient() as c:
            return (await c.status()).pid

    pids = set(await asyncio.gather(*(one() for _ in range(N))))
    assert len(pids) == 1
    assert daemon_pids(pd_env["socket"]) == list(pids)


def test_auto_start_off_without_daemon(pd_env: dict[str, Path]) -> None:
    with pytest.raises(DaemonConnectionError) as err:
        PipeClient(auto_start=False).connect()
    assert isinstance(err.value, ConnectionError)
    assert daemon_pids(pd_env["socket"]) == []
    assert not pd_env["socket"].exists()


async def test_async_auto_start_off_without_daemon(pd_env: dict[str, Path]) -> None:
    with pytest.raises(DaemonConnectionError):
        await AsyncPipeClient(auto_start=False).connect()
    assert daemon_pids(pd_env["socket"]) == []


def test_auto_start_off_with_stale_socket(pd_env: dict[str, Path]) -> None:
    st = start_serve(pd_env["socket"])
    kill9(st.pid)
    wait_refused(pd_env["socket"])
    assert pd_env["socket"].exists()  # stale: the file is there, nobody listens
    with pytest.raises(DaemonConnectionError, match="auto_start is off"):
        PipeClient(auto_start=False).connect()
    assert daemon_pids(pd_env["socket"]) == []  # and none was started


def test_daemon_that_cannot_start_is_an_error_not_a_hang(pd_env: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    home = pd_env["base"] / "not-a-folder"
    home.write_text("a file where the home should be")
    monkeypatch.setenv("PIPEDAEMON_HOME", str(home / "home"))
    with pytest.raises(DaemonConnectionError):
        PipeClient(start_timeout_s=60).connect()


def test_daemon_that_crashes_at_start_is_an_error_not_a_hang(pd_env: dict[str, Path]) -> None:
    (pd_env["home"] / "state.db").mkdir(parents=True)  # the daemon cannot open its state
    with pytest.raises(DaemonConnectionError) as err:
        PipeClient(start_timeout_s=60).connect()
    assert "exited with status" in str(err.value)
    assert daemon_pids(pd_env["socket"]) == []


def test_socket_path_argument_wins(pd_env: dict[str, Path]) -> None:
    other = pd_env["base"] / "other" / "d.sock"
    with PipeClient(socket_path=other) as c:
        st = c.status()
    assert st.socket_path == str(other)
    assert daemon_pids(other) == [st.pid]
    assert not pd_env["socket"].exists()
    os.kill(st.pid, signal.SIGTERM)
    wait_gone(st.pid)


# -- the daemon dies or stalls under a client ------------------------------------------
def test_daemon_killed_during_request(daemon: Started, stopped: list[int]) -> None:
    c = PipeClient(request_timeout_s=600).connect()
    # Answered once, so the daemon has accepted the connection: one still in the listener's backlog
    # would outlive the daemon under socket activation (the listener is the test's own).
    c.ping()
    os.kill(daemon.pid, signal.SIGSTOP)  # it will never answer this ping
    stopped.append(daemon.pid)
    t, out = in_thread(c.ping)
    time.sleep(0.2)  # usually the ping is on the wire by now; either way the outcome is the same
    kill9(daemon.pid)
    t.join(60)
    assert not t.is_alive()
    assert isinstance(out.get("error"), DaemonConnectionError)
    c.close()


def test_daemon_killed_during_job_wait(daemon: Started, tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    with PipeClient() as c:
        job = c.hash_file(path, algorithm="md5", wait=False)
        next(iter(job.events()))
        t, out = in_thread(job.wait)
        kill9(daemon.pid)
        t.join(60)
        assert not t.is_alive()
        assert isinstance(out.get("error"), DaemonConnectionError)


async def test_async_daemon_killed_during_request_and_job(daemon: Started, tmp_path: Path,
                                                          stopped: list[int]) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    async with AsyncPipeClient(request_timeout_s=600) as c:
        job = await c.hash_file(path, algorithm="md5", wait=False)
        async for _ in job.events():
            break
        waiting = asyncio.ensure_future(job.wait())
        os.kill(daemon.pid, signal.SIGSTOP)
        stopped.append(daemon.pid)
        pinging = asyncio.ensure_future(c.ping())
        await asyncio.sleep(0.2)
        await asyncio.to_thread(kill9, daemon.pid)
        for fut in (waiting, pinging):
            with pytest.raises(DaemonConnectionError):
                await asyncio.wait_for(fut, 60)


def test_client_reconnects_after_daemon_restart(daemon: Started, pd_env: dict[str, Path],
                                                tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    c = PipeClient().connect()
    job = c.hash_file(path, algorithm="md5", wait=False)
    next(iter(job.events()))
    t, out = in_thread(job.wait)
    kill9(daemon.pid)
    t.join(60)
    assert isinstance(out.get("error"), DaemonConnectionError)
    if daemon.mode == "activation":
        restart(daemon, pd_env)  # systemd starts it again on the next connection
    # The next call reconnects (auto-starting a daemon when needed), which resumed the job.
    assert c.status().pid != daemon.pid
    t, out = in_thread(job.wait)  # follows the job on the new connection
    with PipeClient() as other:
        assert other.job(job.id).state in ("queued", "running")
        other.cancel(job.id)
    t.join(60)
    assert not t.is_alive(), "wait() on the old handle hangs after a reconnect"
    assert isinstance(out.get("error"), CancelledError)
    c.close()


async def test_async_client_reconnects_after_daemon_restart(daemon: Started, pd_env: dict[str, Path],
                                                            tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    async with AsyncPipeClient() as c:
        job = await c.hash_file(path, algorithm="md5", wait=False)
        async for _ in job.events():
            break
        first_wait = asyncio.ensure_future(job.wait())
        await asyncio.to_thread(kill9, daemon.pid)
        with pytest.raises(DaemonConnectionError):
            await asyncio.wait_for(first_wait, 60)
        if daemon.mode == "activation":
            await asyncio.to_thread(restart, daemon, pd_env)
        assert (await c.status()).pid != daemon.pid
        waiting = asyncio.ensure_future(job.wait())
        async with AsyncPipeClient() as other:
            await other.cancel(job.id)
        with pytest.raises(CancelledError):
            await asyncio.wait_for(waiting, 60)


def test_request_timeout(daemon: Started, stopped: list[int]) -> None:
    with PipeClient(request_timeout_s=0.2) as c:
        os.kill(daemon.pid, signal.SIGSTOP)
        stopped.append(daemon.pid)
        with pytest.raises(DaemonTimeoutError) as err:
            c.ping()
        assert isinstance(err.value, TimeoutError)
        os.kill(daemon.pid, signal.SIGCONT)
        c.request_timeout_s = 30
        # The late answer to the timed-out ping is dropped; the next call gets its own.
        assert c.status().pid == daemon.pid


async def test_async_request_timeout(daemon: Started, stopped: list[int]) -> None:
    async with AsyncPipeClient(request_timeout_s=0.2) as c:
        os.kill(daemon.pid, signal.SIGSTOP)
        stopped.append(daemon.pid)
        with pytest.raises(DaemonTimeoutError):
            await c.ping()
        os.kill(daemon.pid, signal.SIGCONT)
        c.request_timeout_s = 30
        assert (await c.status()).pid == daemon.pid


def test_job_wait_timeout(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    with PipeClient() as c:
        job = c.hash_file(path, algorithm="md5", wait=False)
        with pytest.raises(DaemonTimeoutError):
            job.wait(timeout=0.2)
        assert c.cancel(job.id).state == "cancelled"


def test_auto_started_daemon_leaves_no_zombie() -> None:
    """The client that started the daemon collects it when it exits (`pipedaemon stop` waits on its pid)."""
    with PipeClient() as c:
        pid = c.status().pid
        c.shutdown()
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists():  # a zombie still has its /proc entry
        assert time.monotonic() < deadline, Path(f"/proc/{pid}/stat").read_text()
        time.sleep(0.05)


def test_shutdown_then_start_again_at_once(pd_env: dict[str, Path]) -> None:
    """The next client right after shutdown() waits for the old daemon's lock, then starts a new one."""
    pids = []
    for _ in range(3):
        with PipeClient() as c:
            pids.append(c.status().pid)
            c.shutdown()
    assert len(set(pids)) == 3
    with PipeClient() as c:
        assert c.ping()["pong"] is True
        assert daemon_pids(pd_env["socket"]) == [c.status().pid]


def test_shutdown_of_a_daemon_that_died_starts_none(pd_env: dict[str, Path]) -> None:
    """Asking a daemon that is gone to stop does not start one to stop it: that one would have
    resumed the running jobs and checkpointed them again at once (found by the kill -9 bench)."""
    c = PipeClient().connect()
    kill9(c.status().pid)
    wait_refused(pd_env["socket"])
    assert c.shutdown() == {"stopping": False, "running": False}
    assert daemon_pids(pd_env["socket"]) == []
    assert "listening" not in (pd_env["home"] / "daemon.log").read_text().split("listening", 1)[1]
    c.close()


async def test_async_shutdown_without_a_daemon_starts_none(pd_env: dict[str, Path]) -> None:
    c = AsyncPipeClient()
    assert await c.shutdown() == {"stopping": False, "running": False}
    assert daemon_pids(pd_env["socket"]) == []
    assert not (pd_env["home"] / "daemon.log").exists()
