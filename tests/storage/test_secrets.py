"""Safety rule 4: secrets are encrypted at rest and never returned, logged or printed."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import msgspec
import pytest

from pipedaemon_sdk import DaemonError, PipeClient
from pipedaemon_sdk import errors as E
from tests import secret_scan
from tests.servers.ftp import FTPServer
from tests.servers.s3 import S3Server
from tests.servers.sftp import SSHDServer, make_spec
from tests.support.spine import Started, close_started, start_serve, wait_gone


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class Recorder:
    """Every answer (or error) the daemon gave, to scan for secrets."""

    def __init__(self, c: PipeClient) -> None:
        self.c = c
        self.seen: list[bytes] = []

    def __call__(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            out = fn(*args, **kw)
        except DaemonError as err:
            self.seen.append(json.dumps([err.code, err.message, err.data], default=str).encode())
            return err
        self.seen.append(msgspec.json.encode(msgspec.to_builtins(out)))
        return out


def secret_needles(values: list[str]) -> list[bytes]:
    """Byte strings that must not appear: each secret, and each long line of a multi-line one (PEM)."""
    out = []
    for v in values:
        out.append(v.encode())
        out += [line.encode() for line in v.splitlines() if len(line) >= 16 and "PRIVATE KEY" not in line]
    return out


def files_under(folder: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            yield Path(dirpath, f)


@pytest.fixture
def debug_daemon(pd_env: dict[str, Path]) -> Iterator[Started]:
    """A daemon logging at DEBUG (to daemon.log and stderr): the most it ever writes."""
    st = start_serve(pd_env["socket"], "--log-level", "DEBUG")
    yield st
    close_started(st)


def _remotes(s3_server: S3Server, sftp_server: SSHDServer, sftp_client_key: asyncssh.SSHKey,
             ftp_server: FTPServer) -> tuple[list[dict[str, Any]], list[str]]:
    s3_id, s3_secret = "AKIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    passphrase = "pp-" + secrets.token_urlsafe(16)
    pem = sftp_client_key.export_private_key("openssh", passphrase=passphrase).decode()
    sftp = make_spec(sftp_server)
    ftp = ftp_server.spec()
    remotes = [
        {"name": "s3", "protocol": "s3", "location": "pd-secret-scan",
         "options": {"endpoint_url": s3_server.endpoint_url, "region": "us-east-1"},
         "credentials": {"aws_access_key_id": s3_id, "aws_secret_access_key": s3_secret}},
        {"name": "sftp", "protocol": "sftp", "options": sftp["options"],
         "credentials": {"private_key": pem, "passphrase": passphrase}},
        {"name": "ftp", "protocol": "ftp", "options": ftp["options"], "credentials": ftp["credentials"]},
        # Wrong ones make the error paths run (and print whatever they print).
        {"name": "ftp-wrong", "protocol": "ftp", "options": ftp["options"],
         "credentials": {"password": "wrong-" + secrets.token_urlsafe(12)}},
        {"name": "sftp-wrong", "protocol": "sftp", "options": sftp["options"],
         "credentials": {"private_key": pem, "passphrase": "bad-" + secrets.token_urlsafe(12)}},
    ]
    values = [s3_id, s3_secret, passphrase, pem, ftp_server.password,
              remotes[3]["credentials"]["password"], remotes[4]["credentials"]["passphrase"]]
    secret_scan.remember(*values)
    return remotes, values


def test_no_secret_in_answers_logs_or_state(debug_daemon: Started, pd_env: dict[str, Path],
                                            s3_server: S3Server, sftp_server: SSHDServer,
                                            sftp_client_key: asyncssh.SSHKey, ftp_server: FTPServer) -> None:
    remotes, values = _remotes(s3_server, sftp_server, sftp_client_key, ftp_server)
    s3_server.boto3_client().create_bucket(Bucket="pd-secret-scan")
    with PipeClient() as c:
        rec = Recorder(c)
        for r in remotes:
            rec(c.upsert_remote, r)
        rec(c.list_remotes, names_only=False)
        for r in remotes:
            rec(c.get_remote, r["name"])
            rec(c.check_remote, r["name"])
        for name in ("s3", "sftp", "ftp"):
            check = c.check_remote(name)
            assert check["ok"], (name, check["error"])
            b = c.datastore(name).get_bucket("scan") if name != "s3" else c.datastore(name).get_bucket(
                "pd-secret-scan")
            rec(b.put, "x.txt", b"hello", 5)
            rec(lambda b=b: b.get("x.txt").read())
            rec(b.list)
        # A remote that cannot be reached: its retries are logged (with whatever they carry).
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        gone = {"name": "gone", "protocol": "ftp", "location": "127.0.0.1",
                "options": {"port": closed.getsockname()[1], "connect_timeout": 2},
                "credentials": {"password": values[5]}}
        closed.close()
        rec(c.upsert_remote, gone)
        assert isinstance(rec(c.call, "object.list", {"remote": "gone"}), E.StorageError)
        for name in ("ftp-wrong", "sftp-wrong"):
            err = rec(c.call, "object.list", {"remote": name})
            assert isinstance(err, E.AuthFailedError), err
        bad = dict(remotes[2], credentials={"password": values[4], "extra": values[0]})
        assert isinstance(rec(c.upsert_remote, bad), E.InvalidSettingsError)
        # Updating without credentials keeps them, and still shows none.
        rec(c.upsert_remote, {k: v for k, v in remotes[0].items() if k != "credentials"})
        rec(c.get_remote, "s3")
    needles = secret_needles(values)
    for answer in rec.seen:
        for needle in needles:
            assert needle not in answer, f"a secret is in an answer: {answer[:200]!r}"
    assert b"***" in b"".join(rec.seen)
    home = pd_env["home"]
    # While the daemon runs (the WAL holds the latest writes), then after it stopped (checkpointed).
    assert (home / "state.db-wal").exists()
    scan_for(needles, [*files_under(home), debug_daemon.extra["stderr"]])
    wait_gone_after_shutdown()
    scanned = [*files_under(home), debug_daemon.extra["stderr"]]
    assert home / "daemon.log" in scanned and home / "state.db" in scanned
    assert "connecting to remote gone" in (home / "daemon.log").read_text()  # the log has content
    scan_for(needles, scanned)


def scan_for(needles: list[bytes], paths: list[Path]) -> None:
    for path in paths:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"a secret is in plain text in {path}"


def wait_gone_after_shutdown() -> None:
    """Stop the daemon so its SQLite WAL and log are complete on disk before the scan."""
    with PipeClient(auto_start=False) as c:
        pid = c.status().pid
        c.shutdown()
    wait_gone(pid)


def test_key_file_is_private(client: PipeClient, pd_env: dict[str, Path], ftp_server: FTPServer) -> None:
    spec = ftp_server.spec()
    client.upsert_remote({"name": "f", "protocol": "ftp", "options": spec["options"],
                          "credentials": spec["credentials"]})
    key = pd_env["home"] / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(base64.urlsafe_b64decode(key.read_text() + "==")) == 32
    assert client.check_remote("f")["ok"]


def test_pipedaemon_key_from_environment(monkeypatch: pytest.MonkeyPatch, pd_env: dict[str, Path],
                                         ftp_server: FTPServer) -> None:
    monkeypatch.setenv("PIPEDAEMON_KEY", new_key())
    spec = ftp_server.spec()
    with PipeClient() as c:
        c.upsert_remote({"name": "f", "protocol": "ftp", "options": spec["options"],
                         "credentials": spec["credentials"]})
        assert c.check_remote("f")["ok"]
        assert c.get_remote("f")["credentials"] == {"password": "***"}
        c.shutdown()
    assert not (pd_env["home"] / "secret.key").exists()


class CountingListener:
    """A TCP port that counts connections: proves nothing was sent to the 'server'."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("where", ["PIPEDAEMON_KEY", "key file"])
def test_wrong_key_is_refused_clearly(monkeypatch: pytest.MonkeyPatch, pd_env: dict[str, Path],
                                      where: str) -> None:
    key_file = pd_env["home"] / "secret.key"
    if where == "PIPEDAEMON_KEY":
        monkeypatch.setenv("PIPEDAEMON_KEY", new_key())
    listener = CountingListener()
    try:
        with PipeClient() as c:
            c.upsert_remote({"name": "f", "protocol": "ftp", "location": "127.0.0.1",
                             "options": {"port": listener.port}, "credentials": {"password": "pw-1234567"}})
            pid = c.status().pid
            c.shutdown()
        wait_gone(pid)
        # Another key: the stored credentials are opaque to it.
        if where == "PIPEDAEMON_KEY":
            monkeypatch.setenv("PIPEDAEMON_KEY", new_key())
        else:
            assert key_file.exists()
            key_file.write_text(new_key())
        source = "PIPEDAEMON_KEY" if where == "PIPEDAEMON_KEY" else str(key_file)
        with PipeClient() as c:
            try:
                with pytest.raises(E.InvalidSettingsError) as err:
                    c.call("object.list", {"remote": "f"})
                assert err.value.code == 1003
                assert f"the key in {source} is not the one" in err.value.message, err.value.message
                check = c.check_remote("f")
                assert check["ok"] is False and check["error"]["code"] == 1003
                # The settings stay visible (to register the credentials again); the credentials do not.
                shown = c.get_remote("f")
                assert shown["credentials"] == "***" and "key" in shown["credentials_error"]
                assert shown["options"]["port"] == listener.port
                assert [r["name"] for r in c.list_remotes(names_only=False)] == ["f"]
                with pytest.raises(E.InvalidSettingsError):
                    c.download(remote="f", key="x", dest="/tmp/pd-never")
            finally:
                c.shutdown()
        assert listener.connections == 0  # nothing, let alone garbage, went to the server
    finally:
        listener.close()


def test_malformed_key_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEDAEMON_KEY", "not-a-key")
    with PipeClient() as c:
        try:
            with pytest.raises(E.InvalidSettingsError) as err:
                c.upsert_remote({"name": "l", "protocol": "ftp", "location": "127.0.0.1",
                                 "credentials": {"password": "pw-1234567"}})
            assert "PIPEDAEMON_KEY" in err.value.message and "32 bytes" in err.value.message
            assert c.list_remotes() == []
        finally:
            c.shutdown()


def test_log_redacts_known_secrets(tmp_path: Path) -> None:
    """The last line of defence: once opened, a secret is replaced in any log line that carries it."""
    import logging

    from pipedaemon import log as pdlog
    from pipedaemon.secrets import Vault

    vault = Vault(tmp_path)
    secret = "redact-" + secrets.token_urlsafe(12)
    assert vault.open(vault.seal({"password": secret}), "r") == {"password": secret}
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        pdlog.setup(tmp_path / "logs", to_stderr=False)
        logging.getLogger("pipedaemon.test").warning("login with %s failed", secret)
        try:
            raise RuntimeError(f"server said no to {secret}")
        except RuntimeError:
            logging.getLogger("pipedaemon.test").exception("boom")
        for h in root.handlers:
            h.flush()
        text = (tmp_path / "logs" / "daemon.log").read_text()
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert "login with *** failed" in text and "server said no to ***" in text
    assert secret not in text
