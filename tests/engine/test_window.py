"""The one in-flight window (pipedaemon/window.py): ranged reads and what a failure leaves.

Pure asyncio: the pieces are functions over an in-memory file, since what is tested is the
window's ordering, bounding and re-asking, not a storage (the SFTP suites drive it for real).
"""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from pipedaemon.window import Window, read_exact, read_range

DATA = bytes(range(256)) * 40  # 10240 bytes


def reader(limit: int, inflight: list[int], peak: list[int]):  # type: ignore[no-untyped-def]
    """A file that returns at most ``limit`` bytes per read (a server's packet limit)."""

    async def read(offset: int, n: int) -> bytes:
        inflight[0] += 1
        peak[0] = max(peak[0], inflight[0])
        await asyncio.sleep(0)
        inflight[0] -= 1
        return DATA[offset:offset + min(n, limit)]

    return read


async def collect(limit: int, start: int, end: int, piece: int, depth: int) -> tuple[bytes, int]:
    inflight, peak = [0], [0]
    got = b"".join([c async for c in read_range(reader(limit, inflight, peak), start, end, piece, depth)])
    return got, peak[0]


@pytest.mark.parametrize("limit", [999, 1000, 1001])  # short reads around the piece size
@pytest.mark.parametrize("end", [len(DATA) - 1, len(DATA), len(DATA) + 1])
def test_read_range_reasks_short_reads_in_order(limit: int, end: int) -> None:
    got, peak = asyncio.run(collect(limit, 7, end, 1000, 4))
    assert got == DATA[7:end]
    assert 1 <= peak <= 4


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_read_range_keeps_at_most_depth_in_flight(depth: int) -> None:
    got, peak = asyncio.run(collect(10**6, 0, len(DATA), 512, depth))
    assert got == DATA and peak == depth


def test_read_range_stops_where_the_file_ends_early() -> None:
    got, _ = asyncio.run(collect(10**6, 0, len(DATA) + 5000, 1000, 3))
    assert got == DATA  # the caller compares sizes


def test_read_exact_returns_what_exists_at_the_end() -> None:
    got = asyncio.run(read_exact(reader(3, [0], [0]), len(DATA) - 5, 10))
    assert got == DATA[-5:]


def test_a_failure_is_raised_as_itself_and_unstarted_pieces_never_warn() -> None:
    async def fail() -> None:
        raise KeyError("first")

    async def main() -> None:
        async with Window(1) as window:
            await window.submit(fail())
            await window.submit(asyncio.sleep(0))  # waits on the failed one: never started

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(KeyError, match="first"):
            asyncio.run(main())
        gc.collect()
    assert not [w for w in seen if "never awaited" in str(w.message)]
