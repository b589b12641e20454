"""The daemon's cached remote scans, proven by counting the listing requests moto received."""

from __future__ import annotations

from pipedaemon_sdk import PipeClient
from tests.servers.s3 import RequestLog
from tests.support.pipes import Storage, restart


def listings(log: RequestLog) -> int:
    """ListObjectsV2 requests (GET ...?list-type=2) since the log was last reset.

    The backend's connection check (``max-keys=1``, once per connection) is not a scan.
    """
    return sum(1 for m, p in log.entries() if m == "GET" and "list-type=2" in p and "max-keys=1&" not in p)


def vendor(client: PipeClient, st: Storage) -> None:
    for name in ("dataA/daily1.csv", "dataA/daily2.csv", "dataA/monthly1.csv", "dataB/reports1.xlsx",
                 "x.txt"):
        st.put(name, name)
    client.upsert_pipe({"name": "vendor-parent", "remote": "r"})
    client.upsert_pipe({"name": "vendor-daily", "parent": "vendor-parent",
                        "options": {"dir": "dataA", "include": "daily*.csv"}})
    client.upsert_pipe({"name": "vendor-monthly", "parent": "vendor-parent",
                        "options": {"dir": "dataA", "include": "monthly*.csv"}})
    client.upsert_pipe({"name": "vendor-reports", "parent": "vendor-parent",
                        "options": {"dir": "dataB", "include": "reports*.xlsx"}})


def test_parent_and_three_children_cost_one_listing(client: PipeClient, s3_storage: Storage,
                                                    s3_request_log: RequestLog) -> None:
    vendor(client, s3_storage)
    s3_request_log.reset()
    # A child first: the daemon lists the parent's folder once, and everyone filters from it.
    seen = {n: client.pipe(n).scan_remote() for n in
            ("vendor-daily", "vendor-monthly", "vendor-reports", "vendor-parent")}
    assert listings(s3_request_log) == 1
    assert seen["vendor-daily"] == ["daily1.csv", "daily2.csv"]
    assert seen["vendor-monthly"] == ["monthly1.csv"]
    assert seen["vendor-reports"] == ["reports1.xlsx"]
    assert len(seen["vendor-parent"]) == 5


def test_no_listing_within_the_ttl(client: PipeClient, s3_storage: Storage,
                                   s3_request_log: RequestLog) -> None:
    vendor(client, s3_storage)
    daily = client.pipe("vendor-daily")
    assert len(daily.pull()) == 2
    s3_request_log.reset()
    # Everything below reads the remote side from the cache: not one listing request.
    daily.pull_preview()
    assert daily.pull() == [] and daily.push() == []
    daily.scan_remote(attributes=True, sortby="size")
    assert daily.is_synced()
    (daily.dirpath / "daily3.csv").write_text("3")
    assert [r["filename"] for r in daily.push()] == ["daily3.csv"]
    assert "daily3.csv" in daily.scan_remote(), "our upload updated the cache"
    assert [r["filename"] for r in daily.delete_files_remote(["daily3.csv"], confirm=False)] == ["daily3.csv"]
    assert "daily3.csv" not in daily.scan_remote(), "our delete updated the cache"
    assert listings(s3_request_log) == 0
    assert s3_request_log.count("PUT") == 1 and s3_request_log.count("DELETE") == 1

    restart(client)  # the cache lives in SQLite: a new daemon still has it
    s3_request_log.reset()
    assert client.pipe("vendor-daily").scan_remote() == ["daily1.csv", "daily2.csv"]
    assert listings(s3_request_log) == 0

    s3_storage.put("dataA/daily4.csv", "4")  # behind the daemon's back: invisible within the TTL...
    assert "daily4.csv" not in client.pipe("vendor-daily").scan_remote()
    fresh = client.pipe("vendor-daily").pull(cached=False)  # ...until a fresh listing is asked for
    assert [r["filename"] for r in fresh] == ["daily4.csv"]
    assert listings(s3_request_log) == 1


def test_ttl_per_profile_and_per_pipe(client: PipeClient, s3_storage: Storage,
                                      s3_request_log: RequestLog) -> None:
    vendor(client, s3_storage)
    client.update_profile_config({"scan_ttl_s": 0})  # the profile's listings are never fresh
    s3_request_log.reset()
    parent = client.pipe("vendor-parent")
    parent.scan_remote()
    parent.scan_remote()
    assert listings(s3_request_log) == 2
    client.upsert_pipe({"name": "cached-pipe", "remote": "r", "options": {"scan_ttl_s": 300}})
    s3_request_log.reset()
    cached = client.pipe("cached-pipe")
    assert len(cached.scan_remote()) == 5 and len(cached.scan_remote()) == 5
    assert listings(s3_request_log) == 0, "the pipe's own TTL wins, and the parent's listing is fresh for it"


def test_our_temporary_names_are_not_files(client: PipeClient, s3_storage: Storage) -> None:
    s3_storage.put("a.csv", "a")
    s3_storage.put(".b.csv.pdpart-1234abcd", "half an upload")
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    assert pipe.scan_remote(cached=False) == ["a.csv"]
    assert [r["filename"] for r in pipe.pull()] == ["a.csv"]


def test_sorting(client: PipeClient, s3_storage: Storage) -> None:
    for name, size in (("b.csv", 3), ("a.csv", 1), ("c.csv", 2)):
        s3_storage.put(name, "x" * size)
    client.upsert_pipe({"name": "p", "remote": "r"})
    pipe = client.pipe("p")
    assert pipe.scan_remote() == ["a.csv", "b.csv", "c.csv"]
    assert pipe.scan_remote(sortby="size") == ["a.csv", "c.csv", "b.csv"]
    by_time = pipe.scan_remote(attributes=True, sortby="modified_at")
    assert [r["modified_at"] for r in by_time] == sorted(r["modified_at"] for r in by_time)
    assert all(r["etag"] for r in by_time)
