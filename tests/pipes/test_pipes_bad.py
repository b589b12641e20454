"""Bad input and hostile storage: unsafe remote names, vanished files, unwritable folders,
deletes without consent, and a restarted daemon re-running pull jobs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pipedaemon_sdk import (
    InvalidSettingsError,
    NotFoundError,
    PermissionDeniedError,
    PipeClient,
    UnsafePathError,
)
from tests.support.pipes import Storage, restart, state_db
from tests.support.spine import wait_gone


def all_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("evil", ["pipe/../../x", "pipe\\..\\..\\x", "pipe/../../../../../tmp/x"])
def test_remote_name_escaping_the_pipe_folder(client: PipeClient, s3_storage: Storage, tmp_path: Path,
                                              evil: str) -> None:
    s3_storage.put("pipe/ok.csv", "fine")
    s3_storage.put(evil, "evil")  # created around the daemon, as a hostile writer would
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    before = all_files(tmp_path)
    for attempt in (pipe.pull, pipe.pull_preview, pipe.scan_remote):
        with pytest.raises(UnsafePathError) as exc:
            attempt()
        assert exc.value.code == 1010 and exc.value.data["paths"] == [evil]
    assert all_files(tmp_path) == before, "nothing written anywhere"
    assert not pipe.dirpath.exists()
    client.upsert_pipe({"name": "safe", "remote": "r", "options": {"include": "*.csv"}})
    assert client.pipe("safe").scan_remote() == ["pipe/ok.csv"], "a pipe whose filter skips the name works"


def test_local_link_out_of_the_pipe_folder(client: PipeClient, local_storage: Storage,
                                           tmp_path: Path) -> None:
    local_storage.put("sub/x.csv", "x")
    local_storage.put("y.csv", "y")
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    outside = tmp_path / "outside"
    outside.mkdir()
    pipe.dirpath.mkdir(parents=True)
    (pipe.dirpath / "sub").symlink_to(outside)  # a linked folder leading out of the pipe's folder
    with pytest.raises(UnsafePathError):
        pipe.pull()
    assert list(outside.iterdir()) == [], "nothing written through the link"


def test_file_deleted_between_preview_and_sync(client: PipeClient, local_storage: Storage) -> None:
    local_storage.put("r1.csv", "1")
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    pipe.pull()
    for name in ("a.csv", "b.csv"):
        (pipe.dirpath / name).write_text(name)
    assert [r["filename"] for r in pipe.push_preview()] == ["a.csv", "b.csv"]
    (pipe.dirpath / "a.csv").unlink()
    assert [r["filename"] for r in pipe.push()] == ["b.csv"], "the vanished file is simply not pushed"
    with pytest.raises(NotFoundError):
        pipe.push(files=["a.csv"])
    assert local_storage.names() == {"r1.csv", "b.csv"}

    (pipe.dirpath / "r1.csv").write_text("local edit")
    local_storage.put("r1.csv", "remote edit, longer")
    assert [r["filename"] for r in pipe.pull_preview(cached=False).conflicts] == ["r1.csv"]
    (pipe.dirpath / "r1.csv").unlink()  # the user gave up the edit before pulling
    assert [(r["filename"], r["action"]) for r in pipe.pull()] == [("r1.csv", "new")]
    assert (pipe.dirpath / "r1.csv").read_text() == "remote edit, longer"


def test_pull_into_a_folder_we_cannot_write(client: PipeClient, local_storage: Storage,
                                            tmp_path: Path) -> None:
    local_storage.put("a.csv", "a")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    # A file as parent stops root too (tests run as root in CI, where chmod stops nothing).
    client.update_profile_config({"filerepo": str(blocker / "repo")})
    client.upsert_pipe({"name": "p", "remote": "r"})
    with pytest.raises(PermissionDeniedError) as exc:
        client.pipe("p").pull()
    assert exc.value.code == 1005
    assert blocker.read_text() == "a file where a folder should be"
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        client.update_profile_config({"filerepo": str(locked)})
        with pytest.raises(PermissionDeniedError):
            client.pipe("p").pull()
        assert list(locked.iterdir()) == []
    client.update_profile_config({"filerepo": str(tmp_path / "repo")})
    assert [r["filename"] for r in client.pipe("p").pull()] == ["a.csv"], "the job failed cleanly"


def test_refusals(client: PipeClient, local_storage: Storage) -> None:
    local_storage.put("a.csv", "a")
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    pipe.pull()
    with pytest.raises(PermissionDeniedError):  # confirm=True, and stdin is no terminal under pytest
        pipe.delete_files()
    assert (pipe.dirpath / "a.csv").exists() and local_storage.names() == {"a.csv"}
    with pytest.raises(InvalidSettingsError):
        pipe.pull(include="a[")
    with pytest.raises(UnsafePathError):
        pipe.pull(files=["../outside.csv"])
    with pytest.raises(UnsafePathError):
        pipe.delete_files_local(files=["/etc/passwd"], confirm=False)
    with pytest.raises(NotFoundError):
        client.upsert_pipe({"name": "q", "parent": "missing"})
    with pytest.raises(NotFoundError):
        client.delete_pipe("missing")


def _insert_job(pd_env: dict[str, Path], job_id: str, params: dict, checkpoint: dict | None = None) -> None:
    """A pull job left 'running' by a daemon that died (as a kill -9 would leave it)."""
    base = {"profile": "default", "mode": "default", "files": None, "include": None, "exclude": None,
            "nrecent": 0, "merge_mode": None, "cached": True}
    with state_db(pd_env) as db:
        now = time.time()
        db.execute("INSERT INTO jobs(id, kind, profile, state, params, checkpoint, created_at, updated_at) "
                   "VALUES (?,?,?,?,?,?,?,?)",
                   (job_id, "pipe.pull", "default", "running", json.dumps({**base, **params}).encode(),
                    json.dumps(checkpoint).encode() if checkpoint else None, now, now))


def _stop(client: PipeClient) -> None:
    pid = client.status().pid
    client.shutdown()
    client.close()
    wait_gone(pid)


def test_restarted_daemon_reruns_pulls_idempotently(client: PipeClient, local_storage: Storage,
                                                    pd_env: dict[str, Path]) -> None:
    for name in ("a.csv", "b.csv", "c.csv"):
        local_storage.put(name, name)
    client.upsert_pipe({"name": "p", "remote": "r"})
    dirpath = client.pipe("p").dirpath

    _stop(client)
    _insert_job(pd_env, "resume00000001", {"name": "p"})
    client.connect()
    info = client.job("resume00000001").wait()
    assert sorted(r["filename"] for r in info.result["files"]) == ["a.csv", "b.csv", "c.csv"]

    _stop(client)  # the same job again, as if the daemon died after finishing but before recording it
    _insert_job(pd_env, "resume00000002", {"name": "p"})
    client.connect()
    assert client.job("resume00000002").wait().result["files"] == []

    # Mode all with a checkpoint: the files done before the stop are not moved again.
    _stop(client)
    done = {"filename": "a.csv", "size": 5, "modified_at": 0, "action": "forced"}
    _insert_job(pd_env, "resume00000003", {"name": "p", "mode": "all"}, {"done": [done]})
    stamp = (dirpath / "a.csv").stat().st_mtime_ns
    client.connect()
    files = client.job("resume00000003").wait().result["files"]
    assert [(r["filename"], r["action"]) for r in files] == [("a.csv", "forced"), ("b.csv", "forced"),
                                                             ("c.csv", "forced")]
    assert (dirpath / "a.csv").stat().st_mtime_ns == stamp

    # Downloaded, but the daemon died before recording it: recognised as equal, nothing moves.
    _stop(client)
    with state_db(pd_env) as db:
        db.execute("DELETE FROM sync_state")
    client.connect()
    pipe = client.pipe("p")
    assert pipe.pull() == [] and pipe.push() == [] and pipe.is_synced()
    restart(client)
    assert client.pipe("p").is_synced()
