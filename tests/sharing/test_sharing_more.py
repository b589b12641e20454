"""A shared pipe works unchanged (resume after kill -9 of the user's own daemon, progress, the
d6tpipe layer and its upsert_permissions); the central scan cache's TTL at N-1/N/N+1, counted
in listings of the storage; a reader may not force a fresh listing; what ``remote.get`` shows.

Time is controlled by the TTL, never asserted: a listing is reused while its age is below the
TTL (N-1: a TTL far longer than the test), stale once the age reaches it (N: TTL 0, so every
request lists) and past it (N+1: a 1 s TTL, and the test waits that second out).
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from boto3.s3.transfer import TransferConfig

from pipedaemon.transfer import PARALLEL_THRESHOLD
from tests.servers.s3 import FAKE_SECRET, RequestLog, S3Server
from tests.sharing.helpers import World
from tests.sharing.test_sharing import CALL_SHARED, GRANT, OWN_PIPE, shared_pipe

PULL_TWICE = """
c = own().connect()
return [len(c.pipe(ARGS["pipe"]).pull(cached=False)) for _ in range(2)]
"""
SET_TTL = "c = shared().connect(); return c.call('pipe.update_settings', ARGS)"


def listings(log: RequestLog, w: World, pipe: str) -> int:
    return sum(1 for m, p in log.entries() if m == "GET" and p.startswith(f"/{w.bucket}?")  # type: ignore[attr-defined]
               and "list-type" in p and pipe in p)


def set_ttl(w: World, pipe: str, ttl: float) -> None:
    w.ok("alice", SET_TTL, {"name": pipe, "settings": {"options": {"dir": pipe, "scan_ttl_s": ttl}}})


def test_central_ttl_at_n_minus_1_n_n_plus_1(world: World, s3_server: S3Server) -> None:
    pipe = shared_pipe(world, {"t.csv": b"ttl\n"})
    set_ttl(world, pipe, 3600)
    world.ok("alice", GRANT, [pipe, {"username": "public", "role": "read"}])
    for who in ("bob", "carol"):
        world.ok(who, OWN_PIPE, {"pipe": pipe, "repo": str(world.users[who].base / "data")})
    log = RequestLog(s3_server.log_path)
    # N-1: within the TTL, four pulls by two users (their own caches bypassed) cost one listing.
    for who in ("bob", "carol"):
        assert world.ok(who, PULL_TWICE, {"pipe": pipe}) in ([1, 0], [0, 0])
    assert listings(log, world, pipe) == 1
    # N+1: the TTL is 1 s and the last listing is older once that second has passed.
    set_ttl(world, pipe, 1)
    time.sleep(1.2)
    world.ok("bob", PULL_TWICE, {"pipe": pipe})  # the first lists; the second is within 1 s...
    n = listings(log, world, pipe)
    assert n in (2, 3)  # ...unless the machine was slower than that second (then it lists too)
    set_ttl(world, pipe, 3600)  # and the fresh listing serves everyone again
    world.ok("carol", PULL_TWICE, {"pipe": pipe})
    assert listings(log, world, pipe) == n
    # N: a listing whose age equals the TTL is stale; TTL 0 makes every request list.
    set_ttl(world, pipe, 0)
    world.ok("carol", PULL_TWICE, {"pipe": pipe})
    assert listings(log, world, pipe) == n + 2


SCAN = "c = shared().connect(); return c.call('pipe.scan_remote', ARGS)"


def test_reader_may_not_force_a_fresh_listing(world: World, s3_server: S3Server) -> None:
    pipe = shared_pipe(world, {"r.csv": b"read\n", "sub/s.csv": b"s"})
    set_ttl(world, pipe, 3600)
    bob = world.users["bob"]
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "read"}])
    log = RequestLog(s3_server.log_path)
    assert len(world.ok("bob", SCAN, {"name": pipe})) == 2  # lists once, into the central cache
    refused = world.run("bob", SCAN, {"name": pipe, "cached": False})
    assert refused["error"] == 1005 and refused["data"]["role"] == "write", refused
    assert len(world.ok("bob", SCAN, {"name": pipe})) == 2
    assert listings(log, world, pipe) == 1  # the refused request cost no listing
    # Nor does a flat listing of a folder: it comes from the same central listing.
    flat = world.ok("bob", CALL_SHARED, ["object.list", {"pipe": pipe, "recursive": False}])
    assert [(r["name"], r["is_dir"]) for r in flat] == [("r.csv", False), ("sub", True)]
    assert listings(log, world, pipe) == 1
    # A new file shows to the reader only after a writer's fresh listing (or the TTL).
    world.s3.put_object(Bucket=world.bucket, Key=f"{pipe}/new.csv", Body=b"n")  # type: ignore[attr-defined]
    assert len(world.ok("bob", SCAN, {"name": pipe})) == 2
    assert len(world.ok("alice", SCAN, {"name": pipe, "cached": False})) == 3
    assert len(world.ok("bob", SCAN, {"name": pipe})) == 3
    assert listings(log, world, pipe) == 2
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "write"}])
    assert len(world.ok("bob", SCAN, {"name": pipe, "cached": False})) == 3
    assert listings(log, world, pipe) == 3


def test_reader_sees_the_remotes_options_not_its_credentials(world: World) -> None:
    bob = world.users["bob"]
    world.ok("alice", "c = shared().connect(); return c.call('remote.upsert_permissions', ARGS)",
             {"name": "lake", "settings": {"username": bob.name, "role": "read"}})
    try:
        got = world.ok("bob", CALL_SHARED, ["remote.get", {"name": "lake"}])
        assert got["protocol"] == "s3" and world.bucket in repr(got["options"])  # type: ignore[attr-defined]
        assert "endpoint_url" in got["options"], got
        assert FAKE_SECRET not in repr(got)
        assert set(got["credentials"].values()) == {"***"}, got  # which are set, never their values
    finally:
        world.ok("alice", "c = shared().connect(); return c.call('remote.upsert_permissions', ARGS)",
                 {"name": "lake", "settings": {"username": bob.name, "role": None}})


KILLED_PULL = """
import os, signal, time
c = own().connect()
c.update_profile_config({"bwlimit_bps": ARGS["rate"]})  # slow, so the kill lands mid-file
# at 60 %: past the first resume point (RESUME_STEP, 8 MiB), before the end
job = c.pipe(ARGS["pipe"]).pull(wait=False)
seen, pid = [], c.status().pid
def progress(ev):
    seen.append(ev.bytes_done)
    if ev.bytes_total and ev.bytes_done >= ev.bytes_total * 0.6 and len(seen) < 1000:
        seen.append(-1)
        os.kill(pid, signal.SIGKILL)
try:
    job.wait(timeout=60, on_progress=progress)
except Exception as exc:
    killed = type(exc).__name__
else:
    return {"not killed": seen}
c.close()
def gone():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] in "ZX"
    except FileNotFoundError:
        return True
while not gone():  # a connection made before it died could be accepted by its backlog
    time.sleep(0.02)
failures = []
for _ in range(10):  # auto-starts a new daemon, which resumes the job by itself
    try:
        c = own().connect()
        c.status()
        break
    except DaemonError as exc:
        failures.append(exc.message)
        time.sleep(0.5)
info = c.job(job.id).wait(timeout=60)
return {"killed": killed, "seen": seen, "state": info.state, "reconnects": failures}
"""


def test_kill_9_of_the_users_daemon_mid_pull_resumes(world: World) -> None:
    data = os.urandom(PARALLEL_THRESHOLD + (1 << 20))  # below the threshold a file restarts whole
    pipe = shared_pipe(world, {})
    # In 8 MiB parts, as big files are stored on S3: each range is verified on its own.
    config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    world.s3.upload_fileobj(io.BytesIO(data), world.bucket, f"{pipe}/big.bin", Config=config)  # type: ignore[attr-defined]
    bob = world.users["bob"]
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "read"}])
    folder = Path(world.ok("bob", OWN_PIPE, {"pipe": pipe, "repo": str(bob.base / "data")}))
    got = world.ok("bob", KILLED_PULL, {"pipe": pipe, "rate": 4 << 20})
    assert "killed" in got and got["state"] == "succeeded", got
    seen = got["seen"][:got["seen"].index(-1)]  # the events before the kill
    assert seen and 0 < max(seen) < len(data), got  # progress arrived, and the kill was mid-file
    assert (folder / "big.bin").read_bytes() == data
    assert (folder / "big.bin").stat().st_uid == bob.uid
    assert not [p for p in folder.rglob("*") if ".pdpart" in p.name]
    # Resumed, not restarted: the shared daemon streamed less than twice the file.
    audit = [json.loads(line) for line in (world.users["shared"].base / "home" / "audit.log").open()]
    reads = [r["bytes"] for r in audit if r.get("pipe") == pipe and r["method"] == "object.read"]
    assert sum(reads) < 2 * len(data), reads


D6TPIPE = """
from pipedaemon_sdk import d6tpipe
api = d6tpipe.APILocal()
pipe = d6tpipe.Pipe(api, ARGS["pipe"])
pulled = pipe.pull()
resp, data = d6tpipe.upsert_permissions(api, ARGS["pipe"], {"username": ARGS["carol"], "role": "read"})
listed = api.cnxn.pipes._(ARGS["pipe"]).permissions.get()
return {"pulled": sorted(pulled), "status": resp.status_code, "data": data,
        "list_status": listed[0].status_code, "listed": listed[1]}
"""


def test_d6tpipe_pulls_a_shared_pipe_and_grants_for_real(world: World) -> None:
    files = {"d.csv": b"d6t\n", "sub/e.csv": b"e" * 100}
    pipe = shared_pipe(world, files)
    bob, carol = world.users["bob"], world.users["carol"]
    read = ["object.stat", {"pipe": pipe, "key": "d.csv"}]
    assert world.run("carol", CALL_SHARED, read)["error"] == 1001
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "admin"}])
    folder = Path(world.ok("bob", OWN_PIPE, {"pipe": pipe, "repo": str(bob.base / "data")}))
    got = world.ok("bob", D6TPIPE, {"pipe": pipe, "carol": carol.name})
    assert got["pulled"] == sorted(files)
    for key, body in files.items():
        assert (folder / key).read_bytes() == body
    assert got["status"] == 201 and got["list_status"] == 200
    grant = {"username": carol.name, "role": "read", "granted_by": bob.name}
    rows = [{k: g[k] for k in grant} for g in got["data"]["permissions"]]
    assert grant in rows and got["data"]["owner"] == world.users["alice"].name, got  # d6tpipe's data
    assert got["listed"] == got["data"]
    assert world.ok("carol", CALL_SHARED, read)["size"] == 4  # the grant is real on the shared daemon
