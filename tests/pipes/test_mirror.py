"""Mirrors remote to remote against real servers: pyftpdlib, OpenSSH sftp, moto S3.

First a full copy, then only the changed file, then nothing; S3 -> S3 on one endpoint is
copied by the storage (no object read through the daemon); deletes only when asked; a
mirror pipe on a schedule; kill -9 in the middle, and a restart that finishes the copy
with identical bytes and no multipart upload left behind.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipedaemon.cli import main_group
from pipedaemon_sdk import InvalidParamsError, NotFoundError, PipeClient
from tests.pipes.test_schedules import next_of
from tests.support.crash import final_state
from tests.support.engine import kill_daemon, wait_progress
from tests.support.faultproxy import FaultProxy
from tests.support.pipes import Storage

MiB = 1 << 20
PART = 8 * MiB  # S3's part size in the engine (moto keeps the 5 MiB minimum)


def side(request: pytest.FixtureRequest, client: PipeClient, kind: str, name: str,
         spec: dict[str, Any] | None = None) -> Storage:
    """Remote ``name`` on a server of ``kind`` (``spec``: the same storage as another remote)."""
    spec = spec or request.getfixturevalue(f"{kind}_spec")
    s3 = request.getfixturevalue("s3_client") if kind == "s3" else None
    disk = request.getfixturevalue("ftp_server").root_dir if kind == "ftp" else None
    st = Storage(kind, spec, s3, disk)
    client.upsert_remote(st.settings(name))
    return st


def contents(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {"a.csv": b"id,v\n1,2\n", "sub/b.csv": rng.randbytes(5000), "c.bin": rng.randbytes(MiB + 7)}


def moved(result: dict[str, Any]) -> list[str]:
    return [f["filename"] for f in result["files"]]


# Pairs, not kinds: each kind as a source or a target once, and S3 -> S3 (a server-side copy).
@pytest.mark.parametrize("pair", ["ftp-s3", "sftp-s3", "s3-s3", "s3-sftp"])
def test_mirror_copies_all_then_the_change_then_nothing(pair: str, client: PipeClient,
                                                        request: pytest.FixtureRequest) -> None:
    a, b = pair.split("-")
    src = side(request, client, a, "src")
    dst = side(request, client, b, "dst", src.spec if a == b else None)  # s3-s3: one endpoint
    files = contents(1)
    for name, data in files.items():
        src.put(f"feeds/{name}", data)
    log = request.getfixturevalue("s3_request_log") if pair == "s3-s3" else None

    first = client.mirror("src:feeds/", "dst:vendor/feeds/")
    assert sorted(moved(first)) == sorted(files) and first["summary"]["copied"] == 3
    if log is not None:  # the storage copied: no object was read through the daemon
        assert first["server_side"] is True
        assert [p for m, p in log.entries() if m == "GET" and "list-type" not in p] == []  # (HEADs: sizes)
        assert log.count("PUT", "/vendor/feeds/") == 3 and log.count("PUT") == 3
    assert {n: dst.read(f"vendor/feeds/{n}") for n in files} == files

    src.put("feeds/a.csv", b"id,v\n1,2\n3,4\n")
    second = client.mirror("src:feeds/", "dst:vendor/feeds/")
    assert moved(second) == ["a.csv"] and second["files"][0]["action"] == "modified"
    assert dst.read("vendor/feeds/a.csv") == b"id,v\n1,2\n3,4\n"
    third = client.mirror("src:feeds/", "dst:vendor/feeds/")
    assert moved(third) == [] and third["summary"]["unchanged"] == 3
    assert not [n for n in dst.names() if ".pdpart" in n]


def test_deletes_only_when_asked_and_filters(client: PipeClient, request: pytest.FixtureRequest) -> None:
    src = side(request, client, "sftp", "src")
    dst = side(request, client, "s3", "dst")
    for name, data in contents(2).items():
        src.put(f"in/{name}", data)
    done = client.mirror("src:in/", "dst:out/", include="*.csv")
    assert sorted(moved(done)) == ["a.csv", "sub/b.csv"]
    src.delete("in/a.csv")
    kept = client.mirror("src:in/", "dst:out/", include="*.csv")
    assert moved(kept) == [] and kept["deleted"] == [] and "out/a.csv" in dst.names()
    gone = client.mirror("src:in/", "dst:out/", include="*.csv", delete=True)
    assert gone["deleted"] == ["a.csv"] and dst.names() == {"out/sub/b.csv"}


def test_bad_mirrors_are_refused(client: PipeClient, request: pytest.FixtureRequest) -> None:
    side(request, client, "sftp", "src")
    with pytest.raises(NotFoundError) as nf:
        client.mirror("src:in/", "nowhere:out/")
    assert nf.value.data["field"] == "dst"
    with pytest.raises(InvalidParamsError) as bad:
        client.mirror("src:in/", "no colon")
    assert bad.value.data["field"] == "dst"
    with pytest.raises(InvalidParamsError) as mode:
        client.mirror("src:in/", "src:out/", mode="sometimes")
    assert mode.value.data["field"] == "mode"
    with pytest.raises(InvalidParamsError) as overlap:
        client.mirror("src:in/", "src:in/sub/")
    assert overlap.value.data["field"] == "dst"


def test_a_scheduled_mirror_pipe(client: PipeClient, request: pytest.FixtureRequest) -> None:
    src = side(request, client, "ftp", "src")
    dst = side(request, client, "s3", "dst")
    src.put("feeds/x.csv", b"x")
    with client.watch(pipes=["m"]) as w:
        client.upsert_pipe({"name": "m", "mirror": {"from": "src:feeds/", "to": "dst:lake/"},
                            "schedule": {"every": "1s", "action": "mirror"}})
        ev = next_of(w, "job.finished", "m")
    assert ev.job.kind == "mirror" and ev.job.state == "succeeded"
    assert dst.read("lake/x.csv") == b"x"
    out = CliRunner().invoke(main_group, ["--json", "schedule", "list"])
    assert out.exit_code == 0 and '"pipe": "m"' in out.output
    client.remove_schedule("m")
    assert client.mirror(pipe="m")["summary"]["unchanged"] == 1


def test_kill_mid_mirror_then_restart_finishes(client: PipeClient, request: pytest.FixtureRequest,
                                               s3_client: Any, pd_env: dict[str, Path]) -> None:
    src = side(request, client, "sftp", "src")
    dst = side(request, client, "s3", "dst")
    rng = random.Random(3)
    files = {"big.bin": rng.randbytes(24 * MiB + 3), "small.csv": b"1,2\n"}
    for name, data in files.items():
        src.put(f"f/{name}", data)
    client.limits(bwlimit_bps=4 * MiB)  # slow enough to be killed mid-file (lifted by the restart)
    job = client.mirror("src:f/", "dst:g/", wait=False)
    wait_progress(client, job.id, 30)
    kill_daemon(client)
    bucket = dst.bucket
    assert "g/big.bin" not in dst.names()  # nothing half-written under the final name
    state, error = final_state(job.id)
    assert (state, error) == ("succeeded", None)
    assert {n: dst.read(f"g/{n}") for n in files} == files
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with PipeClient(request_timeout_s=120) as again:
        assert moved(again.mirror("src:f/", "dst:g/")) == []


def _parts_stored(home: Path, job_id: str) -> int:
    """Parts the job noted as stored in its resume slot (read beside the running daemon)."""
    with sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True, timeout=30) as db:
        return db.execute("SELECT COUNT(*) FROM transfer_done WHERE job_id=?", (job_id,)).fetchone()[0]


def test_kill_mid_file_resumes_its_parts(client: PipeClient, request: pytest.FixtureRequest,
                                         s3_client: Any, s3_spec: dict[str, Any], pd_env: dict[str, Path],
                                         s3_request_log: Any) -> None:
    """One large file, S3 (through a counting proxy) -> S3: after kill -9 the re-run keeps the
    multipart upload, reads the source again only from the first part not stored, and sends
    only the parts that were not stored."""
    port = int(s3_spec["options"]["endpoint_url"].rsplit(":", 1)[1])
    with FaultProxy(port) as proxy:
        via = {**s3_spec, "options": {**s3_spec["options"], "endpoint_url": f"http://127.0.0.1:{proxy.port}"}}
        src = side(request, client, "s3", "src", via)  # another endpoint: streamed, not copied by S3
        dst = side(request, client, "s3", "dst", s3_spec)
        size = 3 * PART + 5
        data = random.Random(4).randbytes(size)
        src.put("f/big.bin", data)
        client.limits(bwlimit_bps=4 * MiB)  # about 6 s for the file (lifted by the restart)
        job = client.mirror("src:f/", "dst:g/", wait=False)
        deadline = time.monotonic() + 120
        while _parts_stored(pd_env["home"], job.id) < 1:  # killed once a part is stored, mid-file
            assert time.monotonic() < deadline and client.job(job.id).refresh().state == "running"
            time.sleep(0.05)
        kill_daemon(client)
        stored = _parts_stored(pd_env["home"], job.id)
        assert stored < 4 and "g/big.bin" not in dst.names()  # nothing under the final name yet
        proxy.bytes_down = 0  # from here: what the re-run reads of the source
        s3_request_log.reset()
        state, error = final_state(job.id)
        reread = proxy.bytes_down
    assert (state, error) == ("succeeded", None)
    assert dst.read("g/big.bin") == data
    assert s3_client.list_multipart_uploads(Bucket=dst.bucket).get("Uploads", []) == []
    # The source is read again from the first part not stored: at least that part less, and
    # only the parts not stored are sent again.
    assert reread <= size - PART + 256 * 1024, reread  # (listing and HTTP headers: well under 256 KiB)
    sent = [t for m, t in s3_request_log.entries() if m == "PUT" and "partNumber" in t and "g/big.bin" in t]
    assert 0 < len(sent) <= 4 - stored, sent
    assert _parts_stored(pd_env["home"], job.id) == 0  # the slot is cleared when the file is done


def test_cli_mirror_and_recursive_cp(client: PipeClient, request: pytest.FixtureRequest) -> None:
    src = side(request, client, "sftp", "src")
    dst = side(request, client, "s3", "dst")
    for name, data in contents(4).items():
        src.put(f"d/{name}", data)
    run = CliRunner()
    out = run.invoke(main_group, ["--json", "mirror", "src:d/", "dst:e/", "--exclude", "*.bin"])
    assert out.exit_code == 0, out.output
    assert dst.names() == {"e/a.csv", "e/sub/b.csv"}
    out = run.invoke(main_group, ["cp", "-r", "src:d/", "dst:all/"])
    assert out.exit_code == 0, out.output
    assert {n for n in dst.names() if n.startswith("all/")} == {"all/a.csv", "all/sub/b.csv", "all/c.bin"}
    out = run.invoke(main_group, ["cp", "src:d/", "dst:x/"])
    assert out.exit_code != 0 and "-r" in out.output
