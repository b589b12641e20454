"""Which SFTP transport serves a remote: OpenSSH's ``ssh`` or asyncssh in the daemon.

``options.transport``: ``"openssh"`` (``sftp_openssh``: ssh processes, SFTP framed
here), ``"asyncssh"`` (``sftp``: everything in the daemon's thread), or ``"auto"``:
OpenSSH when an ``ssh`` program exists and the credentials suit it, asyncssh for a
password login (ssh would need a terminal or an askpass helper) or without ssh.
"""

from __future__ import annotations

import shutil
from typing import Any

from .base import Backend
from .sftp import SFTPBackend

TRANSPORTS = ("auto", "openssh", "asyncssh")


def choose(options: dict[str, Any], credentials: dict[str, Any]) -> str:
    """The transport a remote gets: "openssh" or "asyncssh"."""
    wanted = options.get("transport") or "auto"
    if wanted != "auto":
        return str(wanted)
    if shutil.which("ssh") is None:
        return "asyncssh"
    if credentials.get("password"):
        return "asyncssh"
    if credentials.get("private_key") and not (shutil.which("ssh-agent") and shutil.which("ssh-add")):
        return "asyncssh"  # the daemon's key reaches ssh only through an agent of its own
    return "openssh"


class SFTP(Backend):
    """The ``sftp`` protocol's entry in BACKENDS: builds the chosen transport's backend."""

    protocol = "sftp"
    traits = SFTPBackend.traits

    def __new__(cls, options: dict[str, Any], credentials: dict[str, Any], *,  # type: ignore[misc]
                max_streams: int = 8) -> Backend:
        if choose(options, credentials) == "openssh":
            from .sftp_openssh import OpenSSHSFTPBackend

            return OpenSSHSFTPBackend(options, credentials, max_streams=max_streams)
        return SFTPBackend(options, credentials, max_streams=max_streams)
