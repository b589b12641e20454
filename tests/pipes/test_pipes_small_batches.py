"""Small files moved in batches (transfer.batch, the SmallFiles capability of a local remote).

The batch boundary (BATCH_FILES - 1, BATCH_FILES, BATCH_FILES + 1 files) and the small-file
cut-off (INLINE_IO - 1, INLINE_IO, INLINE_IO + 1 bytes) through a pull and a push: every file
whole, with the source's mtime, recorded as it is, no temporary file left. A file vanished
mid-batch is skipped as before; one file failing in a batch loses none of the others.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipedaemon.transfer.batch import BATCH_FILES
from pipedaemon.transfer.common import INLINE_IO, is_temp
from pipedaemon_sdk import DaemonError, PipeClient
from tests.support.pipes import Storage, state_db


def _synced(pd_env: dict[str, Path], pipe: str) -> dict[str, tuple[int, int, int, float]]:
    with state_db(pd_env) as db:
        rows = db.execute("SELECT filename, local_size, local_mtime_ns, remote_size, remote_mtime "
                          "FROM sync_state WHERE pipe=?", (pipe,)).fetchall()
    return {n: (ls, lm, rs, rm) for n, ls, lm, rs, rm in rows}


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp(p.name)]


def _check_copies(pd_env: dict[str, Path], pipe: str, local: Path, remote: Path, names: set[str]) -> None:
    """Each file equal on both sides (bytes, mtime) and recorded as it is on both."""
    synced = _synced(pd_env, pipe)
    assert set(synced) == names
    for name in names:
        lo, re_ = (local / name).stat(), (remote / name).stat()
        assert (local / name).read_bytes() == (remote / name).read_bytes(), name
        assert lo.st_mtime == re_.st_mtime, name  # the source's mtime, set before the rename
        assert synced[name] == (lo.st_size, lo.st_mtime_ns, re_.st_size, re_.st_mtime), name
    assert _temps(local) == [] and _temps(remote) == []


def _spread(root: Path, files: dict[str, bytes], mtime: float = 1_600_000_000.0) -> None:
    for i, (name, data) in enumerate(sorted(files.items())):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (mtime + i, mtime + i + 0.25))


@pytest.mark.parametrize("n", [BATCH_FILES - 1, BATCH_FILES, BATCH_FILES + 1])
def test_pull_and_push_at_the_batch_boundary(client: PipeClient, local_storage: Storage,
                                             pd_env: dict[str, Path], n: int) -> None:
    files = {f"d{i % 3}/f{i:03d}.txt": b"x" * (i % 5) for i in range(n)}  # empty files too
    remote = Path(local_storage.root)
    _spread(remote, files)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    assert sorted(r["filename"] for r in pipe.pull()) == sorted(files)
    _check_copies(pd_env, "p", pipe.dirpath, remote, set(files))
    assert pipe.pull() == [] and pipe.pull(cached=False) == []

    client.upsert_pipe({"name": "q", "remote": "r", "options": {"dir": "up"}})
    q = client.pipe("q")
    _spread(q.dirpath, {name: data + b"y" for name, data in files.items()}, 1_500_000_000.0)
    assert sorted(r["filename"] for r in q.push()) == sorted(files)
    _check_copies(pd_env, "q", q.dirpath, remote / "up", set(files))
    assert q.push() == [] and q.push(cached=False) == []


@pytest.mark.parametrize("size", [INLINE_IO - 1, INLINE_IO, INLINE_IO + 1])
def test_pull_and_push_at_the_small_file_cut_off(client: PipeClient, local_storage: Storage,
                                                 pd_env: dict[str, Path], size: int) -> None:
    # The file at the cut-off between small ones: a batch ends before it (or takes it in).
    files = {"a.bin": b"a", "b.bin": bytes(range(256)) * (size // 256) + b"z" * (size % 256), "c.bin": b"c"}
    remote = Path(local_storage.root)
    _spread(remote, files)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    assert sorted(r["filename"] for r in pipe.pull()) == sorted(files)
    assert (pipe.dirpath / "b.bin").stat().st_size == size
    _check_copies(pd_env, "p", pipe.dirpath, remote, set(files))

    client.upsert_pipe({"name": "q", "remote": "r", "options": {"dir": "up"}})
    q = client.pipe("q")
    _spread(q.dirpath, {name: data[::-1] for name, data in files.items()}, 1_500_000_000.0)
    assert sorted(r["filename"] for r in q.push()) == sorted(files)
    _check_copies(pd_env, "q", q.dirpath, remote / "up", set(files))


def test_a_file_vanished_mid_batch_is_skipped(client: PipeClient, local_storage: Storage,
                                              pd_env: dict[str, Path]) -> None:
    n = BATCH_FILES + 1
    files = {f"f{i:03d}.txt": b"x" for i in range(n)}
    remote = Path(local_storage.root)
    _spread(remote, files)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    assert len(pipe.pull_preview()) == n  # the listing is cached now
    (remote / "f010.txt").unlink()  # behind the daemon's back: the plan still has it
    result = pipe.pull()
    assert sorted(r["filename"] for r in result) == sorted(set(files) - {"f010.txt"})
    assert [(r["filename"], r["action"]) for r in result.skipped] == [("f010.txt", "vanished")]
    _check_copies(pd_env, "p", pipe.dirpath, remote, set(files) - {"f010.txt"})

    client.upsert_pipe({"name": "q", "remote": "r", "options": {"dir": "up"}})
    q = client.pipe("q")
    _spread(q.dirpath, files)
    assert len(q.push_preview()) == n
    # A push scans the local folder again, so its plan lacks the file; one gone between the plan
    # and the read: test_send_small_publishes_what_is_unchanged.
    (q.dirpath / "f020.txt").unlink()
    result = q.push()
    assert sorted(r["filename"] for r in result) == sorted(set(files) - {"f020.txt"})
    _check_copies(pd_env, "q", q.dirpath, remote / "up", set(files) - {"f020.txt"})


def test_one_file_failing_in_a_batch_loses_none_of_the_others(client: PipeClient, local_storage: Storage,
                                                              pd_env: dict[str, Path]) -> None:
    files = {f"d{i}/f.txt": b"x" for i in range(10)}  # sorted: one batch, d5 in its middle
    remote = Path(local_storage.root)
    # Push: on the remote a file where folder d5 would be (the one-file way fails on it too).
    client.upsert_pipe({"name": "q", "remote": "r", "options": {"dir": "up"}})
    q = client.pipe("q")
    _spread(q.dirpath, files)
    (remote / "up").mkdir()
    (remote / "up" / "d5").write_bytes(b"in the way")
    with pytest.raises(DaemonError) as exc:
        q.push()
    assert "d5" in str(exc.value) + str(exc.value.data)
    others = set(files) - {"d5/f.txt"}
    assert (remote / "up" / "d5").read_bytes() == b"in the way"
    _check_copies(pd_env, "q", q.dirpath, remote / "up", others)

    # Pull: in the pipe's folder a file where folder d5 would be.
    _spread(remote / "down", files)
    client.upsert_pipe({"name": "p", "remote": "r", "options": {"dir": "down"}})
    pipe = client.pipe("p")
    pipe.dirpath.mkdir(parents=True)
    (pipe.dirpath / "d5").write_bytes(b"in the way")
    with pytest.raises(DaemonError) as exc:
        pipe.pull()
    assert "d5" in str(exc.value) + str(exc.value.data)
    assert (pipe.dirpath / "d5").read_bytes() == b"in the way"
    _check_copies(pd_env, "p", pipe.dirpath, remote / "down", others)
