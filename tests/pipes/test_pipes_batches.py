"""Many-file pulls and pushes: sync state written in batches (one transaction each), the job's
result kept beside it, and progress coalesced (issue 15).

Batch boundaries (N-1, N, N+1 rows, for the writer and for a whole pull), a kill -9 in the middle
of a many-file pull (the state stays consistent: every recorded file is on disk as recorded, and
the re-run moves exactly the rest), and the final progress of a coalesced job (files done ==
total, bytes done == bytes total).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from pipedaemon.pipes.syncstate import BATCH_ROWS, StateWriter, SyncState
from pipedaemon.state import State
from pipedaemon_sdk import PipeClient
from tests.support.crash import integrity
from tests.support.engine import kill_daemon
from tests.support.pipes import Storage, state_db


def _fill(storage: Storage, n: int, folders: int = 10) -> set[str]:
    names = {f"d{i % folders}/f{i:05d}.txt" for i in range(n)}
    root = Path(storage.root)
    for d in range(min(n, folders)):
        (root / f"d{d}").mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(b"x")
    return names


def _synced(pd_env: dict[str, Path], pipe: str) -> dict[str, tuple[int, int]]:
    with state_db(pd_env) as db:
        rows = db.execute("SELECT filename, local_size, local_mtime_ns FROM sync_state WHERE pipe=?",
                          (pipe,)).fetchall()
    return {n: (s, m) for n, s, m in rows}


def _job_done_rows(pd_env: dict[str, Path]) -> int:
    with state_db(pd_env) as db:
        return int(db.execute("SELECT count(*) FROM pipe_job_done").fetchone()[0])


# -- the writer: one transaction per batch -------------------------------------------------------
@pytest.mark.parametrize("n", [BATCH_ROWS - 1, BATCH_ROWS, BATCH_ROWS + 1])
def test_writer_commits_whole_batches(tmp_path: Path, n: int) -> None:
    async def go() -> tuple[int, int, int, int, list[int]]:
        state = State(tmp_path / "state.db")
        await state.open()
        try:
            ss = SyncState(state)
            await ss.open()
            writer = StateWriter(ss, "default", "p", every_s=3600.0, job_id="job1")
            seen = []  # rows committed after each add
            for i in range(n):
                await writer.add((f"f{i}", 1, i, 1, float(i), None), (f"f{i}", 1, float(i), "new", None))
                seen.append(len(await ss.load("default", "p")))
            before_flush = len(await ss.load("default", "p"))
            before_done = len(await ss.job_done("job1"))
            await writer.flush()
            return before_flush, before_done, len(await ss.load("default", "p")), \
                len(await ss.job_done("job1")), seen
        finally:
            await state.close()

    before, before_done, after, after_done, seen = asyncio.run(go())
    whole = (n // BATCH_ROWS) * BATCH_ROWS
    assert before == before_done == whole  # only whole batches are written before the flush
    assert after == after_done == n  # the rest at the flush; state and result rows together
    # Nothing is written between batches: the count moves only at a batch boundary.
    assert all(c == (i + 1) // BATCH_ROWS * BATCH_ROWS for i, c in enumerate(seen))


# -- a whole pull at the boundaries ----------------------------------------------------------
@pytest.mark.parametrize("n", [BATCH_ROWS - 1, BATCH_ROWS, BATCH_ROWS + 1])
def test_pull_and_push_at_batch_boundaries(client: PipeClient, local_storage: Storage,
                                           pd_env: dict[str, Path], n: int) -> None:
    names = _fill(local_storage, n)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    moved = pipe.pull()
    assert sorted(r["filename"] for r in moved) == sorted(names)
    assert {r["action"] for r in moved} == {"new"} and all(r["size"] == 1 for r in moved)
    synced = _synced(pd_env, "p")
    assert set(synced) == names
    for name in names:  # recorded as the file is on disk
        st = (pipe.dirpath / name).stat()
        assert synced[name] == (st.st_size, st.st_mtime_ns)
    assert _job_done_rows(pd_env) == 0  # the finished job's rows are its result now
    assert pipe.pull() == [] and pipe.pull(cached=False) == []

    # Push the same number of new local files (a second folder on the same remote).
    client.upsert_pipe({"name": "q", "remote": "r", "options": {"dir": "up"}})
    q = client.pipe("q")
    for name in names:
        (q.dirpath / name).parent.mkdir(parents=True, exist_ok=True)
        (q.dirpath / name).write_bytes(b"yy")
    pushed = q.push()
    assert sorted(r["filename"] for r in pushed) == sorted(names)
    assert set(_synced(pd_env, "q")) == names
    assert {Path(local_storage.root, "up", name).read_bytes() for name in names} == {b"yy"}
    assert q.push() == [] and q.push(cached=False) == []


# -- kill -9 in the middle of a many-file pull -----------------------------------------------
def test_kill9_mid_pull_leaves_consistent_state_and_rerun_moves_exactly_the_rest(
        client: PipeClient, local_storage: Storage, pd_env: dict[str, Path]) -> None:
    # Enough files that the kill lands mid-pull: small files move in batches, thousands a
    # second on a quiet machine (3,500 were all done before the first poll saw a batch).
    n = 12 * BATCH_ROWS + 500
    names = _fill(local_storage, n)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    job = pipe.pull(wait=False)
    deadline = time.monotonic() + 300
    while True:  # until more than one batch is recorded, and the job still runs
        info = client.job(job.id).refresh()
        assert info.state in ("queued", "running"), (info.state, info.error)
        if len(_synced(pd_env, "p")) > BATCH_ROWS:
            break
        assert time.monotonic() < deadline, "the pull never recorded a batch"
        time.sleep(0.01)
    kill_daemon(client)

    assert integrity(pd_env["home"]) == "ok"
    before = _synced(pd_env, "p")
    assert BATCH_ROWS <= len(before) < n
    inodes = {}
    for name, (size, mtime_ns) in before.items():  # every recorded file is on disk as recorded
        st = (pipe.dirpath / name).stat()
        assert (st.st_size, st.st_mtime_ns) == (size, mtime_ns)
        inodes[name] = st.st_ino  # a file written again is a new file renamed over it
    with state_db(pd_env) as db:  # the job's result rows went in the same transactions
        done = {r[0] for r in db.execute("SELECT filename FROM pipe_job_done WHERE job_id=?", (job.id,))}
    assert done == set(before)

    client.connect()  # a new daemon resumes the job
    info = client.job(job.id).wait()
    assert info.state == "succeeded", info.error
    files = [r["filename"] for r in info.result["files"]]
    # The result lists what the job moved in both runs, each file once: those recorded before
    # the kill first; the files that landed unrecorded are recognised as equal and only adopted.
    assert len(files) == len(set(files)) == info.result["summary"]["moved"]
    assert set(files[:len(before)]) == set(before)
    assert info.result["summary"]["moved"] + info.result["summary"]["adopted"] == n
    assert set(files) | set(before) <= names
    for name, ino in inodes.items():  # nothing recorded before the kill moved again
        assert (pipe.dirpath / name).stat().st_ino == ino
    assert set(_synced(pd_env, "p")) == names
    assert {p.relative_to(pipe.dirpath).as_posix() for p in pipe.dirpath.rglob("*") if p.is_file()} == names
    assert all((pipe.dirpath / name).read_bytes() == b"x" for name in names)
    assert _job_done_rows(pd_env) == 0
    assert pipe.pull() == []


def test_mode_all_rerun_lists_what_the_killed_daemon_moved(client: PipeClient, local_storage: Storage,
                                                           pd_env: dict[str, Path]) -> None:
    """The result of a re-run job lists every file the job moved, those the killed daemon moved
    too (read back from the rows kept beside the sync state), each once, none moved twice."""
    n = 2 * BATCH_ROWS + 300
    names = _fill(local_storage, n)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    assert len(pipe.pull()) == n
    pipe.setmode("all")  # every file again
    # Slowed to ~5 s (small files batched moved all of it between two looks at the job's rows).
    client.update_profile_config({"bwlimit_bps": 500})
    job = pipe.pull(wait=False)
    deadline = time.monotonic() + 300
    while True:
        info = client.job(job.id).refresh()
        assert info.state in ("queued", "running"), (info.state, info.error)
        with state_db(pd_env) as db:
            done = {r[0]: r[1] for r in db.execute(
                "SELECT filename, action FROM pipe_job_done WHERE job_id=?", (job.id,))}
        if len(done) > BATCH_ROWS:
            break
        assert time.monotonic() < deadline, "the pull never recorded a batch"
        time.sleep(0.01)
    stamps: dict[str, int] = {}
    kill_daemon(client)
    with state_db(pd_env) as db:
        done = {r[0] for r in db.execute("SELECT filename FROM pipe_job_done WHERE job_id=?", (job.id,))}
    for name in done:  # a file written again is a new file renamed over it
        stamps[name] = (pipe.dirpath / name).stat().st_ino

    client.connect()
    info = client.job(job.id).wait()
    assert info.state == "succeeded", info.error
    files = [r["filename"] for r in info.result["files"]]
    assert sorted(files) == sorted(names)  # each once: those of the killed daemon and the rest
    assert {r["action"] for r in info.result["files"]} == {"forced"}
    for name in done:  # not moved again by the new daemon
        assert (pipe.dirpath / name).stat().st_ino == stamps[name]
    assert _job_done_rows(pd_env) == 0


def test_coalesced_progress_ends_at_every_file(client: PipeClient, local_storage: Storage) -> None:
    n = BATCH_ROWS + 700
    _fill(local_storage, n)
    client.upsert_pipe({"name": "p", "remote": "r"})
    events: list[tuple[int, int, int, int | None]] = []
    job = client.pipe("p").pull(wait=False)
    info = job.wait(on_progress=lambda ev: events.append(
        (ev.file_index, ev.file_count, ev.bytes_done, ev.bytes_total)))
    assert info.state == "succeeded", info.error
    assert len(info.result["files"]) == n
    final = info.progress
    assert final is not None
    assert (final.file_index, final.file_count) == (n, n)
    assert (final.bytes_done, final.bytes_total) == (n, n)
    assert final.running == []
    assert events and events[-1][:2] == (n, n)  # the watcher's last event is the exact one
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(events))  # files done never goes back
