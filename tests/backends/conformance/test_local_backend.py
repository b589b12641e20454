"""What the local backend promises beyond the shared contract (the suite beside it covers the rest)."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipedaemon.backends.base import TransientError, error_edge
from pipedaemon.backends.local import LocalBackend, map_error
from pipedaemon_sdk.errors import (
    InvalidSettingsError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)


@pytest.mark.parametrize(("exc", "cls", "message"), [
    (FileNotFoundError(errno.ENOENT, "x"), NotFoundError, "no such file"),
    (PermissionError(errno.EACCES, "x"), PermissionDeniedError, "permission denied"),
    (OSError(errno.ENOSPC, "x"), StorageError, "no space left"),
    (OSError(errno.EFBIG, "x"), StorageError, "file too large"),
    (OSError(errno.EDQUOT, "x"), StorageError, "quota"),
    (OSError(errno.EAGAIN, "x"), TransientError, "x"),
    (OSError(errno.EIO, "Input/output error"), StorageError, "Input/output error"),
    (ValueError("embedded null byte"), StorageError, "embedded null byte"),
])
def test_error_mapper(exc: Exception, cls: type, message: str) -> None:
    with pytest.raises(cls) as info, error_edge(map_error, "/some/file"):
        raise exc
    assert type(info.value) is cls
    assert message in info.value.message
    assert info.value.data["path"] == "/some/file"


async def test_rmdir_of_full_folder_says_so(local: tuple[LocalBackend, Path]) -> None:
    b, root = local
    (root / "full").mkdir()
    (root / "full" / "x.txt").write_bytes(b"x")
    with pytest.raises(StorageError) as info:
        await b.rmdir(str(root / "full"))
    assert info.value.message == "folder not empty"
    assert (root / "full" / "x.txt").read_bytes() == b"x"


async def test_symlinks(local: tuple[LocalBackend, Path], tmp_path: Path) -> None:
    b, root = local
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"s")
    (root / "real.txt").write_bytes(b"real")
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "filelink.txt").symlink_to(root / "real.txt")
    (root / "dangling.txt").symlink_to(root / "nothing")
    for recursive in (True, False):
        names = {e.name: e.size async for e in b.list(str(root), recursive)}
        # A folder symlink is never walked; a file symlink is reported as the file it names.
        assert names == {"real.txt": 4, "filelink.txt": 4}


async def test_relative_paths_are_under_remotepath(local: tuple[LocalBackend, Path]) -> None:
    b, root = local
    await b.write("rel/a.txt", _chunks(b"abc"))
    assert (root / "rel" / "a.txt").read_bytes() == b"abc"
    assert (await b.stat("rel/a.txt")).size == 3


async def test_failed_write_leaves_no_file(local: tuple[LocalBackend, Path]) -> None:
    b, root = local

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 2_000_000
        raise ConnectionResetError("source went away")

    with pytest.raises(ConnectionResetError):  # the source's own error, not blamed on the disk
        await b.write(str(root / "half.bin"), broken())
    with pytest.raises(StorageError):
        await b.write(str(root / "short.bin"), _chunks(b"abc"), size=10)
    assert sorted(os.listdir(root)) == []


async def test_open_writer_keeps_landed_chunks(local: tuple[LocalBackend, Path]) -> None:
    b, root = local
    path = str(root / "resume.bin")
    w = await b.open_writer(path, 8)
    await w.write_at(0, b"abcd")
    await w.close()
    w = await b.open_writer(path, 8)  # a resumed transfer reopens without truncating
    await w.write_at(4, b"efgh")
    await w.close()
    await w.close()  # closing twice is harmless
    assert (root / "resume.bin").read_bytes() == b"abcdefgh"
    with pytest.raises(StorageError):
        await w.write_at(0, b"late")


async def test_connect_checks_remotepath(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettingsError):
        await LocalBackend({"remotepath": "relative/folder"}, {}).connect()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InvalidSettingsError):
        await LocalBackend({"remotepath": str(tmp_path / "file")}, {}).connect()
    # A missing root is never made behind the user's back (an unmounted disk): 1001 naming it,
    # unless the remote asks for it with create_root.
    with pytest.raises(NotFoundError, match="not-yet"):
        await LocalBackend({"remotepath": str(tmp_path / "not-yet")}, {}).connect()
    await LocalBackend({"remotepath": str(tmp_path / "not-yet"), "create_root": True}, {}).connect()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
