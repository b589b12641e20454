"""Pull and push end to end through the daemon, on a local folder, moto S3 and OpenSSH sftp.

Changes "from elsewhere" are made straight on the storage, around the daemon.
"""

from __future__ import annotations

import pytest

from pipedaemon_sdk import ConflictError, PipeClient
from tests.support.pipes import Storage, bump

FILES = {"a.csv": "a\n1\n", "b.csv": "b\n2\n", "sub/c.csv": "c\n3\n",
         "README.md": "# Vendor data\nRead me.\n"}


def seed(st: Storage, files: dict[str, str] = FILES) -> None:
    for name, data in files.items():
        st.put(name, data)


def names(rows: list[dict]) -> list[str]:
    return sorted(r["filename"] for r in rows)


def test_pull_push_cycle(client: PipeClient, storage: Storage) -> None:
    seed(storage)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")

    preview = pipe.pull_preview()
    assert names(preview) == sorted(FILES) and {r["action"] for r in preview} == {"new"}
    assert not list(pipe.dirpath.glob("*")), "a preview moves nothing"

    first = pipe.pull()
    assert names(first) == sorted(FILES)
    assert all({"filename", "size", "modified_at", "action"} <= set(r) for r in first)
    assert first.docs == {"README.md": FILES["README.md"]}
    for name, data in FILES.items():
        assert (pipe.dirpath / name).read_text() == data
    assert pipe.pull() == [], "a second pull moves nothing"
    assert pipe.push() == [], "files just pulled are not pushed back"
    assert pipe.pull(cached=False) == [] and pipe.is_synced(cached=False)

    storage.put("b.csv", "b\n2\n22\n")  # changed elsewhere (another size: sftp keeps whole seconds)
    storage.put("d.csv", "d\n")
    moved = pipe.pull(cached=False)
    assert {r["filename"]: r["action"] for r in moved} == {"b.csv": "modified", "d.csv": "new"}
    assert (pipe.dirpath / "b.csv").read_text() == "b\n2\n22\n"
    assert moved.docs == {}, "README is shown on the first pull only"

    bump(pipe.dirpath / "a.csv", "a\n1\n11\n")
    (pipe.dirpath / "new" / "e.csv").parent.mkdir()
    (pipe.dirpath / "new" / "e.csv").write_text("e\n")
    planned = {r["filename"]: r["action"] for r in pipe.push_preview()}
    assert planned == {"a.csv": "modified", "new/e.csv": "new"}
    pushed = pipe.push()
    assert names(pushed) == ["a.csv", "new/e.csv"]
    assert storage.read("a.csv") == b"a\n1\n11\n" and storage.read("new/e.csv") == b"e\n"
    assert pipe.pull() == [] and pipe.push() == []
    assert pipe.pull(cached=False) == [], "our own upload is not seen as a remote change"
    assert "new/e.csv" in pipe.scan_remote(), "the daemon's writes reach the cached listing"
    assert pipe.is_synced(cached=False)


def test_local_edit_never_overwritten(client: PipeClient, storage: Storage) -> None:
    seed(storage)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    pipe.pull()
    local = pipe.dirpath / "a.csv"
    bump(local, "mine\n")
    storage.put("a.csv", "theirs, longer\n")
    storage.put("b.csv", "b changed only remotely\n")

    result = pipe.pull(cached=False)
    assert names(result) == ["b.csv"], "the other change still moves"
    assert names(result.conflicts) == ["a.csv"]
    assert local.read_text() == "mine\n"

    with pytest.raises(ConflictError) as exc:  # nothing else to move: the conflict is an error
        pipe.pull(cached=False)
    assert exc.value.code == 1006 and exc.value.data["conflicts"] == ["a.csv"]
    assert local.read_text() == "mine\n"
    with pytest.raises(ConflictError):  # forcing the file does not overwrite it
        pipe.pull(files=["a.csv"])
    pipe.setmode("all")  # nor does mode all, which moves every other file again
    everything = pipe.pull()
    assert "a.csv" not in names(everything) and names(everything.conflicts) == ["a.csv"]
    assert {r["action"] for r in everything} == {"forced"}
    assert local.read_text() == "mine\n"
    pipe.setmode("default")
    assert names(pipe.pull_preview().conflicts) == ["a.csv"]

    kept = pipe.pull(merge_mode="keep")
    assert kept == [] and names(kept.kept) == ["a.csv"] and local.read_text() == "mine\n"
    assert pipe.pull() == [], "a kept conflict stays quiet"
    assert names(pipe.push()) == ["a.csv"], "the kept local file is the newer version"
    assert storage.read("a.csv") == b"mine\n"

    bump(local, "mine again\n")
    storage.put("a.csv", "theirs again, longer\n")
    over = pipe.pull(cached=False, merge_mode="overwrite")
    assert [(r["filename"], r["action"]) for r in over] == [("a.csv", "overwrite")]
    assert local.read_text() == "theirs again, longer\n"
    assert pipe.is_synced(cached=False)


def test_push_conflict_keeps_remote_change(client: PipeClient, storage: Storage) -> None:
    seed(storage, {"a.csv": "a\n"})
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    pipe.pull()
    bump(pipe.dirpath / "a.csv", "local edit\n")
    storage.put("a.csv", "remote edit, longer\n")
    with pytest.raises(ConflictError):
        pipe.push(cached=False)
    assert storage.read("a.csv") == b"remote edit, longer\n"
    pushed = pipe.push(cached=False, merge_mode="overwrite")
    assert [r["action"] for r in pushed] == ["overwrite"]
    assert storage.read("a.csv") == b"local edit\n"


def test_child_pipe_sees_only_its_files(client: PipeClient, storage: Storage) -> None:
    seed(storage, {"dataA/daily1.csv": "1", "dataA/daily2.csv": "2", "dataA/monthly1.csv": "m",
                   "dataA/backup-daily.csv": "x", "dataB/reports1.xlsx": "r", "top.txt": "t"})
    client.upsert_pipe({"name": "vendor", "remote": "r"})
    client.upsert_pipe({"name": "daily", "parent": "vendor",
                        "options": {"dir": "dataA", "include": "daily*.csv", "exclude": "backup*"}})
    daily = client.pipe("daily")
    assert daily.scan_remote() == ["daily1.csv", "daily2.csv"]
    assert names(daily.pull()) == ["daily1.csv", "daily2.csv"]
    assert sorted(p.name for p in daily.dirpath.iterdir()) == ["daily1.csv", "daily2.csv"]
    (daily.dirpath / "daily3.csv").write_text("3")
    (daily.dirpath / "notes.txt").write_text("not part of the pipe")
    assert names(daily.push()) == ["daily3.csv"]
    assert storage.read("dataA/daily3.csv") == b"3"
    assert "notes.txt" not in "".join(storage.names())
    assert len(client.pipe("vendor").scan_remote()) == 7
