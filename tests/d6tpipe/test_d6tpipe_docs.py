"""d6tpipe's documentation, run through pipedaemon_sdk.d6tpipe: the code blocks of its pull,
push, files, modes, filters, orphans, delete and reset sections against real S3 (moto), SFTP
(OpenSSH) and FTP (pyftpdlib) servers, asserting what d6tpipe documents.

Each block is quoted as a comment before the lines that run it. d6tpipe's ``APIClient()``
(its cloud API) is ``APILocal()`` here: the local mode, which is what pipedaemon runs.
Profiles, settings and credentials: tests/d6tpipe/test_d6tpipe_settings.py.
"""

from __future__ import annotations

import glob
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pipedaemon_sdk.d6tpipe as d6tpipe
from pipedaemon_sdk import ConflictError, DaemonError
from tests.servers import BACKENDS
from tests.servers.s3 import new_bucket_name

SEED = {"a.csv": "a,1\n", "b.csv": "b,2\n", "data1.csv": "d,1\n", "private1.xlsx": "x",
        "README.md": "# Vendor data\nread me", "LICENSE.md": "MIT-ish"}


class Far:
    """A d6tpipe pipe's remote folder on a real server, and a way around the daemon to change it."""

    def __init__(self, kind: str, settings: dict[str, Any], put: Callable[[str, bytes], None],
                 names: Callable[[], set[str]]) -> None:
        self.kind, self.settings, self._put, self.names = kind, settings, put, names

    def put(self, name: str, text: str) -> None:
        self._put(name, text.encode())


def _disk(root: Path, owner: tuple[int, int] | None = None) -> tuple[Callable[[str, bytes], None],
                                                                     Callable[[], set[str]]]:
    def put(name: str, data: bytes) -> None:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if owner:  # pure-ftpd works as its own uid
            for q in (p, *p.parents[:len(Path(name).parents) - 1]):
                os.chown(q, *owner)

    def names() -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    return put, names


def far_for(kind: str, request: pytest.FixtureRequest, name: str = "pipe-name") -> Far:
    """d6tpipe-style settings of a self-hosted pipe (location, options.remotepath, credentials)."""
    if kind == "s3":
        server, s3 = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_client")
        bucket = new_bucket_name("d6d")
        s3.create_bucket(Bucket=bucket)
        settings = {"name": name, "protocol": "s3", "location": bucket,
                    "options": {"remotepath": f"s3://{bucket}/", "endpoint_url": server.endpoint_url,
                                "region": server.region},
                    "credentials": {"key": server.aws_access_key_id, "secret": server.aws_secret_access_key}}

        def put(key: str, data: bytes) -> None:
            s3.put_object(Bucket=bucket, Key=key, Body=data)

        def names() -> set[str]:
            return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}

        return Far(kind, settings, put, names)
    if kind in ("sftp", "sftp_asyncssh"):
        server = request.getfixturevalue("sftp_server")
        folder = server.scratch / os.urandom(6).hex()
        folder.mkdir(parents=True)
        settings = {"name": name, "protocol": "sftp", "location": server.host,
                    "options": {"remotepath": f"{folder}/", "port": server.port,
                                "known_hosts": str(server.known_hosts)},
                    "credentials": {"username": server.username, "private_key": str(server.client_key)}}
        if kind == "sftp_asyncssh":
            settings["options"]["transport"] = "asyncssh"
        return Far(kind, settings, *_disk(folder))
    server = request.getfixturevalue(f"{kind}_server")  # ftp, ftps, pureftpd
    folder = server.scratch()
    settings = {"name": name, "protocol": "ftp", "location": server.host,
                "options": {"remotepath": folder, "port": server.port},
                "credentials": {"username": server.username, "password": server.password}}
    if server.cafile:
        settings["options"].update(tls=True, tls_cafile=server.cafile)
    return Far(kind, settings, *_disk(server.root_dir / folder.strip("/"), server.owner))


def answers(monkeypatch: pytest.MonkeyPatch, *replies: str) -> list[str]:
    """Answer d6tpipe's ``input()`` questions in turn; the questions asked."""
    asked: list[str] = []
    queue = list(replies)

    def fake(prompt: str = "") -> str:
        asked.append(prompt)
        return queue.pop(0)

    monkeypatch.setattr("builtins.input", fake)
    return asked


# d6tpipe's local mode is test_d6tpipe_equivalence.py's: here a pipe's far side is on a server.
@pytest.fixture(params=[b for b in BACKENDS if b != "local"])
def far(request: pytest.FixtureRequest, d6t_home: Path) -> Iterator[Far]:
    f = far_for(request.param, request)
    for name, text in SEED.items():
        f.put(name, text)
    yield f


def bigger(far: Far, name: str, text: str) -> None:
    """Change a remote file so that every storage sees it changed (a new size)."""
    far.put(name, text)


@pytest.mark.timeout(240)
def test_documented_tour(far: Far, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    # -- 4.4 Pull: connecting, scan_remote, pull_preview, pull ------------------------------------
    # api = d6tpipe.api.APIClient(); api.list_pipes(); pipe = d6tpipe.Pipe(api, 'pipe-name')
    api = d6tpipe.api.APILocal()
    response, data = d6tpipe.upsert_pipe(api, far.settings)
    assert response.status_code == 201 and data["name"] == "pipe-name"
    assert api.list_pipes() == ["pipe-name"]
    pipe = d6tpipe.Pipe(api, "pipe-name")
    assert "Successfully connected to pipe pipe-name" in capsys.readouterr().out
    # pipe.scan_remote() # show remote files
    assert pipe.scan_remote() == sorted(SEED)
    # pipe.pull_preview() # preview ; pipe.pull() # execute
    assert sorted(pipe.pull_preview()) == sorted(SEED)
    assert capsys.readouterr().out.strip() == "pulling: 0.00MB"
    assert not (pipe.dirpath / "a.csv").exists()
    assert sorted(pipe.pull()) == sorted(SEED)
    out = capsys.readouterr().out
    assert "pulling: 0.00MB" in out
    assert "############### README ###############\n# Vendor data\nread me" in out
    assert "############### LICENSE ###############\nMIT-ish" in out
    assert (pipe.dirpath / "b.csv").read_text() == "b,2\n"
    # "Only files that you don't have or that were modified are downloaded."
    assert pipe.pull() == []

    # -- Pull modes: default, new, mod, all --------------------------------------------------------
    bigger(far, "a.csv", "a,1\na,2\n")
    far.put("new.csv", "n\n")
    pipe.scan_remote(cached=False)
    assert d6tpipe.Pipe(api, "pipe-name", mode="new").pull_preview() == ["new.csv"]
    # d6tpipe 1.2.7's 'mod' never matches (it tests for 'modified'): here it does what its docs say
    assert d6tpipe.Pipe(api, "pipe-name", mode="mod").pull_preview() == ["a.csv"]
    assert pipe.pull_preview() == ["a.csv", "new.csv"]
    # pipe = d6tpipe.pipe.Pipe(api, 'test', mode='all'); pipe.pull() # pull all files
    every = sorted([*SEED, "new.csv"])
    assert sorted(d6tpipe.pipe.Pipe(api, "pipe-name", mode="all").pull()) == every
    assert (pipe.dirpath / "a.csv").read_text() == "a,1\na,2\n"
    # pipe.setmode('all') # dynamically changing mode
    pipe.setmode("all")
    assert sorted(pipe.pull_preview()) == every
    pipe.setmode("default")
    with pytest.raises(ValueError, match="Invalid mode"):
        pipe.setmode("everything")

    # -- Useful pipe operations: forced files, filters, is_synced ----------------------------------
    # pipe.pull(['a.csv']) # force pull on selected files
    assert pipe.pull(["a.csv"]) == ["a.csv"]
    # pipe.pull(include='*.csv',exclude='private*.xlsx') # apply file filters
    bigger(far, "b.csv", "b,2\nb,3\n")
    bigger(far, "private1.xlsx", "xx")
    pipe.scan_remote(cached=False)
    assert pipe.pull(include="*.csv", exclude="private*.xlsx") == ["b.csv"]
    # api.list_local_pipes(); pipe.files(); pipe.scan_remote(sortby='modified_at'); pipe.is_synced()
    assert api.list_local_pipes() == ["pipe-name"]
    assert sorted(pipe.files()) == every
    assert sorted(pipe.scan_remote(sortby="modified_at")) == every
    assert pipe.is_synced() is False  # private1.xlsx changed and was not pulled
    assert pipe.pull() == ["private1.xlsx"]
    assert pipe.is_synced() is True

    # -- 4.5 Read local files: dirpath, files(), scan_local(), filters, filepaths, PipeLocal -----
    assert isinstance(pipe.dirpath, Path) and pipe.dir == f"{pipe.dirpath}{os.sep}"
    assert pipe.files(sortby="mod")[-1] == "private1.xlsx"  # the newest file
    assert pipe.files(include="data*.csv") == ["data1.csv"]
    assert "private1.xlsx" not in pipe.files(exclude="*.xls|*.xlsx")
    assert pipe.filepaths(include="a*.csv") == [pipe.dirpath / "a.csv"]
    assert pipe.filepaths(include="a*.csv", aspathlib=False) == [str(pipe.dirpath / "a.csv")]
    (pipe.dirpath / "subdir").mkdir()
    (pipe.dirpath / "subdir" / "mine.csv").write_text("mine\n")  # df.to_csv(pipe.dirpath/'subdir/new.csv')
    assert "subdir/mine.csv" not in pipe.files()  # files(): synced files only
    assert "subdir/mine.csv" in pipe.files(fromdb=False) and "subdir/mine.csv" in pipe.scan_local()
    rows, names = pipe.scan_local(attributes=True)
    assert {"filename", "modified_at", "size", "crc"} <= set(rows[0]) and "subdir/mine.csv" in names
    # pipe = d6tpipe.PipeLocal('your-pipe')
    local = d6tpipe.PipeLocal("pipe-name")
    assert local.dirpath == pipe.dirpath and "a.csv" in local.files()
    assert "Operating in local mode" in capsys.readouterr().out

    # -- 4.6 Push: import_dir, import_files(move=True), push_preview, push -------------------------
    folder = tmp_path / "some" / "folder"
    (folder / "deep").mkdir(parents=True)
    (folder / "imp1.csv").write_text("i1\n")
    (folder / "deep" / "imp2.csv").write_text("i2\n")
    pipe.import_dir(str(folder))
    assert (pipe.dirpath / "deep" / "imp2.csv").read_text() == "i2\n"
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "moved.csv").write_text("m\n")
    monkeypatch.chdir(tmp_path)
    pipe.import_files(glob.iglob("loose/**/*.csv", recursive=True), move=True)
    assert not (loose / "moved.csv").exists() and (pipe.dirpath / "moved.csv").exists()
    todo = ["deep/imp2.csv", "imp1.csv", "moved.csv", "subdir/mine.csv"]
    assert pipe.push_preview() == todo
    assert "pushing: 0.00MB" in capsys.readouterr().out
    assert pipe.push() == todo
    assert set(todo) <= far.names()
    pipe._reset_credentials()  # "force renewal": nothing to renew, the daemon owns them
    # pipe.push(['a.csv']) # force push on selected files
    assert pipe.push(["a.csv"]) == ["a.csv"]
    # push(fromdb=True): only files synced before (here the edited b.csv, not a new file)
    (pipe.dirpath / "b.csv").write_text("b,2\nb,3\nedited here\n")
    (pipe.dirpath / "fresh.csv").write_text("f\n")
    assert pipe.push(dryrun=True, fromdb=True) == ["b.csv"]
    assert pipe.push(fromdb=True) == ["b.csv"]
    assert "fresh.csv" not in far.names()
    # pipe.push(include='*.csv',exclude='backup*.csv') # apply file filters
    (pipe.dirpath / "backup1.csv").write_text("bk\n")
    (pipe.dirpath / "z.csv").write_text("z\n")
    (pipe.dirpath / "z.txt").write_text("z\n")
    assert pipe.push(include="*.csv", exclude="backup*.csv") == ["fresh.csv", "z.csv"]
    assert "backup1.csv" not in far.names() and "z.txt" not in far.names()

    # A push while the remote has changes not pulled: PushError (d6tpipe's is_synced(israise=True))
    bigger(far, "data1.csv", "d,1\nd,2\n")
    with pytest.raises(d6tpipe.exceptions.PushError) as pe:
        pipe.push(cached=False)  # cached=False: the remote listed afresh before deciding
    assert isinstance(pe.value, ConflictError) and pe.value.code == 1006
    assert pipe.pull() == ["data1.csv"]
    assert pipe.push() == ["backup1.csv", "z.txt"]

    # Pull conflicts: changed on both sides. PullError; merge_mode keep / overwrite
    (pipe.dirpath / "a.csv").write_text("local edit, longer\n")
    bigger(far, "a.csv", "remote edit\n")
    pipe.scan_remote(cached=False)
    with pytest.raises(d6tpipe.exceptions.PullError):
        pipe.pull()
    assert pipe.pull(merge_mode="keep") == []
    assert (pipe.dirpath / "a.csv").read_text() == "local edit, longer\n"
    assert pipe.pull(["a.csv"], merge_mode="overwrite") == ["a.csv"]
    assert (pipe.dirpath / "a.csv").read_text() == "remote edit\n"

    # -- Orphans: remove_orphans('local'|'remote'|'both') ------------------------------------------
    (pipe.dirpath / "lonely.csv").write_text("l\n")
    far.put("stray.csv", "s\n")
    pipe.scan_remote(cached=False)
    with pytest.warns(UserWarning, match="dryrun active by default"):
        assert pipe.remove_orphans("local") == {"local": ["lonely.csv"], "remote": []}
    assert (pipe.dirpath / "lonely.csv").exists()  # a dry run unless dryrun=False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pipe.remove_orphans("remote") == {"local": [], "remote": ["stray.csv"]}
        assert pipe.remove_orphans("both") == {"local": ["lonely.csv"], "remote": ["stray.csv"]}
    assert pipe.remove_orphans("both", dryrun=False) == {"local": ["lonely.csv"], "remote": ["stray.csv"]}
    assert not (pipe.dirpath / "lonely.csv").exists() and "stray.csv" not in far.names()

    # -- Delete files ------------------------------------------------------------------------------
    # pipe.delete_files(files=['a.csv']) # delete a file locally and remotely
    asked = answers(monkeypatch, "y", "y")
    assert pipe.delete_files(files=["a.csv"]) == ["a.csv"]
    assert len(asked) == 2 and "a.csv" in asked[0]
    assert not (pipe.dirpath / "a.csv").exists() and "a.csv" not in far.names()
    answers(monkeypatch, "n")
    assert pipe.delete_files_remote() is None and "b.csv" in far.names()  # "n": nothing deleted
    # pipe.delete_files_local() # delete all local files: asked "(a/d)": d keeps files never synced
    (pipe.dirpath / "unsynced.csv").write_text("u\n")
    answers(monkeypatch, "y", "d")
    deleted = pipe.delete_files_local()
    assert "b.csv" in deleted and "unsynced.csv" not in deleted
    assert [p.name for p in pipe.dirpath.rglob("*") if p.is_file()] == ["unsynced.csv"]

    # -- Reset: pipe.reset() # will force pull all files; reset(delete=True) -----------------------
    remote_now = sorted(far.names())
    assert sorted(pipe.reset()) == remote_now
    assert "############### README ###############" in capsys.readouterr().out  # printed after reset too
    assert sorted(pipe.reset(delete=True)) == remote_now
    assert not (pipe.dirpath / "unsynced.csv").exists()
    # pipe.delete_files_remote() # delete all remote files
    far.put("late.csv", "arrived after the last listing\n")
    answers(monkeypatch, "y")
    assert sorted(pipe.delete_files_remote()) == sorted([*remote_now, "late.csv"])
    assert far.names() == set()
    # d6tpipe asks with input(); without a terminal the answer is no, never a hang
    monkeypatch.setattr("builtins.input", lambda prompt="": (_ for _ in ()).throw(EOFError()))
    with pytest.raises(d6tpipe.exceptions.PermissionDeniedError):
        pipe.delete_files_local()


def test_quiet_and_logger(d6t_home: Path, request: pytest.FixtureRequest,
                          capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    far = far_for("s3", request)
    far.put("README.md", "# hello")
    api = d6tpipe.api.APILocal()
    d6tpipe.upsert_pipe(api, far.settings)
    capsys.readouterr()
    quiet = d6tpipe.Pipe(api, "pipe-name", quiet=True)
    assert quiet.pull_preview() == ["README.md"]
    assert capsys.readouterr().out == ""
    logger = logging.getLogger("pipedaemon_sdk.d6tpipe")
    logger.setLevel(logging.WARNING)  # a logger above INFO silences the prints
    try:
        d6tpipe.Pipe(api, "pipe-name").pull_preview()
        assert capsys.readouterr().out == ""
        logger.setLevel(logging.INFO)
        handler = logging.Handler()
        seen: list[str] = []
        handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        logger.addHandler(handler)  # a handler of its own: log records instead of prints
        try:
            assert d6tpipe.Pipe(api, "pipe-name").pull() == ["README.md"]
        finally:
            logger.removeHandler(handler)
        assert capsys.readouterr().out == ""
        assert "pulling: 0.00MB" in seen and any("# hello" in m for m in seen)
    finally:
        logger.setLevel(logging.NOTSET)


def test_errors_are_d6tpipe_and_typed(d6t_home: Path, request: pytest.FixtureRequest,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from pipedaemon_sdk import AlreadyExistsError, InvalidSettingsError, MethodNotFoundError, NotFoundError

    # APIClient is d6tpipe's cloud API: a clear error naming the local mode
    with pytest.raises(d6tpipe.exceptions.LocalModeOnlyError, match="APILocal") as err:
        d6tpipe.api.APIClient()
    assert isinstance(err.value, InvalidSettingsError) and isinstance(err.value, NotImplementedError)
    api = d6tpipe.api.APILocal()
    with pytest.raises(d6tpipe.exceptions.PipeNotFoundError) as nf:
        d6tpipe.Pipe(api, "nope")
    assert isinstance(nf.value, NotFoundError) and isinstance(nf.value, OSError)
    # Register managed pipes: d6tpipe.upsert_pipe(api, {'name': 'your-pipe'}) -- here a pipe names storage
    with pytest.raises(InvalidSettingsError, match="needs a `remote`"):
        d6tpipe.upsert_pipe(api, {"name": "your-pipe"})
    far = far_for("s3", request)
    assert api.cnxn.pipes.post(far.settings)[0].status_code == 201
    with pytest.raises(d6tpipe.exceptions.ResourceExistsError) as ex:
        api.cnxn.pipes.post(far.settings)
    assert isinstance(ex.value, AlreadyExistsError)
    pipe = d6tpipe.Pipe(api, "pipe-name")
    with pytest.raises(ValueError, match="merge mode"):
        pipe.pull(merge_mode="sometimes")
    with pytest.raises(ValueError, match="direction"):
        pipe.remove_orphans(direction="sideways")
    pipe.role = "read"  # as a shared pipe's reader sees it
    with pytest.raises(d6tpipe.exceptions.ReadOnlyError, match="Read-only"):
        pipe.push()
    # upsert_permissions: the shared daemon's RPC (tests/sharing/test_sharing.py grants for real); this
    # per-user daemon serves its own user alone and says so
    settings = {"username": "another-user", "role": "read"}
    with pytest.raises(DaemonError, match="shared daemon") as per_user:
        d6tpipe.upsert_permissions(api, "pipe-name", settings)
    assert per_user.value.code == 1003

    def no_rpc(*a: Any) -> Any:
        raise MethodNotFoundError("method not found: pipe.upsert_permissions")

    monkeypatch.setattr(type(api.client), "upsert_permissions", no_rpc, raising=False)
    with pytest.raises(d6tpipe.exceptions.PermissionsUnavailableError) as pu:
        d6tpipe.upsert_permissions(api, "pipe-name", settings)
    assert isinstance(pu.value, MethodNotFoundError)
    granted: list[Any] = []
    monkeypatch.setattr(type(api.client), "upsert_permissions",
                        lambda self, name, s: granted.append((name, s)) or {"pipe": name, **s}, raising=False)
    response, data = d6tpipe.upsert_permissions(api, "pipe-name", settings)
    assert response.status_code == 201 and data["role"] == "read" and granted == [("pipe-name", settings)]


def test_module_is_light_and_errors_are_typed() -> None:
    import json
    import subprocess
    import sys

    from pipedaemon_sdk import errors as E

    heavy = ["aiobotocore", "botocore", "boto3", "asyncssh", "aioftp", "click", "asyncio", "aiosqlite",
             "pipedaemon", "yaml", "luigi", "tinydb", "tqdm", "d6tpipe", "d6tcollect"]
    code = ("import json, sys; import pipedaemon_sdk.d6tpipe as d6tpipe; "
            f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    X = d6tpipe.exceptions
    for cls, typed, code_ in ((X.PullError, E.ConflictError, 1006), (X.PushError, E.ConflictError, 1006),
                              (X.ResourceExistsError, E.AlreadyExistsError, 1002)):
        err = cls("boom", {"files": ["a.csv"]})
        assert isinstance(err, typed) and isinstance(err, E.DaemonError) and err.code == code_
        assert err.data == {"files": ["a.csv"]}


def test_less_travelled_calls(d6t_home: Path, request: pytest.FixtureRequest, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    far = far_for("s3", request)
    far.put("small.csv", "s")
    far.put("large.csv", "l" * 50)
    api = d6tpipe.api.APILocal(quiet=True)
    d6tpipe.upsert_pipe(api, far.settings)
    pipe = d6tpipe.Pipe(api, "pipe-name")
    assert pipe.quiet and pipe.pull() == ["large.csv", "small.csv"]
    assert pipe.files(sortby="size") == ["small.csv", "large.csv"]
    assert pipe.files(check_exists=False) == ["large.csv", "small.csv"]
    assert pipe.filepaths(aspath=False, include="s*") == ["small.csv"]
    with pytest.warns(UserWarning, match="does not exist"):
        rows, names = pipe.scan_local(files=["small.csv", "missing.csv"], attributes=True)
    assert [r["filename"] for r in rows] == ["small.csv"] and names == ["small.csv", "missing.csv"]
    with pytest.raises(d6tpipe.exceptions.LocalFileMissingError):
        pipe.scan_local(files=["missing.csv"], on_not_exist="raise")
    with pytest.raises(d6tpipe.exceptions.LocalFileMissingError) as missing:
        pipe.delete_files_local(files=["nope.csv"], confirm=False)
    assert isinstance(missing.value, FileNotFoundError)
    assert pipe.delete_files_local(files=["nope.csv", "small.csv"], confirm=False, ignore_errors=True) == [
        "small.csv"]
    one = tmp_path / "one.csv"
    one.write_text("1")
    assert pipe.import_file(str(one), subdir="in") == ["in/one.csv"]
    local = d6tpipe.PipeLocal("pipe-name", quiet=True)
    assert local.scan_local(fromdb=True) == ["in/one.csv", "large.csv"]  # no sync state without the daemon
    assert local.delete_files_local(files=["in/one.csv"], confirm=False) == ["in/one.csv"]
    with pytest.raises(d6tpipe.exceptions.LocalModeOnlyError):
        local.delete_files_remote(confirm=False)
    response, data = pipe.cnxnpipe.get()
    assert response.status_code == 200 and data["name"] == "pipe-name"
    # api.cnxn.pipes._('pipe-name').patch(request_body=...) / .put(...): top-level keys / all of them
    assert pipe.cnxnpipe.patch({"description": "d"})[1]["description"] == "d"
    assert api.cnxn.pipes._("pipe-name").patch({"schema": {"k": 1}})[1]["description"] == "d"
    put = api.cnxn.pipes._("pipe-name").put({**far.settings, "description": "only"})[1]
    assert put["description"] == "only" and "schema" not in put
    assert pipe.cnxnpipe.delete()[0].status_code == 204 and api.list_pipes() == []
    answers(monkeypatch, "n")
    api.wipe_all()  # "n": nothing happens
    assert Path(api.filerepo).exists()
    api.wipe_all(confirm=False)
    assert not Path(api.filerepo).exists()
