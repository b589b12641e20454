"""The size matrix: every cut-off of the data path at N-1, N and N+1, through every entry point.

Sizes sit around S3's ``put_threshold`` and ``part_size`` (defaults and user settings) and the
engine's ``PARALLEL_THRESHOLD``; each round trip checks the bytes (SHA-256) and that the stored
ETag is the one the engine verified (an md5 for one PUT, md5-of-part-md5s for multipart).
One daemon per test, many sizes per test: a failure names the size and the entry point.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient, ProgressEvent
from tests.support.engine import make_file, sha256
from tests.support.storage import register

MiB = 1 << 20
PART = 5 * MiB  # S3's smallest part: the cheapest multipart the server accepts


def expected_etag(path: Path, put_threshold: int, part: int) -> str:
    """What S3 stores: one PUT's md5 up to ``put_threshold``, else the multipart ETag."""
    data = path.read_bytes()
    if len(data) <= put_threshold:
        return hashlib.md5(data).hexdigest()
    md5s = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(md5s)}"


def around(*cuts: int) -> list[int]:
    return sorted({s for n in cuts for s in (n - 1, n, n + 1) if s >= 0})


def round_trips(c: PipeClient, tmp_path: Path, sizes: list[int], put_threshold: int, part: int,
                entry_points: tuple[str, ...] = ("upload", "fput", "put")) -> None:
    """Each size up by one entry point (upload, fput, put) and back by one (download, fget, get),
    both taken in turn (so every entry point meets every kind of size across the matrix at a
    third of the bytes moved)."""
    root = c.get_remote("store")["options"]["remotepath"].removeprefix("s3://").strip("/")
    bucket = c.datastore("store").get_bucket(root)  # the same keys as upload()'s, by the bucket API
    for i, size in enumerate(sizes):
        src = tmp_path / f"s-{size}.bin"
        digest = make_file(src, size, seed=size % 97)
        etag = expected_etag(src, put_threshold, part)
        how = entry_points[i % len(entry_points)]
        key = f"m/{how}-{size}.bin"
        where = f"{how} of {size} bytes"
        if how == "upload":
            events: list[ProgressEvent] = []
            c.upload(src, remote="store", key=key, on_progress=events.append)
            parts = 1 if size <= put_threshold else -(-size // part)
            # The last event names the last part started, and how many the file moves in.
            assert (events[-1].chunk_index, events[-1].chunk_count) == (parts - 1, parts), where
        elif how == "fput":
            bucket.fput(key, src)
        else:
            with open(src, "rb") as f:
                bucket.put(key, f, size)
        stat = c.call("object.stat", {"remote": "store", "key": key})
        assert (stat["size"], stat["etag"]) == (size, etag), where
        back = ("download", "fget", "get")[(i + i // 3) % 3]  # in turn too, shifted each round
        where = f"{how} / {back} of {size} bytes"
        if back == "get":
            assert hashlib.sha256(bucket.get(key).read()).hexdigest() == digest, where
        else:
            down = tmp_path / "down" / f"{how}-{size}.bin"
            if back == "download":
                c.download(remote="store", key=key, dest=down)
            else:
                down.parent.mkdir(exist_ok=True)
                assert bucket.fget(key, down).size == size, where
            assert sha256(down) == digest, where
            down.unlink()
        src.unlink()


@pytest.fixture
def s3_store(s3_spec: dict[str, Any]) -> dict[str, Any]:
    return s3_spec


def test_s3_default_settings_between_put_threshold_and_parallel(
        s3_store: dict[str, Any], client: PipeClient, tmp_path: Path) -> None:
    """The 8-16 MiB hole: default part size and put cut-off (8 MiB), PARALLEL_THRESHOLD 16 MiB."""
    register(client, s3_store)
    sizes = [8 * MiB, 8 * MiB + 1, 16 * MiB - 1, 16 * MiB + 1]
    round_trips(client, tmp_path, sizes, 8 * MiB, 8 * MiB, ("upload", "put", "fput", "upload"))


def test_s3_small_part_size(s3_store: dict[str, Any], client: PipeClient, tmp_path: Path) -> None:
    """5 MiB parts, put cut-off at the part size: 0, 1, N-1/N/N+1, 2 parts and a tail."""
    register(client, s3_store, part_size=PART, put_threshold=PART)
    round_trips(client, tmp_path, [0, 1, *around(PART), 2 * PART + 12345], PART, PART)


def test_s3_put_threshold_above_part_size(s3_store: dict[str, Any], client: PipeClient,
                                          tmp_path: Path) -> None:
    """One PUT up to 6 MiB, 5 MiB parts above it."""
    threshold = 6 * MiB
    register(client, s3_store, part_size=PART, put_threshold=threshold)
    round_trips(client, tmp_path, around(threshold), threshold, PART)


def test_s3_put_threshold_below_part_size(s3_store: dict[str, Any], client: PipeClient,
                                          tmp_path: Path) -> None:
    """Multipart from 1 MiB + 1 (a single, short part is a valid last part), 5 MiB parts."""
    threshold = 1 * MiB
    register(client, s3_store, part_size=PART, put_threshold=threshold)
    round_trips(client, tmp_path, [*around(threshold), PART + 1], threshold, PART)


def test_put_reads_a_stream_once(s3_store: dict[str, Any], client: PipeClient) -> None:
    """A stream bigger than the cut-off goes up as parts without being read twice."""
    register(client, s3_store, part_size=PART, put_threshold=PART)
    data = bytes(range(256)) * (PART // 256 * 2 + 7)
    bucket = client.datastore("store").get_bucket(s3_store["root"].strip("/"))
    bucket.put("stream.bin", io.BytesIO(data), len(data))
    assert bucket.get("stream.bin").read() == data
