"""Every Pipe method through the daemon: modes, forced files, nrecent, filters, orphans, deletes,
reset, imports, progress and the asyncio client."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest

from pipedaemon_sdk import (
    AsyncPipeClient,
    Job,
    NotFoundError,
    PermissionDeniedError,
    PipeClient,
    ProgressEvent,
)
from tests.support.pipes import Storage, bump

T0 = 1_600_000_000  # whole seconds: every storage keeps them


def names(rows: list[dict]) -> list[str]:
    return sorted(r["filename"] for r in rows)


def pulled(client: PipeClient, st: Storage, files: dict[str, str], **settings: object) -> object:
    for i, (name, data) in enumerate(sorted(files.items())):
        st.put(name, data, mtime=T0 + i)
    client.upsert_pipe({"name": "p", "remote": "r", **settings})
    return client.pipe("p")


def test_modes_files_and_filters(client: PipeClient, storage: Storage) -> None:
    pipe = pulled(client, storage, {"a.csv": "a", "b.csv": "b", "c.xls": "c"})
    assert names(pipe.pull(files=["a.csv"])) == ["a.csv"], "files= takes only those"
    storage.put("a.csv", "a changed")
    storage.put("d.csv", "d")
    pipe.setmode("new")
    assert names(pipe.pull(cached=False)) == ["b.csv", "c.xls", "d.csv"], "new only: a.csv waits"
    pipe.setmode("mod")
    storage.put("e.csv", "e")
    assert [(r["filename"], r["action"]) for r in pipe.pull(cached=False)] == [("a.csv", "modified")]
    pipe.setmode("default")
    assert names(pipe.pull(include="*.xls|e*")) == ["e.csv"]
    pipe.setmode("all")
    everything = pipe.pull(exclude="*.xls")
    assert names(everything) == ["a.csv", "b.csv", "d.csv", "e.csv"]
    assert {r["action"] for r in everything} == {"forced"}
    pipe.setmode("default")
    assert names(pipe.pull(files=["b.csv"])) == ["b.csv"], "a forced file moves even when in sync"
    with pytest.raises(NotFoundError):
        pipe.pull(files=["nope.csv"])
    with pytest.raises(Exception) as exc:
        pipe.setmode("sometimes")
    assert getattr(exc.value, "code", None) == -32602
    for i, name in enumerate(["x1.csv", "x2.csv", "x3.csv"]):
        (pipe.dirpath / name).write_text(name)
        os.utime(pipe.dirpath / name, (T0 + 100 + i, T0 + 100 + i))
    assert names(pipe.push_preview(nrecent=2, include="x*")) == ["x2.csv", "x3.csv"]
    assert names(pipe.push(nrecent=-1, include="x*")) == ["x1.csv"]
    assert names(pipe.push_preview()) == ["x2.csv", "x3.csv"]


def test_pull_nrecent(client: PipeClient, mtime_storage: Storage) -> None:
    # S3 sets modification times itself: test_modes_files_and_filters covers nrecent there (push).
    pipe = pulled(client, mtime_storage, {"f1": "1", "f2": "2", "f3": "3", "f4": "4"})
    assert names(pipe.pull_preview(nrecent=2)) == ["f3", "f4"]
    assert names(pipe.pull(nrecent=-1)) == ["f1"]
    assert names(pipe.pull()) == ["f2", "f3", "f4"]


def test_progress_and_jobs(client: PipeClient, storage: Storage) -> None:
    files = {f"f{i}.bin": "x" * (1000 + i) for i in range(12)}
    pipe = pulled(client, storage, files)
    events: list[ProgressEvent] = []
    pipe.pull(on_progress=events.append)
    assert events and events[-1].bytes_done == events[-1].bytes_total == sum(len(v) for v in files.values())
    assert events[-1].file_count == 12 and events[-1].file_index == 12
    for name in files:
        bump(pipe.dirpath / name, "y")
    job = pipe.push(wait=False)
    assert isinstance(job, Job)
    info = job.wait()
    assert info.state == "succeeded" and len(info.result["files"]) == 12
    assert {j.kind for j in client.jobs()} >= {"pipe.pull", "pipe.push"}
    assert storage.read("f0.bin") == b"y"


def test_orphans(client: PipeClient, storage: Storage) -> None:
    pipe = pulled(client, storage, {"keep.csv": "k", "gone-remote.csv": "g"})
    pipe.pull()
    storage.delete("gone-remote.csv")
    (pipe.dirpath / "only-local.csv").write_text("l")
    storage.put("only-remote.csv", "r")
    listed = pipe.remove_orphans(direction="both", dryrun=True, cached=False)
    assert {(r["side"], r["filename"]) for r in listed} == {
        ("local", "gone-remote.csv"), ("local", "only-local.csv"), ("remote", "only-remote.csv")}
    assert (pipe.dirpath / "only-local.csv").exists(), "dryrun deletes nothing"
    with pytest.raises(PermissionDeniedError):  # dryrun=None asks, and there is no terminal here
        pipe.remove_orphans()
    assert (pipe.dirpath / "only-local.csv").exists()
    removed = pipe.remove_orphans(files=["only-local.csv"], direction="local", dryrun=False)
    assert names(removed) == ["only-local.csv"] and not (pipe.dirpath / "only-local.csv").exists()
    assert (pipe.dirpath / "gone-remote.csv").exists(), "files= limits what goes"
    assert names(pipe.remove_orphans(direction="remote", dryrun=False)) == ["only-remote.csv"]
    assert "only-remote.csv" not in storage.names()
    assert "keep.csv" in storage.names() and (pipe.dirpath / "keep.csv").exists()


def test_deletes_need_consent(client: PipeClient, storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = pulled(client, storage, {"a.csv": "a", "b.csv": "b", "sub/c.csv": "c"})
    pipe.pull()
    with pytest.raises(PermissionDeniedError) as exc:  # confirm=True without a terminal: refused
        pipe.delete_files_local()
    assert exc.value.data["reason"] == "no terminal"
    with pytest.raises(PermissionDeniedError):
        pipe.delete_files_remote()
    assert len(pipe.files()) == 3 and len(storage.names()) == 3

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Tty("n\n"))
    assert pipe.delete_files_local(["a.csv"]) == [] and (pipe.dirpath / "a.csv").exists()
    monkeypatch.setattr("sys.stdin", Tty("y\n"))
    assert names(pipe.delete_files_local(["a.csv"])) == ["a.csv"] and not (pipe.dirpath / "a.csv").exists()
    assert names(pipe.delete_files_remote(["b.csv"], confirm=False)) == ["b.csv"]
    assert storage.names() == {"a.csv", "sub/c.csv"}
    both = pipe.delete_files(["sub/c.csv"], confirm=False)
    assert {(r["side"], r["filename"]) for r in both} == {("local", "sub/c.csv"), ("remote", "sub/c.csv")}
    assert not (pipe.dirpath / "sub").exists(), "emptied folders go too"
    # Deleted remotely: gone for good; deleted locally only: the next pull brings it back.
    assert names(pipe.pull(cached=False)) == ["a.csv"]


def test_reset(client: PipeClient, storage: Storage) -> None:
    pipe = pulled(client, storage, {"a.csv": "a", "b.csv": "b"})
    pipe.pull()
    bump(pipe.dirpath / "a.csv", "edited")
    again = pipe.reset()
    assert names(again) == ["b.csv"] and names(again.conflicts) == ["a.csv"], "reset keeps local edits"
    assert (pipe.dirpath / "a.csv").read_text() == "edited"
    (pipe.dirpath / "stray.txt").write_text("s")
    fresh = pipe.reset(delete=True)
    assert names(fresh) == ["a.csv", "b.csv"] and (pipe.dirpath / "a.csv").read_text() == "a"
    assert not (pipe.dirpath / "stray.txt").exists()


def test_local_files_and_imports(client: PipeClient, local_storage: Storage, tmp_path: Path) -> None:
    pipe = pulled(client, local_storage, {"a.csv": "aaa", "b.txt": "b"})
    assert pipe.files() == [] and pipe.scan_local() == []
    pipe.pull()
    (pipe.dirpath / "later.csv").write_text("l")
    assert pipe.files() == ["a.csv", "b.txt", "later.csv"]
    assert pipe.files(fromdb=True) == ["a.csv", "b.txt"], "fromdb: only files synced before"
    assert pipe.files(include="*.csv", sortby="size") == ["later.csv", "a.csv"]
    assert pipe.filepaths(include="b*") == [pipe.dirpath / "b.txt"]
    assert pipe.filepaths(include="b*", aspathlib=False) == [str(pipe.dirpath / "b.txt")]
    rows = pipe.scan_local(attributes=True, files=["a.csv"])
    assert rows[0]["filename"] == "a.csv" and rows[0]["size"] == 3 and rows[0]["modified_at"] > 0

    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "x.csv").write_text("x")
    (src / "deep" / "y.csv").write_text("y")
    assert names(pipe.import_dir(src)) == ["deep/y.csv", "x.csv"]
    assert names(pipe.import_files([src / "x.csv"], subdir="in")) == ["in/x.csv"]
    assert names(pipe.import_file(src / "deep" / "y.csv", move=True)) == ["y.csv"]
    assert not (src / "deep" / "y.csv").exists(), "move=True moves"
    assert names(pipe.push()) == ["deep/y.csv", "in/x.csv", "later.csv", "x.csv", "y.csv"]
    with pytest.raises(NotFoundError):
        pipe.import_file(tmp_path / "nope.csv")


def test_async_client(client: PipeClient, local_storage: Storage) -> None:
    local_storage.put("a.csv", "a")
    client.upsert_pipe({"name": "p", "remote": "r"})

    async def main() -> None:
        async with AsyncPipeClient() as ac:
            pipe = await ac.pipe("p")
            assert pipe.dirpath == client.pipe("p").dirpath
            assert await pipe.scan_remote() == ["a.csv"]
            assert names(await pipe.pull_preview()) == ["a.csv"]
            assert names(await pipe.pull()) == ["a.csv"]
            assert await pipe.filepaths() == [pipe.dirpath / "a.csv"]
            assert await pipe.is_synced()
            assert names(await pipe.delete_files_local(confirm=False)) == ["a.csv"]
            with pytest.raises(PermissionDeniedError):
                await pipe.delete_files_remote()
            assert (await ac.get_profile_config())["profile"] == "default"

    asyncio.run(main())
