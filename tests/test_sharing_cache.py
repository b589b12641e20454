"""The shared daemon's central scan cache: its TTL at N-1/N/N+1, counted in listings of the
storage; a reader may not force a fresh listing; what ``remote.get`` shows a reader.

Time is controlled by the TTL, never asserted: a listing is reused while its age is below the
TTL (N-1: a TTL far longer than the test), stale once the age reaches it (N: TTL 0, so every
request lists) and past it (N+1: a 1 s TTL, and the test waits that second out).
"""

from __future__ import annotations

import time

from tests.servers.s3 import FAKE_SECRET, RequestLog, S3Server
from tests.sharing_helpers import World
from tests.test_sharing import CALL_SHARED, GRANT, OWN_PIPE, shared_pipe, world  # noqa: F401

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


def test_central_ttl_at_n_minus_1_n_n_plus_1(world: World, s3_server: S3Server) -> None:  # noqa: F811
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


def test_reader_may_not_force_a_fresh_listing(world: World, s3_server: S3Server) -> None:  # noqa: F811
    pipe = shared_pipe(world, {"r.csv": b"read\n"})
    set_ttl(world, pipe, 3600)
    bob = world.users["bob"]
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "read"}])
    log = RequestLog(s3_server.log_path)
    assert len(world.ok("bob", SCAN, {"name": pipe})) == 1  # lists once, into the central cache
    refused = world.run("bob", SCAN, {"name": pipe, "cached": False})
    assert refused["error"] == 1005 and refused["data"]["role"] == "write", refused
    assert len(world.ok("bob", SCAN, {"name": pipe})) == 1
    assert listings(log, world, pipe) == 1  # the refused request cost no listing
    # A new file shows to the reader only after a writer's fresh listing (or the TTL).
    world.s3.put_object(Bucket=world.bucket, Key=f"{pipe}/new.csv", Body=b"n")  # type: ignore[attr-defined]
    assert len(world.ok("bob", SCAN, {"name": pipe})) == 1
    assert len(world.ok("alice", SCAN, {"name": pipe, "cached": False})) == 2
    assert len(world.ok("bob", SCAN, {"name": pipe})) == 2
    assert listings(log, world, pipe) == 2
    world.ok("alice", GRANT, [pipe, {"username": bob.name, "role": "write"}])
    assert len(world.ok("bob", SCAN, {"name": pipe, "cached": False})) == 2
    assert listings(log, world, pipe) == 3


def test_reader_sees_the_remotes_options_not_its_credentials(world: World) -> None:  # noqa: F811
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
