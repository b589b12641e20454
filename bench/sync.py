"""Sync benchmark: a no-op pull of many files, pipedaemon's pipe next to ``rclone copy``.

    python -m bench sync [--files 10000] [--size 1024] [--repeat 3] [--no-write]
    (also: python -m bench.sync ...)

One moto S3 bucket holds the files. pipedaemon pulls them once through a pipe,
then times pulls that find nothing to do: with the daemon's listing cache warm
(``cached=True``, within the TTL) and with a fresh listing (``cached=False``).
rclone copies the same bucket into its own folder once, then times its own no-op
``copy`` (defaults: it reads each object's mtime metadata, so it asks for every
object; and with ``--use-server-modtime``, which trusts the listing). Every
timed run is checked to have moved nothing. Results go to the "Sync" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import servers, tools
from bench.report import write_section
from bench.tools import Daemon, Measured, execute

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Sync"


@dataclass
class Row:
    what: str
    runs: list[Measured]
    requests: int | None = None  # S3 requests moto logged during one run
    listings: int | None = None  # of which ListObjectsV2

    @property
    def wall(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(r.cpu_s for r in self.runs)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench sync", description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000, help="files in the bucket")
    ap.add_argument("--size", type=int, default=1024, help="bytes per file")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per contender (median reported)")
    ap.add_argument("--no-write", dest="write", action="store_false", help="do not update docs/benchmarks.md")
    return ap.parse_args(argv)


def fill_bucket(s3: servers.S3Server, bucket: str, count: int, size: int) -> None:
    client = s3.boto3_client()
    body = os.urandom(size)

    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"data/{i // 1000:02d}/f{i:05d}.bin", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


def counted(log: servers.RequestLog, fn: Any) -> tuple[Measured, int, int]:
    log.reset()
    m = fn()
    entries = log.entries()
    lists = sum(1 for method, path in entries if method == "GET" and "prefix=" in path)  # ListObjects v1/v2
    return m, len(entries), lists


def timed(name: str, repeat: int, log: servers.RequestLog, fn: Any) -> Row:
    runs, reqs, lists = [], 0, 0
    for _ in range(repeat):
        m, reqs, lists = counted(log, fn)
        runs.append(m)
    print(f"  {name}: {statistics.median(r.wall_s for r in runs):.3f} s", flush=True)
    return Row(name, runs, reqs, lists)


def run(args: argparse.Namespace, base: Path) -> tuple[list[Row], dict[str, float]]:
    rows: list[Row] = []
    setup: dict[str, float] = {}
    with servers.s3_server() as s3:
        log = servers.RequestLog(s3.log_path)
        bucket = servers.s3_bucket(s3)
        t = time.perf_counter()
        fill_bucket(s3, bucket, args.files, args.size)
        setup["fill_s"] = time.perf_counter() - t
        print(f"bucket filled with {args.files} files in {setup['fill_s']:.1f} s", flush=True)
        daemon = Daemon(base)
        try:
            c = daemon.client
            c.update_profile_config({"filerepo": str(base / "repo")})
            spec = servers.s3_spec(s3, bucket)
            c.upsert_remote({"name": "bench", "protocol": "s3", "options": spec["options"],
                             "credentials": spec["credentials"]})
            c.upsert_pipe({"name": "data", "remote": "bench", "options": {"dir": "data"}})
            pipe = c.pipe("data")
            first, reqs, _ = counted(log, lambda: daemon.measure(lambda: _expect(pipe.pull(), args.files)))
            setup["pipedaemon_first_pull_s"] = first.wall_s
            setup["pipedaemon_first_pull_requests"] = reqs
            print(f"first pull: {first.wall_s:.1f} s, {reqs} requests", flush=True)
            rows.append(timed("pipedaemon pull, cache warm (cached=True)", args.repeat, log,
                              lambda: daemon.measure(lambda: _expect(pipe.pull(), 0))))
            rows.append(timed("pipedaemon pull, fresh listing (cached=False)", args.repeat, log,
                              lambda: daemon.measure(lambda: _expect(pipe.pull(cached=False), 0))))
            rows.append(timed("pipedaemon pull_preview, cache warm", args.repeat, log,
                              lambda: daemon.measure(lambda: _expect(pipe.pull_preview(), 0))))
        finally:
            daemon.stop()
        dest = base / "rclone"
        src = f"bs3:{bucket}/data"
        t = time.perf_counter()
        copy = tools.rclone_s3(src, str(dest), s3, many=True)
        _, reqs, _ = counted(log, lambda: execute(copy, timeout_s=3600))
        setup["rclone_first_copy_s"] = time.perf_counter() - t
        setup["rclone_first_copy_requests"] = reqs
        print(f"rclone first copy: {setup['rclone_first_copy_s']:.1f} s", flush=True)
        _expect_tree(dest, args.files)
        plain = tools.rclone_s3(src, str(dest), s3, many=True)
        rows.append(timed("rclone copy (defaults)", args.repeat, log, lambda: _nothing_new(dest, plain)))
        server_time = tools.rclone_s3(src, str(dest), s3, many=True)
        server_time.argv.append("--use-server-modtime")
        rows.append(timed("rclone copy --use-server-modtime", args.repeat, log,
                          lambda: _nothing_new(dest, server_time)))
        servers.s3_drop_bucket(s3, bucket)
    return rows, setup


def _expect(result: Any, n: int) -> Any:
    if len(result) != n:
        raise RuntimeError(f"expected {n} files moved, got {len(result)}")
    return result


def _expect_tree(folder: Path, n: int) -> None:
    got = sum(1 for p in folder.rglob("*") if p.is_file())
    if got != n:
        raise RuntimeError(f"{folder}: {got} files, expected {n}")


def _nothing_new(dest: Path, cmd: tools.Command) -> Measured:
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    m = execute(cmd, timeout_s=3600)
    after = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    if before != after:
        raise RuntimeError("rclone rewrote files during a no-op copy")
    return m


def render(rows: list[Row], setup: dict[str, float], args: argparse.Namespace, command: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SECTION, "",
        f"A pull that finds nothing to do: {args.files:,} files of {args.size:,} bytes in one moto S3 "
        f"bucket, already on local disk. Median of {args.repeat} runs; CPU is the daemon's (pipedaemon) "
        "or the process's (rclone). Requests are what "
        "moto logged during one run (listings in brackets).", "",
        f"- date: {now}; command: `{command}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{_rclone_version()}; moto_server on loopback, shared with other work (figures are indicative)",
        f"- setup (not in the table): bucket filled in {setup.get('fill_s', 0):.0f} s; the first full pull "
        f"took {setup.get('pipedaemon_first_pull_s', 0):.1f} s and "
        f"{setup.get('pipedaemon_first_pull_requests', 0)} requests (pipedaemon), the first full copy "
        f"{setup.get('rclone_first_copy_s', 0):.1f} s and {setup.get('rclone_first_copy_requests', 0)} "
        "requests (rclone)", "",
        "| no-op sync | wall s | CPU s | S3 requests (lists) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r.what} | {r.wall:.3f} | {r.cpu:.3f} | {r.requests} ({r.listings}) |")
    lines += ["", "With the cache warm the daemon sends no request at all: it compares its cached listing, "
              "the local folder and each file's recorded sync state. `cached=False` costs one recursive "
              "listing, paged (1,000 keys a page, one page after the other); rclone lists the folders "
              "one by one but several at once (its checkers), which on this tree of ten folders finishes "
              "sooner. rclone by default reads each object's modification time with a HEAD request; "
              "`--use-server-modtime` trusts the listing instead."]
    return "\n".join(lines) + "\n"


def _rclone_version() -> str:
    import subprocess

    try:
        out = subprocess.run([tools.exe("rclone"), "version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0]
    except (OSError, IndexError, tools.ToolFailed, subprocess.SubprocessError):
        return "rclone (version unknown)"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m bench sync " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="pd-bench-sync-", dir="/tmp") as tmp:
        rows, setup = run(args, Path(tmp))
    text = render(rows, setup, args, command.strip())
    print("\n" + text)
    if args.write:
        write_section(SECTION, text, DOC)
        print(f"wrote the Sync section of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
