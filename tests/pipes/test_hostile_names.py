"""Hostile storage names and links, against real servers: nothing is ever read or written
outside the pipe's folder.

test_pipes_bad.py holds ``..`` behind slashes and backslashes on S3 and a linked folder on
pull; this suite adds absolute keys, control characters and NUL where the server allows
them, overlong names, names differing only in case, the same attacks on SFTP, FTP and local
storage (files made on disk, around the daemon), and links in the pipe folder on push,
pull, delete and reset. Every case checks a canary folder next to the pipe folder: its
files keep their bytes and nothing new appears there.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import DaemonError, PipeClient, UnsafePathError
from tests.servers import BACKENDS, FTP_KINDS
from tests.support.pipes import Storage, storage_on

ABS = "/tmp/pd-hostile-absolute-name.csv"  # must never appear


class Canary:
    """A folder beside the pipe folder (the place a hostile name would reach) with a secret in it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.folder = tmp_path / "outside"
        self.folder.mkdir()
        self.secret = self.folder / "secret.txt"
        self.secret.write_bytes(b"canary-" + uuid.uuid4().hex.encode())
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, bytes]:
        """Every file under tmp_path except the pipe files themselves."""
        return {str(p.relative_to(self.tmp)): p.read_bytes() for p in self.tmp.rglob("*")
                if p.is_file() and not p.is_symlink() and "repo" not in p.relative_to(self.tmp).parts}

    def untouched(self) -> None:
        assert self.snapshot() == self.before, "a file outside the pipe folder was written"
        assert not Path(ABS).exists()


@pytest.fixture
def canary(tmp_path: Path) -> Canary:
    return Canary(tmp_path)


def storage(request: pytest.FixtureRequest, client: PipeClient, kind: str) -> Storage:
    st = storage_on(request, client, kind)
    client.upsert_pipe({"name": "p", "remote": "r"})
    return st


def refused_everywhere(client: PipeClient, evil: str) -> None:
    pipe = client.pipe("p")
    for attempt in (pipe.pull, pipe.pull_preview, pipe.scan_remote):
        with pytest.raises(UnsafePathError) as exc:
            attempt()
        assert exc.value.code == 1010 and evil in exc.value.data["paths"], exc.value.data
    assert not pipe.dirpath.exists() or not any(pipe.dirpath.rglob("*")), "nothing was pulled"


# -- names in listings --------------------------------------------------------------------------
# A newline is DISK_EVIL's (below): moto cannot store it in a key (PutObject answers 404).
S3_EVIL = [ABS, "/abs-only.csv", "tab\t.csv", "ctl\x01.csv", "a//b.csv",
           "./dot.csv", "sub/./x.csv", "n/" * 520 + "x.csv"]


@pytest.mark.parametrize("evil", S3_EVIL, ids=lambda e: repr(e)[:24])
def test_s3_names_refused(request: pytest.FixtureRequest, client: PipeClient, canary: Canary,
                          evil: str) -> None:
    st = storage(request, client, "s3")
    st.put("ok.csv", "fine")
    st.put(evil, "evil")  # written around the daemon, as a hostile writer would
    refused_everywhere(client, evil)
    canary.untouched()
    client.upsert_pipe({"name": "safe", "remote": "r", "options": {"include": "ok.csv"}})
    assert [r["filename"] for r in client.pipe("safe").pull()] == ["ok.csv"], "filtered out, the rest works"
    canary.untouched()


def test_s3_nul_in_a_key(request: pytest.FixtureRequest, client: PipeClient, canary: Canary) -> None:
    """S3 takes a NUL in a key; its XML listing cannot carry it. Either way: no crash, nothing written."""
    st = storage(request, client, "s3")
    st.put("ok.csv", "fine")
    st.put("nul\x00.csv", "evil")
    with pytest.raises(DaemonError) as exc:
        client.pipe("p").pull()
    assert exc.value.code in (1008, 1010), exc.value
    canary.untouched()


def test_case_only_differences_stay_apart(request: pytest.FixtureRequest, client: PipeClient,
                                          canary: Canary) -> None:
    st = storage(request, client, "s3")
    names = {"Data.csv": "upper", "data.csv": "lower", "DATA.CSV": "shout", "sub/X.csv": "x",
             "SUB/x.csv": "y"}
    for name, data in names.items():
        st.put(name, data)
    pipe = client.pipe("p")
    assert sorted(r["filename"] for r in pipe.pull()) == sorted(names)
    for name, data in names.items():
        assert (pipe.dirpath / name).read_text() == data
    canary.untouched()


def test_overlong_names(request: pytest.FixtureRequest, client: PipeClient, canary: Canary) -> None:
    """A 300-byte folder name fits S3 but no local file system: a clear error, nothing elsewhere."""
    st = storage(request, client, "s3")
    long_name = "L" * 300 + ".csv"
    st.put(long_name, "long")
    with pytest.raises(DaemonError) as exc:
        client.pipe("p").pull()
    assert exc.value.code == 1010 and "too long" in exc.value.message, exc.value.message
    canary.untouched()


DISK_EVIL = ["back\\..\\..\\slash.csv", "..\\up.csv", "new\nline.csv", "ctl\x01.csv", "dir\\..\\x.csv"]


@pytest.mark.parametrize("kind", [b for b in BACKENDS if b != "s3"])  # S3's names: the test above
def test_names_made_on_disk(request: pytest.FixtureRequest, client: PipeClient, canary: Canary,
                            kind: str) -> None:
    """Files whose names hide '..' behind backslashes or carry control characters, on each server."""
    st = storage(request, client, kind)
    st.put("ok.csv", "fine")
    evil = [e for e in DISK_EVIL if not (kind in FTP_KINDS and "\n" in e)]  # FTP listings are lines
    for name in evil:
        st.put(name, "evil")
    if kind == "pureftpd":  # pure-ftpd never lists a control character as it is: that name stays unseen
        evil = [e for e in evil if "\x01" not in e]
    pipe = client.pipe("p")
    with pytest.raises(UnsafePathError) as exc:
        pipe.pull()
    assert sorted(exc.value.data["paths"]) == sorted(evil)
    assert not pipe.dirpath.exists() or not any(pipe.dirpath.rglob("*"))
    canary.untouched()


# -- links in the pipe folder ------------------------------------------------------------------
@pytest.fixture
def local_pipe(request: pytest.FixtureRequest, client: PipeClient) -> tuple[Storage, Any]:
    st = storage(request, client, "local")
    st.put("real.csv", "real")
    pipe = client.pipe("p")
    assert [r["filename"] for r in pipe.pull()] == ["real.csv"]
    return st, pipe


def test_push_never_reads_through_a_link_out(local_pipe: tuple[Storage, Any], canary: Canary) -> None:
    st, pipe = local_pipe
    (pipe.dirpath / "leak.csv").symlink_to(canary.secret)
    with pytest.raises(UnsafePathError) as exc:
        pipe.push()
    assert exc.value.code == 1010
    assert "leak.csv" not in st.names()
    secret = canary.secret.read_bytes()
    assert all(secret not in st.read(n) for n in st.names()), "the secret left the machine"
    canary.untouched()


def test_push_skips_a_linked_folder(local_pipe: tuple[Storage, Any], canary: Canary) -> None:
    st, pipe = local_pipe
    (pipe.dirpath / "sub").symlink_to(canary.folder, target_is_directory=True)
    (pipe.dirpath / "mine.csv").write_text("mine")
    assert [r["filename"] for r in pipe.push()] == ["mine.csv"]  # linked folders are not entered
    assert st.names() == {"real.csv", "mine.csv"}
    canary.untouched()


def test_a_link_inside_the_pipe_folder_is_fine(local_pipe: tuple[Storage, Any], canary: Canary) -> None:
    st, pipe = local_pipe
    (pipe.dirpath / "alias.csv").symlink_to(pipe.dirpath / "real.csv")
    assert [r["filename"] for r in pipe.push()] == ["alias.csv"]
    assert st.read("alias.csv") == b"real"
    canary.untouched()


def test_pull_never_writes_through_a_link_out(client: PipeClient, local_pipe: tuple[Storage, Any],
                                              canary: Canary) -> None:
    """A changed file that is now a link out is a conflict; a new name waiting as a dangling
    link out (the plan sees no local file) is refused when the pull reaches it."""
    st, pipe = local_pipe
    (pipe.dirpath / "real.csv").unlink()
    (pipe.dirpath / "real.csv").symlink_to(canary.secret)
    st.put("real.csv", "a newer remote version, longer")
    with pytest.raises(DaemonError) as exc:
        client.pipe("p", mode="all").pull()
    assert exc.value.code == 1006, exc.value
    (pipe.dirpath / "real.csv").unlink()
    trap = canary.folder / "planted.txt"
    (pipe.dirpath / "new.csv").symlink_to(trap)
    st.put("new.csv", "new remote file")
    with pytest.raises(UnsafePathError):
        pipe.pull(files=["new.csv"], cached=False)
    assert not trap.exists()
    canary.untouched()


def test_deletes_never_follow_links_out(local_pipe: tuple[Storage, Any], canary: Canary) -> None:
    _st, pipe = local_pipe
    (pipe.dirpath / "leak.csv").symlink_to(canary.secret)
    (pipe.dirpath / "sub").symlink_to(canary.folder, target_is_directory=True)
    for delete in (lambda: pipe.delete_files_local(files=["leak.csv"], confirm=False),
                   lambda: pipe.reset(delete=True)):
        with pytest.raises(UnsafePathError):  # the name resolves outside the folder: refused whole
            delete()
    canary.untouched()
    assert (pipe.dirpath / "real.csv").exists(), "a refused reset deleted nothing"
