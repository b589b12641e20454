"""The hashing the daemon does, checked against a plain reference for any part size and chunking."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipedaemon.hashing import S3ETag, hash_path, multipart_etag
from tests.support.spine import s3etag


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=5000), part=st.integers(1, 2000), cuts=st.lists(st.integers(0, 5000)))
def test_s3etag_any_chunking(data: bytes, part: int, cuts: list[int]) -> None:
    h = S3ETag(part)
    last = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        h.update(data[last:cut])
        last = cut
    h.update(data[last:])
    assert h.hexdigest() == s3etag(data, part)


def test_multipart_etag() -> None:
    parts = [b"a" * 10, b"b" * 10, b"c" * 3]
    digests = [hashlib.md5(p).digest() for p in parts]
    assert multipart_etag(digests) == s3etag(b"".join(parts), 10)


@pytest.mark.parametrize("algorithm", ["md5", "sha256", "s3etag"])
def test_hash_path_reports_bytes(algorithm: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = bytes(range(256)) * 10_000
    path.write_bytes(data)
    seen: list[int] = []
    digest = hash_path(str(path), algorithm, 1 << 20, seen.append)
    want = s3etag(data, 1 << 20) if algorithm == "s3etag" else hashlib.new(algorithm, data).hexdigest()
    assert digest == want
    assert seen == sorted(seen) and seen[-1] == len(data)


def test_hash_path_stops_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(4 << 20))
    stop = threading.Event()
    stop.set()
    with pytest.raises(asyncio.CancelledError):
        hash_path(str(path), "md5", cancelled=stop)
