"""FTP servers on loopback for the tests: pyftpdlib (plain, explicit TLS, legacy) and pure-ftpd.

pyftpdlib runs in its own process: this file doubles as its launcher
(``python tests/servers/ftp.py pyftpdlib ...``), binds port 0 and prints the port it
got, so there is no race for the control port. pure-ftpd runs in the foreground with
virtual users from a puredb file in the session's temp dir.

Every server's users are chrooted at ``root_dir``, so a folder ``root_dir / "t-x"``
on disk is ``/t-x/`` as the FTP server sees it.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

USER = "pipe"
PASSWORD = "s3cret-pass"
START_TIMEOUT_S = 20.0
BANNER = "pipedaemon test pyftpdlib ready."


@dataclass
class FTPServer:
    host: str
    port: int
    username: str
    password: str
    root_dir: Path  # the users' root on disk
    cafile: str | None = None  # set for explicit-TLS servers
    owner: tuple[int, int] | None = None  # uid/gid that must own files under root_dir

    def __post_init__(self) -> None:
        from tests import secret_scan  # here, not at the top: this file also runs as the server

        secret_scan.remember(self.password)

    def scratch(self) -> str:
        """A unique empty folder under the root; its path as the server sees it, ending '/'."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        folder = self.root_dir / name
        folder.mkdir()
        if self.owner:
            os.chown(folder, *self.owner)
        return f"/{name}/"

    def spec(self, **extra: Any) -> dict[str, Any]:
        root = self.scratch()
        options: dict[str, Any] = {"host": self.host, "port": self.port, "username": self.username,
                                   "remotepath": root, **extra}
        if self.cafile:
            options.update(tls=True, tls_cafile=self.cafile)
        return {"protocol": "ftp", "options": options, "credentials": {"password": self.password},
                "root": root}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _passive_range(size: int = 400) -> tuple[int, int]:
    """A random range below the kernel's ephemeral ports (32768 and up here), so clients'
    outgoing connections never hold them; wide, because a test storing 1,000 files leaves
    many in TIME_WAIT, and pure-ftpd gives up ("425 Unable to identify the local data
    socket") when it finds no free one."""
    low = random.randrange(12000, 32000 - size)
    return low, low + size - 1


def _wait_banner(port: int, proc: subprocess.Popen[bytes], log: Path, marker: bytes) -> None:
    """Wait for a 220 banner with ``marker``: ours, not another server's that took the port."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                banner = s.recv(4096)
                if banner.startswith(b"220") and marker in banner:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"no 220 banner on port {port}: {last}; log: {log.read_text(errors='replace')}")


# Servers lead their own process group (so teardown can end a server with its children)
# and get SIGTERM when the test process dies (Linux PR_SET_PDEATHSIG, kept across exec):
# a pytest killed before its teardown must not leave servers running.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "prctl = getattr(ctypes.CDLL(None), 'prctl', None)\n"
    "if prctl is not None: prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit('the test process is gone')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def _spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *args],
                            start_new_session=True, **kwargs)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdout is not None:
        proc.stdout.close()
    # Each server leads its own process group (start_new_session): end the group, children too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def make_self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate for 127.0.0.1/localhost and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pipedaemon test ftps")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


# -- pyftpdlib -------------------------------------------------------------------

def _start_pyftpdlib(base: Path, *, tls: bool = False, legacy: bool = False) -> Iterator[FTPServer]:
    root = base / "root"
    root.mkdir()
    args = [sys.executable, str(Path(__file__).resolve()), "pyftpdlib", str(root), USER, PASSWORD,
            "{}:{}".format(*_passive_range())]
    cafile = None
    if tls:
        cert, key = make_self_signed(base)
        cafile = str(cert)
        args += ["--tls", str(cert), str(key)]
    if legacy:
        args.append("--legacy")
    log = base / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONTRACEMALLOC"}  # slow in the server
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this file imports tests.conftest
    with log.open("wb") as out:
        proc = _spawn(args, stdout=subprocess.PIPE, stderr=out, env=env)
    try:
        assert proc.stdout is not None
        if not select.select([proc.stdout], [], [], START_TIMEOUT_S)[0]:
            raise RuntimeError(f"no port after {START_TIMEOUT_S}s")
        line = proc.stdout.readline().decode()  # the child prints "PORT <n>" once it listens
        if not line.startswith("PORT "):
            raise RuntimeError(f"pyftpdlib did not start: {line!r} {log.read_text(errors='replace')}")
        port = int(line.split()[1])
        _wait_banner(port, proc, log, BANNER.encode())
    except (RuntimeError, OSError, ValueError) as exc:
        _stop(proc)
        unavailable(f"pyftpdlib failed to start: {exc}")
    except BaseException:  # a pytest-timeout or Ctrl-C while waiting: never leave the child behind
        _stop(proc)
        raise
    try:
        yield FTPServer("127.0.0.1", port, USER, PASSWORD, root, cafile=cafile)
    finally:
        _stop(proc)


def _serve_pyftpdlib(argv: list[str]) -> None:
    """The child process: argv = root user password lo:hi [--tls cert key] [--legacy]."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer as Server

    root, user, password, prange = argv[:4]
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    handler: Any = FTPHandler
    if "--tls" in argv:
        from pyftpdlib.handlers import TLS_FTPHandler

        i = argv.index("--tls")
        handler = type("Handler", (TLS_FTPHandler,), {
            "certfile": argv[i + 1], "keyfile": argv[i + 2],
            # Required, so a client that skips AUTH TLS / PROT P fails instead of passing in clear.
            "tls_control_required": True, "tls_data_required": True,
        })
    handler = type("Handler", (handler,), {})
    if "--legacy" in argv:
        # An old-style server: no MLSD/MLST/MFMT, so clients must fall back to LIST, SIZE and MDTM.
        dropped = ("MLSD", "MLST", "MFMT")
        handler.proto_cmds = {k: v for k, v in handler.proto_cmds.items() if k not in dropped}
    low, high = map(int, prange.split(":"))
    handler.authorizer = authorizer
    handler.passive_ports = list(range(low, high + 1))
    handler.banner = BANNER
    server = Server(("127.0.0.1", 0), handler)
    server.max_cons = 512
    print("PORT", server.address[1], flush=True)
    server.serve_forever()


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    yield from _start_pyftpdlib(tmp_path_factory.mktemp("ftp"))


@pytest.fixture(scope="session")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    yield from _start_pyftpdlib(tmp_path_factory.mktemp("ftps"), tls=True)


@pytest.fixture(scope="session")
def ftp_legacy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    """pyftpdlib without MLSD, MLST and MFMT."""
    yield from _start_pyftpdlib(tmp_path_factory.mktemp("ftplegacy"), legacy=True)


# -- pure-ftpd ---------------------------------------------------------------------

PURE_FTPD = "/usr/sbin/pure-ftpd"


def _pure_owner() -> tuple[int, int]:
    """The system uid/gid virtual users map to: nobody/nogroup."""
    import grp
    import pwd

    uid = pwd.getpwnam("nobody").pw_uid
    try:
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        gid = pwd.getpwnam("nobody").pw_gid
    return uid, gid


def _pure_users(base: Path, root: Path, owner: tuple[int, int]) -> Path:
    """A puredb with one virtual user chrooted ("/./") at root.

    pure-pw hashes with slow argon2 (seconds per login); a sha512-crypt line written
    here keeps logins fast, and pure-ftpd accepts any crypt(3) hash.
    """
    hashed = subprocess.run(["openssl", "passwd", "-6", PASSWORD], check=True, capture_output=True,
                            text=True).stdout.strip()
    passwd, pdb = base / "pureftpd.passwd", base / "pureftpd.pdb"
    passwd.write_text(f"{USER}:{hashed}:{owner[0]}:{owner[1]}::{root}/./::::::::::::\n")
    subprocess.run(["pure-pw", "mkdb", str(pdb), "-f", str(passwd)], check=True, capture_output=True)
    return pdb


def _start_pureftpd(base: Path) -> Iterator[FTPServer]:
    if not Path(PURE_FTPD).exists() or not (shutil.which("pure-pw") and shutil.which("openssl")):
        unavailable("pure-ftpd (with pure-pw and openssl) is not installed")
    if os.geteuid() != 0:
        unavailable("pure-ftpd needs root here: it chroots its virtual users")
    owner = _pure_owner()
    root = base / "root"
    root.mkdir()
    os.chown(root, *owner)  # pure-ftpd chroots as root, then works as this uid inside root
    log = base / "server.log"
    try:
        pdb = _pure_users(base, root, owner)
    except (subprocess.CalledProcessError, OSError) as exc:
        unavailable(f"pure-pw failed: {exc}")
    proc, error = None, None
    for _attempt in range(3):  # the control port is picked before pure-ftpd binds it: retry a race
        port = _free_port()
        low, high = _passive_range()
        args = [PURE_FTPD, "-l", f"puredb:{pdb}", "-S", f"127.0.0.1,{port}", "-p", f"{low}:{high}",
                "-E",  # no anonymous logins
                "-A",  # chroot everyone
                "-D",  # list dot files, like pyftpdlib does
                "-H",  # no reverse DNS
                "-c", "200", "-C", "200",  # room for several test pools at once
                "-L", "100000:16",  # listing limits far above what tests make
                "-u", "1",  # accept uid nobody / the current user
                "-f", "none"]  # no syslog: errors go to stderr
        with log.open("ab") as out:
            proc = _spawn(args, stdout=out, stderr=out)
        try:
            _wait_banner(port, proc, log, b"Pure-FTPd")
            break
        except RuntimeError as exc:
            _stop(proc)
            proc, error = None, exc
        except BaseException:
            _stop(proc)
            raise
    if proc is None:
        unavailable(f"pure-ftpd failed to start: {error}")
    try:
        yield FTPServer("127.0.0.1", port, USER, PASSWORD, root, owner=owner)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def pureftpd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    yield from _start_pureftpd(tmp_path_factory.mktemp("pureftpd"))


# -- specs: one empty scratch folder per test ------------------------------------------

@pytest.fixture
def ftp_spec(ftp_server: FTPServer) -> dict[str, Any]:
    return ftp_server.spec()


@pytest.fixture
def ftps_spec(ftps_server: FTPServer) -> dict[str, Any]:
    return ftps_server.spec()


@pytest.fixture
def pureftpd_spec(pureftpd_server: FTPServer) -> dict[str, Any]:
    return pureftpd_server.spec()


@pytest.fixture
def ftp_legacy_spec(ftp_legacy_server: FTPServer) -> dict[str, Any]:
    return ftp_legacy_server.spec()


if __name__ == "__main__" and sys.argv[1:2] == ["pyftpdlib"]:
    _serve_pyftpdlib(sys.argv[2:])
