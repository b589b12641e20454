"""hash.file through the SDK: digests, progress, jobs that outlive clients and daemons."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from pipedaemon.jobs import DEFAULT_MAX_JOBS
from pipedaemon_sdk import (
    CancelledError,
    InvalidParamsError,
    JobInfo,
    NotFoundError,
    PipeClient,
    ProgressEvent,
)
from tests.support.spine import (
    Started,
    kill9,
    random_file,
    restart,
    s3etag,
    sparse_file,
    start_serve,
    wait_gone,
    zeros_digest,
)

MiB = 2**20
HUGE = 64 * 2**30  # sparse: hashing it takes minutes, so it is always running when we look


def db_state(home: Path, job_id: str) -> str:
    db = sqlite3.connect(home / "state.db")
    try:
        return db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
    finally:
        db.close()


def first_event(job: object) -> ProgressEvent:
    return next(iter(job.events()))  # type: ignore[attr-defined]


def test_hash_file_matches_hashlib(daemon: Started, tmp_path: Path) -> None:
    data_path = random_file(tmp_path / "r.bin", 3 * MiB + 123)
    data = data_path.read_bytes()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with PipeClient() as c:
        assert c.hash_file(data_path, algorithm="md5") == {"md5": hashlib.md5(data).hexdigest()}
        assert c.hash_file(data_path, algorithm="sha256") == {"sha256": hashlib.sha256(data).hexdigest()}
        # One part (the default 8 MiB) is the plain md5; parts of 1 MiB make 4 parts.
        assert c.hash_file(data_path, algorithm="s3etag") == {"s3etag": hashlib.md5(data).hexdigest()}
        multi = c.hash_file(data_path, algorithm="s3etag", part_size=MiB)["s3etag"]
        assert multi == s3etag(data, MiB)
        assert multi.endswith("-4")
        for algo in ("md5", "sha256"):
            assert c.hash_file(empty, algorithm=algo) == {algo: hashlib.new(algo, b"").hexdigest()}
        assert c.hash_file(empty, algorithm="s3etag") == {"s3etag": hashlib.md5(b"").hexdigest()}


@pytest.mark.parametrize("size,part", [(2 * MiB, MiB), (2 * MiB + 1, MiB), (MiB, MiB), (1, 1),
                                       (5 * 1000 + 7, 1000)])
def test_s3etag_part_boundaries(size: int, part: int, tmp_path: Path) -> None:
    path = random_file(tmp_path / "f", size, seed=size)
    with PipeClient() as c:
        assert c.hash_file(path, algorithm="s3etag", part_size=part) == {
            "s3etag": s3etag(path.read_bytes(), part)}


def test_hash_file_bad_input(tmp_path: Path) -> None:
    many = random_file(tmp_path / "many", 20_001)
    with PipeClient() as c:
        with pytest.raises(NotFoundError) as missing:
            c.hash_file(tmp_path / "nope")
        assert missing.value.data["path"] == str(tmp_path / "nope")
        with pytest.raises(InvalidParamsError) as folder:
            c.hash_file(tmp_path)
        assert folder.value.data["field"] == "path"
        with pytest.raises(InvalidParamsError) as parts:
            c.hash_file(many, algorithm="s3etag", part_size=1)  # more than 10,000 parts
        assert parts.value.data["field"] == "part_size"
        with pytest.raises(InvalidParamsError) as algo:
            c.hash_file(many, algorithm="crc32")
        assert algo.value.data["field"] == "algorithm"
        assert c.ping()["pong"] is True


def test_relative_path_is_the_callers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = random_file(tmp_path / "rel.bin", 1000)
    monkeypatch.chdir(tmp_path)
    with PipeClient() as c:
        assert c.hash_file("rel.bin", algorithm="md5") == {"md5": hashlib.md5(path.read_bytes()).hexdigest()}


def test_events_then_wait(daemon: Started, tmp_path: Path) -> None:
    size = 128 * MiB
    path = sparse_file(tmp_path / "sparse", size)
    with PipeClient() as c:
        started = time.monotonic()
        job = c.hash_file(path, algorithm="md5", wait=False)
        assert job.state in ("queued", "running")
        events = list(job.events())
        elapsed = time.monotonic() - started
        info = job.wait()
    assert events, "no progress events"
    # Throttled to one per 0.1 s, plus the first and the final one: a bound, not a speed test.
    assert len(events) <= elapsed / 0.1 + 2
    assert all(isinstance(e, ProgressEvent) and e.job_id == job.id for e in events)
    assert all(e.bytes_total == size and e.file_name == "sparse" for e in events)
    done = [e.bytes_done for e in events]
    assert done == sorted(done)
    assert done[-1] == size and events[-1].percent == 100.0
    assert isinstance(info, JobInfo) and info.state == "succeeded"
    assert info.result == {"md5": zeros_digest("md5", size)}
    assert info.progress is not None and info.progress.bytes_done == size


def test_on_progress_that_raises_breaks_nothing(tmp_path: Path) -> None:
    path = random_file(tmp_path / "f", 4 * MiB)
    calls: list[ProgressEvent] = []

    def boom(ev: ProgressEvent) -> None:
        calls.append(ev)
        raise RuntimeError("callback bug")

    with PipeClient() as c:
        result = c.hash_file(path, algorithm="sha256", on_progress=boom)
        assert result == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        assert calls and calls[-1].bytes_done == 4 * MiB
        assert c.ping()["pong"] is True
        assert c.hash_file(path, algorithm="md5", on_progress=boom)["md5"] == hashlib.md5(
            path.read_bytes()).hexdigest()


def test_job_survives_its_client(daemon: Started, tmp_path: Path) -> None:
    size = 256 * MiB
    path = sparse_file(tmp_path / "sparse", size)
    starter = PipeClient().connect()
    job = starter.hash_file(path, algorithm="md5", wait=False)
    starter.close()
    with PipeClient() as other:
        handle = other.job(job.id)
        assert handle.state in ("queued", "running", "succeeded")
        assert handle.wait().result == {"md5": zeros_digest("md5", size)}
        assert [j.id for j in other.jobs(state="succeeded")] == [job.id]


def test_cancel_from_another_client(daemon: Started, tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    with PipeClient() as a, PipeClient() as b:
        job = a.hash_file(path, algorithm="md5", wait=False)
        assert first_event(job).bytes_total == HUGE  # it runs
        assert b.jobs(state="running")[0].id == job.id
        info = b.cancel(job.id)
        assert info.state == "cancelled"
        assert info.error is not None and info.error.code == 1007
        with pytest.raises(CancelledError):
            job.wait()
        assert job.state == "cancelled"
        assert a.job(job.id).state == "cancelled"
        assert b.cancel(job.id).state == "cancelled"  # cancelling again is harmless
        assert a.status().jobs == {"queued": 0, "running": 0}


def test_job_cancel_method_of_the_handle(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    with PipeClient() as c:
        job = c.hash_file(path, algorithm="sha256", wait=False)
        first_event(job)
        assert job.cancel().state == "cancelled"
        with pytest.raises(CancelledError):
            job.wait()


def test_finished_job_answers_after_restart(daemon: Started, pd_env: dict[str, Path],
                                           tmp_path: Path) -> None:
    path = random_file(tmp_path / "f", MiB)
    with PipeClient() as c:
        job = c.hash_file(path, algorithm="sha256", wait=False)
        result = job.wait().result
        c.shutdown()
    wait_gone(daemon.pid)
    second = restart(daemon, pd_env)
    with PipeClient() as c:
        assert c.status().pid == second.pid != daemon.pid
        again = c.job(job.id)
        assert again.state == "succeeded"
        assert again.info.result == result == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        assert again.info.params["path"] == str(path)
        assert again.wait().result == result  # waiting on a finished job returns at once
        with pytest.raises(NotFoundError):
            c.job("0000000000000000")


def test_kill9_during_job_then_restart_resumes_it(pd_env: dict[str, Path], tmp_path: Path) -> None:
    size = 2**30
    path = sparse_file(tmp_path / "sparse1g", size)
    expected: dict[str, str] = {}
    worker = threading.Thread(target=lambda: expected.update(md5=zeros_digest("md5", size)))
    worker.start()
    first = start_serve(pd_env["socket"])
    with PipeClient() as c:
        job = c.hash_file(path, algorithm="md5", wait=False)
        assert first_event(job).bytes_total == size
        kill9(first.pid)
    assert db_state(pd_env["home"], job.id) == "running"  # killed mid-way
    with PipeClient() as c:  # a new daemon resumes the job
        assert c.status().pid != first.pid
        info = c.job(job.id).wait()
    worker.join()
    assert info.state == "succeeded"
    assert info.result == expected
    if first.proc is not None:
        first.proc.wait(10)


def test_graceful_stop_checkpoints_running_job(pd_env: dict[str, Path], tmp_path: Path) -> None:
    """SIGTERM: a job that cannot finish in the grace time goes back to queued and resumes."""
    path = sparse_file(tmp_path / "huge", HUGE)
    first = start_serve(pd_env["socket"])
    with PipeClient() as c:
        job = c.hash_file(path, algorithm="md5", wait=False)
        first_event(job)
    assert first.proc is not None
    first.proc.terminate()
    assert first.proc.wait(60) == 0
    assert db_state(pd_env["home"], job.id) == "queued"
    with PipeClient() as c:
        resumed = c.job(job.id)
        assert resumed.state in ("queued", "running")
        assert first_event(resumed).bytes_total == HUGE
        assert c.cancel(job.id).state == "cancelled"


def test_queued_job_can_be_cancelled_and_counts_add_up(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    limit = DEFAULT_MAX_JOBS
    with PipeClient() as c:
        jobs = [c.hash_file(path, algorithm="md5", wait=False) for _ in range(limit + 1)]
        for job in jobs[:limit]:
            first_event(job)  # as many run as the daemon allows ...
        last = jobs[limit]
        assert c.job(last.id).state == "queued"  # ... and one more waits for a slot
        assert c.status().jobs == {"queued": 1, "running": limit}
        assert c.cancel(last.id).state == "cancelled"
        with pytest.raises(CancelledError):
            last.wait()
        assert last.info.progress is None  # it never ran
        for job in jobs[:limit]:
            c.cancel(job.id)
        assert c.status().jobs == {"queued": 0, "running": 0}
        assert {j.state for j in c.jobs()} == {"cancelled"}


def test_job_that_fails_reports_its_error(tmp_path: Path) -> None:
    """A queued job whose file is gone when its turn comes fails with NotFound, and says so."""
    huge = sparse_file(tmp_path / "huge", HUGE)
    doomed = random_file(tmp_path / "doomed", 1000)
    limit = DEFAULT_MAX_JOBS
    with PipeClient() as c:
        blockers = [c.hash_file(huge, algorithm="md5", wait=False) for _ in range(limit)]
        for job in blockers:
            first_event(job)
        job = c.hash_file(doomed, algorithm="md5", wait=False)
        assert c.job(job.id).state == "queued"
        doomed.unlink()
        for b in blockers:
            c.cancel(b.id)
        with pytest.raises(NotFoundError) as err:
            job.wait()
        assert err.value.data["path"] == str(doomed)
        info = c.job(job.id).info
        assert info.state == "failed" and info.error is not None and info.error.code == 1001
        assert [j.id for j in c.jobs(state="failed")] == [job.id]
