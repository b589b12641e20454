"""auth_status against the real servers: who the daemon acts as (never a secret), whether read
and write work (the probe leaves nothing behind), and when S3 session credentials expire."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from pipedaemon_sdk import NotFoundError, PipeClient
from tests.servers import BACKENDS
from tests.servers.s3 import FAKE_SECRET
from tests.support.storage import get_spec, register, settings_of


def _root(c: PipeClient, remote: str) -> Any:
    return c.call("object.list", {"remote": remote, "recursive": False, "metadata": False})


def test_every_remote(client: PipeClient, request: pytest.FixtureRequest) -> None:
    specs = {kind: get_spec(request, kind) for kind in BACKENDS}
    for kind, spec in specs.items():
        register(client, spec, kind)
    before = {k: _root(client, k) for k in specs}
    out = client.auth_status()
    assert [r["remote"] for r in out] == sorted(specs)
    by = {r["remote"]: r for r in out}
    for kind in specs:
        assert by[kind]["ok"] and by[kind]["can_read"] and by[kind]["can_write"], by[kind]["error"]
        assert by[kind]["temporary"] is False and by[kind]["expires_at"] is None
    assert by["s3"]["identity"] == specs["s3"]["credentials"]["aws_access_key_id"]
    assert by["sftp"]["identity"] == specs["sftp"]["options"]["username"]
    assert by["ftp"]["identity"] == specs["ftp"]["options"]["username"]
    assert by["local"]["identity"]
    text = json.dumps(out)
    assert FAKE_SECRET not in text and specs["ftp"]["credentials"]["password"] not in text
    after = {k: _root(client, k) for k in specs}
    assert after == before, "the write probe cleaned up after itself"
    assert client.auth_status("s3", write_probe=False)["can_write"] is None
    with pytest.raises(NotFoundError):
        client.auth_status("nope")


@pytest.mark.parametrize("hours", [-1, 1])
def test_s3_session_expiry(client: PipeClient, s3_spec: dict[str, Any], hours: int) -> None:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=hours)
    creds = {**s3_spec["credentials"], "aws_session_token": "pd-session-token-81c2",
             "aws_session_expiration": when.isoformat()}
    client.upsert_remote(settings_of(s3_spec, credentials=creds))
    res = client.auth_status("store")
    assert res["temporary"] is True and res["expired"] is (hours < 0)
    assert datetime.datetime.fromisoformat(res["expires_at"]) == when.replace(microsecond=when.microsecond)
    assert "pd-session-token-81c2" not in json.dumps(res)


def test_refused_credentials(client: PipeClient, ftp_spec: dict[str, Any]) -> None:
    right = ftp_spec["credentials"]
    split = {"read": right, "write": {"password": "wrong-pw-5d"}}
    client.upsert_remote(settings_of(ftp_spec, credentials=split))
    res = client.auth_status("store")
    assert res["can_read"] is True and res["can_write"] is False and res["ok"] is False
    assert res["error"]["code"] == 1004 and res["write_identity"] == ftp_spec["options"]["username"]
    client.upsert_remote(settings_of(ftp_spec, credentials={"password": "wrong-pw-5d"}))
    res = client.auth_status("store")
    assert res["can_read"] is False and res["error"]["code"] == 1004
    assert res["identity"] == ftp_spec["options"]["username"] and "wrong-pw-5d" not in json.dumps(res)
