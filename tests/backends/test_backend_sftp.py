"""SFTP backend against a real OpenSSH sshd on loopback (tests/servers/sftp.py)."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from pipedaemon.backends.base import Backend, TransientError
from pipedaemon.backends.sftp_transport import SFTP
from pipedaemon_sdk.errors import AuthFailedError, NotFoundError
from tests.servers.sftp import SSHDServer, make_spec


@pytest.fixture(autouse=True, params=["openssh", "asyncssh"])
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on both transports (options.transport)."""
    global TRANSPORT
    TRANSPORT = request.param
    yield request.param
    TRANSPORT = "auto"


TRANSPORT = "auto"


def backend(spec: dict[str, Any], creds: dict[str, Any] | None = None, **options: Any) -> Backend:
    opts = {"transport": TRANSPORT, **spec["options"], **options}
    return SFTP(opts, spec["credentials"] if creds is None else creds, max_streams=8)


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def read_all(b: Backend, path: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([c async for c in b.read(path, offset, length)])


async def test_smoke_plain_asyncssh(sftp_server: SSHDServer, sftp_spec: dict[str, Any],
                                    tmp_path: Path, transport: str) -> None:
    if transport != "asyncssh":
        return  # the server itself, through asyncssh alone: once is enough
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(50_000))
    async with asyncssh.connect(sftp_server.host, port=sftp_server.port,
                                username=sftp_server.username,
                                client_keys=[str(sftp_server.client_key)],
                                known_hosts=str(sftp_server.known_hosts), config=[]) as conn:
        async with conn.start_sftp_client() as sftp:
            await sftp.put(str(src), sftp_spec["root"] + "up.bin")
            await sftp.get(sftp_spec["root"] + "up.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == src.read_bytes()


async def test_roundtrip_list_stat_delete(sftp_spec: dict[str, Any]) -> None:
    b, root = backend(sftp_spec), sftp_spec["root"]
    await b.connect()
    try:
        data = os.urandom(3 * 1024 * 1024 + 17)
        entry = await b.write(root + "a/b/c.bin", chunks_of(data, 1 << 20))
        assert entry.size == len(data)
        await b.write(root + "top.txt", chunks_of(b"hi"))
        assert await read_all(b, root + "a/b/c.bin") == data
        names = {e.name: e.size async for e in b.list(root)}
        assert names == {"a/b/c.bin": len(data), "top.txt": 2}
        flat = {e.name: e.is_dir async for e in b.list(root, recursive=False)}
        assert flat == {"a": True, "top.txt": False}
        assert [e async for e in b.list(root + "missing/")] == []
        await b.delete(root + "top.txt")
        with pytest.raises(NotFoundError):
            await b.stat(root + "top.txt")
        with pytest.raises(NotFoundError):
            await read_all(b, root + "top.txt")
        with pytest.raises(NotFoundError):
            await b.delete(root + "top.txt")
        await b.mkdir(root + "x/y/")
        await b.mkdir(root + "x/y/")
        assert (await b.stat(root + "x/y")).is_dir
        await b.rmdir(root + "x/y/")
        with pytest.raises(NotFoundError):
            await b.stat(root + "x/y")
    finally:
        await b.close()


async def test_wrong_private_key_is_auth_failed(sftp_spec: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(other))
    b = backend(sftp_spec, {"private_key": str(other)})
    with pytest.raises(AuthFailedError) as info:
        await b.connect()
    assert info.value.data["reason"] == "auth"
    await b.close()


async def test_wrong_password_is_auth_failed(sftp_spec: dict[str, Any]) -> None:
    b = backend(sftp_spec, {"password": "definitely-not-the-password"})
    with pytest.raises(AuthFailedError):
        await b.connect()
    await b.close()


async def test_private_key_pem_text_with_passphrase(sftp_server: SSHDServer,
                                                    sftp_spec: dict[str, Any]) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    with open(sftp_server.base / "authorized_keys", "a") as fh:
        fh.write(key.export_public_key("openssh").decode())
    # PKCS#8 PEM: OpenSSH-format encryption would need bcrypt, which is not installed.
    pem = key.export_private_key("pkcs8-pem", passphrase="s3cret").decode()
    b = backend(sftp_spec, {"private_key": pem, "passphrase": "s3cret"})
    await b.connect()
    try:
        await b.write(sftp_spec["root"] + "k.txt", chunks_of(b"key auth"))
        assert await read_all(b, sftp_spec["root"] + "k.txt") == b"key auth"
    finally:
        await b.close()
    bad = backend(sftp_spec, {"private_key": pem, "passphrase": "wrong"})
    with pytest.raises(AuthFailedError) as info:
        await bad.connect()
    assert "BEGIN" not in info.value.message  # the key text is never echoed


async def test_changed_host_key_is_refused(sftp_server: SSHDServer,
                                           sftp_server_other_hostkey: SSHDServer,
                                           tmp_path: Path) -> None:
    # known_hosts lists the first server's key for the second server's address.
    other = sftp_server_other_hostkey
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{other.port} {sftp_server.host_key_public}\n")
    spec = make_spec(other)
    b = backend(spec, known_hosts=str(known))
    with pytest.raises(AuthFailedError) as info:
        await b.connect()
    err = info.value
    assert "host key" in err.message and "did not match" in err.message
    fingerprint = asyncssh.import_public_key(other.host_key_public).get_fingerprint("sha256")
    assert err.data == {"host": "127.0.0.1", "port": other.port, "reason": "host key mismatch",
                        "fingerprint": fingerprint}
    assert fingerprint in err.message  # the person sees what the server now offers
    await b.close()


async def test_host_missing_from_known_hosts_is_refused(sftp_spec: dict[str, Any],
                                                        tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    b = backend(sftp_spec, known_hosts=str(known))
    with pytest.raises(AuthFailedError) as info:
        await b.connect()
    assert info.value.data["reason"] == "host key unknown"
    assert "accept-new" in info.value.message


async def test_accept_new_records_then_pins(sftp_server: SSHDServer,
                                            sftp_server_other_hostkey: SSHDServer,
                                            sftp_spec: dict[str, Any]) -> None:
    first = backend(sftp_spec, known_hosts="accept-new", connections=3)
    await first.connect()
    try:
        assert first.seen_host_key == sftp_server.host_key_public
        # Further pooled connections are held to the key seen first.
        await first.write(sftp_spec["root"] + "f.txt", chunks_of(b"x"))
        assert [e.name async for e in first.list(sftp_spec["root"])] == ["f.txt"]
    finally:
        await first.close()

    pinned = backend(sftp_spec, known_hosts="accept-new", _pinned_host_key=sftp_server.host_key_public)
    await pinned.connect()
    assert pinned.seen_host_key is None
    assert (await pinned.stat(sftp_spec["root"] + "f.txt")).size == 1
    await pinned.close()

    # The same pin against a server whose key differs: refused.
    wrong = backend(make_spec(sftp_server_other_hostkey), known_hosts="accept-new",
                    _pinned_host_key=sftp_server.host_key_public)
    with pytest.raises(AuthFailedError) as info:
        await wrong.connect()
    assert info.value.data["reason"] == "host key mismatch"
    assert "pinned" in info.value.message
    assert wrong.seen_host_key is None


async def test_parallel_range_writer_shuffled(sftp_spec: dict[str, Any]) -> None:
    import asyncio

    b = backend(sftp_spec, connections=3)
    await b.connect()
    try:
        data = os.urandom(5 * 1024 * 1024 + 1234)
        part = 256 * 1024
        offsets = list(range(0, len(data), part))
        random.Random(7).shuffle(offsets)
        path = sftp_spec["root"] + "deep/er/ranged.bin"
        writer = await b.open_writer(path, len(data))
        await asyncio.gather(*(writer.write_at(o, data[o:o + part]) for o in offsets))
        await writer.close()
        assert (await b.stat(path)).size == len(data)
        assert await read_all(b, path) == data

        # Reopening (a resume) keeps what is there; only the rewritten part changes.
        patch = b"Z" * 1000
        writer = await b.open_writer(path, len(data))
        await writer.write_at(4096, patch)
        await writer.close()
        expected = data[:4096] + patch + data[4096 + len(patch):]
        assert await read_all(b, path) == expected
    finally:
        await b.close()


async def test_ranged_read(sftp_spec: dict[str, Any]) -> None:
    b = backend(sftp_spec)
    await b.connect()
    try:
        data = os.urandom(3 * 1024 * 1024 + 5)
        path = sftp_spec["root"] + "r.bin"
        await b.write(path, chunks_of(data))
        assert await read_all(b, path, 1_000_000, 2_500_000) == data[1_000_000:3_500_000]
        assert await read_all(b, path, len(data) - 10) == data[-10:]
        assert await read_all(b, path, 5, 0) == b""
        assert await read_all(b, path, len(data) + 100) == b""
    finally:
        await b.close()


async def test_rename_overwrites_and_set_mtime(sftp_spec: dict[str, Any]) -> None:
    b, root = backend(sftp_spec), sftp_spec["root"]
    await b.connect()
    try:
        await b.write(root + "new.part", chunks_of(b"new"))
        await b.write(root + "final.txt", chunks_of(b"old contents"))
        await b.rename(root + "new.part", root + "final.txt")
        assert await read_all(b, root + "final.txt") == b"new"
        assert [e.name async for e in b.list(root)] == ["final.txt"]
        await b.rename(root + "final.txt", root + "moved/into/here.txt")
        assert await read_all(b, root + "moved/into/here.txt") == b"new"
        with pytest.raises(NotFoundError):
            await b.rename(root + "nope", root + "other")

        await b.set_mtime(root + "moved/into/here.txt", 1_500_000_000)
        assert (await b.stat(root + "moved/into/here.txt")).mtime == 1_500_000_000
        listed = [e async for e in b.list(root)]
        assert listed[0].mtime == 1_500_000_000
    finally:
        await b.close()


async def test_unreachable_port_is_transient(sftp_spec: dict[str, Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        b = backend(sftp_spec, port=port, connect_timeout=3)
        with pytest.raises(TransientError):
            await b.connect()
    await b.close()


async def test_names_with_spaces_and_unicode(sftp_spec: dict[str, Any]) -> None:
    b, root = backend(sftp_spec), sftp_spec["root"]
    await b.connect()
    try:
        names = ["with space.txt", "dír ünï/çødé 日本.csv", "emoji 📦/a b/c.txt"]
        for i, name in enumerate(names):
            await b.write(root + name, chunks_of(f"n{i}".encode()))
        listed = {e.name: e.size async for e in b.list(root)}
        assert listed == {name: 2 for name in names}
        for i, name in enumerate(names):
            assert await read_all(b, root + name) == f"n{i}".encode()
    finally:
        await b.close()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (sshd forks one per connection)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


async def test_dropped_connection_is_reopened(sftp_server: SSHDServer, sftp_spec: dict[str, Any]) -> None:
    import signal

    b, root = backend(sftp_spec, connections=1), sftp_spec["root"]
    await b.connect()
    try:
        await b.write(root + "f.txt", chunks_of(b"still here"))
        kids = _children(sftp_server.proc.pid)
        assert kids, "sshd should serve our connection from a child process"
        for pid in kids:  # the server side of our connection goes away
            os.kill(pid, signal.SIGTERM)
        # The engine retries TransientError; the backend reconnects on the next call.
        failures: list[Exception] = []
        for _ in range(3):
            try:
                got = await read_all(b, root + "f.txt")
                break
            except TransientError as exc:
                failures.append(exc)
        else:
            pytest.fail(f"no reconnect after drop: {failures}")
        assert got == b"still here"
        assert len(failures) <= 1
    finally:
        await b.close()
