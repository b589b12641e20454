"""Mirror benchmark: FTP -> S3, remote to remote, pipedaemon's mirror next to ``rclone copy``.

    python -m bench mirror [--files 1000] [--size 16384] [--big-mib 512] [--no-write]

One pyftpdlib server holds a folder of many small files and a folder with one large
file; one moto S3 bucket receives them. pipedaemon copies each folder with
``client.mirror`` (bytes stream through the daemon, nothing on local disk); rclone
copies the same folders between the same two servers with ``rclone copy``. Each copy
starts from an empty destination and is checked (object count and total size). Results
go to the "Mirror" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import servers, tools
from bench.report import write_section
from bench.tools import Command, Daemon, Measured, execute

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Mirror"
MiB = 1 << 20


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench mirror", description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000, help="small files in the many-files folder")
    ap.add_argument("--size", type=int, default=16 << 10, help="bytes per small file")
    ap.add_argument("--big-mib", type=int, default=512, help="MiB of the one large file")
    ap.add_argument("--no-write", dest="write", action="store_false", help="do not update docs/benchmarks.md")
    return ap.parse_args(argv)


def fill(root: Path, files: int, size: int, big: int) -> None:
    body = os.urandom(size)
    for i in range(files):
        p = root / "many" / f"{i // 100:02d}" / f"f{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
    (root / "big").mkdir(parents=True, exist_ok=True)
    with open(root / "big" / "large.bin", "wb") as f:
        block = os.urandom(MiB)
        for _ in range(big):
            f.write(block)


def rclone_ftp_env(ftp: Any) -> dict[str, str]:
    obscured = subprocess.run([tools.exe("rclone"), "obscure", ftp.password], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    p = "RCLONE_CONFIG_BFTP_"
    return {p + "TYPE": "ftp", p + "HOST": ftp.host, p + "PORT": str(ftp.port), p + "USER": ftp.username,
            p + "PASS": obscured}


def rclone_copy(s3: servers.S3Server, ftp_env: dict[str, str], src: str, dst: str) -> Command:
    cmd = tools.rclone_s3(src, dst, s3, many=True)
    cmd.env.update(ftp_env)
    return cmd


def count(s3: servers.S3Server, bucket: str, prefix: str) -> tuple[int, int]:
    client = s3.boto3_client()
    n = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            n += 1
            size += o["Size"]
    return n, size


def run(args: argparse.Namespace, base: Path) -> list[tuple[str, str, Measured, tuple[int, int]]]:
    rows: list[tuple[str, str, Measured, tuple[int, int]]] = []
    with servers.ftp_server() as ftp, servers.s3_server() as s3:
        spec = servers.ftp_spec(ftp)
        root = ftp.root_dir / spec["root"].strip("/")
        fill(root, args.files, args.size, args.big_mib)
        bucket = servers.s3_bucket(s3)
        want = {"many": (args.files, args.files * args.size), "big": (1, args.big_mib * MiB)}
        daemon = Daemon(base)
        try:
            c = daemon.client
            c.upsert_remote({"name": "vftp", "protocol": "ftp", "options": spec["options"],
                             "credentials": spec["credentials"]})
            s3spec = servers.s3_spec(s3, bucket)
            c.upsert_remote({"name": "lake", "protocol": "s3", "options": s3spec["options"],
                             "credentials": s3spec["credentials"]})
            for folder in ("many", "big"):
                m = daemon.measure(lambda f=folder: c.mirror(f"vftp:{f}/", f"lake:pd/{f}/"))  # type: ignore[misc]
                got = count(s3, bucket, f"pd/{folder}/")
                _check(got, want[folder], "pipedaemon")
                rows.append(("pipedaemon mirror", folder, m, got))
                print(f"  pipedaemon {folder}: {m.wall_s:.2f} s", flush=True)
        finally:
            daemon.stop()
        env = rclone_ftp_env(ftp)
        for folder in ("many", "big"):
            cmd = rclone_copy(s3, env, f"bftp:{spec['root']}{folder}", f"bs3:{bucket}/rc/{folder}")
            m = execute(cmd, timeout_s=3600)
            got = count(s3, bucket, f"rc/{folder}/")
            _check(got, want[folder], "rclone")
            rows.append(("rclone copy", folder, m, got))
            print(f"  rclone {folder}: {m.wall_s:.2f} s", flush=True)
        servers.s3_drop_bucket(s3, bucket)
    return rows


def _check(got: tuple[int, int], want: tuple[int, int], who: str) -> None:
    if got != want:
        raise RuntimeError(f"{who}: the bucket holds {got} (objects, bytes), expected {want}")


def render(rows: list[Any], args: argparse.Namespace, command: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    wall = {(who, f): m.wall_s for who, f, m, _ in rows}
    lines = [
        SECTION, "",
        f"Remote to remote, FTP (pyftpdlib) -> S3 (moto), both on loopback: {args.files:,} files of "
        f"{args.size:,} bytes, and one file of {args.big_mib} MiB, each into an empty prefix. pipedaemon "
        "streams through the daemon (`client.mirror`); rclone runs `rclone copy` between the same two "
        "servers. CPU is the daemon's (pipedaemon) or the process's (rclone).", "",
        f"- date: {now}; command: `{command}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"1-minute load average {os.getloadavg()[0]:.1f} at the end", "",
        "| copy | folder | wall s | CPU s | peak RSS MiB | objects | ratio (rclone / pipedaemon wall) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for who, folder, m, got in rows:
        mine = who.startswith("pipe")
        ratio = wall[("rclone copy", folder)] / wall[("pipedaemon mirror", folder)] if mine else None
        rss = f"{m.peak_rss / MiB:.0f}" if getattr(m, "peak_rss", None) else "-"
        lines.append(f"| {who} | {folder} | {m.wall_s:.2f} | {m.cpu_s:.2f} | {rss} | {got[0]} | "
                     f"{f'{ratio:.2f}' if ratio else ''} |")
    lines += ["", "A ratio above 1 means pipedaemon finished sooner. On the big file pipedaemon reads one "
              "FTP stream into S3 with the destination's write concurrency (2 parts in flight)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m bench mirror " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="pd-bench-mirror-", dir="/tmp") as tmp:
        rows = run(args, Path(tmp))
    text = render(rows, args, command.strip())
    print("\n" + text)
    if args.write:
        write_section(SECTION, text, DOC)
        print(f"wrote the Mirror section of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
