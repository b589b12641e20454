"""Transfer benchmark: pipedaemon against the tools users would otherwise run.

    python -m bench transfer [--quick] [--cases s3-down,sftp-up,...] [--repeat N] [--no-write]

Every case runs pipedaemon (through the SDK, on a registered remote) and the other
tools against the same local server in the same run, rounds interleaved (each round
runs every tool once) so background load hits all of them alike. Every result is
verified (content hash, or the S3 ETag recomputed from the source) so a fast wrong
tool cannot win. The table goes to the "Transfers" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import servers, tools
from bench.tools import Daemon, Measured, execute
from bench.transfer_checks import (
    check_file,
    check_s3_big,
    check_s3_many,
    check_tree,
    s3_delete_prefix,
    sha256,
)
from bench.transfer_report import CaseResult, render, write_section

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass
class Sizes:
    big: int
    many_count: int
    many_size: int
    rss: int


FULL = Sizes(512 * MiB, 2000, 64 * KiB, 2 * GiB)
QUICK = Sizes(32 * MiB, 100, 64 * KiB, 128 * MiB)


@dataclass
class Contender:
    name: str
    run: Callable[[], Measured]
    verify: Callable[[], None]
    reset: Callable[[], None]


@dataclass
class Case:
    key: str
    title: str
    server: str  # "s3", "sftp" or "ftp"
    goal_tools: tuple[str, ...]  # the ratio's goal is met against the best of these
    goal_ratio: float
    setup: Callable[[Bench], tuple[list[Contender], Callable[[], None]]]
    nbytes: Callable[[Sizes], int]
    rounds: int = 3  # moto-bound S3 cases take minutes a round: 2 keeps a full run near 15 min


# -- the shared state of one run --------------------------------------------------------
@dataclass
class Bench:
    base: Path
    sizes: Sizes
    repeat: int  # rounds per case; 0: each case's own default
    daemon: Daemon
    only: tuple[str, ...] = ()  # run only these tools
    loads: list[float] = field(default_factory=list)  # 1-minute load average after each run
    s3: Any = None
    ssh: Any = None
    ftp: Any = None
    bucket: str = ""
    roots: dict[str, str] = field(default_factory=dict)  # pipedaemon remote name -> its root
    _big_sha: str = ""
    _many_md5: dict[str, str] = field(default_factory=dict)
    _part_md5s: dict[int, list[bytes]] = field(default_factory=dict)

    @property
    def client(self) -> Any:
        return self.daemon.client

    @property
    def out(self) -> Path:
        path = self.base / "out"
        path.mkdir(exist_ok=True)
        return path

    @property
    def big(self) -> Path:
        path = self.base / "src" / "big.bin"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _random_file(path, self.sizes.big)
            self._big_sha = sha256(path)
        return path

    @property
    def big_sha(self) -> str:
        return self.big and self._big_sha

    @property
    def many(self) -> Path:
        folder = self.base / "src" / "many"
        if not folder.exists():
            folder.mkdir(parents=True)
            for i in range(self.sizes.many_count):
                data = os.urandom(self.sizes.many_size)
                (folder / f"f{i:05d}.bin").write_bytes(data)
                self._many_md5[f"f{i:05d}.bin"] = hashlib.md5(data).hexdigest()
        return folder

    @property
    def many_md5(self) -> dict[str, str]:
        return self.many and self._many_md5

    def server_process(self, kind: str) -> psutil.Process | None:
        """The single process serving ``kind`` (moto, pyftpdlib) whose CPU a run can be charged;
        None for sshd, which forks a process per session."""
        if kind == "s3":
            return psutil.Process(self.s3.proc.pid)
        if kind == "ftp":
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "pyftpdlib" in child.cmdline():
                        return child
        return None

    def register(self, name: str, spec: dict[str, Any]) -> None:
        self.client.upsert_remote({"name": name, "protocol": spec["protocol"], "options": spec["options"],
                                   "credentials": spec["credentials"]})
        self.roots[name] = spec["root"]

    def part_md5s(self, part: int) -> list[bytes]:
        """md5 digests of the big file's parts of ``part`` bytes (cached: hashing is slow)."""
        if part not in self._part_md5s:
            digests = []
            with self.big.open("rb") as f:
                while chunk := f.read(part):
                    digests.append(hashlib.md5(chunk).digest())
            self._part_md5s[part] = digests
        return self._part_md5s[part]


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for off in range(0, size, 16 * MiB):
            f.write(os.urandom(min(16 * MiB, size - off)))


def slug(name: str) -> str:
    """A tool's name as a file name: sftp batch commands split on spaces."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _unlink(path: Path) -> Callable[[], None]:
    return lambda: path.unlink(missing_ok=True)


def _rmtree(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)


# -- pipedaemon's side ---------------------------------------------------------------------
def pd_download(b: Bench, remote: str, key: str, dest: Path) -> Measured:
    return b.daemon.measure(lambda: b.client.download(remote=remote, key=key, dest=str(dest)))


def pd_upload(b: Bench, src: Path, remote: str, key: str) -> Measured:
    return b.daemon.measure(lambda: b.client.upload(str(src), remote=remote, key=key))


class PdPipe:
    """pipedaemon's way to move many files: a pipe over the folder, pulled or pushed whole.

    Each round uses a new pipe (no sync state, so everything moves) and lists the
    remote afresh (cached=False), as the other tools do.
    """

    def __init__(self, b: Bench, remote_dir: str) -> None:
        self.b, self.remote_dir, self.rounds = b, remote_dir, 0
        self.pipe: Any = None

    def _new(self) -> Any:
        self.rounds += 1
        name = f"{slug(self.remote_dir)}-{self.rounds}"
        self.b.client.upsert_pipe({"name": name, "remote": "bs3", "options": {"dir": self.remote_dir}})
        self.pipe = self.b.client.pipe(name)
        return self.pipe

    def pull(self) -> Measured:
        pipe = self._new()
        return self.b.daemon.measure(lambda: pipe.pull(cached=False))

    def push(self) -> Measured:
        pipe = self._new()
        shutil.copytree(self.b.many, pipe.dirpath, dirs_exist_ok=True)  # the pipe's own folder: not timed
        return self.b.daemon.measure(lambda: pipe.push(cached=False))

    def reset(self) -> None:
        if self.pipe is not None:
            self.b.client.delete_pipe(self.pipe.name)  # the files stay: remove the local ones too
            shutil.rmtree(self.pipe.dirpath, ignore_errors=True)
            self.pipe = None


# -- cases ------------------------------------------------------------------------------
def setup_s3_down(b: Bench) -> tuple[list[Contender], Callable[[], None]]:
    key = "big.bin"
    # boto3's default: multipart with 8 MiB parts, as most large objects out there are written.
    b.s3.boto3_client().upload_file(str(b.big), b.bucket, key)
    s3, src = b.s3, f"s3://{b.bucket}/{key}"

    def contender(name: str, run: Callable[[Path], Measured]) -> Contender:
        dest = b.out / f"{slug(name)}.bin"
        return Contender(name, lambda: run(dest), lambda: check_file(dest, b.big_sha), _unlink(dest))

    return [
        contender("pipedaemon", lambda d: pd_download(b, "bs3", key, d)),
        contender("s5cmd", lambda d: execute(tools.s5cmd(s3, src, str(d)))),
        contender("awscli", lambda d: execute(tools.awscli(s3, src, str(d)))),
        contender("rclone", lambda d: execute(tools.rclone_s3(f"bs3:{b.bucket}/{key}", str(d), s3))),
    ], lambda: s3_delete_prefix(b, key)


def setup_s3_up(b: Bench) -> tuple[list[Contender], Callable[[], None]]:
    s3, big = b.s3, b.big

    def contender(name: str, run: Callable[[str], Measured]) -> Contender:
        key = f"up/{name}.bin"
        return Contender(name, lambda: run(key), lambda: check_s3_big(b, key),
                         lambda: s3_delete_prefix(b, key))

    return [
        contender("pipedaemon", lambda k: pd_upload(b, big, "bs3", k)),
        contender("s5cmd", lambda k: execute(tools.s5cmd(s3, str(big), f"s3://{b.bucket}/{k}"))),
        contender("awscli", lambda k: execute(tools.awscli(s3, str(big), f"s3://{b.bucket}/{k}"))),
    ], lambda: s3_delete_prefix(b, "up/")


def setup_s3_many_down(b: Bench) -> tuple[list[Contender], Callable[[], None]]:
    s3, prefix = b.s3, "many/"
    execute(tools.s5cmd(s3, f"{b.many}/*", f"s3://{b.bucket}/{prefix}"))  # seeding, not measured

    def contender(name: str, run: Callable[[Path], Measured]) -> Contender:
        dest = b.out / slug(name)
        return Contender(name, lambda: run(dest), lambda: check_tree(dest, b.many_md5), _rmtree(dest))

    pd = PdPipe(b, prefix.rstrip("/"))
    return [
        Contender("pipedaemon", pd.pull, lambda: check_tree(pd.pipe.dirpath, b.many_md5), pd.reset),
        contender("s5cmd", lambda d: execute(tools.s5cmd(s3, f"s3://{b.bucket}/{prefix}*", f"{d}/"))),
        contender("awscli", lambda d: execute(tools.awscli(s3, f"s3://{b.bucket}/{prefix}", f"{d}/",
                                                           recursive=True))),
        contender("rclone", lambda d: execute(tools.rclone_s3(f"bs3:{b.bucket}/{prefix}", str(d), s3,
                                                              many=True))),
    ], lambda: s3_delete_prefix(b, prefix)


def setup_s3_many_up(b: Bench) -> tuple[list[Contender], Callable[[], None]]:
    s3, src = b.s3, b.many
    pd = PdPipe(b, "mup-pipedaemon")

    def contender(name: str, run: Callable[[str], Measured]) -> Contender:
        prefix = f"mup-{name}/"
        return Contender(name, lambda: run(prefix), lambda: check_s3_many(b, prefix),
                         lambda: s3_delete_prefix(b, prefix))

    return [
        Contender("pipedaemon", pd.push, lambda: check_s3_many(b, "mup-pipedaemon/"),
                  lambda: (pd.reset(), s3_delete_prefix(b, "mup-pipedaemon/"))),
        contender("s5cmd", lambda p: execute(tools.s5cmd(s3, f"{src}/*", f"s3://{b.bucket}/{p}"))),
        contender("awscli", lambda p: execute(tools.awscli(s3, f"{src}/", f"s3://{b.bucket}/{p}",
                                                           recursive=True))),
        contender("rclone", lambda p: execute(tools.rclone_s3(str(src), f"bs3:{b.bucket}/{p}", s3,
                                                              many=True))),
    ], lambda: s3_delete_prefix(b, "mup-")


def setup_sftp_down(b: Bench) -> tuple[list[Contender], Callable[[], None]]:
    root = Path(b.roots["bsftp"])
    shutil.copyfile(b.big, root / "big.bin")
    ssh, src = b.ssh, f"{root}/big.bin"

    def contender(name: str, run: Callable[[Path], Measured]) -> Contender:
        dest = b.out / f"{slug(name)}.bin"
        return Contender(name, lambda: run(dest), lambda: check_file(dest, b.big_sha), _unlink(dest))

    return [
        contender("pipedaemon", lambda d: pd_download(b, "bsftp", "big.bin", d)),
        contender("pipedaemon asyncssh", lambda d: pd_download(b, "bsftp-asyncssh", "big.bin", d)),
        contender("sftp", lambda d: execute(tools.openssh_sftp(ssh, f"get {src} {d}"))),
        contender("sftp -B 255k -R 256", lambda d: execute(tools.openssh_sftp(ssh, f"get {src} {d}",
                                                                             tuned=True))),
        contender("rclone", lambda d: execute(tools.rclone_sftp(ssh, f"bsftp:{src}", str(d)))),
    ], _unlink(root / "big.bin")


def setup_sftp_up(b: Bench) -> tuple[list[Contender], Callable[[], None]]:
    root, ssh, big = Path(b.roots["bsftp"]), b.ssh, b.big

    def contender(name: str, run: Callable[[str], Measured]) -> Contender:
        fname = f"up-{slug(name)}.bin"
        target = root / fname
        return Contender(name, lambda: run(fname), lambda: check_file(target, b.big_sha), _unlink(target))

    return [
        contender("pipedaemon", lambda f: pd_upload(b, big, "bsftp", f)),
        contender("pipedaemon asyncssh", lambda f: pd_upload(b, big, "bsftp-asyncssh", f)),
        contender("sftp", lambda f: execute(tools.openssh_sftp(ssh, f"put {big} {root}/{f}"))),
        contender("sftp -B 255k -R 256", lambda f: execute(tools.openssh_sftp(ssh, f"put {big} {root}/{f}",
                                                                             tuned=True))),
        contender("rclone", lambda f: execute(tools.rclone_sftp(ssh, str(big), f"bsftp:{root}/{f}"))),
    ], lambda: None


def setup_ftp_down(b: Bench) -> tuple[list[Contender], Callable[[], None]]:
    root = b.roots["bftp"]  # as the FTP server sees it: "/t-xxx/"
    on_disk = b.ftp.root_dir / root.strip("/") / "big.bin"
    shutil.copyfile(b.big, on_disk)

    def contender(name: str, run: Callable[[Path], Measured]) -> Contender:
        dest = b.out / f"{slug(name)}.bin"
        return Contender(name, lambda: run(dest), lambda: check_file(dest, b.big_sha), _unlink(dest))

    return [
        contender("pipedaemon", lambda d: pd_download(b, "bftp", "big.bin", d)),
        contender("lftp pget -n 4", lambda d: execute(tools.lftp_pget(b.ftp, f"{root}big.bin", d))),
    ], _unlink(on_disk)


def _s3_bytes(s: Sizes) -> int:
    return s.big


def _many_bytes(s: Sizes) -> int:
    return s.many_count * s.many_size


CASES = [
    Case("s3-down", "S3 download 1 x {big}", "s3", ("s5cmd",), 1.0, setup_s3_down, _s3_bytes, rounds=2),
    Case("s3-up", "S3 upload 1 x {big}", "s3", ("s5cmd",), 0.95, setup_s3_up, _s3_bytes, rounds=2),
    Case("s3-many-down", "S3 download {n} x {small}", "s3", ("s5cmd",), 1.0, setup_s3_many_down,
         _many_bytes, rounds=2),
    Case("s3-many-up", "S3 upload {n} x {small}", "s3", ("s5cmd",), 1.0, setup_s3_many_up, _many_bytes,
         rounds=2),
    Case("sftp-down", "SFTP download 1 x {big}", "sftp", ("sftp", "sftp -B 255k -R 256"), 1.0,
         setup_sftp_down, _s3_bytes),
    Case("sftp-up", "SFTP upload 1 x {big}", "sftp", ("sftp", "sftp -B 255k -R 256"), 1.0,
         setup_sftp_up, _s3_bytes),
    Case("ftp-down", "FTP download 1 x {big}", "ftp", ("lftp pget -n 4",), 1.0, setup_ftp_down, _s3_bytes),
]
RSS_CASE = "rss"
RSS_GOAL = 256 * MiB


def human(n: int) -> str:
    return f"{n // GiB} GiB" if n % GiB == 0 else f"{n // MiB} MiB" if n % MiB == 0 else f"{n // KiB} KiB"


def run_case(case: Case, b: Bench) -> CaseResult:
    title = case.title.format(big=human(b.sizes.big), n=f"{b.sizes.many_count:,}",
                              small=human(b.sizes.many_size))
    result = CaseResult(case.key, title, case.nbytes(b.sizes), case.goal_tools, case.goal_ratio,
                        rounds=b.repeat or case.rounds)
    print(f"== {title}", flush=True)
    contenders, teardown = case.setup(b)
    server = b.server_process(case.server)
    try:
        for rnd in range(result.rounds):
            for c in contenders:
                if c.name in result.errors or (b.only and c.name not in b.only):
                    continue
                b.daemon.label = f"{case.key}-{rnd + 1}-{slug(c.name)}"
                try:
                    log = servers.RequestLog(b.s3.log_path) if case.server == "s3" else None
                    server_before = tools.cpu_seconds(server)
                    m = c.run()
                    m.requests = len(log.entries()) if log else None
                    if server_before is not None:
                        m.server_cpu_s = (tools.cpu_seconds(server) or 0.0) - server_before
                    c.verify()
                    result.runs.setdefault(c.name, []).append(m)
                    own = f" (daemon {m.own_cpu_s:.2f} s)" if m.own_cpu_s is not None else ""
                    print(f"   round {rnd + 1} {c.name:22} {result.nbytes / m.wall_s / 1e6:8.1f} MB/s "
                          f"{m.wall_s:7.2f} s  cpu {m.cpu_s:6.2f} s{own}", flush=True)
                except Exception as exc:  # noqa: BLE001 - a failing tool is reported; the others go on
                    result.errors[c.name] = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
                    print(f"   round {rnd + 1} {c.name:22} FAILED {result.errors[c.name]}", flush=True)
                finally:
                    b.loads.append(os.getloadavg()[0])
                    with contextlib.suppress(Exception):
                        c.reset()
    finally:
        teardown()
    return result


def run_rss(b: Bench) -> CaseResult:
    """A fresh daemon downloads one big file over SFTP (sshd keeps up; moto would take minutes)."""
    size = b.sizes.rss
    result = CaseResult(RSS_CASE, f"daemon peak RSS, SFTP download 1 x {human(size)}", size, (), 0.0)
    print(f"== {result.title}", flush=True)
    root = Path(b.roots["bsftp"])
    src, dest = root / "huge.bin", b.out / "huge.bin"
    with src.open("wb") as f, b.big.open("rb") as big:
        for _ in range(size // b.sizes.big):
            big.seek(0)
            shutil.copyfileobj(big, f, 16 * MiB)
    want = sha256(src)
    try:
        b.daemon.restart()
        m = pd_download(b, "bsftp", "huge.bin", dest)
        m.peak_rss = max(b.daemon.hwm(), m.peak_rss or 0)
        check_file(dest, want)
        result.runs["pipedaemon"] = [m]
        print(f"   pipedaemon peak RSS {m.peak_rss / MiB:.0f} MiB, {size / m.wall_s / 1e6:.1f} MB/s",
              flush=True)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        result.errors["pipedaemon"] = f"{type(exc).__name__}: {exc}"[:400]
    finally:
        src.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
    return result


# -- driver --------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    names = [c.key for c in CASES] + [RSS_CASE]
    ap = argparse.ArgumentParser(prog="python -m bench transfer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run")
    ap.add_argument("--cases", default=",".join(names), help=f"comma-separated, from: {', '.join(names)}")
    ap.add_argument("--repeat", type=int, default=0,
                    help="rounds per case (default: 2 for S3 cases, 3 for the others; 1 with --quick)")
    ap.add_argument("--write", dest="write", action="store_true", default=None,
                    help="write docs/benchmarks.md (default: only for a full run of every case)")
    ap.add_argument("--no-write", dest="write", action="store_false")
    ap.add_argument("--pyspy", type=Path, metavar="DIR",
                    help="profile the daemon with py-spy during its runs (slows it): raw stacks in DIR")
    ap.add_argument("--big", type=int, metavar="MiB",
                    help="size of the big file (default: 512, 32 with --quick)")
    ap.add_argument("--tools", default="", help="comma-separated: run only these tools (e.g. pipedaemon)")
    args = ap.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.cases) - set(names)
    if unknown:
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if args.write is None:
        partial = args.quick or args.tools or args.pyspy or args.big
        args.write = not partial and set(args.cases) == set(names)
    return args


@contextlib.contextmanager
def bench_env(args: argparse.Namespace, base: Path) -> Iterator[Bench]:
    wanted = {c.server for c in CASES if c.key in args.cases}
    if RSS_CASE in args.cases:
        wanted.add("sftp")
    sizes = QUICK if args.quick else FULL
    if args.big:
        sizes = dataclasses.replace(sizes, big=args.big * MiB)
    with contextlib.ExitStack() as stack:
        daemon = Daemon(base)
        daemon.profile_dir = args.pyspy
        stack.callback(daemon.stop)
        b = Bench(base, sizes, args.repeat or (1 if args.quick else 0), daemon,
                  only=tuple(t for t in args.tools.split(",") if t))
        if "s3" in wanted:
            b.s3 = stack.enter_context(servers.s3_server())
            b.bucket = servers.s3_bucket(b.s3)
            b.register("bs3", servers.s3_spec(b.s3, b.bucket))
            b.client.update_profile_config({"filerepo": str(base / "repo")})  # pipes' local folders
        if "sftp" in wanted:
            b.ssh = stack.enter_context(servers.sftp_server())
            spec = servers.sftp_spec(b.ssh)  # transport "auto": OpenSSH
            b.register("bsftp", spec)
            # The same folder through the other transport, for its own rows.
            b.register("bsftp-asyncssh", {**spec, "options": {**spec["options"], "transport": "asyncssh"}})
        if "ftp" in wanted:
            b.ftp = stack.enter_context(servers.ftp_server())
            b.register("bftp", servers.ftp_spec(b.ftp))
        yield b


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m bench transfer " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.monotonic()
    results: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="pd-bench-", dir="/tmp") as tmp, bench_env(args, Path(tmp)) as b:
        for case in CASES:
            if case.key in args.cases:
                results.append(run_case(case, b))
        if RSS_CASE in args.cases:
            results.append(run_rss(b))
        loads = b.loads
        if any("pipedaemon" in r.errors for r in results):
            print(f"pipedaemon failed somewhere: its logs are in {b.daemon.keep_logs()}")
    text = render(results, command=command.strip(), quick=args.quick,
                  elapsed_s=time.monotonic() - started, rss_goal=RSS_GOAL, loads=loads)
    print("\n" + text)
    if args.write:
        write_section(DOC, text)
        print(f"wrote the Transfers section of {DOC}")
    return 0 if all(not r.errors for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
