"""Many files: pipedaemon's pipes against ``rclone copy`` on N one-byte files in 100 folders.

    python -m bench scale [--files 100000] [--remotes local,sftp,s3] [--crash] [--pyspy DIR]
                          [--cache DIR] [--write | --no-write]

The tree is generated once per N (worker processes, os.open/os.write) and kept under
``--cache`` (default /tmp/pd-bench-cache/files-N) for the next run. For each remote kind
(a local folder; SFTP on the tests' sshd, OpenSSH transport; S3 on moto_server), in one run
with one daemon: pipedaemon's pull_preview before anything was pulled, first pull, no-op
pull with the cached listing and with a fresh one, first push (through a pipe, via the
SDK), and ``rclone copy`` (defaults) first copy both ways and a no-op copy on the same
remote. Each case: wall time, CPU (the daemon and its children, e.g. ssh; rclone's rusage),
peak RSS (the daemon sampled every 20 ms; rclone's ru_maxrss) and requests where
countable (moto's access log; sftp-server's request log). Every result is checked
(files moved, files on disk, nothing moved by a no-op).

``--crash`` (default at 1,000,000 files) kills the daemon with SIGKILL during a first
pull, checks the SQLite state (``PRAGMA integrity_check``; every sync-state row names a
file on disk of its size), restarts the daemon and lets the pull finish the rest.
The table goes to the "Many files" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import servers, tools
from bench.report import write_section
from bench.sync import _rclone_version
from bench.tools import Daemon, Measured, execute

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Many files"
FOLDERS = 100
KINDS = ("local", "sftp", "s3")
MILLION = 1_000_000
MiB = 1 << 20
TTL_S = 24 * 3600.0  # the pipes' listing cache outlives the run: "cached" means cached
GOALS = {"preview_s": 60.0, "warm_noop_s": 10.0, "rss": 512 * MiB}  # issue 15, at 1,000,000 files


# -- the tree ------------------------------------------------------------------------------
def _name(i: int) -> str:
    return f"d{i % FOLDERS:02d}/f{i:07d}.bin"


def _write_folder(args: tuple[str, int, int]) -> int:
    root, folder, count = args
    d = os.path.join(root, f"d{folder:02d}")
    os.makedirs(d, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    written = 0
    for i in range(folder, count, FOLDERS):
        fd = os.open(os.path.join(d, f"f{i:07d}.bin"), flags, 0o644)
        try:
            os.write(fd, bytes((97 + i % 26,)))
        finally:
            os.close(fd)
        written += 1
    return written


def _link_folder(args: tuple[str, str, int]) -> int:
    src, dst, folder = args
    s, d = os.path.join(src, f"d{folder:02d}"), os.path.join(dst, f"d{folder:02d}")
    os.makedirs(d, exist_ok=True)
    names = os.listdir(s)
    for n in names:
        os.link(os.path.join(s, n), os.path.join(d, n))
    return len(names)


def _count_folder(args: tuple[str, int]) -> tuple[int, int]:
    """(files, files that are not one byte) in one folder of a tree."""
    root, folder = args
    files = bad = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(os.path.join(root, f"d{folder:02d}")) as it:
        for e in it:
            if e.is_file():
                files += 1
                bad += e.stat().st_size != 1
    return files, bad


def ensure_tree(cache: Path, count: int, workers: int) -> tuple[Path, float | None]:
    """The tree of ``count`` files under ``cache`` (made if missing): its path, and the seconds
    its generation took (None when it was already there)."""
    root, marker = cache / f"files-{count}", cache / f"files-{count}.complete"  # the marker is no pipe file
    if marker.exists() and root.exists():
        return root, None
    partial = cache / f"files-{count}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        made = sum(pool.map(_write_folder, [(str(partial), k, count) for k in range(FOLDERS)]))
    if made != count:
        raise RuntimeError(f"generated {made} files, expected {count}")
    partial.rename(root)
    marker.write_text(f"{count}\n")
    return root, time.perf_counter() - start


def clone_tree(src: Path, dst: Path, workers: int) -> None:
    """Hard links of ``src``'s files under ``dst`` (a push's source, without copying bytes)."""
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_link_folder, [(str(src), str(dst), k) for k in range(FOLDERS)]))


def count_tree(root: Path, workers: int) -> tuple[int, int]:
    with ProcessPoolExecutor(workers) as pool:
        got = list(pool.map(_count_folder, [(str(root), k) for k in range(FOLDERS)]))
    return sum(g[0] for g in got), sum(g[1] for g in got)


def expect_tree(root: Path, count: int, workers: int) -> None:
    files, bad = count_tree(root, workers)
    if files != count or bad:
        raise RuntimeError(f"{root}: {files} files ({bad} not one byte), expected {count}")


# -- one measured case -------------------------------------------------------------------------
@dataclass
class Case:
    remote: str
    what: str
    pd: Measured | None = None
    rclone: Measured | None = None
    pd_requests: str = ""
    rclone_requests: str = ""
    moved: int | None = None
    error: str = ""

    @property
    def ratio(self) -> float | None:
        if self.pd and self.rclone and self.pd.wall_s > 0:
            return self.rclone.wall_s / self.pd.wall_s
        return None


class Requests:
    """Counts what one remote kind's server saw during a run: moto's access log, sftp-server's
    request log; nothing for a local folder."""

    def __init__(self, kind: str, s3: Any = None, sftp_log: Any = None) -> None:
        self.kind = kind
        self.s3_log = servers.RequestLog(s3.log_path) if s3 is not None else None
        self.sftp_log = sftp_log

    def around(self, fn: Callable[[], Measured]) -> tuple[Measured, str]:
        if self.kind == "s3" and self.s3_log is not None:
            self.s3_log.reset()
            m = fn()
            entries = self.s3_log.entries()
            lists = sum(1 for method, path in entries if method == "GET" and ("prefix=" in path or
                                                                              "list-type" in path))
            heads = sum(1 for method, _ in entries if method == "HEAD")
            return m, f"{len(entries):,} ({lists:,} lists, {heads:,} HEAD)"
        if self.kind == "sftp" and self.sftp_log is not None:
            self.sftp_log.reset()
            m = fn()
            time.sleep(0.3)  # sftp-server's last lines reach its log when the session closes
            c = self.sftp_log.counts()
            stats = c["stat"] + c["lstat"] + c["fstat"]
            return m, f"{sum(c.values()):,} ({c['opendir']:,} opendir, {stats:,} stat, {c['open']:,} open)"
        return fn(), ""


@dataclass
class Run:
    args: argparse.Namespace
    base: Path
    tree: Path
    daemon: Daemon
    cases: list[Case] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    hwm: int = 0  # the daemons' VmHWM, max over every daemon of the run
    s3: Any = None
    ssh: Any = None
    sftp_log: Any = None
    bucket: str = ""

    @property
    def n(self) -> int:
        return int(self.args.files)

    @property
    def client(self) -> Any:
        return self.daemon.client

    def measure(self, label: str, fn: Callable[[], object]) -> Measured:
        self.daemon.label = label
        m = self.daemon.measure(fn)
        self.loads.append(os.getloadavg()[0])
        return m


def moved(result: Any) -> int:
    summary = getattr(result, "summary", None) or {}
    return int(summary["moved"]) if "moved" in summary else len(result)


def expect_moved(result: Any, n: int, what: str) -> Any:
    got = moved(result)
    if got != n:
        raise RuntimeError(f"{what}: expected {n} files moved, got {got}")
    return result


# -- the remotes --------------------------------------------------------------------------------
def register(run: Run, name: str, kind: str, root: str) -> None:
    """Remote ``name`` of ``kind`` whose root is ``root`` (a folder; for S3 a prefix in the bucket)."""
    if kind == "local":
        spec: dict[str, Any] = {"protocol": "local", "options": {"remotepath": root}, "credentials": {}}
    elif kind == "sftp":
        spec = servers.sftp_spec(run.ssh)
        spec["options"]["remotepath"] = root
    else:
        spec = servers.s3_spec(run.s3, run.bucket)
        spec["options"]["remotepath"] = f"s3://{run.bucket}/{root}"
    run.client.upsert_remote({"name": name, "protocol": spec["protocol"], "options": spec["options"],
                              "credentials": spec["credentials"]})


def rclone_cmd(run: Run, kind: str, src: str, dst: str) -> tools.Command:
    """``rclone copy``; remote-side paths given as ``remote:path`` pieces by the caller."""
    if kind == "s3":
        return tools.rclone_s3(src, dst, run.s3, many=True)
    if kind == "sftp":
        # By default rclone checks each file it moved by running md5sum in an ssh shell session on
        # the server (2 files/s here); pipedaemon hashes nothing on SFTP either.
        cmd = tools.rclone_sftp(run.ssh, src, dst, many=True)
        cmd.argv.append("--sftp-disable-hashcheck")
        return cmd
    return tools.rclone_local(src, dst)


def rclone_path(run: Run, kind: str, where: str) -> str:
    """``where`` (a folder, or a prefix of the bucket for S3) as rclone names it."""
    return {"s3": f"bs3:{run.bucket}/{where}", "sftp": f"bsftp:{where}"}.get(kind, where)


def run_kind(run: Run, kind: str) -> None:
    """Every case on one kind of remote: pipedaemon, then rclone on the same data."""
    n, workers, c = run.n, run.args.workers, run.client
    req = Requests(kind, run.s3, run.sftp_log)
    base = run.base / kind
    base.mkdir()
    print(f"== {kind}: {n:,} files", flush=True)
    cases = {w: Case(kind, w) for w in ("pull_preview, first", "first pull", "first push",
                                         "no-op pull, cached listing", "no-op pull, fresh listing")}
    run.cases += cases.values()

    def pd(what: str, fn: Callable[[], Any], expect: int) -> None:
        case = cases[what]
        try:
            holder: list[Any] = []
            m, case.pd_requests = req.around(lambda: run.measure(f"{kind}-{slug(what)}",
                                                                 lambda: holder.append(fn())))
            expect_moved(holder[0], expect, what)
            case.pd, case.moved = m, moved(holder[0])
            print(f"   pipedaemon {what:28} {m.wall_s:8.2f} s  cpu {m.cpu_s:7.2f} s  "
                  f"(user {m.user_s or 0:6.2f} s)  rss {(m.peak_rss or 0) / MiB:5.0f} MiB  "
                  f"{case.pd_requests}", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported in the table; the other cases go on
            case.error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            print(f"   pipedaemon {what:28} FAILED {case.error}", flush=True)

    # Push first: on S3 it is what fills the bucket the pulls then read.
    push_root = {"s3": "pd-push/"}.get(kind, f"{base / 'pd-push'}/")
    if kind != "s3":
        Path(push_root).mkdir()
    register(run, f"{kind}-push", kind, push_root)
    c.upsert_pipe({"name": f"{kind}-push", "remote": f"{kind}-push", "options": {"scan_ttl_s": TTL_S}})
    push_pipe = c.pipe(f"{kind}-push")
    clone_tree(run.tree, push_pipe.dirpath, workers)
    pd("first push", lambda: push_pipe.push(cached=False), n)

    src_root = "pd-push/" if kind == "s3" else f"{run.tree}/"
    register(run, f"{kind}-src", kind, src_root)
    c.upsert_pipe({"name": f"{kind}-pull", "remote": f"{kind}-src", "options": {"scan_ttl_s": TTL_S}})
    pull_pipe = c.pipe(f"{kind}-pull")
    pd("pull_preview, first", lambda: pull_pipe.pull_preview(cached=False), n)
    pd("first pull", lambda: pull_pipe.pull(cached=False), n)
    if cases["first pull"].pd is not None:
        expect_tree(pull_pipe.dirpath, n, workers)
        pd("no-op pull, cached listing", lambda: pull_pipe.pull(cached=True), 0)
        pd("no-op pull, fresh listing", lambda: pull_pipe.pull(cached=False), 0)
    run.hwm = max(run.hwm, run.daemon.hwm())

    # rclone: the same source, its own destinations.
    rc_src = rclone_path(run, kind, "pd-push" if kind == "s3" else str(run.tree))
    rc_dest = base / "rclone-pull"
    rc_push = {"s3": "rc-push"}.get(kind, str(base / "rclone-push"))

    def rc(what: str, cmd: tools.Command, check: Callable[[], None]) -> None:
        case = cases[what]
        try:
            m, case.rclone_requests = req.around(lambda: execute(cmd, timeout_s=6 * 3600))
            run.loads.append(os.getloadavg()[0])
            check()
            case.rclone = m
            print(f"   rclone     {what:28} {m.wall_s:8.2f} s  cpu {m.cpu_s:7.2f} s  "
                  f"(user {m.user_s or 0:6.2f} s)  rss {(m.peak_rss or 0) / MiB:5.0f} MiB  "
                  f"{case.rclone_requests}", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            case.error = (case.error + "; " if case.error else "") + \
                " ".join(f"rclone: {type(exc).__name__}: {exc}".split())[:300]
            print(f"   rclone     {what:28} FAILED {exc}", flush=True)

    rc("first push", rclone_cmd(run, kind, str(run.tree), rclone_path(run, kind, rc_push)),
       lambda: _check_pushed(run, kind, rc_push))
    rc("first pull", rclone_cmd(run, kind, rc_src, str(rc_dest)), lambda: expect_tree(rc_dest, n, workers))
    stamp = _stamp(rc_dest)
    rc("no-op pull, cached listing", rclone_cmd(run, kind, rc_src, str(rc_dest)),
       lambda: _unchanged(rc_dest, stamp))
    # rclone keeps no listing between runs: its no-op is the same walk of both sides.
    cases["no-op pull, fresh listing"].rclone = cases["no-op pull, cached listing"].rclone
    cases["no-op pull, fresh listing"].rclone_requests = cases["no-op pull, cached listing"].rclone_requests
    # Four copies of the tree per remote kind: at 1,000,000 files, 4 GB and a million inodes each.
    for folder in (base, push_pipe.dirpath, pull_pipe.dirpath):
        shutil.rmtree(folder, ignore_errors=True)
    if kind == "s3":
        servers.s3_drop_bucket(run.s3, run.bucket)  # moto holds objects in memory
        run.s3.boto3_client().create_bucket(Bucket=run.bucket)


def _check_pushed(run: Run, kind: str, where: str) -> None:
    if kind == "s3":
        pages = run.s3.boto3_client().get_paginator("list_objects_v2").paginate(Bucket=run.bucket,
                                                                              Prefix=where + "/")
        got = sum(len(p.get("Contents", [])) for p in pages)
        if got != run.n:
            raise RuntimeError(f"{got} objects under {where}/, expected {run.n}")
    else:
        expect_tree(Path(where), run.n, run.args.workers)


def _stamp(root: Path) -> tuple[int, int]:
    """(files, the newest mtime) of a tree: a no-op copy must leave both."""
    files, newest = 0, 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime_ns)
    return files, newest


def _unchanged(root: Path, before: tuple[int, int]) -> None:
    if _stamp(root) != before:
        raise RuntimeError(f"a no-op copy changed files under {root}")


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")


# -- kill -9 during a first pull ------------------------------------------------------------------
@dataclass
class Crash:
    killed_at: int = 0  # files the job had finished when it was killed (its progress)
    integrity: str = ""
    rows: int = 0  # sync-state rows of the pipe after the kill
    bad_rows: int = 0  # rows whose file is missing or of another size
    on_disk: int = 0  # files on disk after the kill
    resumed_moved: int = 0  # files the job's result lists as moved (both runs)
    adopted: int = 0  # files the resumed run found already there, unrecorded, equal: recorded only
    resumed_s: float = 0.0
    after_noop: int = -1  # files a pull moved once all was there
    final_files: int = 0
    rewritten: int = -1  # files recorded before the kill that the resumed run wrote again
    error: str = ""
    n_total: int = 0
    recorded: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)  # name -> (inode, mtime)


def crash_pull(run: Run, kind: str, fraction: float = 0.4) -> Crash:
    """SIGKILL the daemon while a first pull of the tree runs; check the state; resume."""
    out = Crash(n_total=run.n)
    c = run.client
    name = f"{kind}-crash"
    register(run, name, kind, f"{run.tree}/")
    c.upsert_pipe({"name": name, "remote": name, "options": {"scan_ttl_s": TTL_S}})
    pipe = c.pipe(name)
    print(f"== kill -9 during a first pull ({kind}, {run.n:,} files)", flush=True)
    job = pipe.pull(cached=False, wait=False)
    while True:
        info = job.refresh()
        done = info.progress.file_index if info.progress else 0
        if info.done:
            out.error = f"the pull ended ({info.state}) before the kill"
            return out
        if done >= run.n * fraction:
            break
        time.sleep(0.05)
    run.hwm = max(run.hwm, run.daemon.hwm())
    os.kill(run.daemon.pid, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        run.daemon.proc.wait(30)
    out.killed_at = done
    _check_state(run.daemon.home / "state.db", name, pipe.dirpath, out)
    out.on_disk = count_tree(pipe.dirpath, run.args.workers)[0]
    print(f"   killed at {done:,} files done: {out.rows:,} recorded, {out.on_disk:,} on disk, "
          f"{out.bad_rows} bad rows, integrity {out.integrity}", flush=True)
    start = time.perf_counter()
    run.daemon.restart()  # the new daemon resumes the job it finds running
    c = run.client
    final = c.job(job.id).wait(timeout=6 * 3600)
    result = _result_of(final) if final.state == "succeeded" else c.pipe(name).pull(cached=False)
    out.resumed_moved = moved(result)  # (not resumed: a pull finished the rest)
    out.adopted = int(result.summary.get("adopted", 0))
    out.resumed_s = time.perf_counter() - start
    out.after_noop = moved(c.pipe(name).pull(cached=False))
    out.final_files = count_tree(pipe.dirpath, run.args.workers)[0]
    out.rewritten = sum(1 for fn, was in out.recorded.items() if _identity(pipe.dirpath / fn) != was)
    out.recorded.clear()
    run.hwm = max(run.hwm, run.daemon.hwm())
    print(f"   resumed: {out.resumed_moved:,} files moved in {out.resumed_s:.1f} s ({out.rewritten} of the "
          f"recorded ones again); then a pull moved {out.after_noop}; {out.final_files:,} files on disk",
          flush=True)
    return out


def _identity(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (-1, -1)
    return st.st_ino, st.st_mtime_ns


def _result_of(info: Any) -> Any:
    from pipedaemon_sdk.pipe import SyncResult

    return SyncResult.of(info.result or {})


def _check_state(db: Path, pipe: str, folder: Path, out: Crash) -> None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out.integrity = ",".join(r[0] for r in con.execute("PRAGMA integrity_check"))
        rows = con.execute("SELECT filename, local_size, local_mtime_ns FROM sync_state WHERE pipe=?",
                           (pipe,))
        for filename, size, mtime_ns in rows:
            out.rows += 1
            try:
                st = os.stat(folder / filename)
            except FileNotFoundError:
                out.bad_rows += 1
                continue
            if size is None or st.st_size != size or (mtime_ns is not None and st.st_mtime_ns != mtime_ns):
                out.bad_rows += 1
            out.recorded[filename] = (st.st_ino, st.st_mtime_ns)
    finally:
        con.close()


# -- report -----------------------------------------------------------------------------------
def _fmt(m: Measured | None) -> tuple[str, str, str]:
    if m is None:
        return "-", "-", "-"
    rss = f"{m.peak_rss / MiB:.0f}" if m.peak_rss else "-"
    return f"{m.wall_s:.2f}", f"{m.cpu_s:.2f}", rss


def render(run: Run, crash: Crash | None, command: str, elapsed_s: float, generated_s: float | None,
           started: dt.datetime, load_start: float) -> str:
    lines = [
        SECTION, "",
        f"{run.n:,} files of one byte in {FOLDERS} folders, pipedaemon's pipes (through the SDK) next to "
        "`rclone copy` with its defaults, on each remote, in one run. pipedaemon: wall time, CPU of the "
        "daemon and its children (the OpenSSH transport's ssh), peak RSS sampled every 20 ms; rclone: "
        "wall time, its rusage (CPU, ru_maxrss). Requests: S3, what moto logged (lists, HEADs); SFTP, "
        "what OpenSSH's sftp-server logged at VERBOSE (opendir, stat/lstat, open; it does not log reads, "
        "writes or directory pages); a local folder has none. Ratio: rclone's wall time / pipedaemon's "
        "(above 1: pipedaemon is faster). rclone keeps no listing between runs, so both no-op rows "
        "compare with its one no-op copy. On SFTP rclone runs with `--sftp-disable-hashcheck`: by default it "
        "checks each file it moved by running md5sum in an ssh shell session on the server (2 files/s "
        "here); pipedaemon hashes nothing on SFTP either.", "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}; command: `{command}`; the run took "
        f"{elapsed_s / 60:.1f} min"
        + (f" (generating the tree {generated_s:.0f} s)" if generated_s is not None else
           " (the tree was generated by an earlier run)"),
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{_rclone_version()}; load average (1 min) {load_start:.1f} at the start, "
        f"{max(run.loads, default=load_start):.1f} at most, {os.getloadavg()[0]:.1f} at the end"
        + (" (the machine is shared: figures are indicative)"
           if max(run.loads, default=load_start) > (os.cpu_count() or 1) + 1 else " (a quiet machine)"),
        f"- daemon peak RSS over the whole run (VmHWM): {run.hwm / MiB:.0f} MiB", "",
        "| remote | case | pipedaemon wall s | CPU s | RSS MiB | requests | rclone wall s | CPU s | RSS MiB "
        "| requests | ratio |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for case in run.cases:
        pw, pc, pr = _fmt(case.pd)
        rw, rcpu, rr = _fmt(case.rclone)
        ratio = f"{case.ratio:.2f}" if case.ratio else "-"
        err = f" (failed: {case.error[:160]})" if case.error else ""
        lines.append(f"| {case.remote} | {case.what}{err} | {pw} | {pc} | {pr} | {case.pd_requests or '-'} | "
                     f"{rw} | {rcpu} | {rr} | {case.rclone_requests or '-'} | {ratio} |")
    if run.n >= MILLION:
        lines += ["", *_goal_lines(run)]
    elif run.n < 100_000:
        lines += ["", "A smoke-size run. The issue's figures are at 100,000 files (`python -m bench scale "
                  "--files 100000 --write`) and 1,000,000 (`--files 1000000`: local and SFTP, with the "
                  "kill -9 check)."]
    if crash is not None:
        lines += ["", _crash_line(crash)]
    lines += ["", *run.notes]
    return "\n".join(lines).rstrip("\n") + "\n"


def _goal_lines(run: Run) -> list[str]:
    out = [f"Goals at {run.n:,} files (issue 15):"]
    for case in run.cases:
        if case.pd is None:
            continue
        if case.what == "pull_preview, first":
            met = case.pd.wall_s < GOALS["preview_s"]
            out.append(f"- {case.remote}: scan, diff and plan (pull_preview) {case.pd.wall_s:.1f} s, "
                       f"goal under {GOALS['preview_s']:.0f} s: {'met' if met else '**not met**'}")
        if case.what == "no-op pull, cached listing":
            met = case.pd.wall_s < GOALS["warm_noop_s"]
            out.append(f"- {case.remote}: no-op pull, warm cache {case.pd.wall_s:.1f} s, goal under "
                       f"{GOALS['warm_noop_s']:.0f} s: {'met' if met else '**not met**'}")
    met = run.hwm <= GOALS["rss"]
    out.append(f"- daemon peak RSS over the run {run.hwm / MiB:.0f} MiB, goal at most "
               f"{GOALS['rss'] // MiB} MiB: {'met' if met else '**not met**'}")
    return out


def _crash_line(cr: Crash) -> str:
    if cr.error:
        return f"kill -9 during the first pull: {cr.error}"
    sound = cr.integrity == "ok" and cr.bad_rows == 0
    return (f"kill -9 during a first pull of the {cr.n_total:,} files, after {cr.killed_at:,} had moved: "
            f"`PRAGMA integrity_check` said {cr.integrity}; the sync state held {cr.rows:,} rows, "
            f"{cr.bad_rows} of them naming a missing file or another size or mtime "
            f"({'consistent' if sound else '**inconsistent**'}); {cr.on_disk:,} files were on disk. "
            f"After a restart the job resumed and finished in {cr.resumed_s:.1f} s: the rest was "
            f"{cr.n_total - cr.rows:,} files not recorded (of which {cr.on_disk - cr.rows:,} already "
            f"written), "
            f"{cr.final_files - cr.on_disk:,} new files appeared, the job's result listed "
            f"{cr.resumed_moved:,} moved over both runs and {cr.adopted:,} found equal (adopted), and "
            f"{cr.rewritten} of the recorded files were written again "
            f"({'exactly the rest' if cr.rewritten == 0 else '**not only the rest**'}); a pull after it "
            f"moved {cr.after_noop}; {cr.final_files:,} files on disk.")


# -- driver ---------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000, help="one-byte files, in 100 folders")
    ap.add_argument("--remotes", default="",
                    help="comma-separated, from local,sftp,s3 (default: all; local,sftp at 1,000,000 files)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/pd-bench-cache"),
                    help="where generated trees are kept, one per file count")
    ap.add_argument("--crash", action=argparse.BooleanOptionalAction, default=None,
                    help="kill -9 the daemon during a first pull, then resume (default: at 1,000,000 files)")
    ap.add_argument("--workers", type=int, default=max(2, min(8, os.cpu_count() or 2)),
                    help="processes that generate, link and count files")
    ap.add_argument("--pyspy", type=Path, metavar="DIR",
                    help="profile the daemon with py-spy during its runs (slows it): raw stacks in DIR")
    ap.add_argument("--write", dest="write", action="store_true", default=None,
                    help="write docs/benchmarks.md (default: from 100,000 files, every remote)")
    ap.add_argument("--no-write", dest="write", action="store_false")
    args = ap.parse_args(argv)
    default = "local,sftp" if args.files >= MILLION else ",".join(KINDS)
    args.remotes = [r.strip() for r in (args.remotes or default).split(",") if r.strip()]
    unknown = set(args.remotes) - set(KINDS)
    if unknown:
        ap.error(f"unknown remote(s): {', '.join(sorted(unknown))}")
    if args.crash is None:
        args.crash = args.files >= MILLION
    if args.write is None:
        args.write = args.files >= 100_000 and not args.pyspy
    return args


@contextlib.contextmanager
def environment(args: argparse.Namespace, base: Path, tree: Path) -> Iterator[Run]:
    with contextlib.ExitStack() as stack:
        daemon = Daemon(base)
        daemon.profile_dir = args.pyspy
        stack.callback(daemon.stop)
        run = Run(args, base, tree, daemon)
        run.client.update_profile_config({"filerepo": str(base / "repo")})
        if "sftp" in args.remotes:
            run.ssh = stack.enter_context(servers.sftp_server())
            run.sftp_log = servers.sftp_log_requests(run.ssh)
        if "s3" in args.remotes:
            run.s3 = stack.enter_context(servers.s3_server())
            run.bucket = servers.s3_bucket(run.s3)
        yield run


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m bench scale " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.pyspy:
        tools.exe("py-spy")  # fails now, not after an hour, when it is missing
    started, t0, load_start = dt.datetime.now(dt.timezone.utc), time.monotonic(), os.getloadavg()[0]
    tree, generated_s = ensure_tree(args.cache, args.files, args.workers)
    made = f"generated in {generated_s:.1f} s" if generated_s is not None else "cached"
    print(f"tree: {tree} ({made})", flush=True)
    crash: Crash | None = None
    with tempfile.TemporaryDirectory(prefix="pd-bench-scale-", dir="/tmp") as tmp, \
            environment(args, Path(tmp), tree) as run:
        for kind in args.remotes:
            run_kind(run, kind)
        if args.crash:
            kind = next((k for k in args.remotes if k != "s3"), "local")
            try:
                crash = crash_pull(run, kind)
            except Exception as exc:  # noqa: BLE001 - reported
                crash = Crash(n_total=run.n, error=f"{type(exc).__name__}: {exc}"[:300])
        run.hwm = max(run.hwm, run.daemon.hwm())
        if args.pyspy:
            run.notes.append(f"py-spy raw stacks of each pipedaemon case are in {args.pyspy}.")
        else:
            try:
                tools.exe("py-spy")
                have = "py-spy is installed"
            except tools.ToolFailed:
                have = "py-spy was not installed in the venv at the time"
            run.notes.append(f"Where the time goes: not profiled in this run ({have}); `--pyspy DIR` records "
                             "raw stacks of the daemon during each pipedaemon case.")
        failed = any(c.error for c in run.cases) or (crash is not None and bool(crash.error))
        if failed:
            print(f"something failed: the daemon's logs are in {run.daemon.keep_logs()}")
        text = render(run, crash, command.strip(), time.monotonic() - t0, generated_s, started, load_start)
    print("\n" + text)
    if args.write:
        write_section(SECTION, text, DOC)
        print(f"wrote the Many files section of {DOC}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
