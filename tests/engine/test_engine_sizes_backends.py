"""The size matrix on the file servers: local, SFTP, FTP, FTPS and pure-ftpd.

Sizes around the backends' own piece sizes (SFTP read requests, FTP data reads, local
flushes), the engine's PARALLEL_THRESHOLD (from where a file moves in parallel chunks,
offset writes on SFTP and local, ranged reads everywhere) and a user's chunk size
(``chunk_size_mb=5``: three chunks and a tail), through upload and download; bytes equal by
SHA-256, no temporary name left behind. One daemon per backend, every size in one test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipedaemon.transfer import PARALLEL_THRESHOLD
from pipedaemon_sdk import PipeClient, ProgressEvent
from tests.servers import BACKENDS
from tests.support.engine import make_file, sha256, temp_leftovers
from tests.support.storage import settings_of

MiB = 1 << 20
N = PARALLEL_THRESHOLD
PIECE = 1 << 20  # SFTP's READ_CHUNK and local's CHUNK: one request / one flush
BLOCK = 256 << 10  # FTP's data-connection read (ftpdata.BLOCK)
# (size, chunk_size_mb): 0, 1, the backends' own piece sizes at N-1/N/N+1, PARALLEL_THRESHOLD
# at N-1/N/N+1 with the default chunks, and N+1 in 5 MiB chunks (three chunks and a tail).
CASES = [(0, None), (1, None), *((n + d, None) for n in (BLOCK, PIECE) for d in (-1, 0, 1)),
         (N - 1, None), (N, None), (N + 1, 5)]


# The file servers' piece sizes: S3's cut-offs are test_engine_sizes.py's.
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "s3"])
def test_sizes_around_the_parallel_cut_off(backend: str, request: pytest.FixtureRequest,
                                           client: PipeClient, tmp_path: Path) -> None:
    spec: dict[str, Any] = request.getfixturevalue(f"{backend}_spec")
    client.upsert_remote(settings_of(spec))
    for size, chunk_mb in CASES:
        where = f"{backend}: {size} bytes, chunk_size_mb={chunk_mb}"
        src = tmp_path / "up" / f"{size}.bin"
        digest = make_file(src, size, seed=size % 89)
        events: list[ProgressEvent] = []
        up = client.upload(src, remote="store", key=f"sz/{size}.bin", chunk_size_mb=chunk_mb,
                           on_progress=events.append)
        assert up.size == size, where
        chunks = events[-1].chunk_count
        if size >= N and chunk_mb and spec["protocol"] in ("sftp", "local"):
            assert chunks == -(-size // (chunk_mb * MiB)), where  # offset writes in the user's chunks
        else:
            assert chunks >= 1, where
        got = client.download(remote="store", key=f"sz/{size}.bin", dest=tmp_path / "down" / f"{size}.bin",
                              chunk_size_mb=chunk_mb)
        assert sha256(Path(got.files[0].local_path)) == digest, where
        src.unlink()
        Path(got.files[0].local_path).unlink()
    assert temp_leftovers(tmp_path) == []
