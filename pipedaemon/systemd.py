"""systemd integration without a dependency: socket activation, sd_notify, user units."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

LISTEN_FDS_START = 3


def inherited_socket() -> socket.socket | None:
    """The listening socket systemd passed us (LISTEN_FDS), if any."""
    if os.environ.get("LISTEN_PID") not in (None, str(os.getpid())):
        return None
    try:
        n = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if n < 1:
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for our children
    try:
        sock = socket.socket(fileno=LISTEN_FDS_START)
    except OSError as exc:
        raise OSError(exc.errno, f"LISTEN_FDS={n} but descriptor {LISTEN_FDS_START} is not a listening "
                                 f"socket ({exc.strerror}); start it from pipedaemon.socket") from None
    os.set_inheritable(sock.fileno(), False)
    return sock


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to $NOTIFY_SOCKET; False when there is none."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(addr)
            s.sendall(state.encode())
        except OSError:
            return False
    return True


SERVICE = """\
[Unit]
Description=pipedaemon: data transfer daemon
{docs}
Requires=pipedaemon.socket
After=pipedaemon.socket

[Service]
Type=notify
ExecStart={python} -m pipedaemon serve --idle-timeout 0
Restart=on-failure
RestartSec=2
TimeoutStopSec=60
KillMode=mixed
NoNewPrivileges=yes
UMask=0077

[Install]
WantedBy=default.target
"""

SOCKET = """\
[Unit]
Description=pipedaemon socket

[Socket]
ListenStream=%t/pipedaemon/pipedaemon.sock
SocketMode=0600
DirectoryMode=0700

[Install]
WantedBy=sockets.target
"""


DOCS = Path(__file__).resolve().parent.parent / "docs" / "systemd.md"


def docs_line(docs: Path = DOCS) -> str:
    """A Documentation= link only to a page that is there: an installed wheel has no docs/."""
    if docs.is_file():
        return f"Documentation=file://{docs}"
    return "# Documentation: docs/systemd.md of pipedaemon's source (not on this machine)"


def unit_texts(python: str | None = None, docs: Path = DOCS) -> dict[str, str]:
    return {
        "pipedaemon.service": SERVICE.format(python=python or sys.executable, docs=docs_line(docs)),
        "pipedaemon.socket": SOCKET,
    }


def install_units(dest: Path | None = None, python: str | None = None) -> list[Path]:
    dest = dest or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in unit_texts(python).items():
        path = dest / name
        path.write_text(text)
        written.append(path)
    return written
