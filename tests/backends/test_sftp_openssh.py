"""SFTP as users set up SSH: ssh config aliases, ProxyJump, agents, and the transport choice.

Against real OpenSSH sshd servers on loopback (tests/servers/sftp.py): the second server
(``sftp_server_other_hostkey``) doubles as the jump host. Each test runs on both transports
unless it is about one of them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from pipedaemon import settings as S
from pipedaemon.backends import sftpframes as F
from pipedaemon.backends import sftpwire as W
from pipedaemon.backends.base import Backend, backend_class
from pipedaemon.backends.sftp import SFTPBackend
from pipedaemon.backends.sftp_openssh import OpenSSHSFTPBackend
from pipedaemon.backends.sftp_transport import choose
from pipedaemon_sdk import PipeClient
from pipedaemon_sdk.errors import AuthFailedError, InvalidSettingsError
from tests.servers.sftp import SSHDServer, host_block, make_spec, ssh_config

BOTH = pytest.mark.parametrize("transport", ["openssh", "asyncssh"])
LIMIT = 261120  # OpenSSH sftp-server's largest read and write (255 KiB)


def build(options: dict[str, Any], creds: dict[str, Any] | None = None) -> Backend:
    return backend_class("sftp")(options, creds or {}, max_streams=8)


async def chunks_of(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def round_trip(b: Backend, path: str, data: bytes) -> bytes:
    await b.connect()
    try:
        await b.write(path, chunks_of(data))
        return b"".join([c async for c in b.read(path)])
    finally:
        await b.close()


def accepted(server: SSHDServer) -> int:
    """Logins the server has accepted so far (its log, LogLevel VERBOSE)."""
    return (server.base / "sshd.log").read_text(errors="replace").count("Accepted publickey")


# -- ssh config ------------------------------------------------------------------------
@BOTH
async def test_config_alias_resolves_hostname_port_user_identity(
        transport: str, sftp_server: SSHDServer, tmp_path: Path) -> None:
    root = make_spec(sftp_server)["root"]
    config = ssh_config(tmp_path / "config", {"vendor": host_block(sftp_server)})
    # location "vendor" only: no port, user or key in the remote's settings.
    _, options = S.validate({"name": "v", "protocol": "sftp", "location": "vendor",
                             "options": {"ssh_config": str(config), "transport": transport,
                                         "known_hosts": str(sftp_server.known_hosts)}})
    assert "port" not in options and "username" not in options
    b = build(options)
    assert await round_trip(b, root + "alias.txt", b"via the alias") == b"via the alias"
    assert (Path(root) / "alias.txt").read_bytes() == b"via the alias"


@BOTH
async def test_proxyjump_through_a_second_sshd(transport: str, sftp_server: SSHDServer,
                                              sftp_server_other_hostkey: SSHDServer, tmp_path: Path) -> None:
    jump = sftp_server_other_hostkey
    config = ssh_config(tmp_path / "config", {
        "jumphost": host_block(jump), "vendor": {**host_block(sftp_server), "ProxyJump": "jumphost"}})
    root = make_spec(sftp_server)["root"]
    before = accepted(jump)
    b = build({"host": "vendor", "ssh_config": str(config), "transport": transport,
               "known_hosts": str(sftp_server.known_hosts), "connections": 1})
    assert await round_trip(b, root + "jumped.bin", b"j" * 300_000) == b"j" * 300_000
    assert accepted(jump) > before, "the jump host saw no login: the connection did not go through it"


@BOTH
async def test_refused_login_names_the_host(transport: str, sftp_server: SSHDServer, tmp_path: Path) -> None:
    config = ssh_config(tmp_path / "config", {"vendor": host_block(sftp_server, identity=False)})
    b = build({"host": "vendor", "ssh_config": str(config), "transport": transport,
               "known_hosts": str(sftp_server.known_hosts)}, {"private_key": str(tmp_path / "k")})
    (tmp_path / "k").write_text(asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())
    with pytest.raises(AuthFailedError) as info:
        await b.connect()
    await b.close()
    err = info.value
    assert err.data["reason"] == "auth"
    assert "127.0.0.1" in err.message and "ermission denied" in err.message


@BOTH
def test_daemon_alias_remote_and_changed_host_key(
        transport: str, client: PipeClient, sftp_server: SSHDServer, sftp_server_other_hostkey: SSHDServer,
        tmp_path: Path) -> None:
    other = sftp_server_other_hostkey
    root = make_spec(sftp_server)["root"]
    config = ssh_config(tmp_path / "config", {"vendor": host_block(sftp_server), "moved": host_block(other)})
    client.upsert_remote({"name": "v", "protocol": "sftp", "location": "vendor",
                          "options": {"ssh_config": str(config), "transport": transport, "remotepath": root,
                                      "known_hosts": str(sftp_server.known_hosts)}})
    status = client.call("remote.auth_status", {"remote": "v", "write_probe": False})
    assert status["identity"] == sftp_server.username  # the config's User: none in the settings
    src = tmp_path / "a.txt"
    src.write_bytes(b"through the daemon")
    client.upload(src, remote="v", key="a.txt")
    assert (Path(root) / "a.txt").read_bytes() == b"through the daemon"
    # known_hosts lists the first server's key for the second one: its key "changed".
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{other.port} {sftp_server.host_key_public}\n")
    client.upsert_remote({"name": "m", "protocol": "sftp", "location": "moved",
                          "options": {"ssh_config": str(config), "transport": transport,
                                      "known_hosts": str(known)}})
    res = client.check_remote("m")
    fingerprint = asyncssh.import_public_key(other.host_key_public).get_fingerprint("sha256")
    assert res["ok"] is False and res["error"]["code"] == 1004, res["error"]
    assert fingerprint in res["error"]["message"] and "Traceback" not in res["error"]["message"]
    assert res["error"]["data"]["fingerprint"] == fingerprint
    assert res["error"]["data"]["reason"] == "host key mismatch"


# -- agents ----------------------------------------------------------------------------
@BOTH
async def test_users_agent_holds_the_key(transport: str, sftp_server: SSHDServer, ssh_agent: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(sftp_server)
    options = {**spec["options"], "transport": transport}
    b = build(options)  # no credentials: the agent's key logs in
    assert await round_trip(b, spec["root"] + "agent.txt", b"agent") == b"agent"
    monkeypatch.delenv("SSH_AUTH_SOCK")  # the control: without the agent, refused
    without = build(options)
    with pytest.raises(AuthFailedError):
        await without.connect()
    await without.close()


async def test_daemon_key_reaches_ssh_through_its_own_agent(sftp_spec: dict[str, Any],
                                                            sftp_server: SSHDServer) -> None:
    key_text = sftp_server.client_key.read_text()
    b = build({**sftp_spec["options"], "transport": "openssh"}, {"private_key": key_text})
    await b.connect()
    assert isinstance(b, OpenSSHSFTPBackend) and b._work is not None and b._agent is not None
    first, first_agent = b._work.path, b._agent.proc
    await b.connect()  # again, as the registry's retry does: the first agent and folder go
    assert not first.exists() and first_agent is not None and first_agent.returncode is not None
    work = b._work.path
    try:
        assert b._agent is not None
        ssh_pid = b._slots[0].ssh.proc.pid  # type: ignore[union-attr]
        argv = Path(f"/proc/{ssh_pid}/cmdline").read_bytes().split(b"\0")
        assert not any(b"PRIVATE KEY" in a for a in argv)
        assert f"-oIdentityAgent={b._agent.sock}".encode() in argv
        # Nothing the backend wrote to disk holds the key.
        for f in work.iterdir():
            assert not f.is_file() or "PRIVATE KEY" not in f.read_text(errors="replace")
        await b.write(sftp_spec["root"] + "k.txt", chunks_of(b"key"))
        agent = b._agent.proc
    finally:
        await b.close()
    assert not work.exists() and agent is not None and agent.returncode is not None


async def test_password_goes_through_askpass(sftp_spec: dict[str, Any]) -> None:
    secret = "not-the-password-3f9a"
    b = build({**sftp_spec["options"], "transport": "openssh"}, {"password": secret})
    assert isinstance(b, OpenSSHSFTPBackend)
    with pytest.raises(AuthFailedError):
        await b.connect()
    try:
        assert b._askpass is not None and b._askpass.served >= 1  # ssh asked, and got it over the socket
        assert all(secret not in arg for arg in b._argv())
        assert secret not in b._askpass.program.read_text()
    finally:
        await b.close()


# -- the transport choice --------------------------------------------------------------
def test_auto_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert choose({}, {"private_key": "k"}) == "openssh"
    assert choose({}, {}) == "openssh"
    assert choose({}, {"password": "p"}) == "asyncssh"  # no terminal for ssh's prompt
    assert choose({"transport": "openssh"}, {"password": "p"}) == "openssh"
    assert choose({"transport": "asyncssh"}, {}) == "asyncssh"
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh program at all
    assert choose({}, {"private_key": "k"}) == "asyncssh"
    assert isinstance(build({"host": "h"}), SFTPBackend)


async def test_openssh_without_ssh_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    b = build({"host": "h", "transport": "openssh"})
    with pytest.raises(InvalidSettingsError) as info:
        await b.connect()
    await b.close()
    assert info.value.data["field"] == "options.transport"


def test_transport_setting_is_validated() -> None:
    with pytest.raises(InvalidSettingsError) as info:
        S.validate({"name": "r", "protocol": "sftp", "location": "h", "options": {"transport": "putty"}})
    assert info.value.data["field"] == "options.transport"
    _, options = S.validate({"name": "r", "protocol": "sftp", "location": "h"})
    assert options["transport"] == "auto"


# -- the SFTP client: request sizes and short reads ---------------------------------------
@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT, LIMIT + 1, 0, 1])
async def test_sizes_around_one_request(size: int, sftp_spec: dict[str, Any]) -> None:
    b = build({**sftp_spec["options"], "transport": "openssh"}, sftp_spec["credentials"])
    data = os.urandom(size)
    assert await round_trip(b, sftp_spec["root"] + f"s{size}.bin", data) == data
    assert isinstance(b, OpenSSHSFTPBackend)


async def test_short_reads_are_asked_again(sftp_spec: dict[str, Any]) -> None:
    b = build({**sftp_spec["options"], "transport": "openssh"}, sftp_spec["credentials"])
    data = os.urandom(3 * LIMIT + 12345)
    path = sftp_spec["root"] + "short.bin"
    await b.connect()
    try:
        await b.write(path, chunks_of(data))
        sess = b._slots[0].session  # type: ignore[attr-defined]
        assert sess.max_read == LIMIT
        sess.max_read = 4 * LIMIT  # ask for more than the server gives: every reply is short
        pieces = [c async for c in b.read(path, 7, len(data) - 7)]
        assert b"".join(pieces) == data[7:]
        # One request for all of it; the server answers 255 KiB at a time and the rest is asked again.
        assert [len(p) for p in pieces] == [LIMIT, LIMIT, LIMIT, len(data) - 7 - 3 * LIMIT]
    finally:
        await b.close()


async def test_lost_session_fails_pending_requests(sftp_spec: dict[str, Any]) -> None:
    b = build({**sftp_spec["options"], "transport": "openssh", "connections": 1}, sftp_spec["credentials"])
    await b.connect()
    try:
        slot = b._slots[0]  # type: ignore[attr-defined]
        slot.ssh.proc.kill()
        with pytest.raises(W.SFTPConnectionLost):
            await asyncio.wait_for(slot.session.stat("/"), 10)
        assert (await b.stat("/")).is_dir  # the next call opens a new ssh
    finally:
        await b.close()


@BOTH
async def test_broken_ssh_config_is_invalid_settings(transport: str, sftp_server: SSHDServer,
                                                     tmp_path: Path) -> None:
    config = ssh_config(tmp_path / "config", {"vendor": {**host_block(sftp_server), "Port": "abc"}})
    b = build({"host": "vendor", "ssh_config": str(config), "transport": transport,
               "known_hosts": str(sftp_server.known_hosts)})
    with pytest.raises(InvalidSettingsError) as info:
        await b.connect()
    await b.close()
    assert "abc" in info.value.message or "port" in info.value.message.lower()


@pytest.mark.parametrize("piece", [1, 13, 4096, F.STAGE - 1, F.STAGE, F.STAGE + 1])
def test_frames_cut_from_any_split(piece: int) -> None:
    """ssh's output arrives in pieces of any size: packets come out whole, in order, a big DATA
    payload in a bytearray of its own (thresholds at N-1, N, N+1 of the staging buffer)."""
    import struct

    def packet(kind: int, rid: int, body: bytes) -> bytes:
        return struct.pack(">IBI", 5 + len(body), kind, rid) + body

    big = os.urandom(W.DEFAULT_LIMIT * 8 + 3)
    sizes = [F.BIG - 1, F.BIG, F.BIG + 1]
    stream = (packet(W.STATUS, 1, struct.pack(">I", 0) + b"\0\0\0\0\0\0\0\0")
              + packet(W.DATA, 2, struct.pack(">I", len(big)) + big)
              + b"".join(packet(W.DATA, 3 + i, struct.pack(">I", n) + b"d" * n) for i, n in enumerate(sizes))
              + packet(W.NAME, 9, b"\0" * (F.STAGE + 10)))  # bigger than the stage, not DATA
    got: list[tuple[int, int, bytes | bytearray]] = []
    rx = F.FrameReceiver(lambda t, r, b: got.append((t, r, b)), lambda e: None)
    for i in range(0, len(stream), piece):
        rx.data_received(stream[i:i + piece])
    assert [r for _, r, _ in got] == [1, 2, 3, 4, 5, 9]
    assert got[1][0] == F.DIRECT and got[1][2] == big and isinstance(got[1][2], bytearray)
    for (kind, _, body), n in zip(got[2:5], sizes, strict=True):
        payload = body if kind == F.DIRECT else body[9:]
        # Received on its own only when big and not already whole in the stage.
        assert bytes(payload) == b"d" * n and (kind != F.DIRECT or n >= F.BIG)
        if piece == 1:  # never whole before its end: the threshold alone decides
            assert (kind == F.DIRECT) == (n >= F.BIG)
    assert got[5][0] == W.NAME and bytes(got[5][2][5:]) == b"\0" * (F.STAGE + 10)  # type, id, then it
