"""Every field of remote settings (each protocol), pipe settings and profile config, given a
wrong type or a value that cannot work: InvalidSettingsError 1003 naming the field.

Table-driven over the msgspec Structs of pipedaemon/settings.py (so a field added there is
covered at once) and over the keys pipedaemon/pipes/settings.py knows. Each case goes
through one daemon (its own sandbox) the way users send settings, and leaves nothing stored.
test_remotes.py and test_pipes_settings.py keep the hand-picked cases with their messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from pipedaemon import settings as S
from pipedaemon.pipes import settings as PS
from pipedaemon_sdk import InvalidSettingsError, NotFoundError, PipeClient
from tests import secret_scan
from tests.support.hostile import Sandbox, sandbox

CANDIDATES: list[Any] = ["text", 7, -1, 1.5, True, None, [], ["x"], {}, {"k": "v"}]
BASE_CREDS = {"s3": {"aws_access_key_id": "AKIAFIELDS", "aws_secret_access_key": "s3-secret-fields"},
              "sftp": {"password": "sftp-pw-fields"}, "ftp": {"password": "ftp-pw-fields"}, "local": {},
              "pipedaemon": {}}
secret_scan.remember("s3-secret-fields", "sftp-pw-fields", "ftp-pw-fields")

# Values of the right type that cannot work, per (protocol, option): the daemon refuses them up front.
BAD_VALUES: dict[tuple[str, str], list[Any]] = {
    ("s3", "remotepath"): ["bucket/no-scheme/", "s3://", "s3://b/\r\nx"],
    ("s3", "endpoint_url"): ["ftp://host", "not a url", "", "http://h st"],
    ("s3", "region"): ["us\neast"],
    ("s3", "part_size"): [0, -1, 5 * 2**20 - 1, 5 * 2**30 + 1, 10**400],
    ("s3", "copy_part_size"): [1, 6 * 2**30],
    ("s3", "put_threshold"): [-1, 6 * 2**30],
    ("s3", "copy_threshold"): [-1, 6 * 2**30],
    ("s3", "list_page_size"): [0, 1001, -(10**400)],
    ("s3", "read_timeout"): [0, -1, 1e9],
    ("s3", "connect_timeout"): [0, -0.5],
    ("s3", "write_concurrency"): [0, 65],
    ("sftp", "port"): [0, -22, 65536, 10**400],
    ("sftp", "connections"): [0, 65],
    ("sftp", "connect_timeout"): [0, -1],
    ("sftp", "host"): ["h\x00st"],
    ("sftp", "username"): ["me\nroot"],
    ("sftp", "remotepath"): ["dir\r\n"],
    ("ftp", "port"): [0, 70000],
    ("ftp", "timeout"): [0, -5],
    ("ftp", "connect_timeout"): [0],
    ("ftp", "username"): ["anonymous\r\nDELE x"],
    ("ftp", "remotepath"): ["pub\r\nRMD /"],
    ("ftp", "list_command"): ["NLST", "mlsd"],
    ("s3", "addressing_style"): ["sideways"],
    ("local", "remotepath"): ["relative/dir", "", "/tmp/a\nb"],
    ("pipedaemon", "socket"): ["relative.sock", ""],
    ("pipedaemon", "timeout"): [0, -1],
}
# Credentials that would travel in an FTP command or an HTTP header refuse control characters.
BAD_CREDENTIALS: dict[tuple[str, str], list[Any]] = {
    ("ftp", "password"): ["pw\r\nDELE important.csv", "pw\x00"],
    ("ftp", "username"): ["me\r\nDELE x"],  # d6tpipe's place for the login: the same rule as options'
    ("sftp", "username"): ["me\nroot"],
    ("s3", "aws_access_key_id"): ["AKIA\r\nX-Evil: 1"],
    ("s3", "aws_secret_access_key"): ["secret\n"],
    ("s3", "aws_session_token"): ["tok\ren"],
}


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with sandbox("pd-fields-") as b:
        (b.base / "remote").mkdir()
        yield b


@pytest.fixture(scope="module")
def box_client(box: Sandbox) -> Iterator[PipeClient]:
    """The module's sandboxed daemon (profile "fields"), shared by its tests: not the per-test ``client``."""
    with PipeClient(socket_path=box.sock, auto_start=False, profile="fields") as c:
        c.upsert_remote(base_settings("local", box, "r"))
        yield c


def base_settings(protocol: str, box: Sandbox, name: str = "t") -> dict[str, Any]:
    """Settings that are accepted as they are."""
    out: dict[str, Any] = {"name": name, "protocol": protocol, "options": {},
                           "credentials": BASE_CREDS[protocol]}
    if protocol == "s3":
        out["location"] = "bucket"
    elif protocol in ("sftp", "ftp"):
        out["location"] = "127.0.0.1"
    elif protocol == "pipedaemon":
        out["options"] = {"socket": "/run/pipedaemon/shared.sock", "pipe": "p"}
    else:
        out["options"] = {"remotepath": f"{box.base}/remote/"}
    return out


def struct_fields(struct: type[msgspec.Struct]) -> list[str]:
    return [f.name for f in msgspec.structs.fields(struct)]


def wrong_types(struct: type[msgspec.Struct], field: str, base: dict[str, Any]) -> list[Any]:
    """Candidates of a type msgspec refuses for ``field`` (msgspec is the oracle of types)."""
    out = []
    for value in CANDIDATES:
        try:
            msgspec.convert({**base, field: value}, struct)
        except msgspec.ValidationError as exc:
            if "Expected" in str(exc):
                out.append(value)
    return out


def refused(call: Any, field: str) -> InvalidSettingsError:
    with pytest.raises(InvalidSettingsError) as err:
        call()
    assert err.value.code == 1003
    assert err.value.data.get("field") == field, (field, err.value.message, err.value.data)
    assert field.rsplit(".", 1)[-1] in err.value.message, err.value.message
    return err.value


def remote_cases() -> list[tuple[str, str, str, Any]]:
    """(protocol, section, field, bad value) for every options and credentials field of each protocol."""
    cases = []
    for protocol, (opts, creds) in S.SCHEMAS.items():
        opt_base = {"remotepath": "/tmp/x"} if protocol == "local" else {}
        for field in struct_fields(opts):
            for value in wrong_types(opts, field, opt_base) + BAD_VALUES.get((protocol, field), []):
                cases.append((protocol, "options", field, value))
        for field in struct_fields(creds):
            extra = BAD_CREDENTIALS.get((protocol, field), [])
            for value in wrong_types(creds, field, BASE_CREDS[protocol]) + extra:
                cases.append((protocol, "credentials", field, value))
    return cases


REMOTE_CASES = remote_cases()


@pytest.mark.parametrize("protocol", sorted(S.SCHEMAS))
def test_each_protocol_field_is_covered(protocol: str) -> None:
    """No field slips through the table: every option and credential has a refused value."""
    opts, creds = S.SCHEMAS[protocol]
    for section, struct in (("options", opts), ("credentials", creds)):
        covered = {c[2] for c in REMOTE_CASES if c[0] == protocol and c[1] == section}
        assert covered == set(struct_fields(struct)), (section, set(struct_fields(struct)) - covered)


def test_remote_option_and_credential_fields(box_client: PipeClient, box: Sandbox) -> None:
    """Every (protocol, field, bad value): 1003 naming options.X / credentials.X; nothing stored."""
    for protocol, section, field, value in REMOTE_CASES:
        settings = base_settings(protocol, box)
        settings[section] = {**settings[section], field: value}
        refused(lambda s=settings: box_client.upsert_remote(s), f"{section}.{field}")
    assert box_client.list_remotes() == ["r"]
    print(f"\n{len(REMOTE_CASES)} remote field cases")


@pytest.mark.parametrize("split", ["read", "write"])
def test_split_credentials_name_their_set(box_client: PipeClient, box: Sandbox, split: str) -> None:
    for protocol in ("s3", "sftp", "ftp"):
        _, creds = S.SCHEMAS[protocol]
        for field in struct_fields(creds):
            for value in wrong_types(creds, field, BASE_CREDS[protocol])[:2]:
                settings = base_settings(protocol, box)
                settings["credentials"] = {"read": BASE_CREDS[protocol], "write": BASE_CREDS[protocol]}
                settings["credentials"][split] = {**BASE_CREDS[protocol], field: value}
                refused(lambda s=settings: box_client.upsert_remote(s), f"credentials.{split}.{field}")


TOP_LEVEL: list[tuple[str, Any]] = [
    ("name", 7), ("name", None), ("name", ""), ("name", "bad name"), ("name", "../up"), ("name", "x" * 129),
    ("name", ["r"]), ("protocol", 5), ("protocol", "gopher"), ("protocol", None), ("location", 5),
    ("location", ["b"]), ("options", "x"), ("options", []), ("options", 3), ("credentials", "x"),
    ("credentials", ["k"]), ("credentials", 1), ("colour", "blue"),
]


@pytest.mark.parametrize("protocol", sorted(S.SCHEMAS))
def test_remote_top_level_fields(box_client: PipeClient, box: Sandbox, protocol: str) -> None:
    covered = {f for f, _ in TOP_LEVEL}
    assert set(struct_fields(S.RemoteSettings)) <= covered
    for field, value in TOP_LEVEL:
        if protocol == "local" and field == "location" and value is not None:
            pass  # a local remote ignores location only when it is a string: still a type error here
        settings = {**base_settings(protocol, box), field: value}
        refused(lambda s=settings: box_client.upsert_remote(s), field)
    for missing in ("name", "protocol"):
        settings = {k: v for k, v in base_settings(protocol, box).items() if k != missing}
        refused(lambda s=settings: box_client.upsert_remote(s), missing)
    assert box_client.list_remotes() == ["r"]


# -- pipes --------------------------------------------------------------------------------------
PIPE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"name": 7}, "name"), ({"name": None}, "name"), ({"name": "a b"}, "name"), ({"name": "../x"}, "name"),
    ({"remote": 5}, "remote"), ({"remote": "a/b"}, "remote"), ({"remote": ["r"]}, "remote"),
    ({"parent": 5}, "parent"), ({"parent": "../p"}, "parent"), ({"parent": {}}, "parent"),
    ({"remote": None, "protocol": 5}, "protocol"), ({"remote": None, "protocol": "gopher"}, "protocol"),
    ({"location": "b"}, "location"), ({"credentials": {"password": "x"}}, "credentials"),
    ({"remote": None, "protocol": "s3", "location": 5}, "location"),
    ({"remote": None, "protocol": "s3", "location": "b", "credentials": "x"}, "credentials"),
    ({"remote": None, "protocol": "ftp", "location": "h", "credentials": {"password": 5}},
     "credentials.password"),
    ({"remote": None, "protocol": "sftp", "location": "h", "options": {"port": "22"}}, "options.port"),
    ({"remote": None, "protocol": "sftp", "location": "h", "options": {"port": 0}}, "options.port"),
    ({"options": "x"}, "options"), ({"options": []}, "options"),
    ({"options": {"dir": 5}}, "options.dir"), ({"options": {"dir": "../up"}}, "options.dir"),
    ({"options": {"dir": "/abs/../.."}}, "options.dir"),
    ({"options": {"dir": "a\x00b"}}, "options.dir"),
    ({"options": {"include": 5}}, "options.include"),
    ({"options": {"include": ["*.csv"]}}, "options.include"),
    ({"options": {"include": "[abc"}}, "options.include"),
    ({"options": {"include": "/etc/*"}}, "options.include"),
    ({"options": {"exclude": True}}, "options.exclude"),
    ({"options": {"exclude": "a||b"}}, "options.exclude"),
    ({"options": {"exclude": "../*"}}, "options.exclude"),
    ({"options": {"scan_ttl_s": "1"}}, "options.scan_ttl_s"),
    ({"options": {"scan_ttl_s": -1}}, "options.scan_ttl_s"),
    ({"options": {"scan_ttl_s": True}}, "options.scan_ttl_s"), ({"options": {"port": 22}}, "options.port"),
    ({"schema": "x"}, "schema"), ({"schema": [1]}, "schema"),
    ({"description": 5}, "description"), ({"description": ["d"]}, "description"),
    ({"description": {}}, "description"),
    ({"schedule": "15m"}, "schedule"), ({"schedule": {"every": "0.5s"}}, "schedule.every"),
    ({"schedule": {"every": "1m", "action": "sleep"}}, "schedule.action"),
    ({"mirror": 5}, "mirror"),
    ({"colour": "blue"}, "colour"),
]


def test_every_pipe_setting_is_covered() -> None:
    keys = {field.split(".")[0] for _, field in PIPE_CASES}
    assert set(PS.TOP_KEYS) <= keys
    options = {field.split(".")[1] for _, field in PIPE_CASES if field.startswith("options.")}
    assert set(PS.PIPE_OPTIONS) <= options


@pytest.mark.parametrize(("change", "field"), PIPE_CASES, ids=[f"{f}={c}"[:60] for c, f in PIPE_CASES])
def test_pipe_setting_fields(box_client: PipeClient, change: dict[str, Any], field: str) -> None:
    merged = {"name": "p", "remote": "r", **change}
    settings = {k: v for k, v in merged.items() if v is not None or k == "name"}
    refused(lambda: box_client.upsert_pipe(settings), field)
    assert "p" not in box_client.list_pipes()


def test_pipe_update_settings_fields(box_client: PipeClient) -> None:
    """The same checks hold when a stored pipe is changed in part."""
    box_client.upsert_pipe({"name": "u", "remote": "r"})
    for change, field in PIPE_CASES:
        if field in ("name", "remote", "protocol", "location", "credentials") or "protocol" in change:
            continue  # renames and storage changes are upserts (checked above)
        refused(lambda c=change: box_client.pipe("u").update_settings(c), field)
    assert box_client.get_pipe("u")["settings"] == {"name": "u", "remote": "r"}
    box_client.delete_pipe("u")


CONFIG_CASES: list[tuple[str, Any]] = [
    ("filerepo", 5), ("filerepo", ""), ("filerepo", "relative/dir"), ("filerepo", ["/x"]), ("filerepo", None),
    ("filerepo", "/tmp/a\x00b"), ("filerepo", "/tmp/a\nb"), ("filerepo", "/" + "d" * 5000),
    ("scan_ttl_s", "60"), ("scan_ttl_s", -1), ("scan_ttl_s", 10**9), ("scan_ttl_s", True),
    ("parallel_files", 0), ("parallel_files", 65), ("parallel_files", 1.5), ("parallel_files", "4"),
    ("bwlimit_bps", -1), ("bwlimit_bps", 1.5), ("bwlimit_bps", 10**400), ("bwlimit_bps", None),
    ("colour", "blue"),
]


def test_profile_config_fields(box_client: PipeClient) -> None:
    assert {k for k, _ in CONFIG_CASES} >= set(PS.CONFIG_DEFAULTS)
    before = box_client.call("pipe.config_get", {"profile": "fields"})
    for key, value in CONFIG_CASES:
        refused(lambda k=key, v=value: box_client.update_profile_config({k: v}), key)
    assert box_client.call("pipe.config_get", {"profile": "fields"}) == before
    refused(lambda: box_client.move_repo("/tmp/a\x00b"), "filerepo")  # was -32603 (params fuzzer)


def test_a_pipe_on_a_missing_remote_is_not_found(box_client: PipeClient) -> None:
    """Not a settings error: the names are fine, the remote does not exist (1001, as documented)."""
    with pytest.raises(NotFoundError):
        box_client.upsert_pipe({"name": "q", "remote": "nope"})


def test_the_pipe_settings_message_in_the_docs_is_the_daemons() -> None:
    from pathlib import Path

    with pytest.raises(InvalidSettingsError) as err:
        PS.validate({"name": "p", "remote": "r", "options": {"port": 22}})
    text = (Path(__file__).parents[2] / "docs" / "pipes.md").read_text()
    assert f"\n{err.value.message}\n" in text, err.value.message
