"""Logging to ``$PIPEDAEMON_HOME/daemon.log`` (rotated) and, under ``serve``, stderr."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Redactor(logging.Filter):
    """Last line of defence for safety rule 4: known secrets never reach a log line."""

    secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            for s in self.secrets:
                if s in msg:
                    msg = msg.replace(s, "***")
                if record.exc_text and s in record.exc_text:
                    record.exc_text = record.exc_text.replace(s, "***")
            record.msg, record.args = msg, ()
        return True


def register_secret(value: str) -> None:
    if value and len(value) >= 4:
        Redactor.secrets.add(value)


def setup(home: Path, to_stderr: bool, level: int = logging.INFO) -> None:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(home / "daemon.log", maxBytes=10 * 2**20, backupCount=3)
    ]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT))
        h.addFilter(Redactor())
        root.addHandler(h)
    (home / "daemon.log").chmod(0o600)
    for noisy in ("aiobotocore", "botocore", "asyncssh", "aioftp", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
