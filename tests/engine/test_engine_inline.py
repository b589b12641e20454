"""Hashing downloads on the way in gives the same answer as hashing the file after."""

from __future__ import annotations

import hashlib
import os

import pytest

from pipedaemon.hashing import S3ETag
from pipedaemon.transfer.inline import InlineETag

MiB = 2**20


@pytest.mark.parametrize("size,part", [
    (0, 8 * MiB), (1, 8 * MiB), (20 * MiB + 3, 8 * MiB), (16 * MiB, 8 * MiB),
                                       (11 * MiB, 5 * MiB)])
def test_parts_fed_in_any_order_of_ranges_give_the_s3_etag(size: int, part: int) -> None:
    data = os.urandom(size)
    ref = S3ETag(part)
    ref.update(data)
    expected = ref.hexdigest()
    if "-" not in expected and size > part:
        pytest.fail("test data must be multipart when larger than a part")
    h = InlineETag(size, expected, part if "-" in expected else max(size, 1))
    # Ranges of two parts each, fed last range first, each in uneven pieces.
    span = 2 * h.part
    for start in reversed(range(0, max(size, 1), span)):
        chunk = data[start:start + span]
        for off in range(0, len(chunk), 700_001):
            h.feed(start + off, chunk[off:off + 700_001])
    assert h.result() == expected


def test_a_gap_makes_the_result_unknown_not_wrong() -> None:
    data = os.urandom(10 * MiB)
    h = InlineETag(len(data), hashlib.md5(data).hexdigest(), len(data))
    h.feed(0, data[:MiB])
    h.feed(2 * MiB, data[2 * MiB:])  # a MiB never fed
    assert h.result() is None


def test_damaged_bytes_give_a_different_etag() -> None:
    data = bytearray(os.urandom(3 * MiB))
    good = hashlib.md5(data).hexdigest()
    data[5] ^= 1
    h = InlineETag(len(data), good, len(data))
    h.feed(0, bytes(data))
    assert h.result() not in (None, good)
