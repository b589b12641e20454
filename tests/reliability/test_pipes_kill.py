"""kill -9 of the daemon at 10 %, 50 % and 90 % of a multi-file, multi-part pipe pull and push.

A restarted daemon (auto-started by the next client) resumes the job by itself and
finishes it with identical bytes; what it sent again stays within the chunks that
were in flight (streams x chunk), and the multipart uploads continue with their
upload ids.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient
from tests.support.crash import (
    CHUNK,
    MiB,
    final_state,
    in_flight_bound,
    integrity,
    leftover_resume_rows,
    resent,
)
from tests.support.engine import kill_daemon, temp_leftovers, wait_progress
from tests.support.faultproxy import FaultProxy
from tests.support.storage import register

HEADERS = 8 << 10  # per request: HTTP headers, listings and XML answers on the wire
# Each connection's bandwidth (a slow link at the proxy), so the kill lands where it should.
RATE = 4 * MiB
FILES = {"a.bin": 20 * MiB + 5, "b.bin": 17 * MiB, "sub/c.bin": 24 * MiB, "d.csv": 1 * MiB, "e.csv": 300_000}


@pytest.fixture
def pd_client(pd_env: dict[str, Path], tmp_path: Path) -> Iterator[PipeClient]:
    with PipeClient(request_timeout_s=120) as c:
        c.update_profile_config({"filerepo": str(tmp_path / "repo")})
        yield c


def _contents(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {name: rng.randbytes(size) for name, size in FILES.items()}


def _seed_bucket(s3_client: Any, bucket: str, files: dict[str, bytes]) -> None:
    from boto3.s3.transfer import TransferConfig

    cfg = TransferConfig(multipart_threshold=CHUNK, multipart_chunksize=CHUNK)
    for name, data in files.items():
        s3_client.upload_fileobj(io.BytesIO(data), bucket, f"data/{name}", Config=cfg)


@pytest.mark.parametrize("percent", [10, 50, 90])
@pytest.mark.parametrize("direction", ["pull", "push"])
def test_kill_mid_pipe_job_then_resume(direction: str, percent: int, s3_spec: dict[str, Any], s3_client: Any,
                                       s3_request_log: Any, pd_client: PipeClient, pd_env: dict[str, Path],
                                       request: pytest.FixtureRequest) -> None:
    files = _contents(percent)
    bucket = s3_spec["root"].rstrip("/")
    # The proxy also counts the bytes on the wire (moto logs only the requests it finished).
    port = int(s3_spec["options"]["endpoint_url"].rsplit(":", 1)[1])
    proxy = FaultProxy(port, lambda n: ("slow_both", RATE)).__enter__()
    request.addfinalizer(lambda: proxy.__exit__(None, None, None))
    register(pd_client, s3_spec, "r", endpoint_url=f"http://127.0.0.1:{proxy.port}")
    pd_client.upsert_pipe({"name": "p", "remote": "r", "options": {"dir": "data"}})
    pipe = pd_client.pipe("p")
    if direction == "pull":
        _seed_bucket(s3_client, bucket, files)
    else:
        for name, data in files.items():
            (pipe.dirpath / name).parent.mkdir(parents=True, exist_ok=True)
            (pipe.dirpath / name).write_bytes(data)
    s3_request_log.reset()
    wire = (proxy.bytes_up, proxy.bytes_down)
    job = pipe.pull(wait=False) if direction == "pull" else pipe.push(wait=False)
    wait_progress(pd_client, job.id, percent)
    kill_daemon(pd_client)
    assert integrity(pd_env["home"]) == "ok"
    if direction == "pull":  # never a partial file under a final name
        for name, data in files.items():
            path = pipe.dirpath / name
            assert not path.exists() or path.read_bytes() == data

    state, error = final_state(job.id)
    assert (state, error) == ("succeeded", None)
    with PipeClient(request_timeout_s=120) as client:
        result = client.job(job.id).refresh().result
        again = client.pipe("p").pull_preview() if direction == "pull" else client.pipe("p").push_preview()
        client.shutdown()
    assert result["conflicts"] == [] and list(again) == [] and again.conflicts == []
    if direction == "pull":
        assert {n: (pipe.dirpath / n).read_bytes() for n in files} == files
        assert temp_leftovers(pipe.dirpath) == []
    else:
        for name, data in files.items():
            assert s3_client.get_object(Bucket=bucket, Key=f"data/{name}")["Body"].read() == data
        assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        big = sum(1 for d in files.values() if len(d) >= 16 * MiB)
        assert s3_request_log.count("POST", "uploads") == big  # each upload id continued, none restarted
    sizes = {f"data/{n}": len(d) for n, d in files.items()}
    entries = s3_request_log.entries()
    extra = resent(entries, bucket, sizes if direction == "push" else {}, {})
    bound = in_flight_bound(max(len(d) for d in files.values() if len(d) < 16 * MiB))
    assert extra.up_bytes <= bound, f"{extra} beyond one kill's in-flight bound {bound}"
    moved = proxy.bytes_up - wire[0] if direction == "push" else proxy.bytes_down - wire[1]
    again_on_wire = moved - sum(sizes.values()) - HEADERS * len(entries)
    assert again_on_wire <= bound, f"{again_on_wire} bytes sent again, beyond one kill's bound {bound}"
    assert integrity(pd_env["home"]) == "ok" and leftover_resume_rows(pd_env["home"]) == 0


def test_a_multipart_copy_without_sync_state_is_recognised(s3_spec: dict[str, Any], s3_client: Any,
                                                           pd_client: PipeClient) -> None:
    """What a push killed between its upload and its state leaves: the same bytes on both sides,
    the remote one multipart (ETag md5-of-md5s), no sync record. It is adopted, not a conflict."""
    data = random.Random(3).randbytes(20 * MiB)
    _seed_bucket(s3_client, s3_spec["root"].rstrip("/"), {"x.bin": data})
    register(pd_client, s3_spec, "r")
    pd_client.upsert_pipe({"name": "p", "remote": "r", "options": {"dir": "data"}})
    pipe = pd_client.pipe("p")
    pipe.dirpath.mkdir(parents=True, exist_ok=True)
    (pipe.dirpath / "x.bin").write_bytes(data)
    assert list(pipe.push()) == [] and pipe.is_synced()
    pd_client.shutdown()
