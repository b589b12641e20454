"""RPC benchmark: how fast the SDK reaches the daemon and how many requests it serves.

Measures, against a daemon in a temporary home and socket:
- round-trip latency of ``daemon.ping`` from the blocking client (p50, p99);
- requests per second with 8 concurrent clients: 8 threads each with its own
  ``PipeClient``, and 8 ``AsyncPipeClient`` in one event loop;
- ``import pipedaemon_sdk`` time in a fresh interpreter (min of several);
- cold start: ``PipeClient()`` with no daemon running to the first answer (auto-start).

Prints a table and writes the "RPC" section of docs/benchmarks.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.report import write_section

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## RPC"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench rpc", description=__doc__.splitlines()[0])
    ap.add_argument("--pings", type=int, default=5000, help="sequential pings for the latency figures")
    ap.add_argument("--per-client", type=int, default=2000, help="pings per concurrent client")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=7, help="runs of the import and cold-start figures")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each requests/s figure (the best counts)")
    ap.add_argument("--nice", type=int, default=0,
                    help="change the niceness first (e.g. -10 as root on a machine shared with other work); "
                         "the daemon it starts inherits it")
    ap.add_argument("--no-write", dest="write", action="store_false", help="do not update docs/benchmarks.md")
    return ap.parse_args(argv)


class Sandbox:
    """A temporary home and socket; the SDK and every daemon started here use them."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pd-bench-rpc-", dir="/tmp"))
        self.n = 0

    def socket(self) -> Path:
        self.n += 1
        return self.base / f"run{self.n}" / "d.sock"

    def env(self, sock: Path) -> None:
        os.environ["PIPEDAEMON_HOME"] = str(sock.parent / "home")
        os.environ["PIPEDAEMON_SOCKET"] = str(sock)

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def stop(sock: Path) -> None:
    from pipedaemon_sdk import DaemonConnectionError, PipeClient

    try:
        with PipeClient(socket_path=sock, auto_start=False) as c:
            c.shutdown()
    except DaemonConnectionError:
        pass


def latency(sock: Path, n: int) -> list[float]:
    """Seconds per daemon.ping round trip, ``n`` of them after a warm-up."""
    from pipedaemon_sdk import PipeClient

    out = []
    with PipeClient(socket_path=sock) as c:
        for _ in range(min(500, n)):
            c.ping()
        clock = time.perf_counter
        for _ in range(n):
            t0 = clock()
            c.ping()
            out.append(clock() - t0)
    return out


def raw_latency(sock: Path, n: int) -> list[float]:
    """The same round trip on a bare blocking socket: the daemon's share, without the SDK."""
    import socket

    line = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}\n'
    out = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(sock))
        clock = time.perf_counter
        for i in range(n + min(500, n)):
            t0 = clock()
            s.sendall(line)
            buf = s.recv(65536)
            while not buf.endswith(b"\n"):
                buf += s.recv(65536)
            if i >= min(500, n):
                out.append(clock() - t0)
    return out


def threads_rps(sock: Path, clients: int, per: int) -> float:
    from pipedaemon_sdk import PipeClient

    conns = [PipeClient(socket_path=sock).connect() for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def work(c: PipeClient) -> None:
        barrier.wait()
        for _ in range(per):
            c.ping()

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    return clients * per / elapsed


def async_rps(sock: Path, clients: int, per: int) -> float:
    from pipedaemon_sdk import AsyncPipeClient

    async def run() -> float:
        conns = [await AsyncPipeClient(socket_path=sock).connect() for _ in range(clients)]

        async def work(c: AsyncPipeClient) -> None:
            for _ in range(per):
                await c.ping()

        t0 = time.perf_counter()
        await asyncio.gather(*(work(c) for c in conns))
        elapsed = time.perf_counter() - t0
        for c in conns:
            await c.close()
        return clients * per / elapsed

    return asyncio.run(run())


def import_times(repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``import pipedaemon_sdk`` in fresh interpreters (CPU time shows
    the import's own cost when other work shares the machine)."""
    code = ("import time; t, c = time.perf_counter(), time.process_time(); import pipedaemon_sdk; "
            "print(time.perf_counter() - t, time.process_time() - c)")
    cmd = [sys.executable, "-c", code]
    runs = [subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
            for _ in range(repeat)]
    return [float(w) for w, _ in runs], [float(c) for _, c in runs]


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold_starts(box: Sandbox, repeat: int) -> tuple[list[float], list[float]]:
    """Seconds from PipeClient() with no daemon to its first answer (the SDK starts one), and the
    CPU seconds the new daemon spent getting there (its share, whatever else runs)."""
    from pipedaemon_sdk import PipeClient

    wall, cpu = [], []
    for _ in range(repeat):
        sock = box.socket()
        box.env(sock)
        t0 = time.perf_counter()
        with PipeClient(socket_path=sock) as c:
            c.ping()
            wall.append(time.perf_counter() - t0)
            cpu.append(cpu_seconds(c.status().pid))
            c.shutdown()
    return wall, cpu


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def measure(args: argparse.Namespace) -> dict[str, float]:
    box = Sandbox()
    try:
        sock = box.socket()
        box.env(sock)
        from pipedaemon_sdk import PipeClient

        with PipeClient(socket_path=sock) as c:  # starts the daemon the benchmark talks to
            c.ping()
        try:
            lat = latency(sock, args.pings)
            raw = raw_latency(sock, args.pings)
            res = {"p50_us": pct(lat, 50) * 1e6, "p90_us": pct(lat, 90) * 1e6, "p99_us": pct(lat, 99) * 1e6,
                   "mean_us": statistics.fmean(lat) * 1e6, "raw_p50_us": pct(raw, 50) * 1e6,
                   "threads_rps": max(threads_rps(sock, args.clients, args.per_client)
                                      for _ in range(args.rounds)),
                   "async_rps": max(async_rps(sock, args.clients, args.per_client)
                                    for _ in range(args.rounds))}
        finally:
            stop(sock)
        imports, import_cpu = import_times(args.repeat)
        cold, cold_cpu = cold_starts(box, args.repeat)
        res.update(import_min_ms=min(imports) * 1e3, import_median_ms=statistics.median(imports) * 1e3,
                   import_cpu_ms=min(import_cpu) * 1e3,
                   cold_min_ms=min(cold) * 1e3, cold_median_ms=statistics.median(cold) * 1e3,
                   cold_cpu_ms=min(cold_cpu) * 1e3)
        return res
    finally:
        box.close()


def render(r: dict[str, float], args: argparse.Namespace, command: str) -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = [
        ("daemon.ping round trip, sync client, p50", f"{r['p50_us']:.0f} µs"),
        ("daemon.ping round trip, sync client, p90", f"{r['p90_us']:.0f} µs"),
        ("daemon.ping round trip, sync client, p99", f"{r['p99_us']:.0f} µs"),
        ("daemon.ping round trip, sync client, mean", f"{r['mean_us']:.0f} µs"),
        ("daemon.ping round trip, bare blocking socket (no SDK), p50", f"{r['raw_p50_us']:.0f} µs"),
        (f"requests/s, {args.clients} threads, each its own PipeClient", f"{r['threads_rps']:,.0f}"),
        (f"requests/s, {args.clients} AsyncPipeClient in one loop", f"{r['async_rps']:,.0f}"),
        ("`import pipedaemon_sdk`, fresh interpreter, wall min / median; CPU min",
         f"{r['import_min_ms']:.1f} / {r['import_median_ms']:.1f} ms; {r['import_cpu_ms']:.1f} ms"),
        ("`PipeClient()` with no daemon → first answer (auto-start), wall min / median; daemon CPU min",
         f"{r['cold_min_ms']:.0f} / {r['cold_median_ms']:.0f} ms; {r['cold_cpu_ms']:.0f} ms"),
    ]
    lines = [
        SECTION, "",
        f"`{command}` — {datetime.date.today().isoformat()}, {os.cpu_count()} CPUs (nproc), "
        f"{platform.python_implementation()} {platform.python_version()}, uvloop daemon, "
        f"niceness {os.nice(0)}, load average {load} at the end.",
        f"{args.pings:,} sequential pings for the latency; {args.per_client:,} pings per concurrent client, "
        f"best of {args.rounds} runs; import and cold start: {args.repeat} runs each.", "",
        "| figure | value |", "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "Reading them: the bare-socket round trip is the daemon's share (parse, dispatch, answer, two",
        "syscalls); the blocking client adds one hand-off from its reader thread to the caller. The cold",
        "start is a Python interpreter start plus the daemon's imports (click, asyncio, the backends'",
        "modules), then opening the state database. Wall-clock figures on a small shared machine include",
        "waiting for a CPU: the load average above says how busy it was.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.nice:
        os.nice(args.nice)
    extra = " ".join(argv if argv is not None else [])
    command = f"python -m bench rpc {extra}".strip()
    results = measure(args)
    text = render(results, args, command)
    print("\n" + text)
    if args.write:
        write_section(SECTION, text, DOC)
        print(f"\nwrote the RPC section of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
