"""A property of the data path: whatever the size and the remote's tuning, bytes round-trip.

Hypothesis draws a size (near the cut-offs, where the engine's choices change) together with
S3 settings (part size, put cut-off, write concurrency) and the user's chunk size, then
stores a file through ``upload`` and a one-pass stream through ``upload_stream`` (the engine
entry points every RPC uses) on the moto server, reads both back and checks the bytes and
that the stored ETag is the one the engine's own choice implies.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipedaemon.backends.base import backend_class
from pipedaemon.transfer import Tuning, upload, upload_stream

MiB = 1 << 20
PARTS = [5 * MiB, 6 * MiB]


@st.composite
def cases(draw: st.DrawFn) -> tuple[int, dict[str, int], int | None]:
    part = draw(st.sampled_from(PARTS))
    threshold = draw(st.sampled_from([0, MiB, part, part + MiB]))
    chunk = draw(st.sampled_from([None, 5 * MiB]))
    cut = draw(st.sampled_from([threshold, part, 2 * part, chunk or part]))
    size = max(0, cut + draw(st.integers(-1, 1)))
    concurrency = draw(st.integers(1, 3))
    return size, {"part_size": part, "put_threshold": threshold, "write_concurrency": concurrency}, chunk


def expected(data: bytes, threshold: int, part: int) -> str:
    if len(data) <= threshold:
        return hashlib.md5(data).hexdigest()
    md5s = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(md5s)}"


async def _pieces(data: bytes, step: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i:i + step]


async def _round_trip(spec: dict[str, Any], tmp: Path, size: int, options: dict[str, int],
                      chunk: int | None) -> None:
    backend = backend_class("s3")({**spec["options"], **options}, spec["credentials"], max_streams=4)
    await backend.connect()
    try:
        data = os.urandom(size)
        src = tmp / f"p-{size}.bin"
        src.write_bytes(data)
        part = chunk or options["part_size"]
        want = expected(data, options["put_threshold"], part)
        key = f"{spec['root']}prop/{size}-{options['part_size']}-{options['put_threshold']}-{chunk}"
        up = await upload(backend, src, key + ".file", lambda n: None, tuning=Tuning(chunk_size=chunk))
        streamed = await upload_stream(backend, _pieces(data, 777_777), key + ".stream", size,
                                       tuning=Tuning(chunk_size=chunk))
        for entry in (up, streamed):
            assert entry.size == size and entry.etag == want
            assert (await backend.stat(entry.name)).etag == want
            got = b"".join([c async for c in backend.read(entry.name)])
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            await backend.delete(entry.name)
    finally:
        await backend.close()


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
def test_any_size_with_any_tuning_round_trips(case: tuple[int, dict[str, int], int | None],
                                             s3_spec: dict[str, Any], tmp_path: Path) -> None:
    size, options, chunk = case
    asyncio.run(_round_trip(s3_spec, tmp_path, size, options, chunk))
