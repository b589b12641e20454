"""A crash loop: kill -9 the daemon at random points of multi-file, multi-part pulls and pushes.

Each round starts a pipe push and a pipe pull at once (several files, most of them
multi-part) on moto S3, then repeatedly: lets them move a random share of what is
left, kills the daemon with SIGKILL, checks the state database (``PRAGMA
integrity_check``) and that no partial file sits under a final name, and restarts it
(auto-start); the new daemon resumes both jobs. After the last kill the jobs must
finish with identical bytes, no multipart upload or temporary file left, and the
bytes sent twice (counted at moto) within the in-flight bound for every kill.

The short form (``make test``) makes a handful of kills; the soak (``PIPEDAEMON_SOAK=1``)
at least 50. Figures: docs/reliability.md.
"""

from __future__ import annotations

import collections
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient
from tests.crash_helpers import (
    CHUNK,
    MiB,
    final_state,
    in_flight_bound,
    integrity,
    leftover_resume_rows,
    resent,
    wait_running_progress,
)
from tests.engine_helpers import kill_daemon, register, temp_leftovers
from tests.fault_campaign import SOAK
from tests.faultproxy import FaultProxy
from tests.spine_helpers import reaper  # noqa: F401 - kills what a failed test leaves running

ROUNDS = 12 if SOAK else 1
KILLS = 5 if SOAK else 3  # per round
SLOW = 16 * MiB  # each daemon's bandwidth, so a kill lands mid-transfer
HEADER_ALLOWANCE = 8 << 10  # bytes per request for HTTP headers and small bodies (listings, XML)


@pytest.fixture
def repo(pd_env: dict[str, Path], tmp_path: Path) -> Path:
    with PipeClient(request_timeout_s=120) as c:
        c.update_profile_config({"filerepo": str(tmp_path / "repo")})
    return tmp_path / "repo"


def _files(rng: random.Random) -> dict[str, bytes]:
    big = rng.randint(2, 4)
    files = {f"big{i}.bin": rng.randbytes(16 * MiB + rng.randint(1, 12 * MiB)) for i in range(big)}
    files.update({f"small/{i}.csv": rng.randbytes(rng.randint(1, 2 * MiB)) for i in range(rng.randint(1, 4))})
    return files


def _start(client: PipeClient, s3_spec: dict[str, Any], s3_client: Any, rnd: int,
           rng: random.Random) -> tuple[dict[str, Any], dict[str, bytes], dict[str, bytes]]:
    """Make the round's pipes and files; start its push and pull."""
    from boto3.s3.transfer import TransferConfig

    bucket = s3_spec["root"].rstrip("/")
    push_files, pull_files = _files(rng), _files(rng)
    cfg = TransferConfig(multipart_threshold=CHUNK, multipart_chunksize=CHUNK)
    for name, data in pull_files.items():
        s3_client.upload_fileobj(io.BytesIO(data), bucket, f"pull{rnd}/{name}", Config=cfg)
    client.upsert_pipe({"name": f"up{rnd}", "remote": "r", "options": {"dir": f"push{rnd}"}})
    client.upsert_pipe({"name": f"dn{rnd}", "remote": "r", "options": {"dir": f"pull{rnd}"}})
    up, dn = client.pipe(f"up{rnd}"), client.pipe(f"dn{rnd}")
    for name, data in push_files.items():
        (up.dirpath / name).parent.mkdir(parents=True, exist_ok=True)
        (up.dirpath / name).write_bytes(data)
    client.call("daemon.limits", {"bwlimit_bps": SLOW})
    jobs = {"push": up.push(wait=False).id, "pull": dn.pull(wait=False).id, "up": up, "dn": dn}
    return jobs, push_files, pull_files


def _no_partial_file(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        assert not path.exists() or path.read_bytes() == data, f"a partial {name} under its final name"


@pytest.mark.timeout(0 if SOAK else 300)
def test_crash_loop(s3_spec: dict[str, Any], s3_client: Any, s3_request_log: Any, repo: Path,
                    pd_env: dict[str, Path], request: pytest.FixtureRequest) -> None:
    bucket = s3_spec["root"].rstrip("/")
    # A pass-through proxy counts the bytes on the wire, parts cut short by a kill included
    # (moto logs only the requests it finished).
    proxy = FaultProxy(int(s3_spec["options"]["endpoint_url"].rsplit(":", 1)[1])).__enter__()
    request.addfinalizer(lambda: proxy.__exit__(None, None, None))
    with PipeClient(request_timeout_s=120) as c:
        register(c, "r", s3_spec, endpoint_url=f"http://127.0.0.1:{proxy.port}")
    totals = collections.Counter[str]()
    worst = 0
    for rnd in range(ROUNDS):
        rng = random.Random(rnd)
        s3_request_log.reset()
        wire = (proxy.bytes_up, proxy.bytes_down)
        client = PipeClient(request_timeout_s=120).connect()
        jobs, push_files, pull_files = _start(client, s3_spec, s3_client, rnd, rng)
        kills = 0
        for _ in range(KILLS):
            if not wait_running_progress(client, [jobs["push"], jobs["pull"]], rng.uniform(0.02, 0.9)):
                break  # both finished before this kill
            kill_daemon(client)
            kills += 1
            assert integrity(pd_env["home"]) == "ok"
            _no_partial_file(jobs["dn"].dirpath, pull_files)
            client = PipeClient(request_timeout_s=120).connect()  # auto-starts; jobs resume by themselves
            client.call("daemon.limits", {"bwlimit_bps": SLOW})
        client.call("daemon.limits", {"bwlimit_bps": 0})
        client.close()
        for op in ("push", "pull"):
            assert final_state(jobs[op]) == ("succeeded", None), f"round {rnd}: {op}"
        _check_round(s3_client, bucket, rnd, jobs, push_files, pull_files)
        sizes = {f"push{rnd}/{n}": len(d) for n, d in push_files.items()}
        pulled = {f"pull{rnd}/{n}": len(d) for n, d in pull_files.items()}
        entries = s3_request_log.entries()
        extra = resent(entries, bucket, sizes, pulled)
        # On the wire: everything beyond the files' bytes, less an allowance for HTTP headers and
        # listings (an upper bound: it counts a cut part's bytes too).
        headers = HEADER_ALLOWANCE * len(entries)
        wire_up = max(0, proxy.bytes_up - wire[0] - sum(sizes.values()) - headers)
        wire_down = max(0, proxy.bytes_down - wire[1] - sum(pulled.values()) - headers)
        bound = kills * in_flight_bound(2 * MiB)
        assert extra.up_bytes + extra.down_bytes <= bound, f"round {rnd}: {extra} beyond {kills} kills' bound"
        assert wire_up + wire_down <= bound, f"round {rnd}: {wire_up} + {wire_down} bytes again on the wire"
        totals.update(rounds=1, kills=kills, jobs=2, succeeded=2,
                      bytes_moved=sum(sizes.values()) + sum(pulled.values()),
                      resent_up_moto=extra.up_bytes, resent_down_moto=extra.down_bytes,
                      resent_up_requests=extra.up_requests, resent_down_requests=extra.down_requests,
                      resent_up_wire=wire_up, resent_down_wire=wire_down)
        worst = max(worst, (wire_up + wire_down) // max(kills, 1))
    with PipeClient(request_timeout_s=120) as c:
        c.shutdown()
    assert integrity(pd_env["home"]) == "ok" and leftover_resume_rows(pd_env["home"]) == 0
    assert totals["kills"] >= ROUNDS  # the loop really killed daemons mid-job
    _report({**totals, "worst_wire_per_kill": worst, "bound_per_kill": in_flight_bound(2 * MiB)})


def _check_round(s3_client: Any, bucket: str, rnd: int, jobs: dict[str, Any], push_files: dict[str, bytes],
                 pull_files: dict[str, bytes]) -> None:
    for name, data in push_files.items():
        assert s3_client.get_object(Bucket=bucket, Key=f"push{rnd}/{name}")["Body"].read() == data, name
    assert {n: (jobs["dn"].dirpath / n).read_bytes() for n in pull_files} == pull_files
    assert temp_leftovers(jobs["dn"].dirpath) == []
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with PipeClient(request_timeout_s=120) as c:  # nothing left to move, no conflict made up
        assert list(c.pipe(f"up{rnd}").push_preview()) == [] and list(c.pipe(f"dn{rnd}").pull_preview()) == []
        for op in ("push", "pull"):
            assert c.job(jobs[op]).refresh().result["conflicts"] == []


def _report(totals: dict[str, int]) -> None:
    print(f"\ncrash loop: {totals}")
    path = os.environ.get("PIPEDAEMON_SOAK_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"suite": "crash", **totals}) + "\n")
