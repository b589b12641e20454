"""One suite, every backend: the Backend contract checked against real servers.

Each test runs once per backend, inside the empty scratch folder its server fixture
hands out (``spec["root"]``). Optional capabilities are tested where a backend
declares them (``backend.features``); where it does not, the test asserts that asking
for it raises NotImplementedError and that none of its methods is there, so every test
checks something for every backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import resource
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from pipedaemon.backends.base import (
    CAPABILITIES,
    Backend,
    Buckets,
    Entry,
    HasNativeMetadata,
    Multipart,
    NativeMetadata,
    RangeWrites,
    Rename,
    ServerCopy,
    SetMtime,
    Unsupported,
    backend_class,
)
from pipedaemon.transfer import upload_stream
from pipedaemon_sdk.errors import NotFoundError, StorageError
from tests.servers import BACKENDS

# Every kind, and pipedaemon: a shared daemon's local remote, reached over its socket (sftp: auto = OpenSSH)
KINDS = [*BACKENDS, "pipedaemon"]
MiB = 1024 * 1024
BIG = 100 * MiB
OLD_MTIME = 1_600_000_000.0  # 2020-09-13 12:26:40 UTC, a whole second on purpose

Case = tuple[Backend, str]


@pytest.fixture(params=KINDS)
def conformance_spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.getfixturevalue(f"{request.param}_spec")


@pytest.fixture
async def backend(conformance_spec: dict[str, Any]) -> AsyncIterator[Case]:
    spec = conformance_spec
    b = backend_class(spec["protocol"])(spec["options"], spec["credentials"], max_streams=4)
    await b.connect()
    try:
        yield b, spec["root"]
    finally:
        await b.close()


# -- helpers -------------------------------------------------------------------
async def stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def put(b: Backend, path: str, data: bytes, chunk: int = 64 * 1024) -> Entry:
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    return await b.write(path, stream(pieces), size=len(data))


async def get(b: Backend, path: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([c async for c in b.read(path, offset, length)])


async def listing(b: Backend, path: str, recursive: bool = True) -> dict[str, Entry]:
    entries = [e async for e in b.list(path, recursive)]
    by_name = {e.name: e for e in entries}
    assert len(by_name) == len(entries), "a name was listed twice"
    return by_name


def not_implemented(b: Backend, kind: type) -> None:
    """An undeclared capability must refuse loudly, never half-work: asking for it raises, and
    none of its methods is there to call."""
    with pytest.raises(NotImplementedError):
        b.features.need(kind)
    if not isinstance(b, kind):  # (else its class has it and this server not: FTP without MFMT)
        assert not [m for m in kind.__abstractmethods__ if hasattr(b, m)]


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- required methods ----------------------------------------------------------
async def test_write_stat_read_round_trip(backend: Case) -> None:
    b, root = backend
    path = root + "round.bin"
    data = blob(1, 300_000)
    entry = await put(b, path, data)
    assert entry.size == len(data)
    st = await b.stat(path)
    assert (st.name, st.size, st.is_dir) == (path, len(data), False)
    # stat and the listing read the same mtime (S3: the listing has milliseconds, HEAD
    # whole seconds); that it is in the right zone is test_set_mtime's exact check.
    listed = (await listing(b, root))["round.bin"].mtime
    assert st.mtime is not None and listed is not None and abs(st.mtime - listed) < 1
    if "s3etag" in b.features.checksums:
        assert st.etag == hashlib.md5(data).hexdigest()
    assert await get(b, path) == data
    # Overwriting with something shorter must not leave the old tail behind.
    await put(b, path, b"short")
    assert (await b.stat(path)).size == 5
    assert await get(b, path) == b"short"


async def test_ranged_reads(backend: Case) -> None:
    b, root = backend
    path = root + "ranged.bin"
    data = blob(2, 3 * MiB + 123)
    await put(b, path, data, chunk=MiB)
    n = len(data)
    cases = [(0, None), (0, 10), (100, 50), (MiB - 7, 20), (2 * MiB + 5, None),
             (n - 10, 100), (n - 1, None), (n, None), (n, 10), (5, 0)]
    for offset, length in cases:
        want = data[offset:] if length is None else data[offset:offset + length]
        assert await get(b, path, offset, length) == want, (offset, length)


async def test_empty_file(backend: Case) -> None:
    b, root = backend
    path = root + "empty.txt"
    assert (await b.write(path, stream([]), size=0)).size == 0
    assert (await b.stat(path)).size == 0
    assert await get(b, path) == b""
    assert (await listing(b, root))["empty.txt"].size == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_big_file_streams_with_bounded_memory(backend: Case) -> None:
    b, root = backend
    path = root + "big.bin"
    sent = hashlib.sha256()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(BIG // MiB):
            chunk = blob(1000 + i, MiB)
            sent.update(chunk)
            yield chunk

    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Through the engine, as every caller stores a stream: on S3 write() is exactly one PUT
    # (whole in memory), and the engine moves a big stream as parts.
    assert (await upload_stream(b, chunks(), path, BIG)).size == BIG
    assert (await b.stat(path)).size == BIG
    got, total, largest = hashlib.sha256(), 0, 0
    async for chunk in b.read(path):
        got.update(chunk)
        total += len(chunk)
        largest = max(largest, len(chunk))
    assert (total, got.hexdigest()) == (BIG, sent.hexdigest())
    assert largest <= 16 * MiB, "read() must stream in pieces, not hand back the whole file"
    # ru_maxrss is in KiB on Linux. Holding the whole file in memory (once for
    # writing, once for reading) would raise the peak by at least BIG.
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) * 1024
    assert grown < BIG, f"peak memory grew by {grown / MiB:.0f} MiB moving a {BIG // MiB} MiB file"


class _CallersOwn(Exception):
    """Raised by the caller's stream: no backend may report it as a storage error."""


async def test_callers_stream_failure_is_not_a_storage_error(backend: Case) -> None:
    b, root = backend

    async def shrinking() -> AsyncIterator[bytes]:
        yield blob(50, 300_000)
        raise _CallersOwn("the local file shrank")

    with pytest.raises(_CallersOwn):  # the very exception, unmapped (one source pump in base)
        await b.write(root + "half.bin", shrinking(), size=600_000)
    assert await b.write(root + "after.txt", stream([b"ok"]), size=2)  # the backend still works


async def test_awkward_names(backend: Case) -> None:
    b, root = backend
    names = ["with space.txt", "café é.txt", "日本/データ 1.txt", "a/b/c/d/e/f.txt"]
    for name in names:
        await put(b, root + name, name.encode())
    for name in names:
        st = await b.stat(root + name)
        assert st.size == len(name.encode())
        assert await get(b, root + name) == name.encode()
    deep = await listing(b, root)
    assert set(deep) == set(names)
    assert all(not e.is_dir and e.size == len(n.encode()) for n, e in deep.items())
    flat = await listing(b, root, recursive=False)
    assert {n for n, e in flat.items() if not e.is_dir} == {"with space.txt", "café é.txt"}
    assert {n for n, e in flat.items() if e.is_dir} == {"日本", "a"}
    assert set(await listing(b, root + "a/b/c")) == {"d/e/f.txt"}


@pytest.mark.timeout(900)
async def test_thousand_files_listed_completely(backend: Case) -> None:
    b, root = backend
    folder = root + "many/"
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate:
            await put(b, f"{folder}f{i:04d}.txt", str(i).encode())

    await asyncio.gather(*(one(i) for i in range(1000)))
    want = {f"f{i:04d}.txt": len(str(i)) for i in range(1000)}
    for recursive in (True, False):
        got = await listing(b, folder, recursive)
        assert {n: e.size for n, e in got.items()} == want
        assert all(e.mtime is not None for e in got.values())


async def test_recursive_and_flat_listing(backend: Case) -> None:
    b, root = backend
    for name in ["top.txt", "sub/inner.txt", "sub/deeper/x.txt", "subfoo.txt"]:
        await put(b, root + name, b"x" * len(name))
    deep = await listing(b, root)
    assert set(deep) == {"top.txt", "sub/inner.txt", "sub/deeper/x.txt", "subfoo.txt"}
    assert deep["sub/deeper/x.txt"].size == len("sub/deeper/x.txt")
    assert not any(e.is_dir for e in deep.values()), "recursive listings report files only"
    flat = await listing(b, root, recursive=False)
    assert {n: e.is_dir for n, e in flat.items()} == {"top.txt": False, "subfoo.txt": False, "sub": True}
    # With or without the trailing slash, "sub" is the folder, never a prefix of "subfoo.txt".
    for folder in (root + "sub", root + "sub/"):
        assert set(await listing(b, folder)) == {"inner.txt", "deeper/x.txt"}
        flat_sub = await listing(b, folder, recursive=False)
        assert {n: e.is_dir for n, e in flat_sub.items()} == {"inner.txt": False, "deeper": True}


async def test_missing_folder_lists_empty(backend: Case) -> None:
    b, root = backend
    for folder in (root + "missing", root + "missing/", root + "missing/deeper/"):
        assert await listing(b, folder) == {}
        assert await listing(b, folder, recursive=False) == {}


async def test_missing_file_is_not_found(backend: Case) -> None:
    b, root = backend
    for path in (root + "nope.txt", root + "no/such/folder/nope.txt"):
        with pytest.raises(NotFoundError):
            await b.stat(path)
        with pytest.raises(NotFoundError):
            await get(b, path)
        with pytest.raises(NotFoundError):
            await b.delete(path)


async def test_delete_then_stat(backend: Case) -> None:
    b, root = backend
    await put(b, root + "keep.txt", b"keep")
    await put(b, root + "gone.txt", b"gone")
    await b.delete(root + "gone.txt")
    with pytest.raises(NotFoundError):
        await b.stat(root + "gone.txt")
    assert set(await listing(b, root)) == {"keep.txt"}
    with pytest.raises(NotFoundError):
        await b.delete(root + "gone.txt")


async def test_mkdir_is_idempotent(backend: Case) -> None:
    b, root = backend
    await b.mkdir(root + "made/inner")
    await b.mkdir(root + "made/inner")
    await b.mkdir(root + "made")
    if not b.features.implied_folders:  # object stores have no real folders to show
        flat = await listing(b, root + "made", recursive=False)
        assert {n: e.is_dir for n, e in flat.items()} == {"inner": True}
    await put(b, root + "made/inner/f.txt", b"f")
    assert (await b.stat(root + "made/inner/f.txt")).size == 1


async def test_rmdir_of_empty_folder(backend: Case) -> None:
    b, root = backend
    await b.mkdir(root + "emptydir")
    await put(b, root + "other.txt", b"o")
    if not b.features.implied_folders:
        assert (await listing(b, root, recursive=False))["emptydir"].is_dir
    await b.rmdir(root + "emptydir")
    assert set(await listing(b, root, recursive=False)) == {"other.txt"}


async def test_rmdir_of_full_folder_deletes_nothing(backend: Case) -> None:
    b, root = backend
    await put(b, root + "full/x.txt", b"x")
    if b.features.implied_folders:
        # A prefix in an object store may ignore rmdir; it must still delete nothing.
        try:
            await b.rmdir(root + "full")
        except StorageError:
            pass
    else:
        with pytest.raises(StorageError):
            await b.rmdir(root + "full")
    assert await get(b, root + "full/x.txt") == b"x"


# -- optional capabilities -----------------------------------------------------
# What each backend of BACKENDS can do beyond the required methods (Features field names).
_SFTP = {"rename", "set_mtime", "range_writes", "host_keys", "identity"}
CAPABILITIES_OF: dict[str, set[str]] = {
    "local": {"rename", "server_copy", "set_mtime", "finish_upload", "small_files", "range_writes"},
    "s3": {"multipart", "server_copy", "buckets", "identity", "native_metadata"},
    "sftp": _SFTP, "sftp_asyncssh": _SFTP,
    "ftp": {"rename", "set_mtime"}, "ftps": {"rename", "set_mtime"}, "pureftpd": {"rename", "set_mtime"},
    "pipedaemon": set(),
}


def _implements(b: Backend, kind: type) -> bool:
    """The backend has every method of the capability (the metadata one: its companion's maker)."""
    methods = HasNativeMetadata.__abstractmethods__ if kind is NativeMetadata else kind.__abstractmethods__
    assert methods, kind
    return all(hasattr(b, m) for m in methods)


@pytest.mark.parametrize("name", BACKENDS)
async def test_features_are_exactly_the_capabilities_it_implements(name: str,
                                                                   request: pytest.FixtureRequest) -> None:
    spec = request.getfixturevalue(f"{name}_spec")
    b = backend_class(spec["protocol"])(spec["options"], spec["credentials"], max_streams=4)
    await b.connect()  # (an FTP server's FEAT narrows what its class can do)
    try:
        assert b.features.names() == CAPABILITIES_OF[name]
        assert b.features.protocol == b.protocol
        assert set(CAPABILITIES.values()) >= CAPABILITIES_OF[name]
        for kind, field in CAPABILITIES.items():
            found = getattr(b.features, field)
            # Declared (derived from) exactly when implemented: no capability method on a backend
            # that does not say so, none said and missing (an ABC refuses to be built then).
            declared = isinstance(b, HasNativeMetadata if kind is NativeMetadata else kind)
            assert declared == _implements(b, kind), (name, kind.__name__)
            if found is None:
                with pytest.raises(Unsupported, match=f"the {b.protocol} backend has no {kind.__name__}"):
                    b.features.need(kind)
            else:
                assert isinstance(found, kind) and declared
                assert b.features.need(kind) is found
    finally:
        await b.close()


async def test_rename_overwrites(backend: Case) -> None:
    b, root = backend
    src, dst = root + "src.txt", root + "dst.txt"
    await put(b, src, b"A" * 10)
    await put(b, dst, b"B" * 5)
    if b.features.rename is None:
        not_implemented(b, Rename)
        return
    await b.features.rename.rename(src, dst)
    assert await get(b, dst) == b"A" * 10
    assert (await b.stat(dst)).size == 10
    with pytest.raises(NotFoundError):
        await b.stat(src)


async def test_server_copy(backend: Case) -> None:
    b, root = backend
    src, dst = root + "orig.bin", root + "copy.bin"
    data = blob(3, 200_000)
    await put(b, src, data)
    await put(b, dst, b"old content")
    if b.features.server_copy is None:
        not_implemented(b, ServerCopy)
        return
    assert (await b.features.server_copy.copy(src, dst)).size == len(data)
    assert await get(b, dst) == data
    assert await get(b, src) == data


async def test_set_mtime(backend: Case) -> None:
    b, root = backend
    path = root + "dated.txt"
    await put(b, path, b"dated")
    if b.features.set_mtime is None:
        not_implemented(b, SetMtime)
        return
    await b.features.set_mtime.set_mtime(path, OLD_MTIME)
    st = await b.stat(path)
    assert st.mtime is not None and abs(st.mtime - OLD_MTIME) < 1
    listed = (await listing(b, root))["dated.txt"].mtime
    assert listed is not None and abs(listed - OLD_MTIME) < 1
    assert await get(b, path) == b"dated"


async def test_open_writer_parallel_offsets(backend: Case) -> None:
    b, root = backend
    path = root + "pieces.bin"
    part = 256 * 1024
    pieces = [(i * part, blob(10 + i, part)) for i in range(4)] + [(4 * part, blob(20, 1000))]
    size = 4 * part + 1000
    if b.features.range_writes is None:
        not_implemented(b, RangeWrites)
        return
    writer = await b.features.range_writes.open_writer(path, size)
    try:
        await asyncio.gather(*(writer.write_at(off, data) for off, data in reversed(pieces)))
    finally:
        await writer.close()
    assert (await b.stat(path)).size == size
    assert await get(b, path) == b"".join(data for _, data in pieces)


async def test_multipart_upload(backend: Case) -> None:
    b, root = backend
    path = root + "multi.bin"
    one, two = blob(30, 5 * MiB), blob(31, 1234)  # S3 parts but the last are >= 5 MiB
    if b.features.multipart is None:
        not_implemented(b, Multipart)
        return
    mp = b.features.multipart
    upload = await mp.mp_create(path)
    tags = {2: await mp.mp_upload_part(path, upload, 2, two)}
    tags[1] = await mp.mp_upload_part(path, upload, 1, one)
    assert await mp.mp_parts(path, upload) == {1: (tags[1], len(one)), 2: (tags[2], len(two))}
    entry = await mp.mp_complete(path, upload, [(1, tags[1]), (2, tags[2])])
    assert entry.size == len(one) + len(two)
    assert await get(b, path) == one + two
    if "s3etag" in b.features.checksums:
        assert (await b.stat(path)).etag.endswith("-2")


async def test_multipart_abort(backend: Case) -> None:
    b, root = backend
    path = root + "aborted.bin"
    if b.features.multipart is None:
        not_implemented(b, Multipart)
        return
    mp = b.features.multipart
    upload = await mp.mp_create(path)
    await mp.mp_upload_part(path, upload, 1, blob(40, 1000))
    await mp.mp_abort(path, upload)
    with pytest.raises(NotFoundError):
        await b.stat(path)
    with pytest.raises(NotFoundError):
        await mp.mp_parts(path, upload)


async def test_buckets(backend: Case) -> None:
    b, _ = backend
    name = f"pdconf-{uuid.uuid4().hex[:12]}"
    if b.features.buckets is None:
        not_implemented(b, Buckets)
        return
    buckets = b.features.buckets
    await buckets.create_bucket(name)
    assert name in await buckets.list_buckets()
    await put(b, f"{name}/k.txt", b"in a bucket")
    assert await get(b, f"{name}/k.txt") == b"in a bucket"
    await b.delete(f"{name}/k.txt")
    await b.rmdir(name)
    assert name not in await buckets.list_buckets()
