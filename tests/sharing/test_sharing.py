"""A shared daemon with real users: roles, public, revoking, one listing, hostile clients.

One service account runs ``pipedaemon serve --shared``; alice owns a remote over moto S3
and pipes on it; bob and carol reach them through their own daemons (a remote of
protocol ``pipedaemon``) or directly; eve is outside the socket's group.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import InvalidSettingsError, PipeClient
from tests.servers.s3 import FAKE_SECRET, RequestLog, S3Server, spec_for
from tests.sharing.helpers import SETUP_REMOTE, World

NEW_PIPE = "c = shared().connect(); return c.upsert_pipe(ARGS)"
GRANT = "c = shared().connect(); return c.upsert_permissions(ARGS[0], ARGS[1])"
# Bob's (or carol's) own daemon: a remote of protocol pipedaemon over the shared pipe, a pipe over it.
OWN_PIPE = """
c = own().connect()
c.update_profile_config({"filerepo": ARGS["repo"]})
c.upsert_remote({"name": ARGS["pipe"], "protocol": "pipedaemon",
                 "options": {"socket": SHARED, "pipe": ARGS["pipe"]}})
c.upsert_pipe({"name": ARGS["pipe"], "remote": ARGS["pipe"]})
return c.get_pipe(ARGS["pipe"])["dirpath"]
"""
PULL = """
import msgspec
c = own().connect()
return msgspec.to_builtins(c.pipe(ARGS["pipe"]).pull(cached=ARGS.get("cached", True)))
"""
CALL_SHARED = "c = shared().connect(); return c.call(ARGS[0], ARGS[1])"
CALL_OWN = "c = own().connect(); return c.call(ARGS[0], ARGS[1])"


def shared_pipe(w: World, files: dict[str, bytes]) -> str:
    """A new pipe of alice's on the shared daemon, with ``files`` on S3 under its folder."""
    name = f"p{uuid.uuid4().hex[:8]}"
    for key, data in files.items():
        w.s3.put_object(Bucket=w.bucket, Key=f"{name}/{key}", Body=data)  # type: ignore[attr-defined]
    w.ok("alice", NEW_PIPE, {"name": name, "remote": "lake", "options": {"dir": name}})
    return name


def s3_keys(w: World, pipe: str) -> dict[str, int]:
    resp = w.s3.list_objects_v2(Bucket=w.bucket, Prefix=f"{pipe}/")  # type: ignore[attr-defined]
    return {o["Key"]: o["Size"] for o in resp.get("Contents", [])}


def test_shared_daemon_is_its_own_account_on_a_group_socket(world: World) -> None:
    st = world.ok("alice", "return shared().connect().status().pid")
    with open(f"/proc/{st}/status") as f:
        uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
    assert uid == world.users["shared"].uid != os.getuid()
    sock = world.shared_socket.stat()
    assert stat.S_IMODE(sock.st_mode) == 0o660 and sock.st_gid == world.gid
    folder = world.shared_socket.parent.stat()
    assert stat.S_IMODE(folder.st_mode) == 0o750 and folder.st_gid == world.gid
    # A per-user daemon keeps refusing any uid but its own (tests/spine/test_spine_peercred.py), and
    # refuses permissions: it has no other users.
    with PipeClient() as c, pytest.raises(InvalidSettingsError):
        c.upsert_permissions("x", {"username": "public", "role": "read"})


def test_reader_pulls_through_own_daemon_and_may_not_write(world: World) -> None:
    files = {"a.csv": b"a,b\n1,2\n", "sub/b.csv": b"x" * 3000}
    pipe = shared_pipe(world, files)
    bob = world.users["bob"]
    args = {"pipe": pipe, "repo": str(bob.base / "data")}
    assert world.run("bob", OWN_PIPE, args)  # remote and pipe made; not yet allowed to read
    refused = world.run("bob", PULL, args)
    assert refused["error"] == 1001, refused  # no role: the pipe is not there for bob
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "read"}])
    world.ok("bob", PULL, args)
    folder = Path(world.ok("bob", "return own().connect().get_pipe(ARGS['pipe'])['dirpath']", args))
    for key, data in files.items():
        path = folder / key
        assert path.read_bytes() == data
        assert path.stat().st_uid == bob.uid  # written by bob's own daemon, as bob
    (folder / "new.csv").write_bytes(b"bob's\n")
    os.chown(folder / "new.csv", bob.uid, bob.gid)
    before = s3_keys(world, pipe)
    pushed = world.run("bob", "c = own().connect(); return str(c.pipe(ARGS['pipe']).push())", args)
    assert pushed["error"] == 1005 and pushed["data"]["role"] == "write", pushed
    deleted = world.run("bob", CALL_OWN, ["object.delete", {"remote": pipe, "key": "a.csv"}])
    assert deleted["error"] == 1005, deleted
    assert s3_keys(world, pipe) == before  # nothing written, nothing deleted
    # write: bob's push goes through and lands on S3.
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "write"}])
    world.ok("bob", "c = own().connect(); return str(c.pipe(ARGS['pipe']).push())", args)
    assert s3_keys(world, pipe)[f"{pipe}/new.csv"] == 6


def test_no_role_is_not_found_public_opens_revoke_closes(world: World) -> None:
    pipe = shared_pipe(world, {"c.csv": b"carol\n"})
    carol = world.users["carol"]
    hidden = world.run("carol", CALL_SHARED, ["pipe.get", {"name": pipe}])
    missing = world.run("carol", CALL_SHARED, ["pipe.get", {"name": "no-such-pipe"}])
    assert hidden["error"] == missing["error"] == 1001
    assert hidden["message"] == missing["message"].replace("no-such-pipe", pipe)  # nothing reveals it
    assert pipe not in world.ok("carol", CALL_SHARED, ["pipe.list", {}])
    assert world.ok("carol", CALL_SHARED, ["remote.list", {}]) == []
    read = ["object.stat", {"pipe": pipe, "key": "c.csv"}]
    assert world.run("carol", CALL_SHARED, read)["error"] == 1001
    world.ok("alice", GRANT, [pipe, {"username": "public", "role": "read"}])
    assert world.ok("carol", CALL_SHARED, read)["size"] == 6
    assert pipe in world.ok("carol", CALL_SHARED, ["pipe.list", {}])
    args = {"pipe": pipe, "repo": str(carol.base / "data")}
    world.ok("carol", OWN_PIPE, args)
    world.ok("carol", PULL, args)
    assert (carol.base / "data" / pipe / "c.csv").read_bytes() == b"carol\n"
    # Only owner and admins see the permissions; a reader is told the role it lacks.
    lp = world.run("carol", "return shared().connect().list_permissions(ARGS)", pipe)
    assert lp["error"] == 1005 and lp["data"]["role"] == "admin"
    perms = world.ok("alice", "return shared().connect().list_permissions(ARGS)", pipe)
    assert perms["owner"] == world.users["alice"].name
    assert perms["permissions"][0]["username"] == "public"
    world.ok("alice", GRANT, [pipe, {"username": "public", "role": None}])  # revoke
    assert world.run("carol", CALL_SHARED, read)["error"] == 1001  # the very next request


def test_ten_pulls_within_the_ttl_cost_one_listing(world: World, s3_server: S3Server) -> None:
    pipe = shared_pipe(world, {"t.csv": b"ttl\n"})
    world.ok("alice", GRANT, [pipe, {"username": "public", "role": "read"}])
    args = {"pipe": pipe, "cached": False}  # bypass the users' own caches: only the shared one counts
    for who in ("bob", "carol"):
        world.ok(who, OWN_PIPE, {**args, "repo": str(world.users[who].base / "data")})
    log = RequestLog(s3_server.log_path)
    many = """
import msgspec
c = own().connect()
return [msgspec.to_builtins(c.pipe(ARGS["pipe"]).pull(cached=False)) for _ in range(5)]
"""
    for who in ("bob", "carol"):
        world.ok(who, many, args)
    gets = [p for m, p in log.entries()
            if m == "GET" and p.startswith(f"/{world.bucket}?") and "list-type" in p]
    # The backend's connection check (one key: max-keys=1) is not a listing; it is made once per
    # connection of the shared daemon, never per user or pull.
    probes = [p for p in gets if "max-keys=1&" in p or p.endswith("max-keys=1")]
    listings = [p for p in gets if p not in probes]
    assert len(listings) == 1, listings
    assert len(probes) <= 1, probes


def test_hostile_reader_forged_names_and_every_write_method(world: World) -> None:
    pipe = shared_pipe(world, {"h.csv": b"h\n"})
    bob = world.users["bob"]
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "read"}])
    before = s3_keys(world, pipe)
    # The acting user comes from the peer credentials: a name in params is refused, never used.
    for forged in ({"name": pipe, "user": world.users["alice"].name},
                   {"name": pipe, "username": world.users["alice"].name}):
        assert world.run("bob", CALL_SHARED, ["pipe.get", forged])["error"] == -32602
    up = world.run("bob", GRANT, [pipe, {"username": bob.name, "role": "admin"}])
    assert up["error"] == 1005 and up["data"]["role"] == "admin"
    taken = world.run("bob", SETUP_REMOTE, {"name": "lake", "protocol": "s3", "location": "x",
                                            "credentials": {"aws_access_key_id": "k" * 8,
                                                            "aws_secret_access_key": "s" * 12}})
    assert taken["error"] == 1002  # alice's name, not bob's to replace
    hidden = world.run("bob", CALL_SHARED, ["remote.list", {"profile": "default/pipes"}])
    assert hidden["error"] in (1003, 1005) and hidden["data"]["field"] == "profile"  # never served
    # An admin of a pipe may not move it to another folder of its remote (that opens the folder).
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "admin"}])
    moved = world.run("bob", CALL_SHARED, ["pipe.update_settings", {"name": pipe,
                                                                    "settings": {"options": {"dir": "x"}}}])
    assert moved["error"] == 1001 and moved["data"]["remote"] == "lake"  # bob has no role on lake
    assert world.ok("alice", CALL_SHARED, ["pipe.get", {"name": pipe}])["dir"] == pipe
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "read"}])
    methods = world.ok("bob", CALL_SHARED, ["daemon.methods", {}])
    reads = {"daemon.ping", "daemon.status", "daemon.methods", "remote.list", "pipe.list", "pipe.get",
             "pipe.scan_remote", "object.list", "object.stat", "remote.upsert", "pipe.upsert"}
    calls = []
    for m in methods:
        if m["name"] in reads or m["stream"]:
            continue
        calls.append([m["name"], fill(m["params"], pipe)])
    answers = world.ok("bob", """
c = shared().connect()
out = []
for name, params in ARGS:
    try:
        c.call(name, params)
        out.append([name, 0])
    except DaemonError as e:
        out.append([name, e.code])
return out
""", calls)
    assert len(answers) >= 25
    succeeded = [n for n, code in answers if code == 0]
    assert succeeded == [], succeeded
    assert all(code in (1001, 1005) for _, code in answers), answers
    wrote = world.run("bob", """
return shared().connect()._write_stream({"profile": "default", "pipe": ARGS, "key": "evil.csv"},
                                        b"evil", 4, None)
""", pipe)
    assert wrote["error"] == 1005, wrote
    assert s3_keys(world, pipe) == before


def fill(schema: dict[str, Any], pipe: str) -> dict[str, Any]:
    """Plausible params for a method from its schema: aimed at bob's readable pipe."""
    defs = schema.get("$defs", {})
    ref = schema.get("$ref", "")
    body = defs.get(ref.rsplit("/", 1)[-1], schema)
    guesses: dict[str, Any] = {"name": pipe, "pipe": pipe, "remote": "lake", "key": "h.csv",
                               "settings": {"name": pipe, "remote": "lake"}, "job_id": "0" * 32,
                               "path": "/tmp/x", "config": {}, "paths": ["/tmp/x"], "bucket": "b",
                               "dest": "/tmp/x", "src": "lake:h.csv", "dst": "lake:y.csv"}
    out: dict[str, Any] = {}
    for field in body.get("required", []):
        typ = body.get("properties", {}).get(field, {}).get("type")
        out[field] = guesses.get(field, {"integer": 1, "boolean": False, "array": [], "object": {}}
                                 .get(typ, "x"))
    return out


def test_storage_of_the_service_account_is_not_lent(world: World) -> None:
    local = world.run("alice", SETUP_REMOTE, {"name": "mine", "protocol": "local",
                                              "options": {"remotepath": str(world.users["shared"].base)}})
    assert local["error"] == 1005 and local["data"]["field"] == "protocol"
    ambient = world.run("alice", SETUP_REMOTE, {"name": "amb", "protocol": "s3", "location": "b"})
    assert ambient["error"] == 1005 and ambient["data"]["field"] == "credentials"
    loop = world.run("alice", SETUP_REMOTE, {"name": "loop", "protocol": "pipedaemon",
                                             "options": {"socket": str(world.shared_socket), "pipe": "x"}})
    assert loop["error"] == 1005
    got = world.ok("alice", "return shared().connect().get_remote('lake')")
    assert set(got["credentials"].values()) == {"***"}  # the owner sees no credential either
    audit = (world.users["shared"].base / "home" / "audit.log").read_text()
    assert FAKE_SECRET not in audit
    lines = [json.loads(line) for line in audit.splitlines()]
    assert any(r["user"] == world.users["alice"].name and r["method"] == "remote.upsert"
               and r["outcome"] == "error 1005" for r in lines)


def test_outside_the_group_is_refused(world: World) -> None:
    got = world.run("eve", "return shared().connect().status().pid")
    assert "oserror" in got or got.get("error") == 1005, got
    assert "ok" not in got


def test_share_cli_grant_list_revoke(world: World) -> None:
    pipe = shared_pipe(world, {})
    alice = world.users["alice"]
    bob = world.users["bob"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([world.python, "-m", "pipedaemon", "--socket", str(world.shared_socket),
                              "--json", "share", *args], env=world.env(alice), user=alice.uid,
                             group=alice.gid, extra_groups=alice.groups, capture_output=True, text=True,
                             timeout=60, cwd="/")
        world.outputs.append(out.stdout + out.stderr)
        return out

    granted = cli("grant", pipe, bob.name, "write")
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["permissions"][0] == {**json.loads(granted.stdout)["permissions"][0],
                                                            "username": bob.name, "role": "write"}
    listed = json.loads(cli("list", pipe).stdout)
    assert listed["owner"] == alice.name and [g["role"] for g in listed["permissions"]] == ["write"]
    assert json.loads(cli("revoke", pipe, bob.name).stdout)["permissions"] == []
    bad = cli("grant", pipe, "no-such-user-xyz", "read")
    assert bad.returncode == 1 and "no such user" in bad.stderr


def test_system_units_of_the_shared_daemon() -> None:
    import configparser

    units = Path(__file__).resolve().parents[2] / "systemd"

    def parse(name: str) -> configparser.ConfigParser:
        cp = configparser.ConfigParser(strict=True, interpolation=None)
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read_string((units / name).read_text())
        return cp

    service, sock = parse("pipedaemon-shared.service"), parse("pipedaemon-shared.socket")
    assert service["Unit"]["Requires"] == "pipedaemon-shared.socket"
    run = service["Service"]
    assert run["User"] == sock["Socket"]["SocketUser"] == "pipedaemon"
    assert run["Type"] == "notify" and run["ProtectHome"] == "yes"
    assert " serve --shared --group pipedaemon-users --socket /run/pipedaemon/shared.sock" in run["ExecStart"]
    assert sock["Socket"]["ListenStream"] == "/run/pipedaemon/shared.sock"
    assert (sock["Socket"]["SocketMode"], sock["Socket"]["SocketGroup"]) == ("0660", "pipedaemon-users")
    tmpfiles = (units / "pipedaemon-shared.tmpfiles").read_text()
    assert "d /run/pipedaemon 0750 pipedaemon pipedaemon-users -" in tmpfiles


def test_ssh_forwarded_socket_acts_as_the_ssh_user(world: World, sftp_server: Any) -> None:
    """``ssh -L local.sock:shared.sock bob@host``: sshd connects as bob, so bob's roles apply."""
    import shutil
    import time

    if not shutil.which("ssh"):
        from tests.conftest import unavailable

        unavailable("the ssh client is needed to forward the shared socket")
    pipe = shared_pipe(world, {"f.csv": b"fwd\n"})
    bob = world.users["bob"]
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "read"}])
    subprocess.run(["usermod", "-p", "*", bob.name], check=True)  # not locked: sshd lets the key in
    # sshd reads the authorized keys as the logging-in user: let bob reach the public key file.
    keys = sftp_server.base / "authorized_keys"
    modes = (stat.S_IMODE(sftp_server.base.stat().st_mode), stat.S_IMODE(keys.stat().st_mode))
    sftp_server.base.chmod(0o711)
    keys.chmod(0o644)
    local = world.root / "fwd.sock"
    ssh = subprocess.Popen(
        ["ssh", "-N", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={sftp_server.known_hosts}",
         "-o", "ExitOnForwardFailure=yes", "-i", str(sftp_server.client_key), "-p", str(sftp_server.port),
         "-L", f"{local}:{world.shared_socket}", f"{bob.name}@127.0.0.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not local.exists():
            assert ssh.poll() is None and time.monotonic() < deadline, ssh.stderr.read() if ssh.stderr else ""
            time.sleep(0.05)
        with PipeClient(local, shared=True) as c:
            assert c.call("object.stat", {"pipe": pipe, "key": "f.csv"})["size"] == 4
            from pipedaemon_sdk import PermissionDeniedError

            with pytest.raises(PermissionDeniedError):
                c.call("object.delete", {"pipe": pipe, "key": "f.csv"})
    finally:
        ssh.terminate()
        ssh.wait(10)
        sftp_server.base.chmod(modes[0])
        keys.chmod(modes[1])
    audit = [json.loads(line) for line in
             (world.users["shared"].base / "home" / "audit.log").read_text().splitlines()]
    mine = [r for r in audit if r.get("pipe") == pipe and r["method"] in ("object.stat", "object.delete")]
    assert [(r["user"], r["method"], r["outcome"]) for r in mine] == [
        (bob.name, "object.stat", "ok"), (bob.name, "object.delete", "error 1005")]


def test_push_and_pull_of_a_multipart_object_via_shared(world: World, s3_server: S3Server) -> None:
    """The shared S3 remote stores every write in parts (put_threshold 0): a multipart ETag comes
    back to bob's daemon, which verifies what it can (size) instead of failing the upload."""
    spec = spec_for(s3_server, world.bucket)  # type: ignore[attr-defined]
    world.ok("alice", SETUP_REMOTE, {"name": "lake-mp", "protocol": "s3",
                                     "options": {**spec["options"], "put_threshold": 0},
                                     "credentials": spec["credentials"]})
    name = f"m{uuid.uuid4().hex[:8]}"
    world.ok("alice", NEW_PIPE, {"name": name, "remote": "lake-mp", "options": {"dir": name}})
    bob, carol = world.users["bob"], world.users["carol"]
    world.ok("alice", GRANT, [name, {"username": bob.name, "role": "write"}])
    world.ok("alice", GRANT, [name, {"username": carol.name, "role": "read"}])
    folder = Path(world.ok("bob", OWN_PIPE, {"pipe": name, "repo": str(bob.base / "data")}))
    data = os.urandom(3000)
    (folder).mkdir(parents=True, exist_ok=True)
    os.chown(folder, bob.uid, bob.gid)
    (folder / "mp.bin").write_bytes(data)
    os.chown(folder / "mp.bin", bob.uid, bob.gid)
    world.ok("bob", "c = own().connect(); return str(c.pipe(ARGS['pipe']).push())", {"pipe": name})
    head = world.s3.head_object(Bucket=world.bucket, Key=f"{name}/mp.bin")  # type: ignore[attr-defined]
    assert head["ETag"].strip('"').endswith("-1") and head["ContentLength"] == 3000
    world.ok("carol", OWN_PIPE, {"pipe": name, "repo": str(carol.base / "data")})
    world.ok("carol", PULL, {"pipe": name})
    assert (carol.base / "data" / name / "mp.bin").read_bytes() == data
