"""The real storage servers the tests run on, one module each; and the one list of their kinds."""

from __future__ import annotations

# Every kind of remote with a server here: each has a ``<kind>_spec`` fixture (a fresh, empty root).
# A per-backend test parametrizes over this list; a test on fewer says why, in one line, where it
# picks them. (The ``pipedaemon`` kind, a shared daemon as storage, is the conformance suite's.)
BACKENDS = ["local", "s3", "sftp", "sftp_asyncssh", "ftp", "ftps", "pureftpd"]
FTP_KINDS = ("ftp", "ftps", "pureftpd")  # FTP servers: their files are on this machine, under their root
