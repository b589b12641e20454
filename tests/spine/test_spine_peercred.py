"""Only the daemon's own user may connect: folder and socket modes, then SO_PEERCRED.

Runs a client as another uid with ``setpriv``; that needs root (CI runs as root).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import AsyncPipeClient, DaemonConnectionError, PipeClient, streams
from tests.conftest import unavailable
from tests.support.spine import Started, close_started, pd_cmd, ping_ok, start_serve

USER = "pdtest"
CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print(json.dumps({"connect": "EACCES"}))
    sys.exit(0)
s.settimeout(30)
try:
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.status"}\n')
except (BrokenPipeError, ConnectionResetError):
    pass  # the daemon may have answered and closed before the request left: its answer waits
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    data += chunk
print(json.dumps({"connect": "ok", "received": data.decode()}))
"""


def other_user() -> tuple[int, int]:
    """uid and gid of a user that is not us; created when we are root."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        unavailable("the peer-credential tests need root and setpriv to act as another user")
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        # Another test worker may add the user at the same moment: whoever wins, it exists after.
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       capture_output=True)
        pw = pwd.getpwnam(USER)
    assert pw.pw_uid != os.getuid()
    return pw.pw_uid, pw.pw_gid


@pytest.fixture
def served(pd_env: dict[str, Path]) -> Iterator[Started]:
    ids = other_user()
    pd_env["base"].chmod(0o755)  # only the daemon's own folder and socket guard it now
    st = start_serve(pd_env["socket"])
    st.extra["ids"] = ids
    yield st
    assert ping_ok(pd_env["socket"]) == st.pid  # the intruder changed nothing
    close_started(st)


def connect_as(st: Started) -> dict[str, Any]:
    uid, gid = st.extra["ids"]
    out = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                          "/usr/bin/python3", "-c", CLIENT, str(st.socket)],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_socket_folder_keeps_other_users_out(served: Started) -> None:
    assert served.socket.parent.stat().st_mode & 0o777 == 0o700
    assert connect_as(served) == {"connect": "EACCES"}


def test_socket_mode_keeps_other_users_out(served: Started) -> None:
    served.socket.parent.chmod(0o755)
    try:
        assert connect_as(served) == {"connect": "EACCES"}
    finally:
        served.socket.parent.chmod(0o700)


def test_peer_credentials_refuse_another_uid(served: Started, pd_env: dict[str, Path]) -> None:
    served.socket.parent.chmod(0o755)
    served.socket.chmod(0o666)
    try:
        got = connect_as(served)
    finally:
        served.socket.chmod(0o600)
        served.socket.parent.chmod(0o700)
    assert got["connect"] == "ok"
    lines = got["received"].splitlines()
    assert len(lines) == 1, got  # one error, then closed: the status request was never answered
    msg = json.loads(lines[0])
    assert msg["error"]["code"] == 1005
    assert msg["error"]["data"]["uid"] == served.extra["ids"][0]
    assert "result" not in msg
    log = (pd_env["home"] / "daemon.log").read_text()
    assert f"refused a connection from uid {served.extra['ids'][0]}" in log


def test_a_socket_folder_of_another_user_is_refused(pd_env: dict[str, Path]) -> None:
    """Another user owning the folder could swap our socket for theirs: neither side uses it."""
    uid, gid = other_user()
    folder = pd_env["socket"].parent
    folder.mkdir(mode=0o777, parents=True)
    os.chown(folder, uid, gid)
    out = subprocess.run(pd_cmd("serve", "--socket", str(pd_env["socket"])), capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert f"belongs to uid {uid}" in out.stderr
    with pytest.raises(DaemonConnectionError) as err:
        PipeClient().connect()
    assert f"belongs to uid {uid}" in str(err.value)
    assert not pd_env["socket"].exists()


FAKE_DAEMON = r"""
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:  # a client that refused us has closed already: keep serving the next one
        c.sendall(b'{"jsonrpc":"2.0","id":1,"result":{"pong":true}}\n')
    except OSError:
        pass
    c.close()
"""


def test_client_refuses_a_daemon_of_another_user(pd_env: dict[str, Path]) -> None:
    """The SDK checks SO_PEERCRED too: it never talks to a socket another user serves."""
    uid, gid = other_user()
    pd_env["base"].chmod(0o755)
    folder = pd_env["base"] / "shared"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    sock = folder / "evil.sock"
    fake = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                             "/usr/bin/python3", "-c", FAKE_DAEMON, str(sock)],
                            stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        for auto_start in (False, True):
            with pytest.raises(DaemonConnectionError) as err:
                PipeClient(socket_path=sock, auto_start=auto_start).connect()
            assert f"uid {uid}" in str(err.value)
        with pytest.raises(DaemonConnectionError):
            asyncio.run(AsyncPipeClient(socket_path=sock, auto_start=False).connect())
        # The stream connections (get, put, object streams) are checked the same way.
        params = {"remote": "r", "key": "k"}
        for opening in (lambda: streams.open_read(str(sock), params),
                        lambda: streams.write(str(sock), params, b"secret", 6),
                        lambda: asyncio.run(streams.async_open_read(str(sock), params)),
                        lambda: asyncio.run(streams.async_write(str(sock), params, b"secret", 6))):
            with pytest.raises(DaemonConnectionError, match=f"uid {uid}"):
                opening()
    finally:
        fake.kill()
        fake.wait(10)
