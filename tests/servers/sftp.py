"""OpenSSH sshd on loopback for the SFTP backend: its own config, keys and port.

sshd runs in the foreground (``-D -e``) as the current user (root in CI), with
``internal-sftp`` as its sftp subsystem and an authorized key in a temp dir. A
second server with a different host key (``sftp_server_other_hostkey``) lets
tests see a changed host key refused.
"""

from __future__ import annotations

import collections
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests import secret_scan
from tests.conftest import unavailable

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 15.0


@dataclass
class SSHDServer:
    host: str
    port: int
    username: str
    base: Path  # temp dir holding keys, config, logs and the scratch folders
    client_key: Path  # the authorized private key (OpenSSH format, no passphrase)
    known_hosts: Path  # a known_hosts line for [host]:port with this server's key
    host_key_public: str  # "ssh-ed25519 AAAA..."
    proc: subprocess.Popen[bytes]

    @property
    def scratch(self) -> Path:
        return self.base / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_key(path: Path, key: asyncssh.SSHKey) -> None:
    key.write_private_key(str(path))
    path.chmod(0o600)


def _public(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


def _config(base: Path, port: int) -> str:
    # Root in CI: allow its login; StrictModes off because the temp dir is not
    # owned the way sshd expects a home to be; no PAM so no system auth stack.
    return "\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {base / 'host_ed25519'}",
        f"PidFile {base / 'sshd.pid'}",
        f"AuthorizedKeysFile {base / 'authorized_keys'}",
        "PermitRootLogin yes",
        "StrictModes no",
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication no",
        "UseDNS no",
        "PrintMotd no",
        "MaxStartups 64:30:128",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
        "",
    ])


SFTP_SERVER = "/usr/lib/openssh/sftp-server"


class SftpLog:
    """The SFTP requests ``server`` logged after ``start`` (see ``log_requests``), by kind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size if path.exists() else 0

    def counts(self) -> collections.Counter[str]:
        """Requests per kind: open, close, stat, lstat, opendir, closedir, mkdir, rename, set, remove...
        (at VERBOSE sftp-server logs neither reads, writes nor directory pages)."""
        if not self.path.exists():
            return collections.Counter()
        with self.path.open("rb") as f:
            f.seek(self.start)
            lines = f.read().decode("utf-8", "replace").splitlines()
        return collections.Counter(line.split(" ", 1)[0] for line in lines
                                   if line and not line.startswith(("session ", "received client")))

    def reset(self) -> None:
        self.start = self.path.stat().st_size if self.path.exists() else 0


def log_requests(server: SSHDServer) -> SftpLog:
    """Serve SFTP with OpenSSH's sftp-server, which logs each request (``-l VERBOSE``) to
    ``base/sftp.log``, instead of internal-sftp: sshd rereads its config on SIGHUP."""
    if not os.access(SFTP_SERVER, os.X_OK):
        raise RuntimeError(f"{SFTP_SERVER} not found")
    log = server.base / "sftp.log"
    config = server.base / "sshd_config"
    config.write_text(config.read_text().replace(
        "Subsystem sftp internal-sftp", f"Subsystem sftp {SFTP_SERVER} -e -l VERBOSE 2>>{log}"))
    server.proc.send_signal(signal.SIGHUP)
    time.sleep(0.2)  # the old listener closes before the new one binds
    if not _wait_banner(server.port, server.proc):
        raise RuntimeError("sshd did not come back after SIGHUP")
    return SftpLog(log)


def _wait_banner(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """True once sshd accepts on ``port`` and sends its SSH banner."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def start_sshd(base: Path, client_key: asyncssh.SSHKey) -> SSHDServer:
    """Start sshd with a fresh ed25519 host key in ``base``; raise RuntimeError if it won't."""
    if not os.access(SSHD, os.X_OK):
        raise RuntimeError(f"{SSHD} not found")
    if os.geteuid() == 0:
        # sshd's privilege-separation directory must exist (root-owned) when run as root.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    base.mkdir(parents=True, exist_ok=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    _write_key(base / "host_ed25519", host_key)
    _write_key(base / "client_ed25519", client_key)
    (base / "authorized_keys").write_text(_public(client_key) + "\n")
    (base / "data").mkdir(exist_ok=True)
    last_log = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        (base / "sshd_config").write_text(_config(base, port))
        with open(base / "sshd.log", "ab") as log:  # sshd keeps its own copy of the fd
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(base / "sshd_config")],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        if _wait_banner(port, proc):
            known = base / "known_hosts"
            known.write_text(f"[127.0.0.1]:{port} {_public(host_key)}\n")
            return SSHDServer("127.0.0.1", port, getpass.getuser(), base, base / "client_ed25519",
                              known, _public(host_key), proc)
        proc.kill()
        proc.wait(5)
        last_log = (base / "sshd.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"sshd did not start: {last_log}")


@pytest.fixture(scope="session")
def sftp_client_key() -> asyncssh.SSHKey:
    """The one user key both test servers authorize."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    secret_scan.remember(key.export_private_key("openssh").decode())
    return key


def _serve(prefix: str, key: asyncssh.SSHKey) -> Iterator[SSHDServer]:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        server = start_sshd(base, key)
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(base, ignore_errors=True)
        unavailable(f"cannot start sshd: {exc}")
        return
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def sftp_server(sftp_client_key: asyncssh.SSHKey) -> Iterator[SSHDServer]:
    yield from _serve("pd-sshd-", sftp_client_key)


@pytest.fixture(scope="session")
def sftp_server_other_hostkey(sftp_client_key: asyncssh.SSHKey) -> Iterator[SSHDServer]:
    """A second sshd (another port) whose host key differs from ``sftp_server``'s."""
    yield from _serve("pd-sshd2-", sftp_client_key)


def make_spec(server: SSHDServer) -> dict[str, Any]:
    """A spec whose root is a fresh, empty folder on ``server``."""
    folder = server.scratch / uuid.uuid4().hex[:12]
    folder.mkdir()
    root = f"{folder}/"
    return {
        "protocol": "sftp",
        "options": {"host": server.host, "port": server.port, "username": server.username,
                    "remotepath": root, "known_hosts": str(server.known_hosts)},
        "credentials": {"private_key": str(server.client_key)},
        "root": root,
    }


@pytest.fixture
def sftp_spec(sftp_server: SSHDServer) -> dict[str, Any]:
    """Transport "auto": OpenSSH's ssh wherever it is installed (the key goes through an agent)."""
    return make_spec(sftp_server)


@pytest.fixture
def sftp_asyncssh_spec(sftp_server: SSHDServer) -> dict[str, Any]:
    """The same server through the other transport, asyncssh in the daemon."""
    spec = make_spec(sftp_server)
    spec["options"]["transport"] = "asyncssh"
    return spec


@pytest.fixture
def ssh_agent(tmp_path: Path, sftp_server: SSHDServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's ssh-agent holding the test key, exported as SSH_AUTH_SOCK; its socket path."""
    if not shutil.which("ssh-agent"):
        unavailable("ssh-agent not installed")
        return
    sock = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        subprocess.run(["ssh-add", "-q", str(sftp_server.client_key)], check=True,
                       env={**os.environ, "SSH_AUTH_SOCK": sock})
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        yield sock
    finally:
        proc.terminate()
        proc.wait(5)


def ssh_config(path: Path, hosts: dict[str, dict[str, str]]) -> Path:
    """Write an ssh config of ``Host alias`` blocks (``{"vendor": {"HostName": ...}}``)."""
    lines = []
    for alias, settings in hosts.items():
        lines.append(f"Host {alias}")
        lines += [f"    {key} {value}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def host_block(server: SSHDServer, *, identity: bool = True) -> dict[str, str]:
    """A Host block reaching ``server`` (its known_hosts line, and its key unless told not to)."""
    block = {"HostName": server.host, "Port": str(server.port), "User": server.username,
             "UserKnownHostsFile": str(server.known_hosts), "StrictHostKeyChecking": "yes"}
    if identity:
        block["IdentityFile"] = str(server.client_key)
    return block
