"""The file servers' cut-offs under settings other than the defaults.

Each case changes what the engine and the backend could disagree on: how many connections the
backend spreads a file's chunks over (SFTP ``connections``, fewer than and not a divisor of
the chunks in flight), which code speaks the protocol (SFTP ``transport``), how the stored size
is read back for verification (FTP ``list_command: LIST``, without ``MDTM`` on pure-ftpd), how
many chunks the daemon lets a remote have in flight (``daemon.limits remote_streams``) and the
user's chunk size (6 and 7 MiB: PARALLEL_THRESHOLD is no multiple of them). Sizes at N-1, N,
N+1 of PARALLEL_THRESHOLD and of three chunks, through upload/download and the streams
(``Bucket.put``/``get``); SHA-256 equal, stored size the one sent, nothing temporary left.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from pipedaemon.transfer import PARALLEL_THRESHOLD
from pipedaemon_sdk import PipeClient, ProgressEvent
from tests.support.engine import make_file, sha256, temp_leftovers
from tests.support.storage import ensure_bucket, settings_of

MiB = 1 << 20
N = PARALLEL_THRESHOLD

# (backend, remote options, daemon remote_streams, chunk_size_mb)
CASES = [
    ("sftp", {"transport": "asyncssh", "connections": 1}, 3, 6),
    ("sftp", {"connections": 3}, 2, 7),  # transport auto: OpenSSH's ssh
    ("ftp", {"list_command": "LIST"}, 3, 6),
    ("pureftpd", {"list_command": "LIST", "list_mdtm": False}, 2, 7),
]


def around(n: int) -> list[int]:
    return [n - 1, n, n + 1]


@pytest.mark.parametrize(("backend", "options", "remote_streams", "chunk_mb"), CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in CASES])
def test_cut_offs_under_other_settings(backend: str, options: dict[str, Any], remote_streams: int,
                                       chunk_mb: int, request: pytest.FixtureRequest, client: PipeClient,
                                       tmp_path: Path) -> None:
    spec: dict[str, Any] = request.getfixturevalue(f"{backend}_spec")
    settings = settings_of(spec)
    settings["options"].update(options)
    client.upsert_remote(settings)
    client.limits(remote_streams=remote_streams)
    name = ensure_bucket(client, spec)
    bucket = client.datastore("store").get_bucket(name)
    chunk = chunk_mb * MiB
    for size in [*around(N), *around(3 * chunk)]:
        where = f"{backend} {options}: {size} bytes in {chunk_mb} MiB chunks"
        src = tmp_path / "up" / f"{size}.bin"
        digest = make_file(src, size, seed=size % 73)
        events: list[ProgressEvent] = []
        key = f"{name}/up/{size}.bin"
        assert client.upload(src, remote="store", key=key, chunk_size_mb=chunk_mb,
                             on_progress=events.append).size == size, where
        if backend == "sftp":  # from N offset writes in the user's chunks, whatever the connections
            assert events[-1].chunk_count == (-(-size // chunk) if size >= N else 1), where
        assert client.call("object.stat", {"remote": "store", "key": key})["size"] == size, where
        got = client.download(remote="store", key=key, dest=tmp_path / "down" / f"{size}.bin",
                              chunk_size_mb=chunk_mb)
        assert sha256(Path(got.files[0].local_path)) == digest, where
        Path(got.files[0].local_path).unlink()
        if size <= N + 1:  # the streams have no chunk size: PARALLEL_THRESHOLD is their cut-off
            with open(src, "rb") as f:
                bucket.put(f"put/{size}.bin", f, size)
            assert hashlib.sha256(bucket.get(f"put/{size}.bin").read()).hexdigest() == digest, where
        src.unlink()
    assert temp_leftovers(tmp_path) == []
