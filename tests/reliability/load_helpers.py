"""Load: many clients making requests while transfer jobs run, measured from outside.

``run_load`` drives a sandboxed daemon (tests/support/hostile.sandbox) with ``clients``
AsyncPipeClient connections spread over ``procs`` worker processes (so client-side work
does not share one interpreter), each making ``requests`` sequential requests of a mix of
methods, while ``jobs`` throttled uploads and downloads run on a local remote. It samples
the daemon's VmRSS and every job's progress meanwhile. tests/reliability/test_load.py runs a short
form; bench/load.py the long one (64 clients x 200 requests) and writes the figures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20
# Jobs run together, each on its own stream slots: the daemon's defaults would queue some.
LOAD_ENV = {"PIPEDAEMON_MAX_JOBS": "16", "PIPEDAEMON_MAX_STREAMS": "32", "PIPEDAEMON_REMOTE_STREAMS": "16"}
MIX = ["daemon.ping", "daemon.status", "job.list", "job.get", "remote.get", "pipe.list"]


@dataclass
class LoadConfig:
    clients: int = 64
    requests: int = 200
    jobs: int = 16
    file_mib: int = 8
    job_bps: int = 1 * MiB  # each job's own limit: they overlap the whole run
    procs: int = 4
    sample_s: float = 3.0  # a job must advance between two samples this far apart


@dataclass
class LoadResult:
    config: LoadConfig
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    answered: int = 0
    wall_s: float = 0.0
    rss_base_kib: int = 0
    rss_peak_kib: int = 0
    samples: list[dict[str, tuple[str, int]]] = field(default_factory=list)
    stalls: list[str] = field(default_factory=list)
    job_states: dict[str, str] = field(default_factory=dict)

    def all_ms(self) -> list[float]:
        return [x for v in self.latencies_ms.values() for x in v]

    @staticmethod
    def pct(values: list[float], p: float) -> float:
        if not values:
            return 0.0
        s = sorted(values)
        return s[min(len(s) - 1, int(p / 100 * len(s)))]

    def summary(self) -> dict[str, Any]:
        lat = self.all_ms()
        cfg = self.config
        return {"clients": cfg.clients, "requests_each": cfg.requests, "jobs": cfg.jobs,
                "answered": self.answered, "errors": len(self.errors), "wall_s": round(self.wall_s, 1),
                "req_per_s": round(self.answered / self.wall_s) if self.wall_s else 0,
                "p50_ms": round(self.pct(lat, 50), 2), "p99_ms": round(self.pct(lat, 99), 2),
                "max_ms": round(max(lat), 1) if lat else 0,
                "per_method_p50_p99_ms": {m: (round(self.pct(v, 50), 2), round(self.pct(v, 99), 2))
                                          for m, v in sorted(self.latencies_ms.items())},
                "rss_base_mib": round(self.rss_base_kib / 1024, 1),
                "rss_peak_mib": round(self.rss_peak_kib / 1024, 1),
                "progress_samples": len(self.samples), "stalls": len(self.stalls)}


# -- the jobs -----------------------------------------------------------------------------------
def start_jobs(sock: Path, base: Path, cfg: LoadConfig) -> list[str]:
    """Half uploads, half downloads of ``file_mib`` MiB, each throttled to ``job_bps``."""
    from pipedaemon_sdk import PipeClient

    remote, local = base / "load-remote", base / "load-local"
    remote.mkdir(exist_ok=True)
    local.mkdir(exist_ok=True)
    ids = []
    with PipeClient(socket_path=sock, auto_start=False) as c:
        c.upsert_remote({"name": "load", "protocol": "local", "options": {"remotepath": f"{remote}/"}})
        for i in range(cfg.jobs):
            data = random.Random(i).randbytes(cfg.file_mib * MiB)
            if i % 2:
                (remote / f"down{i}.bin").write_bytes(data)
                job = c.download(remote="load", key=f"down{i}.bin", dest=str(local / f"down{i}.bin"),
                                 bwlimit_bps=cfg.job_bps, wait=False)
            else:
                (local / f"up{i}.bin").write_bytes(data)
                job = c.upload(local / f"up{i}.bin", remote="load", key=f"up{i}.bin", bwlimit_bps=cfg.job_bps,
                               wait=False)
            ids.append(job.id)
    return ids


class Sampler(threading.Thread):
    """Every ``every`` seconds: the daemon's VmRSS and each job's (state, bytes_done)."""

    def __init__(self, sock: Path, pid: int, ids: list[str], every: float, result: LoadResult) -> None:
        super().__init__(daemon=True)
        self.sock, self.pid, self.ids, self.every, self.result = sock, pid, ids, every, result
        self.stop = threading.Event()

    def run(self) -> None:
        from pipedaemon_sdk import PipeClient
        from tests.support.hostile import rss_kib

        with PipeClient(socket_path=self.sock, auto_start=False, request_timeout_s=120) as c:
            next_job_sample = 0.0
            while not self.stop.is_set():
                self.result.rss_peak_kib = max(self.result.rss_peak_kib, rss_kib(self.pid))
                if time.monotonic() >= next_job_sample:
                    next_job_sample = time.monotonic() + self.every
                    infos = {j.id: j for j in c.jobs(limit=1000)}
                    self.result.samples.append({i: (infos[i].state, infos[i].progress.bytes_done
                                                    if infos[i].progress else 0) for i in self.ids})
                self.stop.wait(0.2)


def find_stalls(samples: list[dict[str, tuple[str, int]]]) -> list[str]:
    """Jobs running at two consecutive samples whose bytes did not move between them."""
    out = []
    for n, (a, b) in enumerate(itertools.pairwise(samples)):
        for jid, (state, done) in b.items():
            if state == "running" and a[jid][0] == "running" and done <= a[jid][1]:
                out.append(f"job {jid} stood at {done} bytes between samples {n} and {n + 1}")
    return out


# -- the clients --------------------------------------------------------------------------------
async def _client(sock: str, n: int, job_ids: list[str], seed: int, ready: asyncio.Queue[int],
                  go: asyncio.Event, out: dict[str, Any]) -> None:
    from pipedaemon_sdk import AsyncPipeClient, DaemonError

    rnd = random.Random(seed)
    params = {"job.list": {"limit": 20}, "remote.get": {"name": "load"}}
    async with AsyncPipeClient(socket_path=sock, auto_start=False, request_timeout_s=120) as c:
        ready.put_nowait(seed)
        await go.wait()
        for i in range(n):
            method = MIX[(seed + i) % len(MIX)]
            p = {"job_id": rnd.choice(job_ids)} if method == "job.get" else params.get(method, {})
            t0 = time.perf_counter()
            try:
                await c.call(method, p)
                out["lat"].setdefault(method, []).append((time.perf_counter() - t0) * 1000)
            except DaemonError as err:
                out["errors"].append(f"{method}: {err.code} {err.message}")


async def _worker(sock: str, clients: int, requests: int, job_ids: list[str], first: int) -> dict[str, Any]:
    out: dict[str, Any] = {"lat": {}, "errors": []}
    go = asyncio.Event()
    ready: asyncio.Queue[int] = asyncio.Queue()
    tasks = [asyncio.create_task(_client(sock, requests, job_ids, first + k, ready, go, out))
             for k in range(clients)]
    for _ in range(clients):  # every client connected before any starts: they all load at once
        await ready.get()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    go.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    out["errors"] += [repr(r) for r in results if isinstance(r, BaseException)]
    return out


def worker_main(argv: list[str]) -> None:
    sock, clients, requests, first = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    job_ids = json.loads(argv[4])
    print(json.dumps(asyncio.run(_worker(sock, clients, requests, job_ids, first))), flush=True)


def run_clients(sock: Path, cfg: LoadConfig, job_ids: list[str], result: LoadResult) -> None:
    root = Path(__file__).resolve().parents[2]
    per = [cfg.clients // cfg.procs + (1 if k < cfg.clients % cfg.procs else 0) for k in range(cfg.procs)]
    procs = []
    for k, n in enumerate(per):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.load_helpers", str(sock), str(n), str(cfg.requests),
             str(sum(per[:k])), json.dumps(job_ids)],
            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    start = time.monotonic()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, _ = p.communicate(timeout=1800)
        got = json.loads(out.strip().splitlines()[-1])
        for m, v in got["lat"].items():
            result.latencies_ms.setdefault(m, []).extend(v)
        result.errors += got["errors"]
    result.wall_s = time.monotonic() - start
    result.answered = len(result.all_ms())


def run_load(sock: Path, pid: int, base: Path, cfg: LoadConfig) -> LoadResult:
    """Jobs started, clients run against them, jobs waited for; everything measured."""
    from pipedaemon_sdk import DaemonError, PipeClient
    from tests.support.hostile import rss_kib

    result = LoadResult(cfg, rss_base_kib=rss_kib(pid))
    ids = start_jobs(sock, base, cfg)
    sampler = Sampler(sock, pid, ids, cfg.sample_s, result)
    sampler.start()
    try:
        run_clients(sock, cfg, ids, result)
        with PipeClient(socket_path=sock, auto_start=False, request_timeout_s=600) as c:
            for jid in ids:
                try:
                    result.job_states[jid] = c.job(jid).wait(timeout=600).state
                except DaemonError as err:
                    result.job_states[jid] = f"failed: {err}"
    finally:
        sampler.stop.set()
        sampler.join(60)
    result.stalls = find_stalls(result.samples)
    return result


if __name__ == "__main__":
    worker_main(sys.argv[1:])
    os._exit(0)
