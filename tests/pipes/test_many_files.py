"""Many files through every remote kind: thousands of small files in 100 folders (issue 15).

Behaviour only, never time or memory: a first push and a first pull move every file and
each file's bytes are exact; a no-op pull moves nothing and asks the storage for no file
(moto's access log: no GET or HEAD of an object; sftp-server's request log: no open and no
stat per file; pyftpdlib's log: no RETR); a change of a few files moves exactly those, both
ways. The tree is generated once for the module; each remote kind gets its own daemon.

In `make test` 10,000 files on a local folder and on SFTP, 2,000 on S3 and FTP (the suite's
15-minute budget on 2 cores; at 20,000 / 5,000 it ran 14.5 min), where every file is a
request to moto or a data connection to pyftpdlib whose own CPU (not the daemon's) would
dominate the suite's time. ``PD_MANY_FILES=20000`` runs every kind at 20,000.
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from pipedaemon_sdk import PipeClient
from tests.servers import sftp as sftp_servers
from tests.servers.ftp import FTPServer
from tests.servers.s3 import RequestLog, S3Server

N = 10_000
FOLDERS = 100
KINDS = ["local", "s3", "sftp", "ftp"]
_ALL = int(os.environ.get("PD_MANY_FILES", "0"))
SIZES = {kind: _ALL or size for kind, size in {"local": N, "sftp": N, "s3": 2_000, "ftp": 2_000}.items()}


def name_of(i: int) -> str:
    return f"d{i % FOLDERS:02d}/f{i:05d}.txt"


def body_of(i: int, version: int = 0) -> bytes:
    return f"{i}.{version}\n".encode() if version else f"{i}\n".encode()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The most files a kind needs, each holding its own number: made once for the module."""
    root = tmp_path_factory.mktemp("many")
    for k in range(FOLDERS):
        (root / f"d{k:02d}").mkdir()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(max(SIZES.values())):
        fd = os.open(root / name_of(i), flags, 0o644)
        try:
            os.write(fd, body_of(i))
        finally:
            os.close(fd)
    return root


@pytest.fixture(scope="module")
def logged_sshd(sftp_client_key: asyncssh.SSHKey) -> Iterator[tuple[sftp_servers.SSHDServer,
                                                                    sftp_servers.SftpLog]]:
    """An sshd of this module's own whose sftp-server logs every open and stat it serves."""
    base = Path(tempfile.mkdtemp(prefix="pd-sshd-many-", dir="/tmp"))
    try:
        server = sftp_servers.start_sshd(base, sftp_client_key)
        log = sftp_servers.log_requests(server)
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(base, ignore_errors=True)
        from tests.conftest import unavailable

        unavailable(f"cannot start sshd with a logging sftp-server: {exc}")
    try:
        yield server, log
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


class Remote:
    """One remote kind's storage, seen around the daemon: its files and the requests it served."""

    def __init__(self, kind: str, n: int, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.n = n
        self.s3: Any = None
        self.log: Any = None
        if kind == "sftp":
            server, self.log = request.getfixturevalue("logged_sshd")
            self.spec = sftp_servers.make_spec(server)
            self.disk: Path | None = Path(self.spec["root"])
        elif kind == "ftp":
            ftp: FTPServer = request.getfixturevalue("ftp_server")
            self.spec = ftp.spec()
            self.disk = ftp.root_dir / self.spec["root"].strip("/")
            self.ftp_log = ftp.root_dir.parent / "server.log"  # pyftpdlib logs each transfer there
        else:
            self.spec = request.getfixturevalue(f"{kind}_spec")
            self.disk = Path(self.spec["root"]) if kind == "local" else None
        if kind == "s3":
            server: S3Server = request.getfixturevalue("s3_server")
            self.s3 = request.getfixturevalue("s3_client")
            self.bucket = self.spec["root"].split("/")[0]
            self.log = RequestLog(server.log_path)
        self.reset()

    def settings(self) -> dict[str, Any]:
        return {"name": "r", "protocol": self.spec["protocol"], "options": self.spec["options"],
                "credentials": self.spec["credentials"]}

    # -- the files, read and changed directly ------------------------------------------
    def etags(self) -> dict[str, str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {o["Key"]: o["ETag"].strip('"') for p in pages for o in p.get("Contents", [])}

    def check_all(self, version: dict[int, int]) -> None:
        """The storage holds exactly the n files, each with its bytes (S3: their md5)."""
        want = {name_of(i): body_of(i, version.get(i, 0)) for i in range(self.n)}
        if self.kind == "s3":
            import hashlib

            assert self.etags() == {k: hashlib.md5(v).hexdigest() for k, v in want.items()}
        else:
            assert self.disk is not None
            assert read_tree(self.disk) == want

    def put(self, i: int, version: int) -> None:
        data = body_of(i, version)
        if self.kind == "s3":
            self.s3.put_object(Bucket=self.bucket, Key=name_of(i), Body=data)
            return
        assert self.disk is not None
        path = self.disk / name_of(i)
        path.write_bytes(data)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))  # surely newer

    # -- requests --------------------------------------------------------------------------
    def reset(self) -> None:
        if self.log is not None:
            self.log.reset()
        if self.kind == "ftp":
            self.ftp_start = self.ftp_log.stat().st_size

    def per_file_requests(self) -> collections.Counter[str]:
        """Requests about single files since ``reset``, by kind (zero for a listing alone)."""
        if self.kind == "s3":
            # Path-style: /bucket/key is an object, /bucket?list-type=2&... a listing.
            return collections.Counter(m for m, p in self.log.entries()
                                       if m in ("GET", "HEAD") and "/" in p.split("?")[0].strip("/"))
        if self.kind == "sftp":
            counts = self.log.counts()
            # A listing costs an opendir (and a stat or two) per folder; file requests are one per file.
            out = collections.Counter({k: counts[k] for k in ("open", "remove", "rename", "set")})
            stats = counts["stat"] + counts["lstat"]
            if stats >= self.n // 10:
                out["stat"] = stats
            return +out
        if self.kind == "ftp":
            with self.ftp_log.open("rb") as f:
                f.seek(self.ftp_start)
                text = f.read().decode("utf-8", "replace")
            return collections.Counter(w for line in text.splitlines() for w in ("RETR", "STOR", "DELE")
                                       if f"] {w} " in line)
        return collections.Counter()  # a local folder: nothing to count, only what moved


def read_tree(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def link_tree(src: Path, dst: Path, n: int) -> None:
    for k in range(FOLDERS):
        (dst / f"d{k:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        os.link(src / name_of(i), dst / name_of(i))


def moved(result: Any) -> list[str]:
    return sorted(r["filename"] for r in result)


@pytest.mark.timeout(1800)  # a loaded 2-core machine; the work is bounded by the file count alone
@pytest.mark.parametrize("kind", KINDS)
def test_many_files(kind: str, request: pytest.FixtureRequest, client: PipeClient, tree: Path) -> None:
    n = SIZES[kind]
    remote = Remote(kind, n, request)
    client.upsert_remote(remote.settings())
    client.upsert_pipe({"name": "up", "remote": "r"})
    client.upsert_pipe({"name": "down", "remote": "r"})
    up, down = client.pipe("up"), client.pipe("down")
    link_tree(tree, up.dirpath, n)  # hard links: the push reads them, nothing writes them

    # First push and first pull: every file, bytes exact on the storage and back on disk.
    pushed = up.push()
    assert pushed.summary["moved"] == n and len(pushed) == n
    remote.check_all({})
    pulled = down.pull(cached=False)
    assert pulled.summary["moved"] == n and len(pulled) == n
    assert read_tree(down.dirpath) == {name_of(i): body_of(i) for i in range(n)}

    # No-op pulls, from the cached listing and from a fresh one: nothing moves, no file is asked for.
    remote.reset()
    assert down.pull() == []
    assert down.pull(cached=False) == []
    assert down.pull_preview(cached=False) == []
    assert remote.per_file_requests() == collections.Counter()
    if kind == "s3":
        pages = sum(1 for m, p in remote.log.entries() if m == "GET" and "list-type=2" in p)
        assert 2 * (n // 1000) <= pages <= 2 * (n // 1000 + FOLDERS + 2), "one paged listing per fresh scan"

    # A few files change on the storage and one is new: a pull moves exactly those.
    changed = {7: 1, n // 2 + 45: 1, n - 1: 1}
    for i, v in changed.items():
        remote.put(i, v)
    extra = "d00/new.txt"
    if kind == "s3":
        remote.s3.put_object(Bucket=remote.bucket, Key=extra, Body=b"new\n")
    else:
        assert remote.disk is not None
        (remote.disk / extra).write_bytes(b"new\n")
    remote.reset()
    again = down.pull(cached=False)
    assert moved(again) == sorted([name_of(i) for i in changed] + [extra])
    for i, v in changed.items():
        assert (down.dirpath / name_of(i)).read_bytes() == body_of(i, v)
    assert (down.dirpath / extra).read_bytes() == b"new\n"
    if kind == "s3":
        assert remote.per_file_requests()["GET"] == len(changed) + 1  # the changed objects alone
    elif kind == "ftp":
        assert remote.per_file_requests() == collections.Counter({"RETR": len(changed) + 1})

    # And back: two local edits; a push sends exactly those two.
    edits = {3: 2, n - 2: 2}
    for i, v in edits.items():
        path = down.dirpath / name_of(i)
        path.write_bytes(body_of(i, v))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert moved(down.push()) == sorted(name_of(i) for i in edits)
    (down.dirpath / extra).unlink()  # the storage holds the n files and the extra one: drop it
    want = {**changed, **edits}
    if kind == "s3":
        remote.s3.delete_object(Bucket=remote.bucket, Key=extra)
    else:
        assert remote.disk is not None
        (remote.disk / extra).unlink()
    remote.check_all(want)
