"""The local backend's SmallFiles capability, and the engine's batches over it (transfer.batch):
each file of a batch gets its own result, a failure never costs the others, nothing is left
half-written under a final name or under a temporary one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipedaemon.backends.base import Entry, SmallPut
from pipedaemon.backends.local import LocalBackend
from pipedaemon.transfer import Tuning, batch
from pipedaemon.transfer.batch import BATCH_BYTES, BATCH_FILES, batches
from pipedaemon.transfer.common import INLINE_IO, is_temp, temp_name
from pipedaemon_sdk.errors import NotFoundError, StorageError


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp(p.name)]


# -- where batches end -------------------------------------------------------------------------
@pytest.mark.parametrize("n", [BATCH_FILES - 1, BATCH_FILES, BATCH_FILES + 1])
def test_batches_hold_at_most_batch_files(n: int) -> None:
    expected = {BATCH_FILES - 1: [(0, n)], BATCH_FILES: [(0, n)],
                BATCH_FILES + 1: [(0, BATCH_FILES), (BATCH_FILES, n)]}[n]
    assert batches([1] * n) == expected


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_batches_hold_at_most_batch_bytes(extra: int) -> None:
    k = BATCH_BYTES // INLINE_IO
    sizes = [INLINE_IO] * (k - 1) + [INLINE_IO + extra]  # BATCH_BYTES + extra bytes in all
    assert batches(sizes) == ([(0, k)] if extra <= 0 else [(0, k - 1), (k - 1, k)])


def test_one_file_alone_may_exceed_batch_bytes() -> None:
    assert batches([BATCH_BYTES + 1, 1]) == [(0, 1), (1, 2)]
    assert batches([]) == []


# -- the capability ---------------------------------------------------------------------------
async def test_read_small_gives_each_file_its_own_result(local: tuple[LocalBackend, Path]) -> None:
    b, root = local
    (root / "a").write_bytes(b"abc")
    (root / "empty").write_bytes(b"")
    (root / "grew").write_bytes(b"now longer")
    got = await b.read_small([("a", 3), ("missing", 1), ("empty", 0), ("grew", 0), ("a", 2), ("a", 5)])
    assert got[0] == b"abc"
    assert isinstance(got[1], NotFoundError) and got[1].data["path"] == "missing"
    assert got[2] == b"" and got[3] == b"n"  # planned empty: one byte shows it grew
    assert got[4] == b"ab" and got[5] == b"abc"  # at most size; shorter when the file is


async def test_put_small_one_failure_costs_none_of_the_others(local: tuple[LocalBackend, Path]) -> None:
    b, root = local
    (root / "blocked").write_bytes(b"a file where a folder should be")
    dsts = [f"d{i}/f" if i != 2 else "blocked/f" for i in range(5)]
    items = [SmallPut(temp_name(d, "job1"), d, b"data%d" % i, 1_600_000_000.5 + i)
             for i, d in enumerate(dsts)]
    got = await b.put_small(items)
    assert isinstance(got[2], StorageError) and got[2].data["path"] == "blocked/f"
    for i in (0, 1, 3, 4):
        entry = got[i]
        assert isinstance(entry, Entry) and entry.name == f"d{i}/f" and entry.size == 5
        st = (root / f"d{i}" / "f").stat()
        assert (root / f"d{i}" / "f").read_bytes() == b"data%d" % i
        assert st.st_mtime == entry.mtime == 1_600_000_000.5 + i
    assert (root / "blocked").read_bytes() == b"a file where a folder should be"
    assert _temps(root) == []


async def test_put_small_replaces_and_never_makes_a_missing_root(tmp_path: Path) -> None:
    b = LocalBackend({"remotepath": str(tmp_path / "root")}, {}, max_streams=4)
    (tmp_path / "root").mkdir()
    await b.connect()
    (tmp_path / "root" / "x").write_bytes(b"old")
    assert isinstance((await b.put_small([SmallPut(temp_name("x"), "x", b"new", None)]))[0], Entry)
    assert (tmp_path / "root" / "x").read_bytes() == b"new"
    (tmp_path / "root" / "x").unlink()
    (tmp_path / "root").rmdir()  # unmounted, say
    with pytest.raises(NotFoundError) as exc:
        await b.put_small([SmallPut(temp_name("y"), "y", b"y", None)])
    assert exc.value.data["field"] == "remotepath"
    assert not (tmp_path / "root").exists()


# -- the engine's batches over it ----------------------------------------------------------------
async def test_send_small_publishes_what_is_unchanged(local: tuple[LocalBackend, Path],
                                                      tmp_path: Path) -> None:
    b, root = local
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "gone", "changed", "b"):
        (src / name).write_bytes(name.encode())
    stats = {name: os.stat(src / name) for name in ("a", "gone", "changed", "b")}
    (src / "gone").unlink()  # vanished after the plan
    (src / "changed").write_bytes(b"changed meanwhile")  # grew after the plan
    small = batch.batchable(b, Tuning())
    assert small is not None
    items = [(src / n, stats[n], f"up/{n}") for n in ("a", "gone", "changed", "b")]
    got = await batch.send_small(b, small, items, Tuning(), "job1")
    assert [e is not None for e in got] == [True, False, False, True]
    assert {p.name for p in (root / "up").iterdir()} == {"a", "b"}
    assert (root / "up" / "a").stat().st_mtime == stats["a"].st_mtime
    assert _temps(root) == []


async def test_fetch_small_stores_what_matches(local: tuple[LocalBackend, Path], tmp_path: Path) -> None:
    b, root = local
    for name in ("a", "short", "b"):
        (root / name).write_bytes(b"xx")
    dest = tmp_path / "dest"
    dest.mkdir()
    items = [(n, Entry(name=n, size=size, mtime=1_600_000_000.0), dest / n)
             for n, size in (("a", 2), ("gone", 2), ("short", 3), ("b", 2))]
    got = await batch.fetch_small(b.features.small_files, items, Tuning(), "job1")  # type: ignore[arg-type]
    assert [st is not None for st in got] == [True, False, False, True]
    assert {p.name for p in dest.iterdir()} == {"a", "b"}
    assert got[0] is not None and got[0].st_mtime == 1_600_000_000.0 == (dest / "a").stat().st_mtime
    assert _temps(dest) == []


def test_limited_tuning_moves_files_one_by_one(local_spec: dict[str, Any]) -> None:
    from pipedaemon.transfer import TokenBucket

    b = LocalBackend(local_spec["options"], local_spec["credentials"], max_streams=4)
    assert batch.batchable(b, Tuning()) is not None
    assert batch.batchable(b, Tuning(bucket=TokenBucket(1 << 20))) is None
