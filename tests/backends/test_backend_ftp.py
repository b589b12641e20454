"""FTP backend tests against real servers: pyftpdlib (plain, explicit TLS, legacy) and pure-ftpd."""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aioftp
import pytest

from pipedaemon.backends.base import Entry, TransientError
from pipedaemon.backends.ftp import FTPBackend
from pipedaemon_sdk.errors import AuthFailedError, NotFoundError, PermissionDeniedError, StorageError
from tests.servers import BACKENDS, FTP_KINDS
from tests.servers.ftp import FTPServer

DATA = os.urandom(700_000) + b"tail"  # several read blocks, an odd size


@contextlib.asynccontextmanager
async def opened(spec: dict[str, Any], max_streams: int = 4, **options: Any) -> AsyncIterator[FTPBackend]:
    backend = FTPBackend({**spec["options"], **options}, spec["credentials"], max_streams=max_streams)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(backend: FTPBackend, path: str, offset: int = 0, length: int | None = None) -> bytes:
    async with contextlib.aclosing(backend.read(path, offset, length)) as stream:
        return b"".join([block async for block in stream])


async def listing(backend: FTPBackend, path: str, recursive: bool = True) -> dict[str, Entry]:
    return {e.name: e async for e in backend.list(path, recursive)}


# FTP's own tests: the FTP kinds of the one list, and pyftpdlib without MLSD (legacy).
@pytest.fixture(params=[*(f"{b}_spec" for b in BACKENDS if b in FTP_KINDS), "ftp_legacy_spec"])
def any_spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.getfixturevalue(request.param)


# -- the servers themselves, through plain aioftp ---------------------------------------

async def _smoke(spec: dict[str, Any]) -> None:
    o = spec["options"]
    client = aioftp.Client(socket_timeout=30)
    await client.connect(o["host"], o["port"])
    if o.get("tls"):
        await client.upgrade_to_tls(ssl.create_default_context(cafile=o["tls_cafile"]))
    await client.login(o["username"], spec["credentials"]["password"])
    path = spec["root"] + "smoke.txt"
    async with client.upload_stream(path) as stream:
        await stream.write(b"smoke")
    async with client.download_stream(path) as stream:
        data = await stream.read()
    names = [p.name for p, _ in await client.list(spec["root"])]
    writer = client.stream.writer
    await client.quit()
    await writer.wait_closed()  # closing TLS takes a round trip: let it end before the loop does
    assert data == b"smoke"
    assert names == ["smoke.txt"]


async def test_smoke_pyftpdlib(ftp_spec: dict[str, Any]) -> None:
    await _smoke(ftp_spec)


async def test_smoke_ftps(ftps_spec: dict[str, Any]) -> None:
    await _smoke(ftps_spec)


async def test_smoke_pureftpd(pureftpd_spec: dict[str, Any]) -> None:
    await _smoke(pureftpd_spec)


# -- the backend on every server --------------------------------------------------------

async def test_round_trip(any_spec: dict[str, Any]) -> None:
    root = any_spec["root"]
    async with opened(any_spec) as ftp:
        entry = await ftp.write(root + "a/b/data.bin", chunks(DATA[:1000], DATA[1000:]), len(DATA))
        assert (entry.size, entry.is_dir) == (len(DATA), False)
        assert entry.mtime is not None
        await ftp.write(root + "top.txt", chunks(b"top"))
        await ftp.mkdir(root + "a/b")  # exists already: fine
        await ftp.mkdir(root + "empty/x")

        assert await read_all(ftp, root + "a/b/data.bin") == DATA
        stat = await ftp.stat(root + "a/b/data.bin")
        assert (stat.name, stat.size, stat.mtime) == (root + "a/b/data.bin", len(DATA), entry.mtime)
        assert (await ftp.stat(root + "a")).is_dir

        files = await listing(ftp, root)
        assert {n: e.size for n, e in files.items()} == {"a/b/data.bin": len(DATA), "top.txt": 3}
        flat = await listing(ftp, root, recursive=False)
        assert {n: e.is_dir for n, e in flat.items()} == {"a": True, "empty": True, "top.txt": False}
        assert await listing(ftp, root + "missing/") == {}

        await ftp.delete(root + "a/b/data.bin")
        with pytest.raises(NotFoundError):
            await ftp.stat(root + "a/b/data.bin")
        with pytest.raises(NotFoundError):
            await ftp.delete(root + "a/b/data.bin")
        with pytest.raises(NotFoundError):
            await read_all(ftp, root + "a/b/data.bin")
        await ftp.rmdir(root + "a/b")
        assert await listing(ftp, root + "a", recursive=False) == {}


async def test_names_with_spaces_and_unicode(any_spec: dict[str, Any]) -> None:
    root = any_spec["root"]
    names = ["dir with space/file one.txt", "ünïcødé 目录/naïve €.csv", "x/[br] *ckets?.txt"]
    async with opened(any_spec) as ftp:
        for i, name in enumerate(names):
            await ftp.write(root + name, chunks(b"x" * (i + 1)))
        files = await listing(ftp, root)
        assert {n: e.size for n, e in files.items()} == {n: i + 1 for i, n in enumerate(names)}
        for i, name in enumerate(names):
            assert (await ftp.stat(root + name)).size == i + 1
            assert await read_all(ftp, root + name) == b"x" * (i + 1)


async def test_ranged_read(any_spec: dict[str, Any]) -> None:
    root = any_spec["root"]
    async with opened(any_spec, max_streams=1) as ftp:
        await ftp.write(root + "r.bin", chunks(DATA))
        assert await read_all(ftp, root + "r.bin", 12345) == DATA[12345:]
        assert await read_all(ftp, root + "r.bin", 300_000, 1000) == DATA[300_000:301_000]
        assert await read_all(ftp, root + "r.bin", len(DATA) - 4, 4) == b"tail"
        assert await read_all(ftp, root + "r.bin", 5, 0) == b""


async def test_rename_overwrites(any_spec: dict[str, Any]) -> None:
    root = any_spec["root"]
    async with opened(any_spec) as ftp:
        await ftp.write(root + "new.tmp", chunks(b"new content"))
        await ftp.write(root + "final.txt", chunks(b"old"))
        await ftp.rename(root + "new.tmp", root + "final.txt")
        assert await read_all(ftp, root + "final.txt") == b"new content"
        assert set(await listing(ftp, root)) == {"final.txt"}
        with pytest.raises(NotFoundError):
            await ftp.rename(root + "new.tmp", root + "final.txt")
        assert await read_all(ftp, root + "final.txt") == b"new content"  # a failed RNFR deletes nothing


# -- connection pool ----------------------------------------------------------------------

async def test_partial_read_then_full_read_reuses_pool(any_spec: dict[str, Any]) -> None:
    root = any_spec["root"]
    async with opened(any_spec, max_streams=1) as ftp:
        await ftp.write(root + "p.bin", chunks(DATA))
        # Stopped by length: the transfer is aborted and the connection stays in the pool.
        assert await read_all(ftp, root + "p.bin", 0, 10) == DATA[:10]
        pooled = ftp._pool._idle[0]
        assert await read_all(ftp, root + "p.bin") == DATA
        assert ftp._pool._idle[0] is pooled
        # Abandoned by the consumer mid-file: that connection is dropped, the next works.
        async with contextlib.aclosing(ftp.read(root + "p.bin")) as stream:
            first = await stream.__anext__()
        assert DATA.startswith(first)
        assert await read_all(ftp, root + "p.bin") == DATA
        assert (await ftp.stat(root + "p.bin")).size == len(DATA)


async def test_parallel_reads(ftp_spec: dict[str, Any]) -> None:
    import asyncio

    root = ftp_spec["root"]
    async with opened(ftp_spec, max_streams=3) as ftp:
        await ftp.write(root + "par.bin", chunks(DATA))
        parts = [(o, 100_000) for o in range(0, len(DATA), 100_000)]
        got = await asyncio.gather(*(read_all(ftp, root + "par.bin", o, n) for o, n in parts))
        assert b"".join(got) == DATA
        assert len(ftp._pool._idle) <= 3


# -- listing variants ----------------------------------------------------------------------

async def _tree(ftp: FTPBackend, root: str) -> None:
    for name, size in [("a.txt", 1), ("sub/b.txt", 22), ("sub/deeper/c d.txt", 333), (".hidden", 4)]:
        await ftp.write(root + name, chunks(b"z" * size))
    await ftp.mkdir(root + "emptydir")


@pytest.mark.parametrize("server", ["ftp_spec", "pureftpd_spec"])
async def test_list_fallback_matches_mlsd(server: str, request: pytest.FixtureRequest) -> None:
    spec = request.getfixturevalue(server)
    root = spec["root"]
    async with opened(spec) as mlsd, opened(spec, list_command="LIST") as legacy:
        await _tree(mlsd, root)
        for recursive in (True, False):
            by_mlsd = await listing(mlsd, root, recursive)
            by_list = await listing(legacy, root, recursive)
            files = {n: e for n, e in by_mlsd.items() if not e.is_dir}
            assert files == {n: e for n, e in by_list.items() if not e.is_dir}  # sizes and exact mtimes
            assert {n: e.is_dir for n, e in by_mlsd.items()} == {n: e.is_dir for n, e in by_list.items()}
        assert set(await listing(mlsd, root)) == {"a.txt", "sub/b.txt", "sub/deeper/c d.txt", ".hidden"}
        assert await legacy.stat(root + "sub/b.txt") == await mlsd.stat(root + "sub/b.txt")


async def test_legacy_server_without_mlsd(ftp_legacy_spec: dict[str, Any],
                                          ftp_legacy_server: FTPServer) -> None:
    root = ftp_legacy_spec["root"]
    async with opened(ftp_legacy_spec) as ftp:
        assert not ftp._use_mlsd
        assert ftp.features.set_mtime is None  # no MFMT in its FEAT
        await _tree(ftp, root)
        files = await listing(ftp, root)
        disk = ftp_legacy_server.root_dir / root.strip("/")
        for name, entry in files.items():
            st = (disk / name).stat()
            assert (entry.size, entry.mtime) == (st.st_size, float(int(st.st_mtime)))
        with pytest.raises(StorageError):
            await ftp.set_mtime(root + "a.txt", 1_600_000_000)


@pytest.mark.parametrize("server", ["ftp_spec", "pureftpd_spec"])
async def test_set_mtime(server: str, request: pytest.FixtureRequest) -> None:
    spec = request.getfixturevalue(server)
    async with opened(spec) as ftp:
        assert ftp.features.set_mtime is not None
        await ftp.write(spec["root"] + "m.txt", chunks(b"m"))
        await ftp.set_mtime(spec["root"] + "m.txt", 1_600_000_000.7)
        assert (await ftp.stat(spec["root"] + "m.txt")).mtime == 1_600_000_000.0
        assert (await listing(ftp, spec["root"]))["m.txt"].mtime == 1_600_000_000.0


# -- TLS ---------------------------------------------------------------------------------------

async def test_ftps_needs_the_ca(ftps_spec: dict[str, Any]) -> None:
    options = {k: v for k, v in ftps_spec["options"].items() if k != "tls_cafile"}
    with pytest.raises(StorageError, match="certificate"):  # the system store does not know it
        await FTPBackend(options, ftps_spec["credentials"]).connect()
    async with opened({**ftps_spec, "options": options}, tls_verify=False) as ftp:
        await ftp.write(ftps_spec["root"] + "unverified.txt", chunks(b"ok"))
        assert await read_all(ftp, ftps_spec["root"] + "unverified.txt") == b"ok"


async def test_plain_client_refused_by_tls_only_server(ftps_spec: dict[str, Any]) -> None:
    options = {**ftps_spec["options"], "tls": False}
    with pytest.raises(PermissionDeniedError, match="TLS"):  # 550 "SSL/TLS required on the control channel"
        await FTPBackend(options, ftps_spec["credentials"]).connect()


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("server", ["ftp_spec", "pureftpd_spec", "ftps_spec"])
async def test_wrong_password(server: str, request: pytest.FixtureRequest) -> None:
    spec = request.getfixturevalue(server)
    backend = FTPBackend(spec["options"], {"password": "wrong"})
    with pytest.raises(AuthFailedError):
        await backend.connect()
    await backend.close()


async def test_unreachable_port_is_transient() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        backend = FTPBackend({"host": "127.0.0.1", "port": port, "username": "x", "connect_timeout": 3},
                             {"password": "y"})
        with pytest.raises(TransientError):
            await backend.connect()


async def test_write_source_error_passes_unchanged(ftp_spec: dict[str, Any]) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"partial"
        raise OSError("local disk went away")

    async with opened(ftp_spec, max_streams=1) as ftp:
        with pytest.raises(OSError, match="local disk went away") as info:
            await ftp.write(ftp_spec["root"] + "broken.bin", failing())
        assert not isinstance(info.value, StorageError)
        await ftp.write(ftp_spec["root"] + "after.bin", chunks(b"fine"))  # the pool still works
        assert await read_all(ftp, ftp_spec["root"] + "after.bin") == b"fine"


def test_describe_has_no_secret(ftps_spec: dict[str, Any]) -> None:
    backend = FTPBackend(ftps_spec["options"], ftps_spec["credentials"])
    text = backend.describe()
    assert text.startswith("ftps://pipe@127.0.0.1:")
    assert ftps_spec["credentials"]["password"] not in text


async def test_silent_server_times_out_as_transient() -> None:
    import socket

    with socket.socket() as s:  # listens, so TCP connects, but never sends a banner
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        backend = FTPBackend({"host": "127.0.0.1", "port": s.getsockname()[1], "username": "x",
                              "connect_timeout": 1}, {"password": "y"})
        with pytest.raises(TransientError):
            await backend.connect()


async def test_stale_pooled_session_is_replaced(ftp_spec: dict[str, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import pipedaemon.backends.ftp as ftpmod

    monkeypatch.setattr(ftpmod, "IDLE_CHECK_S", 0.0)  # check every pooled session before reuse
    async with opened(ftp_spec, max_streams=1) as ftp:
        await ftp.write(ftp_spec["root"] + "s.txt", chunks(b"stale"))
        stale = ftp._pool._idle[0]
        stale.stream.writer.transport.abort()  # as if the server had timed the session out
        assert (await ftp.stat(ftp_spec["root"] + "s.txt")).size == 5
        assert ftp._pool._idle[0] is not stale


# -- under uvloop, as the daemon runs --------------------------------------------------------

@pytest.mark.parametrize("server", ["ftps_spec", "ftp_spec", "pureftpd_spec"])
def test_transfers_under_uvloop(server: str, request: pytest.FixtureRequest) -> None:
    """uvloop's SSL transport once cut the tail off FTPS downloads: whole files must arrive."""
    uvloop = pytest.importorskip("uvloop")
    spec = request.getfixturevalue(server)
    big = os.urandom(3_000_000)

    async def body() -> None:
        async with opened(spec, max_streams=2) as ftp:
            path = spec["root"] + "uv/big.bin"
            assert (await ftp.write(path, chunks(big[:1_000_000], big[1_000_000:]))).size == len(big)
            for _ in range(3):
                assert await read_all(ftp, path) == big
            assert await read_all(ftp, path, 2_999_000) == big[2_999_000:]
            assert await read_all(ftp, path, 1_000_000, 500_000) == big[1_000_000:1_500_000]
            assert {e.name for e in await _collect(ftp.list(spec["root"]))} == {"uv/big.bin"}

    uvloop.run(body())


async def _collect(entries: AsyncIterator[Entry]) -> list[Entry]:
    return [e async for e in entries]
