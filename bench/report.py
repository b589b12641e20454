"""docs/benchmarks.md is shared: each benchmark replaces only its own section."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(heading: str, text: str, doc: Path = DOC) -> None:
    """Replace the section that starts with ``heading`` (e.g. "## RPC"), or append it."""
    current = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = text.rstrip("\n") + "\n\n"
    if pattern.search(current):
        current = pattern.sub(lambda _m: body, current, count=1)
    else:
        current = current.rstrip("\n") + "\n\n" + body
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(current.rstrip("\n") + "\n")
