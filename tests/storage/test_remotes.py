"""Remotes through the daemon: register, show (secrets masked), update, check, forget; and bad input."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pipedaemon.secrets import iter_secrets
from pipedaemon_sdk import PipeClient
from pipedaemon_sdk import errors as E
from tests.servers.s3 import S3Server, new_bucket_name, spec_for
from tests.servers.sftp import SSHDServer, make_spec
from tests.support.spine import wait_gone
from tests.support.storage import REMOTE, register, settings_of


def all_masked(value: Any) -> bool:
    if isinstance(value, dict):
        return all(all_masked(v) for v in value.values())
    return value == "***"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when we return: connections are refused


# -- the happy path, every backend ---------------------------------------------------------
def test_remote_lifecycle(client: PipeClient, spec: dict[str, Any]) -> None:
    assert client.upsert_remote(settings_of(spec)) == {"name": REMOTE, "created": True}
    shown = client.get_remote(REMOTE)
    assert shown["protocol"] == spec["protocol"]
    assert shown["root"] == spec["root"]
    for key, value in spec["options"].items():
        assert shown["options"][key] == value
    assert set(shown["credentials"]) == set(spec["credentials"])
    assert all_masked(shown["credentials"])
    assert not set(iter_secrets(spec["credentials"])) & set(iter_secrets(shown))
    assert client.list_remotes() == [REMOTE]
    [listed] = client.list_remotes(names_only=False)
    assert listed["name"] == REMOTE and all_masked(listed["credentials"])

    # An update without credentials keeps the stored ones: the remote still works.
    update = settings_of(spec)
    del update["credentials"]
    assert client.upsert_remote(update) == {"name": REMOTE, "created": False}
    again = client.get_remote(REMOTE)
    assert again["credentials"] == shown["credentials"]
    assert again["created_at"] == shown["created_at"] and again["updated_at"] >= shown["updated_at"]
    check = client.check_remote(REMOTE)
    assert check["ok"], check["error"]

    assert client.delete_remote(REMOTE) == {"name": REMOTE, "deleted": True}
    assert client.list_remotes() == []
    for call in (lambda: client.get_remote(REMOTE), lambda: client.check_remote(REMOTE),
                 lambda: client.delete_remote(REMOTE)):
        with pytest.raises(E.NotFoundError) as err:
            call()
        assert err.value.code == 1001 and err.value.data["remote"] == REMOTE


def test_check_remote_ok(client: PipeClient, spec: dict[str, Any]) -> None:
    register(client, spec)
    res = client.check_remote(REMOTE)
    assert res["ok"] is True and res["error"] is None
    assert res["can_read"] is True and res["can_write"] is True
    assert res["endpoint"] and res["remote"] == REMOTE
    # The write probe cleaned up after itself.
    assert client.call("object.list", {"remote": REMOTE, "recursive": True}) == []
    read_only = client.check_remote(REMOTE, write_probe=False)
    assert read_only["ok"] is True and read_only["can_write"] is None


def test_separate_read_write_credentials(client: PipeClient, s3_spec: dict[str, Any]) -> None:
    creds = s3_spec["credentials"]
    client.upsert_remote(settings_of(s3_spec, credentials={"read": creds, "write": creds}))
    shown = client.get_remote(REMOTE)["credentials"]
    assert set(shown) == {"read", "write"} and all_masked(shown)
    res = client.check_remote(REMOTE)
    assert res["ok"] and res["can_write"], res["error"]


# -- bad settings: 1003 naming the field ----------------------------------------------------
def test_unknown_protocol(client: PipeClient) -> None:
    with pytest.raises(E.InvalidSettingsError) as err:
        client.upsert_remote({"name": "x", "protocol": "gopher", "options": {}})
    assert err.value.code == 1003 and err.value.data["field"] == "protocol"
    assert "gopher" in err.value.message
    assert client.list_remotes() == []


@pytest.mark.parametrize(("settings", "field"), [
    ({"protocol": "sftp", "location": "h", "options": {"port": "twenty-two"}}, "options.port"),
    ({"protocol": "sftp", "location": "h", "options": {"colour": "blue"}}, "options.colour"),
    ({"protocol": "sftp", "options": {}}, "location"),
    ({"protocol": "ftp", "options": {"port": 21}}, "location"),
    ({"protocol": "ftp", "location": "h", "options": {"tls": "maybe"}}, "options.tls"),
    ({"protocol": "local", "options": {}}, "options.remotepath"),
    ({"protocol": "local", "options": {"remotepath": "relative/dir"}}, "options.remotepath"),
    ({"protocol": "s3", "location": "b", "credentials": {"aws_access_key_id": "k"}},
     "credentials.aws_secret_access_key"),
    ({"protocol": "s3", "location": "b", "credentials": {"write": {"aws_access_key_id": "k"}}},
     "credentials.write.aws_secret_access_key"),
    ({"protocol": "s3", "options": {"remotepath": "bucket/no-scheme/"}}, "options.remotepath"),
    ({"protocol": "local", "options": {"remotepath": "/tmp/x"}, "colour": 1}, "colour"),
])
def test_wrong_or_missing_field(client: PipeClient, settings: dict[str, Any], field: str) -> None:
    with pytest.raises(E.InvalidSettingsError) as err:
        client.upsert_remote({"name": "bad", **settings})
    assert err.value.code == 1003
    assert err.value.data["field"] == field
    assert field.rsplit(".", 1)[-1] in err.value.message
    assert client.list_remotes() == []


def test_bad_remote_name(client: PipeClient) -> None:
    with pytest.raises(E.InvalidSettingsError) as err:
        client.upsert_remote({"name": "../etc", "protocol": "local", "options": {"remotepath": "/tmp/"}})
    assert err.value.data["field"] == "name"


def test_s3_missing_bucket(client: PipeClient) -> None:
    with pytest.raises(E.InvalidSettingsError) as err:
        client.upsert_remote({"name": "s", "protocol": "s3", "options": {"endpoint_url": "http://127.0.0.1:9"}})
    assert err.value.code == 1003 and err.value.data["field"] == "location"
    assert "bucket" in err.value.message


# -- storage refusing us ------------------------------------------------------------------
def test_wrong_s3_keys(client: PipeClient, s3_auth_server: S3Server) -> None:
    bucket = new_bucket_name()
    s3_auth_server.boto3_client().create_bucket(Bucket=bucket)
    spec = spec_for(s3_auth_server, bucket)
    wrong = {"aws_access_key_id": s3_auth_server.aws_access_key_id, "aws_secret_access_key": "not-the-key"}
    client.upsert_remote(settings_of(spec, credentials=wrong))
    res = client.check_remote(REMOTE)
    assert res["ok"] is False and res["can_read"] is False
    assert res["error"]["code"] == 1004, res["error"]
    with pytest.raises(E.AuthFailedError) as err:
        client.datastore(REMOTE).get_bucket(bucket).list()
    assert err.value.code == 1004
    with pytest.raises(E.AuthFailedError):
        client.download(remote=REMOTE, key="a.txt", dest="/tmp/never-written")
    # The right keys work against the same server (so it was the keys).
    client.upsert_remote(settings_of(spec))
    assert client.check_remote(REMOTE)["ok"]


def _other_key_known_hosts(tmp_path: Path, server: SSHDServer, other: SSHDServer) -> Path:
    """known_hosts claiming ``server``'s address has ``other``'s key: as if its key changed."""
    path = tmp_path / "known_hosts"
    path.write_text(f"[{server.host}]:{server.port} {other.host_key_public}\n")
    return path


def test_sftp_host_key_changed_known_hosts(client: PipeClient, tmp_path: Path, sftp_server: SSHDServer,
                                           sftp_server_other_hostkey: SSHDServer) -> None:
    spec = make_spec(sftp_server)
    spec["options"]["known_hosts"] = str(_other_key_known_hosts(tmp_path, sftp_server,
                                                                sftp_server_other_hostkey))
    register(client, spec)
    res = client.check_remote(REMOTE)
    assert res["ok"] is False and res["error"]["code"] == 1004
    assert "changed" in res["error"]["message"] and "host key" in res["error"]["message"]
    with pytest.raises(E.AuthFailedError) as err:
        client.call("object.list", {"remote": REMOTE})
    assert "host key" in err.value.message


def test_sftp_accept_new_pins_and_refuses_a_changed_key(
        client: PipeClient, pd_env: dict[str, Path], sftp_server: SSHDServer,
        sftp_server_other_hostkey: SSHDServer) -> None:
    spec = make_spec(sftp_server)
    spec["options"]["known_hosts"] = "accept-new"
    register(client, spec)
    assert client.check_remote(REMOTE)["ok"]
    pid = client.status().pid
    client.shutdown()
    client.close()
    wait_gone(pid)  # its state is ours to edit only once it has exited
    db = sqlite3.connect(pd_env["home"] / "state.db")
    [(pinned,)] = db.execute("SELECT host_key FROM remotes WHERE name=?", (REMOTE,)).fetchall()
    assert pinned == sftp_server.host_key_public
    # The server's key changes under the pin: the next daemon must refuse it.
    db.execute("UPDATE remotes SET host_key=? WHERE name=?", (sftp_server_other_hostkey.host_key_public,
                                                             REMOTE))
    db.commit()
    db.close()
    res = client.check_remote(REMOTE)  # auto-starts a new daemon
    assert res["ok"] is False and res["error"]["code"] == 1004
    assert "host key" in res["error"]["message"]


def test_sftp_pin_is_per_port(client: PipeClient, sftp_server: SSHDServer,
                              sftp_server_other_hostkey: SSHDServer) -> None:
    """Another port is another server (as in known_hosts): moving the remote re-pins, never mixes keys."""
    spec = make_spec(sftp_server)
    spec["options"]["known_hosts"] = "accept-new"
    register(client, spec)
    assert client.check_remote(REMOTE)["ok"]
    spec["options"]["port"] = sftp_server_other_hostkey.port
    spec["options"]["remotepath"] = make_spec(sftp_server_other_hostkey)["root"]
    register(client, spec)
    res = client.check_remote(REMOTE)
    assert res["ok"], res["error"]


@pytest.mark.parametrize("protocol", ["sftp", "ftp", "s3"])
def test_unreachable_host(client: PipeClient, protocol: str) -> None:
    port = closed_port()
    settings: dict[str, Any] = {"name": "gone", "protocol": protocol}
    if protocol == "s3":
        settings |= {"location": "b", "options": {"endpoint_url": f"http://127.0.0.1:{port}",
                                                   "region": "us-east-1", "connect_timeout": 2},
                     "credentials": {"aws_access_key_id": "k", "aws_secret_access_key": "s"}}
    else:
        settings |= {"location": "127.0.0.1", "options": {"port": port, "connect_timeout": 2,
                                                          "known_hosts": "accept-new"}}
        if protocol == "ftp":
            del settings["options"]["known_hosts"]
    client.upsert_remote(settings)
    with pytest.raises(E.StorageError) as err:
        client.call("object.list", {"remote": "gone"})  # within the client's request timeout
    assert err.value.code == 1008
    assert err.value.data.get("attempts", 0) > 1 or "attempts" in err.value.message
    res = client.check_remote("gone")
    assert res["ok"] is False and res["error"]["code"] == 1008
