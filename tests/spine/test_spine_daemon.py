"""The daemon's life: start (three ways), status, signals, one per socket, files and modes."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

import pipedaemon
from pipedaemon.state import MIGRATIONS, State
from pipedaemon_sdk import DaemonConnectionError, PipeClient
from tests.support.spine import (
    Started,
    close_started,
    daemon_pids,
    kill9,
    pd_cmd,
    start_activated,
    start_serve,
    wait_gone,
)

SPINE_METHODS = {"daemon.ping", "daemon.status", "daemon.methods", "daemon.shutdown",
                 "job.list", "job.get", "job.watch", "job.cancel", "hash.file"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_status_ping_methods_shutdown(daemon: Started, pd_env: dict[str, Path]) -> None:
    inode = daemon.socket.stat().st_ino
    with PipeClient() as c:
        st = c.status()
        assert st.pid == daemon.pid
        assert st.version == pipedaemon.__version__
        assert st.socket_path == str(pd_env["socket"])
        assert st.home == str(pd_env["home"])
        assert st.uptime_s >= 0
        assert st.jobs == {"queued": 0, "running": 0}
        assert c.ping()["pong"] is True
        methods = {m["name"]: m for m in c.call("daemon.methods")}
        assert SPINE_METHODS <= set(methods)
        assert "job_id" in methods["job.get"]["params"]["$defs"]["JobId"]["properties"]
        answer = c.shutdown()
    assert answer == {"stopping": True, "pid": daemon.pid}
    wait_gone(daemon.pid)
    if daemon.proc is not None:
        assert daemon.proc.wait(30) == 0
    if daemon.mode == "activation":
        # The inherited socket is systemd's: still there, the very same file.
        assert daemon.socket.stat().st_ino == inode
        assert daemon.notify is not None
        assert daemon.extra["first_notify"] == b"READY=1"
        assert daemon.notify.recv(4096) == b"STOPPING=1"
    else:
        assert not daemon.socket.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_and_removes_socket(sig: signal.Signals, pd_env: dict[str, Path]) -> None:
    st = start_serve(pd_env["socket"])
    assert st.proc is not None
    st.proc.send_signal(sig)
    assert st.proc.wait(30) == 0
    assert not pd_env["socket"].exists()
    close_started(st)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_activation_signal_keeps_inherited_socket(sig: signal.Signals, pd_env: dict[str, Path]) -> None:
    st = start_activated(pd_env["socket"], pd_env["base"])
    inode = pd_env["socket"].stat().st_ino
    assert st.extra["first_notify"] == b"READY=1"
    assert st.proc is not None
    st.proc.send_signal(sig)
    assert st.proc.wait(30) == 0
    assert pd_env["socket"].stat().st_ino == inode
    close_started(st)


def test_activation_serves_the_inherited_socket_only(pd_env: dict[str, Path]) -> None:
    """Clients reach the daemon through the fd systemd passed: the path was bound by the test."""
    st = start_activated(pd_env["socket"], pd_env["base"])
    try:
        assert st.listener is not None
        assert st.listener.getsockname() == str(pd_env["socket"])
        with PipeClient(auto_start=False) as c:
            assert c.status().pid == st.pid
        assert daemon_pids(pd_env["socket"]) == [st.pid]
    finally:
        close_started(st)


@pytest.mark.parametrize("first", ["serve", "autostart"])
def test_second_serve_exits_0_quietly(first: str, pd_env: dict[str, Path]) -> None:
    if first == "serve":
        st = start_serve(pd_env["socket"])
    else:
        with PipeClient() as c:
            st = Started("autostart", pd_env["socket"], c.status().pid)
    out = subprocess.run(pd_cmd("serve", "--socket", str(pd_env["socket"])), capture_output=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0
    assert b"Traceback" not in out.stderr
    with PipeClient(auto_start=False) as c:
        assert c.status().pid == st.pid
    assert daemon_pids(pd_env["socket"]) == [st.pid]
    close_started(st)


@pytest.mark.parametrize("restart", ["serve", "autostart"])
def test_stale_socket_is_replaced(restart: str, pd_env: dict[str, Path]) -> None:
    sock = pd_env["socket"]
    first = start_serve(sock)
    kill9(first.pid)
    assert sock.exists()  # kill -9 left it behind
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(str(sock))
    probe.close()
    if restart == "serve":
        second = start_serve(sock)
        pid = second.pid
    else:
        with PipeClient() as c:
            pid = c.status().pid
    assert pid != first.pid
    with PipeClient(auto_start=False) as c:
        assert c.ping()["pong"] is True
    close_started(first)


def test_modes_of_socket_and_state(daemon: Started, pd_env: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "f.bin"
    data.write_bytes(b"x" * 1000)
    with PipeClient() as c:
        c.hash_file(data, algorithm="md5")  # the state db has been written to
        sock, home = pd_env["socket"], pd_env["home"]
        assert mode(sock.parent) == 0o700
        assert mode(sock) == 0o600
        assert mode(sock.with_name(sock.name + ".lock")) == 0o600
        assert mode(home) == 0o700
        files = [p for p in home.iterdir() if p.name.startswith("state.db")]
        assert home / "state.db" in files
        for p in [*files, home / "daemon.log"]:
            assert mode(p) == 0o600, p


@pytest.mark.parametrize("name,after", [("pipedaemon", 0o700), ("mine", 0o755)])
def test_existing_socket_folder(name: str, after: int, pd_env: dict[str, Path]) -> None:
    """Our own (pipedaemon) folder is tightened to 0700; a folder of the user's is left alone."""
    folder = pd_env["base"] / name
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    st = start_serve(folder / "d.sock")
    try:
        assert mode(folder) == after
        assert mode(folder / "d.sock") == 0o600
    finally:
        close_started(st)


def test_idle_timeout_exits_when_idle(pd_env: dict[str, Path]) -> None:
    st = start_serve(pd_env["socket"], "--idle-timeout", "0.5")
    assert st.proc is not None
    assert st.proc.wait(60) == 0
    assert not pd_env["socket"].exists()
    close_started(st)


def test_log_file_gets_the_daemon_log(daemon: Started, pd_env: dict[str, Path]) -> None:
    with PipeClient() as c:
        c.shutdown()
    wait_gone(daemon.pid)
    text = (pd_env["home"] / "daemon.log").read_text()
    assert f"pid {daemon.pid}" in text
    assert text.count("listening on") == 1  # not twice when stderr goes to the same file
    assert "stopped" in text


# -- state schema ---------------------------------------------------------------------
def test_schema_version_is_current(daemon: Started, pd_env: dict[str, Path]) -> None:
    db = sqlite3.connect(pd_env["home"] / "state.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


@pytest.mark.parametrize("version", range(len(MIGRATIONS)))
async def test_migrate_older_db(version: int, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:version], start=1):
        db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
    db.close()
    state = State(path)
    await state.open()
    try:
        assert await state.schema_version() == len(MIGRATIONS)
        assert await state.integrity_ok()
        assert await state.fetchall("SELECT id FROM jobs") == []
    finally:
        await state.close()
    assert mode(path) == 0o600


def test_daemon_reads_a_first_version_db(pd_env: dict[str, Path]) -> None:
    """A db written at schema 1 (with a finished job) is migrated and its job still answers."""
    pd_env["home"].mkdir(mode=0o700, parents=True)
    db = sqlite3.connect(pd_env["home"] / "state.db", isolation_level=None)
    db.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version=1; COMMIT;")
    db.execute("INSERT INTO jobs(id, kind, profile, state, params, result, created_at, updated_at) "
               "VALUES ('oldjob', 'hash.file', 'default', 'succeeded', '{\"path\": \"/x\"}', "
               "'{\"md5\": \"abc\"}', 1.0, 2.0)")
    db.close()
    with PipeClient() as c:
        job = c.job("oldjob")
        assert (job.state, job.info.result, job.info.params) == ("succeeded", {"md5": "abc"}, {"path": "/x"})
    db = sqlite3.connect(pd_env["home"] / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()


def test_a_file_at_the_socket_path_is_never_replaced(pd_env: dict[str, Path]) -> None:
    sock = pd_env["socket"]
    sock.parent.mkdir(mode=0o700, parents=True)
    sock.write_text("precious")
    out = subprocess.run(pd_cmd("serve", "--socket", str(sock)), capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert "not a socket" in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(DaemonConnectionError):  # the SDK's auto-start fails the same way, clearly
        PipeClient(start_timeout_s=60).connect()
    assert sock.read_text() == "precious"


def test_idle_timeout_waits_for_connected_clients(pd_env: dict[str, Path]) -> None:
    st = start_serve(pd_env["socket"], "--idle-timeout", "0.5")
    with PipeClient(auto_start=False) as c:
        time.sleep(3)  # idle time passes, but a client is connected: the daemon stays
        assert c.status().pid == st.pid
    assert st.proc is not None and st.proc.wait(60) == 0  # gone once the client left
    close_started(st)


def test_serve_logs_to_stderr_and_file_once(pd_env: dict[str, Path]) -> None:
    st = start_serve(pd_env["socket"])
    with PipeClient() as c:
        c.shutdown()
    assert st.proc is not None and st.proc.wait(30) == 0
    stderr = st.extra["stderr"].read_text()
    assert f"listening on {pd_env['socket']}" in stderr
    log = (pd_env["home"] / "daemon.log").read_text()
    assert log.count("listening on") == 1 and log.count(" stopped") == 1
    close_started(st)


async def test_state_writes_wait_while_reads_interleave(tmp_path: Path) -> None:
    """Reads and writes of many coroutines on the state, while transactions (the pipes')
    write too: no write fails with "database is locked" (found by the load suite in CI: a
    read left open by one coroutine made another's write fail at once, without waiting)."""
    state = State(tmp_path / "state.db")
    await state.open()
    try:
        await state.executemany("INSERT INTO jobs(id, kind, state, params, created_at, updated_at) "
                                "VALUES (?, 'k', 'running', x'', 0, 0)", [(f"j{i}",) for i in range(50)])

        async def reader(i: int) -> None:
            for _ in range(40):
                assert await state.fetchone("SELECT state FROM jobs WHERE id=?", (f"j{i % 50}",))
                await state.fetchall("SELECT id FROM jobs")

        async def writer(i: int) -> None:
            for n in range(40):
                await state.execute("UPDATE jobs SET updated_at=? WHERE id=?", (n, f"j{i}"))

        async def other(i: int) -> None:
            for n in range(40):
                async with state.tx() as tx:
                    await tx.execute("INSERT OR REPLACE INTO pipe_profiles VALUES (?, x'', ?)", (f"p{i}", n))

        await asyncio.gather(*(f(i) for i in range(8) for f in (reader, writer, other)))
        assert await state.fetchone("SELECT COUNT(*) FROM pipe_profiles") == (8,)
        assert await state.integrity_ok()
    finally:
        await state.close()
