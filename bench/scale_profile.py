"""Engine profiling driver for many small files (issue 15), local-folder remotes.

    PYTHONPATH=$PWD python -m bench.scale_profile [--files 100000] [--folders 100] [--no-rclone]
        [--cprofile DIR] [--base DIR]

Makes N one-byte files in F folders, registers a local-folder remote and a pipe
through the SDK, then runs: first pull, no-op pull (cached), no-op pull (fresh
listing), pull_preview, first push into an empty remote, no-op push; and
``rclone copy`` (defaults) of the same tree, first and no-op, in the same run.
Each line: wall s, daemon CPU s, daemon peak RSS while it ran, and the load average.
With ``--cprofile DIR`` (and /tmp/s15prof on PYTHONPATH, whose sitecustomize turns
cProfile on in the daemon) each step's profile is dumped to DIR/<n>.prof.

The official harness is ``python -m bench scale``; this is the engine's own tool.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.tools import Daemon, Measured


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_tree(root: Path, files: int, folders: int) -> None:
    for d in range(folders):
        (root / f"d{d:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        with open(root / f"d{i % folders:03d}" / f"f{i:07d}.bin", "wb") as f:
            f.write(b"x")


def count_files(root: Path) -> int:
    return sum(len(fs) for _, _, fs in os.walk(root))


def line(what: str, m: Measured, moved: int | None = None) -> str:
    rss = f"{m.peak_rss / 2**20:.0f} MiB" if m.peak_rss else "-"
    extra = f", {moved} moved" if moved is not None else ""
    return f"{what:<34} wall {m.wall_s:7.2f} s  CPU {m.cpu_s:7.2f} s  RSS {rss:>8}{extra}  (load {load()})"


def rclone(src: Path, dst: Path) -> Measured:
    t0 = time.perf_counter()
    r0 = os.times()
    subprocess.run(["rclone", "copy", str(src), str(dst)], check=True)
    r1 = os.times()
    cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    return Measured(time.perf_counter() - t0, cpu)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.scale_profile")
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--folders", type=int, default=100)
    ap.add_argument("--no-rclone", dest="rclone", action="store_false")
    ap.add_argument("--no-push", dest="push", action="store_false")
    ap.add_argument("--no-pull", dest="pull", action="store_false")
    ap.add_argument("--cprofile", type=Path, default=None)
    ap.add_argument("--base", type=Path, default=None)
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="s15-", dir=args.base))
    if args.cprofile:
        args.cprofile.mkdir(parents=True, exist_ok=True)
        os.environ["PIPEDAEMON_S15_CPROFILE"] = str(args.cprofile)
    src = base / "src"
    t = time.perf_counter()
    make_tree(src, args.files, args.folders)
    print(f"{args.files} files in {args.folders} folders made in {time.perf_counter() - t:.1f} s; "
          f"base {base}", flush=True)
    daemon = Daemon(base)
    step = [0]

    def measured(what: str, fn: Any) -> Any:
        out: list[Any] = []
        m = daemon.measure(lambda: out.append(fn()))
        if args.cprofile:
            os.kill(daemon.pid, signal.SIGUSR1)
            time.sleep(1.0)
            print(f"  profile {args.cprofile}/{step[0]}.prof", flush=True)
            step[0] += 1
        res = out[0]
        moved = len(res) if hasattr(res, "__len__") else None
        print(line(what, m, moved), flush=True)
        return res

    try:
        c = daemon.client
        if args.cprofile:  # the start-up profile, not any step's
            os.kill(daemon.pid, signal.SIGUSR1)
            time.sleep(1.0)
            step[0] += 1
        c.update_profile_config({"filerepo": str(base / "repo")})
        c.upsert_remote({"name": "src", "protocol": "local", "options": {"remotepath": f"{src}/"},
                         "credentials": {}})
        if args.pull:
            c.upsert_pipe({"name": "data", "remote": "src"})
            pipe = c.pipe("data")
            measured("first pull", pipe.pull)
            got = count_files(base / "repo" / "data")
            assert got == args.files, got
            measured("no-op pull, cached", pipe.pull)
            measured("no-op pull, fresh", lambda: pipe.pull(cached=False))
            measured("pull_preview", pipe.pull_preview)
            print(f"daemon RSS now {daemon.proc.memory_info().rss / 2**20:.0f} MiB, "
                  f"peak {daemon.hwm() / 2**20:.0f} MiB", flush=True)
        if args.push:
            up = base / "up"
            up.mkdir()
            c.upsert_remote({"name": "up", "protocol": "local", "options": {"remotepath": f"{up}/"},
                             "credentials": {}})
            shutil.copytree(src, base / "repo" / "out")
            c.upsert_pipe({"name": "out", "remote": "up"})
            out = c.pipe("out")
            measured("first push", out.push)
            assert count_files(up) == args.files
            measured("no-op push, cached", out.push)
            measured("no-op push, fresh", lambda: out.push(cached=False))
            print(f"daemon RSS now {daemon.proc.memory_info().rss / 2**20:.0f} MiB, "
                  f"peak {daemon.hwm() / 2**20:.0f} MiB", flush=True)
    finally:
        daemon.stop()
    if args.rclone:
        dst = base / "rclone"
        print(line("rclone copy, first", rclone(src, dst)), flush=True)
        print(line("rclone copy, no-op", rclone(src, dst)), flush=True)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
