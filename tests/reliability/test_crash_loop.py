"""A crash loop: kill -9 the daemon at random points of multi-file, multi-part pulls and pushes.

Each round starts a pipe push and a pipe pull at once (several files, most of them
multi-part) on moto S3 or OpenSSH sftp, then repeatedly: lets them move a random share
of what is left, kills the daemon with SIGKILL, checks the state database (``PRAGMA
integrity_check``) and that no partial file sits under a final name, and restarts it
(auto-start); the new daemon resumes both jobs. After the round's last kill both jobs
must finish with identical bytes, no multipart upload, temporary file or resume note
left, nothing more to move and no conflict made up; and the bytes sent twice within
the in-flight bound (streams x chunk) for every kill.

Bytes sent twice are counted on the wire by a pass-through proxy (everything beyond
the files' own bytes, less an allowance for protocol overhead: an upper bound, as it
also counts the part of a chunk a kill cut short), and for S3 also at moto (requests
it completed twice: extra part uploads and ranged GETs).

The short form (``make test``) makes a handful of kills; the soak (``PIPEDAEMON_SOAK=1``)
at least 50 on S3 and 20 on SFTP. Figures: docs/reliability.md.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient
from tests.reliability.fault_campaign import local_files, remote_files, seed_remote, server_for
from tests.support import soak
from tests.support.crash import (
    MiB,
    final_state,
    in_flight_bound,
    integrity,
    leftover_resume_rows,
    resent,
    wait_running_progress,
)
from tests.support.engine import kill_daemon, temp_leftovers
from tests.support.faultproxy import FaultProxy
from tests.support.pipes import Storage
from tests.support.soak import SOAK
from tests.support.storage import register

TARGET_KILLS = {"s3": 50, "sftp": 20} if SOAK else {"s3": 3, "sftp": 2}
KILLS_PER_ROUND = 5 if SOAK else 3
# Each connection's bandwidth at the proxy, so a kill lands mid-transfer. A slow link rather than
# the daemon's own limit: a throttled daemon would leave the server's answers piling up in socket
# buffers, which a kill then makes it fetch again (a real link is slow before the daemon, not in it).
RATE = {"s3": 6 * MiB, "sftp": 16 * MiB}
SMALL_MAX = 2 * MiB  # the largest single-stream file: below the chunk, so the bound is streams x chunk
# Protocol overhead on the wire: per S3 request (headers, listings, XML), per SFTP byte (packets, MACs).
PER_REQUEST = 8 << 10
PER_BYTE = {"s3": 0.0, "sftp": 0.005}  # measured: 0.3 % up, 0.1 % down


@dataclass
class Loop:
    protocol: str
    storage: Storage
    proxy: FaultProxy
    home: Path
    request_log: Any  # moto's, for S3
    totals: collections.Counter[str] = field(default_factory=collections.Counter)
    worst: int = 0  # most bytes sent again for one kill

    def round(self, rnd: int) -> None:
        rng = random.Random(f"{self.protocol}:{rnd}")
        if self.request_log is not None:
            self.request_log.reset()
        wire = (self.proxy.bytes_up, self.proxy.bytes_down)
        client = PipeClient(request_timeout_s=120).connect()
        push_files, pull_files = _files(rng), _files(rng)
        seed_remote(self.storage, f"pull{rnd}/", pull_files)
        up, dn = _pipes(client, rnd, push_files)
        jobs = [up.push(wait=False).id, dn.pull(wait=False).id]
        kills = 0
        for _ in range(KILLS_PER_ROUND):
            if not wait_running_progress(client, jobs, rng.uniform(0.02, 0.9)):
                break  # both finished before this kill
            kill_daemon(client)
            kills += 1
            assert integrity(self.home) == "ok", f"round {rnd}: state db damaged by kill {kills}"
            for name, data in local_files(dn.dirpath).items():
                assert ".pdpart" in name or data == pull_files[name], f"round {rnd}: a partial {name}"
            client = PipeClient(request_timeout_s=120).connect()  # auto-starts; the jobs resume
        client.close()
        for jid in jobs:
            assert final_state(jid) == ("succeeded", None), f"round {rnd}: job {jid}"
        self._check(rnd, jobs, up.dirpath, dn.dirpath, push_files, pull_files)
        self._measure(rnd, kills, wire, push_files, pull_files)

    def _check(self, rnd: int, jobs: list[str], up_dir: Path, dn_dir: Path, push_files: dict[str, bytes],
               pull_files: dict[str, bytes]) -> None:
        assert remote_files(self.storage, f"push{rnd}/") == push_files  # no temporary name either
        assert local_files(dn_dir) == pull_files and temp_leftovers(dn_dir) == []
        if self.protocol == "s3":
            uploads = self.storage.s3.list_multipart_uploads(Bucket=self.storage.bucket).get("Uploads", [])
            assert uploads == [], f"round {rnd}: multipart uploads left: {uploads}"
        with PipeClient(request_timeout_s=120) as c:  # nothing left to move, no conflict made up
            assert list(c.pipe(f"up{rnd}").push_preview()) == []
            assert list(c.pipe(f"dn{rnd}").pull_preview()) == []
            for jid in jobs:
                assert c.job(jid).refresh().result["conflicts"] == []

    def _measure(self, rnd: int, kills: int, wire: tuple[int, int], push_files: dict[str, bytes],
                 pull_files: dict[str, bytes]) -> None:
        pushed = {f"push{rnd}/{n}": len(d) for n, d in push_files.items()}
        pulled = {f"pull{rnd}/{n}": len(d) for n, d in pull_files.items()}
        moved = sum(pushed.values()) + sum(pulled.values())
        bound = kills * in_flight_bound(SMALL_MAX)
        requests, extra = 0, None
        if self.request_log is not None:
            entries = self.request_log.entries()
            requests = len(entries)
            extra = resent(entries, self.storage.bucket, pushed, pulled)
            assert extra.up_bytes <= bound, f"round {rnd}: {extra} beyond {kills} kills"
            self.totals.update(resent_up_moto=extra.up_bytes, resent_up_requests=extra.up_requests,
                               gets=extra.gets, objects_pulled=extra.objects)
        up, down = sum(pushed.values()), sum(pulled.values())

        def beyond(sent: int, files: int) -> int:  # less the protocol's own overhead
            return max(0, sent - files - PER_REQUEST * requests - int(PER_BYTE[self.protocol] * files))

        wire_up = beyond(self.proxy.bytes_up - wire[0], up)
        wire_down = beyond(self.proxy.bytes_down - wire[1], down)
        assert wire_up + wire_down <= bound, f"round {rnd}: {wire_up} + {wire_down} bytes again after {kills}"
        self.totals.update(rounds=1, kills=kills, jobs=2, succeeded=2, bytes_moved=moved,
                           resent_up_wire=wire_up, resent_down_wire=wire_down)
        self.worst = max(self.worst, (wire_up + wire_down) // max(kills, 1))


def _files(rng: random.Random) -> dict[str, bytes]:
    big = rng.randint(2, 4)
    files = {f"big{i}.bin": rng.randbytes(16 * MiB + rng.randint(1, 12 * MiB)) for i in range(big)}
    small = rng.randint(1, 4)
    files.update({f"small/{i}.csv": rng.randbytes(rng.randint(1, SMALL_MAX)) for i in range(small)})
    return files


def _pipes(client: PipeClient, rnd: int, push_files: dict[str, bytes]) -> tuple[Any, Any]:
    client.upsert_pipe({"name": f"up{rnd}", "remote": "r", "options": {"dir": f"push{rnd}"}})
    client.upsert_pipe({"name": f"dn{rnd}", "remote": "r", "options": {"dir": f"pull{rnd}"}})
    up, dn = client.pipe(f"up{rnd}"), client.pipe(f"dn{rnd}")
    for name, data in push_files.items():
        (up.dirpath / name).parent.mkdir(parents=True, exist_ok=True)
        (up.dirpath / name).write_bytes(data)
    return up, dn


@pytest.mark.timeout(0 if SOAK else 300)
# Resumed parts on a wire the proxy counts: S3's parts, SFTP's ranged writes (FTP has none; local no wire).
@pytest.mark.parametrize("protocol, transport", [("s3", None), ("sftp", "openssh"), ("sftp", "asyncssh")])
def test_crash_loop(protocol: str, transport: str | None, request: pytest.FixtureRequest,
                    pd_env: dict[str, Path], tmp_path: Path) -> None:
    spec, storage, port = server_for(request, protocol)
    log = request.getfixturevalue("s3_request_log") if protocol == "s3" else None
    with FaultProxy(port, lambda n: ("slow_both", RATE[protocol])) as proxy:  # counts the bytes too
        with PipeClient(request_timeout_s=120) as c:
            c.update_profile_config({"filerepo": str(tmp_path / "repo")})
            extra = {"endpoint_url": f"http://127.0.0.1:{proxy.port}"} if protocol == "s3" else \
                {"port": proxy.port, "known_hosts": "accept-new", "transport": transport}
            register(c, spec, "r", **extra)
        loop = Loop(protocol, storage, proxy, pd_env["home"], log)
        rnd = 0
        while loop.totals["kills"] < TARGET_KILLS[protocol]:
            assert rnd <= 2 * TARGET_KILLS[protocol], "the rounds keep ending before a kill lands"
            loop.round(rnd)
            rnd += 1
        with PipeClient(request_timeout_s=120) as c:
            c.shutdown()
    assert integrity(pd_env["home"]) == "ok" and leftover_resume_rows(pd_env["home"]) == 0
    report = {"suite": "crash", "protocol": protocol, "transport": transport, **loop.totals,
              "worst_wire_per_kill": loop.worst, "bound_per_kill": in_flight_bound(SMALL_MAX)}
    print(f"\ncrash loop: {report}")
    soak.report(report)
